// bench/fanout: what one event costs the control plane at N = 100, 1,000 and
// 10,000 nodes under protocol v2, counted as AWS IoT Core bills it, through
// the real controller, store (SQLite) and node API router. Light in-process
// agents speak the agent's side of the protocol (agent/watch.ts): exact
// subscriptions, hello, list over the node API when they have no view, apply
// changes in revision order, catch up over the API on a gap, and send a
// status when its meaning changes (revision-only news at most every 10 minutes).
// The broker between them is a meter: it delivers each publish to the exact
// topics subscribed (retained ones on subscribe) and counts.
//
// IoT Core's metering ("AWS IoT Core additional metering details",
// aws.amazon.com/iot-core/pricing/additional-details): every message in 5 KB
// units of topic and payload; a PUBLISH from a device, a PUBLISH the service
// sends, a PUBACK a device returns (one unit each, at QoS 1), a CONNECT, a
// SUBSCRIBE; a retained publish is metered again as RETAINED; an HTTP publish
// (the functions' IotPublisher) by its body. PUBACKs the service sends, SUBACK
// and CONNACK are free.
//
// Invocations: each message an agent publishes runs an IoT rule and a Lambda
// (functions/iot.ts); each node API request is one function URL
// call; the custom authorizer runs on every CONNECT and once an hour on a live
// connection (refreshAfterInSeconds 3600); IoT Core ends every connection
// after a day (disconnectAfterInSeconds 86,400), and the broker then
// publishes the agent's will.
//
// Run: node --import tsx bench/fanout.ts [sizes, default 100,1000,10000]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { parseNetConf } from '../core/config.js';
import type { Lease } from '../core/lease.js';
import { silentLogger } from '../core/log.js';
import {
  changesIn, changesMessageSchema, changesPageSchema, MAX_CHANGES_BYTES, netConfigSchema, nodeLeaseSchema, parseMessage, snapshotPageSchema,
  type ChangeMessage, type Hello, type Status,
} from '../core/messages.js';
import { Topics } from '../core/topics.js';
import { VERSION } from '../core/version.js';
import { Controller } from '../control/controller/controller.js';
import { hashPassword, VerifiedCredentials } from '../control/auth/credentials.js';
import { handleNodeApi, type NodeApiDeps } from '../control/http/node-api.js';
import type { Publisher } from '../control/publish/publisher.js';
import { SqliteStore } from '../control/store/sqlite.js';
import type { Store } from '../control/store/store.js';

const SIZES = (process.argv[2] ?? '100,1000,10000').split(',').map(Number);
const NET = 'bench';
const PASSWORD = 'bench-password-shared-by-every-light-agent';
const UNIT = 5 * 1024;
/** the agent's periodic poll of the node API: uniformly 5 to 10 minutes (agent/watch.ts) */
const POLLS_PER_DAY = (24 * 60) / 7.5;
const AUTHORIZER_REFRESHES_PER_DAY = 23;
const SCHEDULE_RUNS_PER_DAY = 24 * 60;
/** agent/agent.ts REVISION_STATUS_MS */
const STATUS_EVERY_MS = 10 * 60_000;

const units = (bytes: number) => Math.max(1, Math.ceil(bytes / UNIT));

interface Count {
  published: number;
  delivered: number;
  iot: number;
  invocations: number;
  writes: number;
  apiBytes: number;
  /** of the published, statuses (revision-only ones at most one per agent per interval) */
  statuses: number;
}
const zero = (): Count => ({ published: 0, delivered: 0, iot: 0, invocations: 0, writes: 0, apiBytes: 0, statuses: 0 });

/** The broker as IoT Core would meter it; exact-topic subscriptions only, as the agents make. */
class MeterBroker implements Publisher {
  c = zero();
  readonly subs = new Map<string, Set<LightAgent>>();
  readonly retainedMsgs = new Map<string, string>();
  /** agents' messages wait here until the one being handled is done, as on a real broker */
  private readonly inbox: (() => Promise<void>)[] = [];
  controller!: Controller;

  async publish(topic: string, payload: string, retain: boolean): Promise<void> {
    const size = Buffer.byteLength(topic) + Buffer.byteLength(payload);
    this.c.published++;
    this.c.iot += units(Buffer.byteLength(payload)) + (retain ? units(size) : 0);
    if (retain) {
      if (payload === '') this.retainedMsgs.delete(topic);
      else this.retainedMsgs.set(topic, payload);
    }
    for (const a of this.subs.get(topic) ?? []) this.deliver(a, topic, payload);
  }

  private deliver(a: LightAgent, topic: string, payload: string): void {
    this.c.delivered++;
    // the PUBLISH sent, and the device's PUBACK (QoS 1)
    this.c.iot += units(Buffer.byteLength(topic) + Buffer.byteLength(payload)) + 1;
    a.onMessage(topic, payload);
  }

  connect(a: LightAgent): void {
    this.c.iot += units(Buffer.byteLength(JSON.stringify(a.will)) + 200);
    this.c.invocations++; // the custom authorizer
  }

  subscribe(a: LightAgent, topics: string[]): void {
    this.c.iot += units(topics.reduce((n, t) => n + Buffer.byteLength(t), 0));
    for (const t of topics) {
      let s = this.subs.get(t);
      if (!s) this.subs.set(t, (s = new Set()));
      s.add(a);
    }
    for (const t of topics) {
      const r = this.retainedMsgs.get(t);
      if (r !== undefined) this.deliver(a, t, r);
    }
  }

  drop(a: LightAgent): void {
    for (const s of this.subs.values()) s.delete(a);
  }

  /** A message from an agent: metered in, then an IoT rule and a Lambda hand it to the controller. */
  fromAgent(topic: string, payload: string, retain: boolean): void {
    const size = Buffer.byteLength(topic) + Buffer.byteLength(payload);
    this.c.published++;
    this.c.iot += units(size) + (retain ? units(size) : 0);
    this.c.invocations++;
    this.inbox.push(() => this.controller.handleMessage(topic, Buffer.from(payload), 'bench'));
  }

  queue(task: () => Promise<void>): void {
    this.inbox.push(task);
  }

  /** Runs everything the event set off, one message at a time. */
  async settle(): Promise<void> {
    for (let task = this.inbox.shift(); task; task = this.inbox.shift()) await task();
  }
}

class LightAgent {
  revision = 0;
  lease?: Lease;
  api?: string;
  private syncing = false;
  /** a change arrived past a gap (the Watch's catching-up state) */
  private gap = false;
  private readonly held = new Map<number, ChangeMessage>();
  private lastMeaning = '';
  private lastRevisionSent = 0;
  private lastStatusAt = -Infinity;
  private pendingStatus = false;
  readonly will: Status = { v: 2, state: 'offline', agentVersion: VERSION, errors: [] };

  constructor(
    readonly node: string,
    private readonly i: number,
    private readonly w: World,
  ) {}

  get topics(): string[] {
    return this.w.topics.agentTopics(NET, this.node);
  }

  hello(): Hello {
    const i = this.i;
    return { v: 2, agentVersion: VERSION, publicIP: `172.16.${(i >> 8) & 255}.${i & 255}`, backendData: { VtepMAC: `0a:00:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}` } };
  }

  connect(): void {
    this.w.broker.connect(this);
    this.w.broker.subscribe(this, this.topics);
    this.sendHello();
    if (this.api) this.resync();
  }

  disconnect(): void {
    this.w.broker.drop(this);
    // the broker publishes the retained will (IoT Core ends the session: no DISCONNECT)
    this.w.broker.c.statuses++;
    this.w.broker.fromAgent(this.w.topics.nodeStatus(NET, this.node), JSON.stringify(this.will), true);
    this.lastMeaning = '';
  }

  sendHello(): void {
    this.w.broker.fromAgent(this.w.topics.nodeHello(NET, this.node), JSON.stringify(this.hello()), false);
  }

  onMessage(topic: string, payload: string): void {
    const t = this.w.topics.parse(topic);
    if (t?.kind === 'netConfig') {
      const m = parseMessage(netConfigSchema, Buffer.from(payload), 'config');
      if (this.revision > 0 && m.revision > this.revision) this.resync();
    } else if (t?.kind === 'netChanges') {
      for (const c of changesIn(parseMessage(changesMessageSchema, Buffer.from(payload), 'changes', MAX_CHANGES_BYTES))) {
        if (c.revision > this.revision) this.held.set(c.revision, c);
      }
      if (this.revision === 0 || this.syncing) return;
      this.drain();
      if (this.held.size) {
        this.gap = true;
        this.resync();
      }
    } else if (t?.kind === 'nodeLease') {
      const m = parseMessage(nodeLeaseSchema, Buffer.from(payload), 'own lease');
      if (m.api && m.api !== this.api) {
        this.api = m.api;
        if (this.revision === 0) this.resync();
      }
      if (m.lease) this.lease = m.lease as Lease;
      this.status();
    }
  }

  private drain(): void {
    for (let c = this.held.get(this.revision + 1); c; c = this.held.get(this.revision + 1)) {
      this.held.delete(c.revision);
      this.revision = c.revision;
    }
    for (const r of this.held.keys()) if (r <= this.revision) this.held.delete(r);
    this.status();
  }

  private resync(): void {
    if (this.syncing) return;
    this.syncing = true;
    this.w.broker.queue(async () => {
      if (this.revision === 0) {
        let after: string | null = null;
        let start: number | undefined;
        do {
          const page = snapshotPageSchema.parse(await this.w.get(this.node, `snapshot?limit=1000${after ? `&after=${after}` : ''}`));
          start = Math.min(start ?? page.revision, page.revision);
          after = page.next;
        } while (after);
        this.revision = start as number;
      }
      for (;;) {
        const page = changesPageSchema.parse(await this.w.get(this.node, `changes?since=${this.revision}&limit=1000`));
        for (const c of page.changes) if (c.revision === this.revision + 1) this.revision = c.revision;
        if (!page.more) break;
      }
      this.syncing = false;
      this.gap = false;
      this.drain();
      this.held.clear();
      this.status();
    });
  }

  /** The agent's status rule (agent/agent.ts): on a change of meaning at once, revision-only news at most every 10 minutes. */
  status(flush = false): void {
    const inSync = this.revision > 0 && !this.gap;
    const meaning = JSON.stringify({ online: true, inSync, subnet: this.lease?.subnet });
    if (meaning !== this.lastMeaning) {
      this.lastMeaning = meaning;
      return this.sendStatus(inSync);
    }
    if (this.revision === this.lastRevisionSent) return;
    if (flush || this.w.now() - this.lastStatusAt >= STATUS_EVERY_MS) this.sendStatus(inSync);
    else this.pendingStatus = true;
  }

  flushStatus(): void {
    if (this.pendingStatus) this.status(true);
  }

  private sendStatus(inSync: boolean): void {
    this.w.broker.c.statuses++;
    this.pendingStatus = false;
    this.lastRevisionSent = this.revision;
    this.lastStatusAt = this.w.now();
    const s: Status = { v: 2, state: 'online', agentVersion: VERSION, backend: 'vxlan', subnet: this.lease?.subnet ?? null, revision: this.revision, inSync, peers: 0, errors: [] };
    this.w.broker.fromAgent(this.w.topics.nodeStatus(NET, this.node), JSON.stringify(s), true);
  }
}

/** Store writes, counted where the controller calls them. */
function countStoreWrites(store: Store, c: () => Count): void {
  for (const m of ['createLease', 'replaceLease', 'renewLease', 'deleteLease', 'putNetwork', 'putStatus'] as const) {
    const orig = (store[m] as (...a: unknown[]) => Promise<unknown>).bind(store);
    (store as unknown as Record<string, unknown>)[m] = async (...a: unknown[]) => {
      c().writes++;
      return orig(...a);
    };
  }
}

class World {
  readonly topics = new Topics('twill');
  readonly broker = new MeterBroker();
  readonly agents: LightAgent[] = [];
  private clock = Date.parse('2026-12-01T00:00:00Z');
  controller!: Controller;
  private deps!: NodeApiDeps;

  constructor(
    readonly store: SqliteStore,
    private readonly hash: string,
  ) {}

  now = () => this.clock;

  async start(): Promise<void> {
    this.controller = new Controller(this.store, this.broker, { topics: this.topics, log: silentLogger, now: this.now, api: 'https://node-api.lambda-url.example/' });
    this.broker.controller = this.controller;
    countStoreWrites(this.store, () => this.broker.c);
    this.deps = { store: this.store, credentials: new VerifiedCredentials(this.store), log: silentLogger };
    await this.controller.applyNetwork(NET, parseNetConf({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'vxlan' } }));
  }

  async get(node: string, path: string): Promise<unknown> {
    const [p, q] = path.split('?') as [string, string];
    const r = await handleNodeApi(
      { method: 'GET', path: `/v2/networks/${NET}/${p}`, query: new URLSearchParams(q), headers: { authorization: `Basic ${Buffer.from(`${node}:${PASSWORD}`).toString('base64')}`, 'accept-encoding': 'gzip' } },
      this.deps,
    );
    this.broker.c.invocations++;
    this.broker.c.apiBytes += r.body.length;
    if (r.status !== 200) throw new Error(`node API ${path}: HTTP ${r.status} ${r.body.toString()}`);
    return JSON.parse((r.headers['content-encoding'] === 'gzip' ? gunzipSync(r.body) : r.body).toString('utf8'));
  }

  async addNode(i: number): Promise<LightAgent> {
    const node = `node-${i}`;
    await this.store.putNode({ name: node, network: NET, passwordHash: this.hash, createdAt: new Date(this.clock).toISOString() });
    const a = new LightAgent(node, i, this);
    this.agents.push(a);
    return a;
  }

  /** Lets the status interval pass: rate-limited statuses go out. */
  async statusInterval(): Promise<void> {
    this.clock += STATUS_EVERY_MS;
    for (const a of this.agents) a.flushStatus();
    await this.broker.settle();
  }

  /** Counts one event: what it publishes, delivers and writes until everything it set off is done. */
  async measure(what: () => Promise<void> | void): Promise<Count> {
    this.clock += 2 * STATUS_EVERY_MS;
    await this.broker.settle();
    this.broker.c = zero();
    await what();
    await this.broker.settle();
    await this.statusInterval();
    const c = this.broker.c;
    this.broker.c = zero();
    const net = await this.store.getNetwork(NET);
    const behind = this.agents.filter((a) => a.revision !== net?.revision).length;
    if (behind) throw new Error(`${behind} agents do not hold revision ${net?.revision}`);
    return c;
  }
}

async function run(n: number, hash: string): Promise<Record<string, Count>> {
  const dir = mkdtempSync(join(tmpdir(), 'twill-fanout-'));
  const store = new SqliteStore(join(dir, 'twill.db'));
  try {
    const w = new World(store, hash);
    await w.start();
    // The network of N-1 nodes, each agent listed (not counted), then one more joins.
    for (let i = 1; i < n; i++) await w.controller.join(NET, (await w.addNode(i)).node, w.agents[i - 1]!.hello());
    const rev = (await store.getNetwork(NET))!.revision;
    for (const a of w.agents) {
      a.revision = rev;
      a.api = w.controller.api;
      a.lease = await store.getLease(NET, a.node);
      w.broker.subscribe(a, a.topics);
    }
    await w.statusInterval();
    const out: Record<string, Count> = {};
    const newcomer = await w.addNode(n);
    out.join = await w.measure(() => newcomer.connect());
    const some = w.agents[Math.floor(n / 2)]!;
    out.renewal = await w.measure(() => some.sendHello());
    out.reconnect = await w.measure(() => {
      some.disconnect();
      some.connect();
    });
    out.poll = await w.measure(() => w.broker.queue(async () => void (await w.get(some.node, `changes?since=${some.revision}`))));
    out.restart = await w.measure(async () => {
      const fresh = new Controller(store, w.broker, { topics: w.topics, log: silentLogger, now: w.now, api: w.controller.api });
      await fresh.publishOnStart();
    });
    const leaver = w.agents.pop()!;
    w.broker.drop(leaver);
    out.leave = await w.measure(() => w.broker.queue(async () => void (await w.controller.release(NET, leaver.node))));
    // A day in steady state, per node: the renewal an hour before expiry, the
    // reconnect IoT Core forces (its hello renews too), the polls, and the
    // authorizer's hourly refreshes; per deployment, the scheduled task.
    const day = zero();
    for (const k of Object.keys(day) as (keyof Count)[]) {
      day[k] = n * (out.renewal![k] + out.reconnect![k] + POLLS_PER_DAY * out.poll![k]);
    }
    day.invocations += n * AUTHORIZER_REFRESHES_PER_DAY + SCHEDULE_RUNS_PER_DAY;
    day.iot += SCHEDULE_RUNS_PER_DAY; // its GetRetainedMessage of the network config
    out.day = day;
    return out;
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const fmt = (x: number) => (x >= 100 ? Math.round(x).toLocaleString('en-US') : String(Math.round(x * 10) / 10));

async function main(): Promise<void> {
  const hash = await hashPassword(PASSWORD);
  const results = new Map<number, Record<string, Count>>();
  for (const n of SIZES) {
    const t0 = performance.now();
    results.set(n, await run(n, hash));
    console.error(`N=${n}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  const events = ['join', 'leave', 'renewal', 'reconnect', 'poll', 'restart', 'day'];
  const cols: [keyof Count, string][] = [['published', 'published'], ['delivered', 'delivered'], ['iot', 'IoT metered'], ['invocations', 'invocations'], ['writes', 'store writes'], ['apiBytes', 'node API bytes'], ['statuses', 'of which statuses']];
  console.log('\nbench/fanout: per event, protocol v2 (IoT metered = messages as IoT Core bills them)\n');
  console.log(`| event | N | ${cols.map((c) => c[1]).join(' | ')} |`);
  console.log(`|---|---|${cols.map(() => '---|').join('')}`);
  for (const e of events) {
    for (const n of SIZES) {
      const c = results.get(n)![e]!;
      console.log(`| ${e} | ${n.toLocaleString('en-US')} | ${cols.map(([k]) => fmt(c[k])).join(' | ')} |`);
    }
  }
  console.log('\nper node per day (a day divided by N):\n');
  console.log(`| N | ${cols.map((c) => c[1]).join(' | ')} |`);
  console.log(`|---|${cols.map(() => '---|').join('')}`);
  for (const n of SIZES) {
    const c = results.get(n)!.day!;
    console.log(`| ${n.toLocaleString('en-US')} | ${cols.map(([k]) => fmt(c[k] / n)).join(' | ')} |`);
  }
}

await main();
