// The HTTP API agents read (protocol v2's "list"): a network's snapshot, in
// pages, and the changes since a revision. Served by the local controller
// beside the admin API and by a function URL in the deployment; the handler
// only adapts requests to this router. A node authenticates with its own
// credentials (HTTP Basic: node name and password, checked against the same
// hashes as on the broker) and reads only its own network's shared data:
// leases and the config with its secrets masked. Secrets reach a node only on
// its own MQTT topic.
import { gzipSync } from 'node:zlib';
import { publicConfig } from '../../core/config.js';
import { errorMessage } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { NAME_RE } from '../../core/topics.js';
import { CredentialsBusyError, type CredentialCheck } from '../auth/credentials.js';
import type { Store } from '../store/store.js';

export interface NodeApiRequest {
  method: string;
  /** path without the query string */
  path: string;
  query: URLSearchParams;
  headers: Record<string, string | undefined>;
}

export interface NodeApiResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

export interface NodeApiDeps {
  store: Store;
  credentials: CredentialCheck;
  log: Logger;
  /** snapshot pages answered in the last second, shared by the nodes of a network */
  cache?: SnapshotCache;
  now?: () => number;
}

/**
 * Snapshot pages, kept for a second. When a fleet joins or reconnects at
 * once, each member asks for the same pages within moments of the others;
 * building each (a page of 1,000 leases is ~400 KB of JSON to gzip) for every
 * one of 5,000 agents is 5,000 times the work. A page a second old is as good
 * as a new one: it says the revision it was read at, the agent starts from
 * the oldest of its pages, and the changes since then bring it up to date
 * (agent/watch.ts). Change answers are never cached: an agent asks for them
 * after subscribing, and must get everything up to then.
 */
export class SnapshotCache {
  private readonly pages = new Map<string, { at: number; res: NodeApiResponse }>();
  constructor(
    readonly ttlMs = 1000,
    private readonly maxPages = 256,
  ) {}

  get(key: string, now: number): NodeApiResponse | undefined {
    const hit = this.pages.get(key);
    if (hit && now - hit.at < this.ttlMs) return hit.res;
    if (hit) this.pages.delete(key);
    return undefined;
  }

  set(key: string, res: NodeApiResponse, now: number): void {
    if (this.pages.size >= this.maxPages) this.pages.delete(this.pages.keys().next().value as string);
    this.pages.set(key, { at: now, res });
  }
}

export const DEFAULT_PAGE = 1000;
export const MAX_PAGE = 5000;
/** leases' JSON in one snapshot page at most: 4 MB is 5.3 MB as base64, under a function URL's 6 MB */
export const MAX_PAGE_BYTES = 4 * 1024 * 1024;
/** Below this a body is sent as it is: gzip costs more than it saves. */
const GZIP_FROM = 1024;
/**
 * Leases' JSON is repetitive: level 3 makes a 5,000-lease page (1.4 MB) 101 KB
 * in under 3 ms, where the default level 6 takes 5 ms for 92 KB; in a join
 * storm the node API compresses a new snapshot for nearly every revision.
 */
const GZIP_LEVEL = 3;

const acceptsGzip = (req: NodeApiRequest) => /\bgzip\b/.test(req.headers['accept-encoding'] ?? '');

function reply(req: NodeApiRequest, status: number, value: unknown, extra: Record<string, string> = {}): NodeApiResponse {
  const text = Buffer.from(JSON.stringify(value) + '\n');
  const gzip = text.length >= GZIP_FROM && acceptsGzip(req);
  return {
    status,
    headers: { 'content-type': 'application/json', ...(gzip && { 'content-encoding': 'gzip' }), vary: 'accept-encoding', ...extra },
    body: gzip ? gzipSync(text, { level: GZIP_LEVEL }) : text,
  };
}

function problem(req: NodeApiRequest, status: number, error: string, extra: Record<string, string> = {}): NodeApiResponse {
  return reply(req, status, { error }, extra);
}

/** A whole number from the query, within bounds, or the default; a clear error otherwise. */
function intParam(q: URLSearchParams, name: string, dflt: number, min: number, max: number): number | string {
  const v = q.get(name);
  if (v === null) return dflt;
  if (!/^\d{1,15}$/.test(v) || Number(v) < min || Number(v) > max) return `query parameter ${name} must be a whole number from ${min} to ${max}, not ${JSON.stringify(v.slice(0, 40))}`;
  return Number(v);
}

function basicAuth(header: string | undefined): { node: string; password: string } | undefined {
  if (!header?.startsWith('Basic ')) return undefined;
  const text = Buffer.from(header.slice(6), 'base64').toString('utf8');
  const i = text.indexOf(':');
  return i > 0 ? { node: text.slice(0, i), password: text.slice(i + 1) } : undefined;
}

const ROUTE = /^\/v2\/networks\/([^/]+)\/(snapshot|changes)$/;

export async function handleNodeApi(req: NodeApiRequest, deps: NodeApiDeps): Promise<NodeApiResponse> {
  const m = ROUTE.exec(req.path);
  if (!m) return problem(req, 404, `no such endpoint: ${req.path.slice(0, 200)}`);
  if (req.method !== 'GET') return problem(req, 405, `${req.method} is not allowed on ${req.path}`, { allow: 'GET' });
  const network = m[1] as string;
  if (!NAME_RE.test(network)) return problem(req, 400, 'the network name in the path is not a valid name');
  const creds = basicAuth(req.headers.authorization);
  if (!creds) return problem(req, 401, 'missing node credentials: send HTTP Basic with the node name and its password', { 'www-authenticate': 'Basic realm="twill"' });
  try {
    const node = await deps.credentials.check(creds.node, creds.password);
    // One answer for an unknown node, a wrong password and another network's node.
    if (!node || node.network !== network) {
      deps.log.warn('snapshot refused', { node: NAME_RE.test(creds.node) ? creds.node : '(not a node name)', network });
      return problem(req, 403, 'these credentials are not those of a node of this network');
    }
    const net = await deps.store.getNetwork(network);
    if (!net) return problem(req, 404, `network ${network} does not exist`);
    const limit = intParam(req.query, 'limit', DEFAULT_PAGE, 1, MAX_PAGE);
    if (typeof limit === 'string') return problem(req, 400, limit);
    if (m[2] === 'changes') {
      const since = intParam(req.query, 'since', -1, 0, Number.MAX_SAFE_INTEGER);
      if (typeof since === 'string' || since < 0) return problem(req, 400, typeof since === 'string' ? since : 'query parameter since is required: the revision the agent holds');
      const run = await deps.store.changesSince(network, since, limit);
      if (!run) return problem(req, 410, `the change log of network ${network} no longer reaches back to revision ${since}: fetch the snapshot`);
      const changes = run.changes.map((c) => (c.config ? { revision: c.revision, config: true } : c));
      return reply(req, 200, { v: 2, network, revision: run.revision, changes, more: run.more });
    }
    const after = req.query.get('after') ?? undefined;
    if (after !== undefined && !NAME_RE.test(after)) return problem(req, 400, 'query parameter after must be a node name');
    const now = (deps.now ?? Date.now)();
    const key = [network, after ?? '', limit, acceptsGzip(req)].join('\0');
    const cached = deps.cache?.get(key, now);
    if (cached) return cached;
    // The revision is read before the page: whatever changes while an agent
    // pages through is among the changes since it (see agent/watch.ts).
    const listed = await deps.store.listLeasesPage(network, after, limit);
    // A page also ends before MAX_PAGE_BYTES of leases: the deployment's
    // function URL answers at most 6 MB, base64 included, whatever the
    // leases' backend data weigh.
    const page: typeof listed = [];
    let bytes = 0;
    for (const l of listed) {
      bytes += JSON.stringify(l).length + 1;
      if (page.length > 0 && bytes > MAX_PAGE_BYTES) break;
      page.push(l);
    }
    const next = page.length === limit || page.length < listed.length ? page[page.length - 1]!.node : null;
    const res = reply(req, 200, { v: 2, network, revision: net.revision, config: publicConfig(net.config), leases: page, next });
    deps.cache?.set(key, res, now);
    return res;
  } catch (e) {
    if (e instanceof CredentialsBusyError) return problem(req, 503, e.message, { 'retry-after': '1' });
    deps.log.error('snapshot failed', { network, reason: errorMessage(e) });
    return problem(req, 500, 'internal error: see the controller log');
  }
}
