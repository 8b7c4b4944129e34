// A worker of bench/storm.ts: many agents in one process, with no backend
// behind them. It reports to the parent how many hold the view the parent
// expects, how many hellos they sent, and their subnets. Two kinds:
//   watch  the agent's real watch (agent/watch/): its MQTT session, hello
//          and renewal with backoff, list over the node API, changes in
//          revision order, every message validated, every peer's lease kept
//   light  the same protocol and the same timers in a few lines, keeping a
//          revision per peer and validating nothing: 5,000 real watches
//          hold 25 million leases (some 15 GB) and validate as many, work
//          that a real fleet spreads over 5,000 machines and that here
//          would be the bench's own bottleneck, not the control plane's.
import mqtt from 'mqtt';
import { gunzipSync } from 'node:zlib';
import { nodeClientId } from '../core/acl.js';
import { silentLogger } from '../core/log.js';
import type { Hello, Status } from '../core/messages.js';
import { Topics } from '../core/topics.js';
import { VERSION } from '../core/version.js';
import { Watch, type View } from '../agent/watch/watch.js';

export interface StartCmd {
  cmd: 'start';
  kind: 'watch' | 'light';
  broker: string;
  password: string;
  network: string;
  agents: { node: string; i: number }[];
}
/** what "complete" means from now on */
export interface ExpectCmd {
  cmd: 'expect';
  peers: number;
  without?: string;
  /** a new session after this command is needed too (the broker went away) */
  reconnect: boolean;
}
export type WorkerCmd = StartCmd | ExpectCmd | { cmd: 'stop'; node?: string } | { cmd: 'leases' };
export interface WorkerReport {
  /** how many expect commands this worker had when it counted */
  epoch: number;
  complete: number;
  agents: number;
  hellos: number;
  /** why the others are not complete yet: no lease, listing, catching up, peers short */
  why?: Record<string, number>;
  leases?: [string, string | null][];
}

/** What the worker needs of an agent, whichever kind. */
interface Agent {
  view(): Pick<View, 'state' | 'revision'> & { lease?: { subnet: string | null }; peers: { size: number; has(node: string): boolean } };
  readonly connected: boolean;
  start(): void;
  stop(): Promise<void>;
}

interface Light {
  node: string;
  watch: Agent;
  sessions: number;
  needSessions: number;
}

const jitter = (ms: number) => Math.round(ms / 2 + Math.random() * (ms / 2));
const HELLO_RETRY_MS = 5_000;

/**
 * The light agent: the agent's watch protocol (agent/watch/) and timers (exact
 * subscriptions, a hello on connect asked again after 5-10 s and doubling to
 * 60 s, list then changes, the gap rule, a status when in sync), peers kept
 * as revisions.
 */
class LightAgent implements Agent {
  private client?: mqtt.MqttClient;
  private readonly peers = new Map<string, number>();
  private lease?: { subnet: string | null; revision: number };
  private revision = 0;
  private state: View['state'] = 'listing';
  private readonly held = new Map<number, { revision: number; node?: string; lease?: { revision: number } | null }>();
  private api?: string;
  private syncing = false;
  private again = false;
  private helloTimer?: NodeJS.Timeout;
  private helloBackoff = HELLO_RETRY_MS;
  private sentInSync = false;
  private stopped = false;
  private listBackoff = 500;

  constructor(
    private readonly o: { broker: string; network: string; node: string; password: string; hello: () => Hello; onSession: () => void },
  ) {}

  get connected(): boolean {
    return this.client?.connected ?? false;
  }

  view() {
    return { state: this.state, revision: this.revision, lease: this.lease, peers: this.peers };
  }

  start(): void {
    const o = this.o;
    const will: Status = { v: 2, state: 'offline', agentVersion: VERSION, errors: [] };
    const c = mqtt.connect(o.broker, {
      clientId: nodeClientId(topics.prefix, o.network, o.node), username: o.node, password: o.password, clean: true, reconnectPeriod: 1000, connectTimeout: 10_000,
      will: { topic: topics.nodeStatus(o.network, o.node), payload: Buffer.from(JSON.stringify(will)), qos: 1, retain: true },
    });
    this.client = c;
    let attempt = 0;
    c.on('close', () => { c.options.reconnectPeriod = jitter(Math.min(30_000, 500 * 2 ** Math.min(attempt++, 10))); });
    c.on('error', () => {});
    c.on('connect', () => {
      attempt = 0;
      this.sentInSync = false;
      c.subscribe(topics.agentTopics(o.network, o.node), { qos: 1 }, (err) => {
        if (err || this.stopped) return;
        o.onSession();
        this.sendHello();
        this.resync();
      });
    });
    c.on('message', (topic, payload) => this.onMessage(topic, payload));
  }

  private onMessage(topic: string, payload: Buffer): void {
    const t = topics.parse(topic);
    const m = JSON.parse(payload.toString('utf8'));
    if (t?.kind === 'netConfig') {
      if (this.revision > 0 && m.revision > this.revision) this.resync();
    } else if (t?.kind === 'netChanges') {
      // kept as what applying needs, not the lease: a storm's worth held by each of thousands of agents
      for (const ch of m.changes ?? [m]) if (ch.revision > this.revision) this.held.set(ch.revision, { revision: ch.revision, node: ch.node, lease: ch.lease ? { revision: ch.lease.revision } : ch.lease });
      if (this.revision === 0 || this.syncing) return;
      this.drain();
      if (this.held.size) {
        this.state = 'catching-up';
        this.resync();
      }
    } else if (t?.kind === 'nodeLease') {
      if (m.api && m.api !== this.api) {
        this.api = m.api;
        if (this.state !== 'in-sync') this.resync();
      }
      if (m.lease && this.lease && m.lease.revision < this.lease.revision) return;
      if (this.helloTimer) clearTimeout(this.helloTimer);
      this.helloTimer = undefined;
      if (m.error) {
        this.helloTimer = setTimeout(() => this.sendHello(), 10_000);
      } else if (!m.lease) {
        this.lease = undefined;
        this.sendHello();
      } else {
        this.lease = m.lease;
        this.helloBackoff = HELLO_RETRY_MS;
        this.status();
      }
    }
  }

  private drain(): void {
    for (let c = this.held.get(this.revision + 1); c; c = this.held.get(this.revision + 1)) {
      this.held.delete(c.revision);
      this.apply(c);
    }
    for (const r of this.held.keys()) if (r <= this.revision) this.held.delete(r);
  }

  private apply(c: { revision: number; node?: string; lease?: { revision: number } | null }): void {
    this.revision = c.revision;
    if (!c.node || c.node === this.o.node) return;
    if (c.lease) {
      if ((this.peers.get(c.node) ?? -1) <= c.lease.revision) this.peers.set(c.node, c.lease.revision);
    } else this.peers.delete(c.node);
  }

  private resync(): void {
    if (this.stopped || !this.api) return;
    if (this.syncing) {
      this.again = true;
      return;
    }
    this.syncing = true;
    void (async () => {
      try {
        do {
          this.again = false;
          if (this.revision === 0) {
            this.state = 'listing';
            const seen = new Map<string, number>();
            let after: string | null = null;
            let start = Infinity;
            do {
              const page = await this.get(`snapshot?limit=1000${after ? `&after=${after}` : ''}`);
              start = Math.min(start, page.revision);
              for (const l of page.leases) seen.set(l.node, l.revision);
              after = page.next;
            } while (after);
            this.peers.clear();
            for (const [n, r] of seen) if (n !== this.o.node) this.peers.set(n, r);
            this.revision = start;
          }
          for (;;) {
            const page = await this.get(`changes?since=${this.revision}&limit=1000`);
            for (const c of page.changes) if (c.revision === this.revision + 1) this.apply(c);
            if (!page.more) break;
          }
          this.drain();
        } while (this.again);
        this.held.clear();
        this.state = 'in-sync';
        this.listBackoff = 500;
        this.status();
      } catch {
        setTimeout(() => this.resync(), jitter(this.listBackoff));
        this.listBackoff = Math.min(this.listBackoff * 2, 30_000);
      } finally {
        this.syncing = false;
      }
    })();
  }

  private async get(path: string): Promise<any> {
    const o = this.o;
    const res = await fetch(`${this.api!.replace(/\/$/, '')}/v2/networks/${o.network}/${path}`, {
      headers: { authorization: `Basic ${Buffer.from(`${o.node}:${o.password}`).toString('base64')}`, 'accept-encoding': 'gzip' },
      signal: AbortSignal.timeout(30_000),
    });
    if (res.status === 410) {
      this.revision = 0;
      throw new Error('gone');
    }
    if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
    // fetch undoes the gzip itself
    const body = Buffer.from(await res.arrayBuffer());
    return JSON.parse((body[0] === 0x1f && body[1] === 0x8b ? gunzipSync(body) : body).toString('utf8'));
  }

  private sendHello(): void {
    const c = this.client;
    if (!c?.connected || this.stopped) return;
    c.publish(topics.nodeHello(this.o.network, this.o.node), JSON.stringify(this.o.hello()), { qos: 1 });
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = setTimeout(() => this.sendHello(), jitter(this.helloBackoff * 2));
    this.helloBackoff = Math.min(this.helloBackoff * 2, 60_000);
  }

  /** The agent's status rule, reduced to its meaning: online and in sync, once. */
  private status(): void {
    if (this.sentInSync || this.state !== 'in-sync' || !this.lease || !this.client?.connected) return;
    this.sentInSync = true;
    const s: Status = { v: 2, state: 'online', agentVersion: VERSION, subnet: this.lease.subnet, revision: this.revision, inSync: true, peers: this.peers.size, errors: [] };
    this.client.publish(topics.nodeStatus(this.o.network, this.o.node), JSON.stringify(s), { qos: 1, retain: true });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.client?.end(true);
  }
}

const topics = new Topics();
const lights = new Map<string, Light>();
let hellos = 0;
let expect: ExpectCmd = { cmd: 'expect', peers: 0, reconnect: false };
let epoch = 0;

function start(c: StartCmd): void {
  for (const { node, i } of c.agents) {
    const l: Light = { node, sessions: 0, needSessions: 0, watch: undefined as unknown as Agent };
    const hello = (): Hello => ({ v: 2, agentVersion: VERSION, publicIP: `172.16.${(i >> 8) & 255}.${i & 255}`, backendData: { VtepMAC: `0a:00:00:00:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}` } });
    const counted = () => {
      if (l.watch.connected) hellos++;
      return hello();
    };
    l.watch = c.kind === 'light'
      ? new LightAgent({ broker: c.broker, network: c.network, node, password: c.password, hello: counted, onSession: () => l.sessions++ })
      : new Watch(
        {
          broker: c.broker, username: node, password: c.password, network: c.network, node, clientId: nodeClientId(topics.prefix, c.network, node),
          topics, log: silentLogger, helloRetryMs: HELLO_RETRY_MS, renewMarginMs: 3600_000, pollMs: 300_000,
          will: { v: 2, state: 'offline', agentVersion: VERSION, errors: [] },
        },
        {
          hello: counted,
          sharedConfig: () => {},
          own: () => {},
          viewChanged: () => {},
          problem: (kind, problem) => {
            if (kind === 'session' && problem === undefined) l.sessions++;
          },
        },
      );
    lights.set(node, l);
    l.watch.start();
  }
}

function complete(l: Light): boolean {
  const v = l.watch.view();
  return v.state === 'in-sync' && !!v.lease && v.peers.size === expect.peers && !(expect.without && v.peers.has(expect.without)) && l.sessions >= l.needSessions;
}

process.on('message', (m: WorkerCmd) => {
  if (m.cmd === 'start') start(m);
  else if (m.cmd === 'expect') {
    expect = m;
    epoch++;
    for (const l of lights.values()) l.needSessions = m.reconnect ? l.sessions + 1 : 0;
  } else if (m.cmd === 'stop') {
    for (const l of [...lights.values()].filter((x) => !m.node || x.node === m.node)) {
      void l.watch.stop();
      lights.delete(l.node);
    }
    if (!m.node) setTimeout(() => process.exit(0), 2500).unref();
  } else if (m.cmd === 'leases') {
    process.send?.({ epoch, complete: -1, agents: lights.size, hellos, leases: [...lights.values()].map((l) => [l.node, l.watch.view().lease?.subnet ?? null]) } satisfies WorkerReport);
  }
});

setInterval(() => {
  let n = 0;
  const why: Record<string, number> = {};
  for (const l of lights.values()) {
    if (complete(l)) n++;
    else {
      const v = l.watch.view();
      const k = !v.lease ? 'no lease' : v.state !== 'in-sync' ? v.state : v.peers.size < expect.peers ? 'peers short' : v.peers.size > expect.peers ? 'peers over' : 'no new session';
      why[k] = (why[k] ?? 0) + 1;
    }
  }
  process.send?.({ epoch, complete: n, agents: lights.size, hellos, why } satisfies WorkerReport);
}, 1000);
