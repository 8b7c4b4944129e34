// The agent's view of its network, kept by list-then-watch (Kubernetes
// informers, flannel's etcd watch): subscribe to the network's changes
// first, list the network over the node API (control/http/node-api.ts) at some
// revision R, apply the changes newer than R, and from then on apply each
// change whose revision is the next one. A change that skips a revision (a
// message lost by a broker, or published out of order by two controllers)
// is held back and the missing ones are fetched from the API (`since`); a
// change log that no longer reaches back means listing again. The view is
// complete by construction: there is no "wait a while, then go ahead".
//
// Everything the agent needs arrives on exact topics (its network's config,
// its changes, its own lease), so brokers that send no retained message to a
// wildcard subscription (AWS IoT Core) serve it as well as any other. The
// same session says hello (join and renew, with backoff) and carries the
// agent's status with a last will.
//
// A reconnect keeps the view: the agent asks for the changes since its
// revision, which costs one small request, and nobody else anything.
import mqtt from 'mqtt';
import { errorMessage } from '../core/errors.js';
import type { Lease } from '../core/lease.js';
import type { Logger } from '../core/log.js';
import {
  changesIn, changesMessageSchema, changesPageSchema, MAX_CHANGES_BYTES, netConfigSchema, nodeLeaseSchema, parseMessage, snapshotPageSchema,
  type ChangeMessage, type Hello, type Status,
} from '../core/messages.js';
import type { Topics } from '../core/topics.js';
import { brokerConnection, type BrokerOptions } from './connect.js';

export type WatchState =
  /** no complete view yet: connecting, waiting for the API's address, or listing */
  | 'listing'
  /** the view is complete at the newest revision known */
  | 'in-sync'
  /** the view is complete at some revision, and newer changes are being fetched */
  | 'catching-up';

/** What the watch hands the agent: one consistent view. */
export interface View {
  /** the node's own lease, from its own topic */
  lease?: Lease;
  /** every other node's lease */
  peers: ReadonlyMap<string, Lease>;
  /** the network revision the view is complete at (0: no complete view yet) */
  revision: number;
  state: WatchState;
}

export interface WatchOptions extends BrokerOptions {
  network: string;
  node: string;
  clientId: string;
  topics: Topics;
  log: Logger;
  /** ask again when a hello gets no answer in this time */
  helloRetryMs: number;
  /** renew when less than this is left of the lease */
  renewMarginMs: number;
  /** how often the agent asks the API for changes it may have missed (lost at the end of a burst) */
  pollMs: number;
  /** the retained status the broker sets when the session dies */
  will: Status;
  /** what to say in a hello; undefined while the agent cannot say yet (no backend) */
  hello(previous?: Lease): Hello | undefined;
  /** the lease the agent held before this process, asked for again */
  previous?: Lease;
}

export interface WatchHooks {
  /** the network's shared config (secrets masked) */
  onConfig(config: Record<string, unknown>, revision: number): void;
  /** the node's own topic: its lease, the full config, or why it has none */
  onOwn(msg: { lease: Lease | null; config?: Record<string, unknown>; error?: string }): void;
  /** the view changed: these peers (or 'all' after a list) */
  onView(changed: ReadonlySet<string> | 'all'): void;
  /** a problem the operator should see, or undefined when it is over */
  onProblem(kind: 'session' | 'list' | 'identity', problem: string | undefined): void;
}

const MAX_BACKOFF_MS = 30_000;
/** at least this long between two CONNECTs of this client id (reconnectDelay) */
const MIN_CONNECT_GAP_MS = 1000;
/** a session that ends sooner than this after it began is a short one... */
const SHORT_SESSION_MS = 10_000;
/** ...and this many short ones within a minute suggest a second process with this node's config */
const IDENTITY_SUSPECT = 3;
const IDENTITY_WINDOW_MS = 60_000;
const PAGE = 1000;
/** changes held while listing or waiting for a missing revision; past this, list again */
const MAX_BUFFER = 100_000;
/** an HTTP answer larger than this is refused: 5,000 leases are well under 4 MB */
const MAX_HTTP_BYTES = 64 * 1024 * 1024;
const HTTP_TIMEOUT_MS = 30_000;

const jitter = (ms: number) => Math.round(ms / 2 + Math.random() * (ms / 2));

export class Watch {
  private client?: mqtt.MqttClient;
  private readonly peers = new Map<string, Lease>();
  private lease?: Lease;
  private revision = 0;
  private state: WatchState = 'listing';
  /** changes that arrived before the list, or after a gap, by revision */
  private readonly held = new Map<number, ChangeMessage>();
  private api?: string;
  private syncing?: Promise<void>;
  private resyncAgain = false;
  private listBackoff = 500;
  private helloTimer?: NodeJS.Timeout;
  private helloBackoff: number;
  private renewJitter = Math.random() / 2;
  private readonly timers: NodeJS.Timeout[] = [];
  private reconnectAttempt = 0;
  private stopped = false;

  constructor(
    private readonly opts: WatchOptions,
    private readonly hooks: WatchHooks,
  ) {
    this.helloBackoff = opts.helloRetryMs;
  }

  private connectedAt: number | undefined;
  private shortSessions: number[] = [];
  private identityReportedAt = -Infinity;
  private identityTimer: NodeJS.Timeout | undefined;

  view(): View {
    return { lease: this.lease, peers: this.peers, revision: this.revision, state: this.state };
  }

  get connected(): boolean {
    return this.client?.connected ?? false;
  }

  start(): void {
    const o = this.opts;
    const conn = brokerConnection(o, {
      clientId: o.clientId,
      clean: true,
      reconnectPeriod: 1000,
      // A refused login (a rotated password, a broker not yet told of the
      // node) is tried again with the same backoff, never given up on.
      reconnectOnConnackError: true,
      connectTimeout: 10_000,
      will: { topic: o.topics.nodeStatus(o.network, o.node), payload: Buffer.from(JSON.stringify(o.will)), qos: 1, retain: true },
    });
    const client = mqtt.connect(conn.url, conn.options);
    this.client = client;
    client.on('connect', () => void this.onConnect());
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    // Ahead of mqtt.js's own 'close' listener, which arms the reconnect
    // timer with reconnectPeriod as it stands: set after it, each delay
    // would apply one reconnect late.
    client.prependListener('close', () => {
      this.noteShortSession();
      client.options.reconnectPeriod = this.reconnectDelay();
    });
    client.on('error', (e) => {
      o.log.warn('broker connection error', { reason: e.message });
      this.hooks.onProblem('session', `broker: ${e.message}`);
    });
    this.timers.push(setInterval(() => this.maybeRenew(), Math.max(250, Math.min(60_000, o.renewMarginMs / 4))));
    const poll = () => {
      this.timers.push(setTimeout(() => {
        if (this.revision > 0) this.resync();
        poll();
      }, jitter(o.pollMs * 2)));
    };
    poll();
  }

  /**
   * How long after a connection closed to send the next CONNECT: at least
   * MIN_CONNECT_GAP_MS, then exponential backoff with jitter, so a fleet does
   * not reconnect in lockstep. IoT Core takes one CONNECT a second per client
   * id and throttles the rest (quotas page: "Connect requests per second per
   * client ID", 1, not adjustable; CloudWatch counts them as
   * Connect.ClientIDThrottle). Counted from the close, which comes after IoT
   * Core had the last CONNECT, however long each TLS handshake took: a
   * refused login or a session cut at once is never retried inside that second.
   */
  private reconnectDelay(): number {
    const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(this.reconnectAttempt++, 10));
    return MIN_CONNECT_GAP_MS + jitter(base);
  }

  /**
   * A session the broker ends soon after it began, again and again, is what
   * another process logging in with this node's config does (each login
   * takes over the other's session): said in the log and the status, once a
   * minute, while it lasts.
   */
  private noteShortSession(): void {
    const now = Date.now();
    if (this.connectedAt === undefined || this.stopped) return;
    const lived = now - this.connectedAt;
    this.connectedAt = undefined;
    if (lived > SHORT_SESSION_MS) return;
    this.shortSessions = [...this.shortSessions.filter((t) => now - t < IDENTITY_WINDOW_MS), now];
    if (this.shortSessions.length < IDENTITY_SUSPECT) return;
    const problem = `the broker ended this node's session ${this.shortSessions.length} times within a minute, each soon after it began: another process may be using node ${this.opts.node}'s config`;
    this.hooks.onProblem('identity', problem);
    if (now - this.identityReportedAt >= IDENTITY_WINDOW_MS) {
      this.identityReportedAt = now;
      this.opts.log.warn(problem, { node: this.opts.node });
    }
  }

  private async onConnect(): Promise<void> {
    const client = this.client;
    if (!client || this.stopped) return void client?.end(true);
    this.reconnectAttempt = 0;
    const at = (this.connectedAt = Date.now());
    // A session that lasts a whole window: whoever shared the identity has stopped.
    clearTimeout(this.identityTimer);
    this.identityTimer = setTimeout(() => {
      if (this.connectedAt !== at || !this.shortSessions.length) return;
      this.shortSessions = [];
      this.hooks.onProblem('identity', undefined);
    }, IDENTITY_WINDOW_MS);
    this.identityTimer.unref();
    const o = this.opts;
    o.log.info('connected to broker', { broker: o.broker });
    try {
      // One SUBSCRIBE, exact topics: within IoT Core's 8 filters per SUBSCRIBE and 50 per connection.
      await client.subscribeAsync(o.topics.agentTopics(o.network, o.node), { qos: 1 });
      this.hooks.onProblem('session', undefined);
    } catch (e) {
      // A refused subscription (granted 128) means the credentials are not for this node and network.
      this.hooks.onProblem('session', `broker refused the subscriptions (${errorMessage(e)}): check network and node in the agent config`);
      return;
    }
    this.sendHello();
    // Changes that arrive from now on are held until the view catches up with them.
    this.resync();
  }

  private onMessage(topic: string, payload: Buffer): void {
    const o = this.opts;
    const t = o.topics.parse(topic);
    if (!t || t.network !== o.network) return;
    // A zero-byte message is a retained one being deleted (MQTT 3.1.1
    // §3.3.1.3): the controller clears a released lease's topic that way and
    // says "no lease" in a message of its own.
    if (payload.length === 0) return;
    try {
      if (t.kind === 'netConfig') {
        const msg = parseMessage(netConfigSchema, payload, 'network config');
        this.hooks.onConfig(msg.config, msg.revision);
        // The config carries the network's revision when it was published (on
        // every controller start too): past the view, something was missed.
        if (this.revision > 0 && msg.revision > this.revision) this.resync();
      } else if (t.kind === 'netChanges') {
        for (const c of changesIn(parseMessage(changesMessageSchema, payload, 'changes', MAX_CHANGES_BYTES))) this.onChange(c);
      } else if (t.kind === 'nodeLease' && t.node === o.node) {
        this.onOwn(payload);
      }
    } catch (e) {
      o.log.warn('message refused', { topic, reason: errorMessage(e) });
    }
  }

  private onOwn(payload: Buffer): void {
    const msg = parseMessage(nodeLeaseSchema, payload, 'own lease');
    if (msg.api && msg.api !== this.api) {
      this.api = msg.api;
      if (this.revision === 0 || this.state !== 'in-sync') this.resync();
    }
    const lease = msg.lease as Lease | null;
    // A late retained copy of an older lease is no news.
    if (lease && this.lease && lease.revision < this.lease.revision) return;
    this.clearHelloTimer();
    if (msg.error) {
      this.hooks.onOwn({ lease, config: msg.config, error: msg.error });
      // Ask again later: the operator may fix the cause (add the node, free a subnet).
      this.armHello(Math.max(this.opts.helloRetryMs, 10_000));
      return;
    }
    if (!lease) {
      if (this.lease) this.opts.log.warn('lease removed by the controller: asking for a new one', { subnet: this.lease.subnet });
      this.lease = undefined;
      this.hooks.onOwn({ lease: null, config: msg.config });
      this.sendHello();
      return;
    }
    if (lease.node !== this.opts.node || lease.network !== this.opts.network) return;
    if (lease.expiresAt !== this.lease?.expiresAt) this.renewJitter = Math.random() / 2;
    this.lease = lease;
    this.helloBackoff = this.opts.helloRetryMs;
    this.hooks.onOwn({ lease, config: msg.config });
  }

  // ---- the view ----

  private onChange(c: ChangeMessage): void {
    if (c.revision <= this.revision) return;
    if (this.held.size >= MAX_BUFFER) {
      // Far behind (a broker flooding us, or a list that never finishes): start over.
      this.held.clear();
      this.revision = 0;
    }
    this.held.set(c.revision, c);
    // While listing or catching up, what arrives waits for the view.
    if (this.revision === 0 || this.syncing) return;
    this.drain();
    if (this.held.size > 0) {
      // a revision is missing: fetch what the broker did not bring
      this.opts.log.debug('change arrived past a gap', { have: this.revision, got: c.revision });
      this.state = 'catching-up';
      this.resync();
    }
  }

  /** Applies the held changes that follow the view without a gap. */
  private drain(): void {
    const changed = new Set<string>();
    for (let next = this.held.get(this.revision + 1); next; next = this.held.get(this.revision + 1)) {
      this.held.delete(next.revision);
      this.apply(next, changed);
    }
    for (const r of this.held.keys()) if (r <= this.revision) this.held.delete(r);
    if (changed.size) this.hooks.onView(changed);
  }

  private apply(c: ChangeMessage, changed: Set<string>): void {
    this.revision = c.revision;
    if (c.node === undefined || c.node === this.opts.node) return;
    const held = this.peers.get(c.node);
    if (c.lease) {
      if (held && held.revision > c.lease.revision) return;
      this.peers.set(c.node, c.lease as Lease);
    } else {
      this.peers.delete(c.node);
    }
    changed.add(c.node);
  }

  /** Lists (no view yet) or catches up (a view at some revision); one at a time. */
  private resync(): void {
    if (this.stopped) return;
    if (this.syncing) {
      this.resyncAgain = true;
      return;
    }
    this.syncing = (async () => {
      // (first yield, so that this.syncing is set before the finally below clears it)
      await null;
      try {
        do {
          this.resyncAgain = false;
          if (!this.api) continue; // told on the own topic, which asks again
          if (this.revision === 0) await this.list();
          else await this.catchUp();
          this.drain();
        } while (this.resyncAgain);
        if (this.revision === 0) return;
        // The store had every change the broker brought by the time it was asked.
        this.held.clear();
        this.state = 'in-sync';
        this.listBackoff = 500;
        this.hooks.onProblem('list', undefined);
      } catch (e) {
        const reason = errorMessage(e);
        this.opts.log.warn('could not read the network from the node API; trying again', { api: this.api, reason });
        this.hooks.onProblem('list', `node API ${this.api}: ${reason}`);
        const wait = jitter(this.listBackoff);
        this.listBackoff = Math.min(this.listBackoff * 2, MAX_BACKOFF_MS);
        this.timers.push(setTimeout(() => this.resync(), wait));
      } finally {
        this.syncing = undefined;
      }
    })();
  }

  private async list(): Promise<void> {
    this.state = 'listing';
    const leases = new Map<string, Lease>();
    let after: string | null = null;
    let start: number | undefined;
    do {
      const page = snapshotPageSchema.parse(await this.get(`snapshot?limit=${PAGE}${after ? `&after=${encodeURIComponent(after)}` : ''}`));
      // Whatever moved while the pages were read is among the changes since
      // the oldest page (pages may come from the API's cache, each read at
      // its own revision; changes since the oldest redo what any page lacks).
      start = Math.min(start ?? page.revision, page.revision);
      for (const l of page.leases) if (l.network === this.opts.network) leases.set(l.node, l as Lease);
      after = page.next;
    } while (after);
    this.peers.clear();
    for (const [node, l] of leases) if (node !== this.opts.node) this.peers.set(node, l);
    this.revision = start as number;
    await this.catchUp();
    this.opts.log.info('network listed', { revision: this.revision, peers: this.peers.size });
    this.hooks.onView('all');
  }

  private async catchUp(): Promise<void> {
    for (;;) {
      let page;
      try {
        page = changesPageSchema.parse(await this.get(`changes?since=${this.revision}&limit=${PAGE}`));
      } catch (e) {
        if (e instanceof GoneError) {
          this.opts.log.info('the change log no longer reaches back to this view: listing the network again', { revision: this.revision });
          this.revision = 0;
          return this.list();
        }
        throw e;
      }
      const changed = new Set<string>();
      for (const c of page.changes) if (c.revision === this.revision + 1) this.apply(c, changed);
      if (changed.size) this.hooks.onView(changed);
      if (!page.more) return;
    }
  }

  private async get(path: string): Promise<unknown> {
    const o = this.opts;
    const url = `${(this.api as string).replace(/\/$/, '')}/v2/networks/${encodeURIComponent(o.network)}/${path}`;
    const auth = `Basic ${Buffer.from(`${o.username ?? o.node}:${o.password ?? ''}`).toString('base64')}`;
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

  // ---- hello and renewal ----

  /** Says hello now (the agent's backend is ready, or its data changed). */
  sendHello(): void {
    const client = this.client;
    const hello = this.opts.hello(this.lease ?? this.opts.previous);
    if (!client?.connected || !hello || this.stopped) return;
    client.publish(this.opts.topics.nodeHello(this.opts.network, this.opts.node), JSON.stringify(hello), { qos: 1 }, (err) => {
      if (err) this.opts.log.warn('hello not sent', { reason: err.message });
    });
    this.armHello(jitter(this.helloBackoff * 2));
    this.helloBackoff = Math.min(this.helloBackoff * 2, 60_000);
  }

  private armHello(ms: number): void {
    this.clearHelloTimer();
    this.helloTimer = setTimeout(() => this.sendHello(), ms);
  }

  private clearHelloTimer(): void {
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = undefined;
  }

  private maybeRenew(): void {
    const exp = this.lease?.expiresAt;
    if (!exp || this.helloTimer) return;
    // Up to half the margin earlier, drawn per lease: a fleet whose leases were
    // granted in one storm does not renew in the same minute a day later.
    if (Date.parse(exp) - Date.now() < this.opts.renewMarginMs * (1 + this.renewJitter)) {
      this.opts.log.info('renewing lease', { expires: exp });
      this.sendHello();
    }
  }

  // ---- status ----

  async publishStatus(status: Status): Promise<void> {
    const client = this.client;
    if (!client?.connected) return;
    await client.publishAsync(this.opts.topics.nodeStatus(this.opts.network, this.opts.node), JSON.stringify(status), { qos: 1, retain: true }).catch(() => {});
  }

  /** Ends the session, each step bounded; the view stays as it is. */
  async stop(final?: Status): Promise<void> {
    this.stopped = true;
    this.clearHelloTimer();
    clearTimeout(this.identityTimer);
    for (const t of this.timers) clearTimeout(t);
    const client = this.client;
    if (final && client?.connected) await within(2000, this.publishStatus(final));
    await within(2000, client?.endAsync().catch(() => {}));
    // end() while the connection was still being made does not stop mqtt.js from completing it
    client?.end(true);
  }
}

class GoneError extends Error {
  constructor() {
    super('the change log no longer reaches back');
  }
}

/** Waits for p, or ms, whichever comes first: a shutdown step that may never end is abandoned. */
export async function within(ms: number, p: Promise<unknown> | undefined): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}
