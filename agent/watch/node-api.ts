// The agent's client of the node API (control/http/node-api.ts): a network's
// snapshot and its change log, read in pages over HTTP with the node's own
// credentials. The controller tells the agent the API's address on its own
// topic; until then there is nothing to ask. Every answer is bounded and
// parsed before it is used: the API is the control plane's, but what comes
// over a network is checked all the same.
import { changesPageSchema, snapshotPageSchema } from '../../core/messages.js';
import type { Lease } from '../../core/lease.js';
import type { ChangeMessage } from '../../core/messages.js';

/** leases or changes per request */
const PAGE = 1000;
/** an HTTP answer larger than this is refused: 5,000 leases are well under 4 MB */
const MAX_HTTP_BYTES = 64 * 1024 * 1024;
const HTTP_TIMEOUT_MS = 30_000;

export interface NodeApiOptions {
  network: string;
  node: string;
  /** the broker username and password, which the node API takes too (the username defaults to the node's name) */
  username?: string;
  password?: string;
}

/** The change log no longer reaches back to the revision asked for (HTTP 410): list again. */
export class GoneError extends Error {
  constructor() {
    super('the change log no longer reaches back');
  }
}

export class NodeApiClient {
  private base?: string;

  constructor(private readonly opts: NodeApiOptions) {}

  /** The API's address, once the controller has said it (undefined until then). */
  get address(): string | undefined {
    return this.base;
  }

  /** Takes the address the controller gave; true when it is news. */
  moveTo(address: string): boolean {
    if (address === this.base) return false;
    this.base = address;
    return true;
  }

  /** One page of the network's leases, after the node named (null: from the start). */
  async snapshotPage(after: string | null): Promise<{ revision: number; leases: Lease[]; next: string | null }> {
    const page = snapshotPageSchema.parse(await this.get(`snapshot?limit=${PAGE}${after ? `&after=${encodeURIComponent(after)}` : ''}`));
    return { revision: page.revision, leases: page.leases as Lease[], next: page.next };
  }

  /** One page of the changes after revision; more says another page follows. Throws GoneError when the log no longer reaches back. */
  async changesSince(revision: number): Promise<{ changes: ChangeMessage[]; more: boolean }> {
    return changesPageSchema.parse(await this.get(`changes?since=${revision}&limit=${PAGE}`));
  }

  private async get(path: string): Promise<unknown> {
    const o = this.opts;
    const url = `${(this.base as string).replace(/\/$/, '')}/v2/networks/${encodeURIComponent(o.network)}/${path}`;
    const auth = `Basic ${Buffer.from(`${o.username ?? o.node}:${o.password ?? ''}`).toString('base64')}`;
    // fetch undoes the gzip itself
    const res = await fetch(url, { headers: { authorization: auth, 'accept-encoding': 'gzip' }, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
    const length = Number(res.headers.get('content-length') ?? 0);
    if (length > MAX_HTTP_BYTES) throw new Error(`answer of ${length} bytes is larger than ${MAX_HTTP_BYTES}`);
    const text = await res.text();
    if (text.length > MAX_HTTP_BYTES) throw new Error(`answer larger than ${MAX_HTTP_BYTES} bytes`);
    if (res.status === 410) throw new GoneError();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new Error(`HTTP ${res.status}, not JSON`);
    }
    if (res.status !== 200) {
      const why = typeof body === 'object' && body !== null && typeof (body as { error?: unknown }).error === 'string' ? (body as { error: string }).error : '';
      throw new Error(`HTTP ${res.status}${why ? `: ${why.slice(0, 300)}` : ''}`);
    }
    return body;
  }
}
