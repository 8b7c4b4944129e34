// bench/fanout: what one event costs the control plane at N = 100, 1,000 and
// 10,000 nodes under protocol v2, counted as AWS bills it, and the monthly
// bill that follows (bench/cost.ts prices it), through the real controller,
// DynamoDB store and node API router. The store runs against the DynamoDB
// stand-in (test/fakes/dynamodb.ts), which meters read and write units per
// call as on-demand DynamoDB does, index writes included. Light in-process
// agents speak the agent's side of the protocol (agent/watch/): exact
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
// Every function invocation is counted by function, with the DynamoDB calls
// and HTTP publishes it makes, the log bytes it writes (twill's own lines,
// as the functions write them: JSON, INFO and up) and, for the node API, the
// bytes it sends to the internet. What cannot be measured here is modelled,
// and each model is named where it is used: a function's billed duration
// (MODEL_MS: in-region latencies of the calls it makes), a new TLS connection
// per node API request (TLS_BYTES), the queue's pollers.
//
// Run: node --import tsx bench/fanout.ts [sizes, default 100,1000,10000]
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { gunzipSync } from 'node:zlib';
import { parseNetConf } from '../core/config.js';
import type { Lease } from '../core/lease.js';
import { createLogger, type Logger } from '../core/log.js';
import {
  changesIn, changesMessageSchema, changesPageSchema, MAX_CHANGES_BYTES, netConfigSchema, nodeLeaseSchema, parseMessage, snapshotPageSchema,
  type ChangeMessage, type Hello, type Status,
} from '../core/messages.js';
import { Topics } from '../core/topics.js';
import { VERSION } from '../core/version.js';
import { authorize } from '../control/auth/authorizer.js';
import { Controller } from '../control/controller/controller.js';
import { hashPassword, VerifiedCredentials } from '../control/auth/credentials.js';
import { emitFabric } from '../control/metrics/cloudwatch.js';
import { RUN_LOCK } from '../control/lambda/schedule.js';
import { handleNodeApi, SnapshotCache, type NodeApiDeps } from '../control/http/node-api.js';
import type { Publisher } from '../control/publish/publisher.js';
import { createTasks, runTasks } from '../control/tasks/tasks.js';
import { createTable, DynamoStore } from '../control/store/dynamo.js';
import { startFakeDynamo, type FakeDynamo } from '../test/fakes/dynamodb.js';
import { addUsage, bill, dollars, emptyUsage, FIXED, total, type FunctionUse, type Usage } from './cost.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

const SIZES = (process.argv[2] ?? '100,1000,10000').split(',').map(Number);
const NET = 'bench';
const TABLE = 'twill-fanout';
const PASSWORD = 'bench-password-shared-by-every-light-agent';
const UNIT = 5 * 1024;
/** the agent's pollInterval (cli/agent-flags.ts default), and others to compare the bill with */
const POLL_INTERVAL_MINUTES = 15;
const OTHER_POLL_INTERVALS = [5, 15, 30];
/** polls a day: each comes uniformly one to two intervals after the last (agent/watch/watch.ts) */
const pollsPerDay = (intervalMinutes: number) => (24 * 60) / (intervalMinutes * 1.5);
const AUTHORIZER_REFRESHES_PER_DAY = 23;
const SCHEDULE_RUNS_PER_DAY = 24 * 60;
const CLEAN_RUNS_PER_DAY = 24;
/** agent/agent.ts REVISION_STATUS_MS */
const STATUS_EVERY_MS = 10 * 60_000;

/** Each function's memory, as infra/ sets it (infra/functions.ts defaults, infra/realtime.ts, infra/schedule.ts). */
const MEMORY_MB = { AgentMessages: 256, NodeApi: 256, Authorizer: 512, Maintenance: 512 } as const;
type Fn = keyof typeof MEMORY_MB;

/**
 * MODEL_MS: a function's billed duration, which this machine cannot measure
 * (dynalite, not DynamoDB, answers here): a base for the event's parsing and
 * the handler's own work, and each call it makes at a latency a Lambda sees
 * in its region (DynamoDB's single-digit milliseconds, a page of items a
 * little more; an HTTPS publish to the IoT data endpoint). The same figures
 * as bench/dynamo-storm's simulated clock.
 */
const MODEL_MS = {
  base: 5,
  dynamo: { GetItem: 4, PutItem: 6, UpdateItem: 6, DeleteItem: 6, Query: 5, BatchGetItem: 8, BatchWriteItem: 10, TransactWriteItems: 15 } as Record<string, number>,
  dynamoPer100Items: 2,
  iotPublish: 15,
  iotRetainedRead: 10,
};

/**
 * Bytes a node API answer sends to the internet besides its body: the
 * response headers, and a TLS connection of its own (the agent's requests
 * are minutes apart, past any idle timeout): the server's handshake with
 * its certificate chain, about 4.5 KB for a public ACM certificate. A
 * resumed session would send less; the model does not count on it.
 */
const HEADER_BYTES = 400;
const TLS_BYTES = 4_500;

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
  /** DynamoDB units, as the stand-in metered them (index writes included) */
  rru: number;
  wru: number;
  /** the functions' log lines, bytes */
  logBytes: number;
  /** to the internet: the node API's answers, with headers and TLS */
  dataOut: number;
  /** per function: invocations and billed milliseconds (MODEL_MS) */
  fns: Record<string, { requests: number; ms: number }>;
}
const zero = (): Count => ({ published: 0, delivered: 0, iot: 0, invocations: 0, writes: 0, apiBytes: 0, statuses: 0, rru: 0, wru: 0, logBytes: 0, dataOut: 0, fns: {} });

/** Which function runs now (the bench runs one invocation at a time), and what it has cost so far. */
class Invocations {
  current?: { fn: Fn; ms: number };
  constructor(private readonly c: () => Count) {}

  async run<T>(fn: Fn, body: () => Promise<T>): Promise<T> {
    const outer = this.current;
    this.current = { fn, ms: MODEL_MS.base };
    try {
      return await body();
    } finally {
      const f = (this.c().fns[fn] ??= { requests: 0, ms: 0 });
      f.requests++;
      // Lambda bills each invocation by the millisecond, rounded up.
      f.ms += Math.ceil(this.current.ms);
      this.c().invocations++;
      this.current = outer;
    }
  }

  spend(ms: number): void {
    if (this.current) this.current.ms += ms;
  }
}

/** The broker as IoT Core would meter it; exact-topic subscriptions only, as the agents make. */
class MeterBroker implements Publisher {
  c = zero();
  readonly subs = new Map<string, Set<LightAgent>>();
  readonly retainedMsgs = new Map<string, string>();
  /** agents' messages wait here until the one being handled is done, as on a real broker */
  private readonly inbox: (() => Promise<void>)[] = [];
  controller!: Controller;
  readonly calls = new Invocations(() => this.c);

  async publish(topic: string, payload: string, retain: boolean): Promise<void> {
    const size = Buffer.byteLength(topic) + Buffer.byteLength(payload);
    this.c.published++;
    this.c.iot += units(Buffer.byteLength(payload)) + (retain ? units(size) : 0);
    this.calls.spend(MODEL_MS.iotPublish);
    if (retain) {
      if (payload === '') this.retainedMsgs.delete(topic);
      else this.retainedMsgs.set(topic, payload);
    }
    for (const a of this.subs.get(topic) ?? []) this.deliver(a, topic, payload);
  }

  /** GetRetainedMessage: metered by the size of what it returns. */
  async retained(topic: string): Promise<string | undefined> {
    const p = this.retainedMsgs.get(topic);
    this.c.iot += units(Buffer.byteLength(topic) + Buffer.byteLength(p ?? ''));
    this.calls.spend(MODEL_MS.iotRetainedRead);
    return p;
  }

  /** ListRetainedMessages, pages of 200 summaries (its maximum), each metered by its size. */
  async listRetained(prefix: string): Promise<{ topic: string }[]> {
    const all = [...this.retainedMsgs.keys()].filter((t) => t.startsWith(prefix)).map((topic) => ({ topic }));
    for (let i = 0; i < all.length || i === 0; i += 200) {
      const page = all.slice(i, i + 200).map(({ topic }) => ({ topic, payloadSize: 300, qos: 1, lastModifiedTime: 1_764_547_200_000 }));
      this.c.iot += units(Buffer.byteLength(JSON.stringify({ retainedTopics: page, nextToken: 'x'.repeat(64) })));
      this.calls.spend(MODEL_MS.iotRetainedRead);
    }
    return all;
  }

  private deliver(a: LightAgent, topic: string, payload: string): void {
    this.c.delivered++;
    // the PUBLISH sent, and the device's PUBACK (QoS 1)
    this.c.iot += units(Buffer.byteLength(topic) + Buffer.byteLength(payload)) + 1;
    a.onMessage(topic, payload);
  }

  /** CONNECT: metered with its will; IoT Core runs the custom authorizer on it. */
  connect(a: LightAgent): void {
    this.c.iot += units(Buffer.byteLength(JSON.stringify(a.will)) + 200);
    this.queue(() => a.w.authorize(a.node));
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

  /** A message from an agent: metered in, then an IoT rule and a Lambda (AgentMessages) hand it to the controller. */
  fromAgent(topic: string, payload: string, retain: boolean): void {
    const size = Buffer.byteLength(topic) + Buffer.byteLength(payload);
    this.c.published++;
    this.c.iot += units(size) + (retain ? units(size) : 0);
    this.inbox.push(() => this.calls.run('AgentMessages', () => this.controller.handleMessage(topic, Buffer.from(payload), 'bench')));
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
    readonly w: World,
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
function countStoreWrites(store: DynamoStore, c: () => Count): void {
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
  store!: DynamoStore;
  private deps!: NodeApiDeps;
  /** the functions' log, as they write it (JSON lines, INFO and up): only its bytes are kept */
  readonly log: Logger = createLogger('twill', 'info', (line) => void (this.broker.c.logBytes += Buffer.byteLength(line) + 1), 'json');

  constructor(
    readonly fake: FakeDynamo,
    private readonly hash: string,
  ) {}

  now = () => this.clock;

  /** A client whose calls add their in-region latency to the running invocation (MODEL_MS). */
  private client(): DynamoDBClient {
    const client = new DynamoDBClient(this.fake.clientConfig);
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const out = await next(args);
        const op = String(context.commandName).replace(/Command$/, '');
        const o = (out.output ?? {}) as { Items?: unknown[]; Responses?: Record<string, unknown[]> };
        const items = o.Items?.length ?? Object.values(o.Responses ?? {}).reduce((n, l) => n + l.length, 0);
        this.broker.calls.spend((MODEL_MS.dynamo[op] ?? 10) + (MODEL_MS.dynamoPer100Items * items) / 100);
        return out;
      },
      { step: 'initialize', name: 'benchLatency' },
    );
    return client;
  }

  async start(n: number): Promise<void> {
    const client = this.client();
    await createTable(client, TABLE);
    this.store = new DynamoStore({ tableName: TABLE, client });
    this.controller = new Controller(this.store, this.broker, { topics: this.topics, log: this.log, now: this.now, api: 'https://node-api.lambda-url.example/' });
    this.broker.controller = this.controller;
    countStoreWrites(this.store, () => this.broker.c);
    // A warm instance's page cache (infra: the node API function keeps it between invocations).
    this.deps = { store: this.store, credentials: new VerifiedCredentials(this.store), log: this.log, cache: new SnapshotCache(), now: this.now };
    await this.controller.applyNetwork(NET, parseNetConf({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'vxlan' } }));
    // The network of n-1 members, unmetered: the nodes, their leases (a few
    // writers at a time, as they all move the network item) and statuses.
    this.fake.throughput.paused = true;
    const created = new Date(this.clock).toISOString();
    const expires = new Date(this.clock + 24 * 3600_000).toISOString();
    const batch = async (count: number, width: number, each: (i: number) => Promise<unknown>) => {
      for (let i = 1; i <= count; i += width) await Promise.all(Array.from({ length: Math.min(width, count - i + 1) }, (_, j) => each(i + j)));
    };
    await batch(n - 1, 50, (i) => this.addNode(i));
    await batch(n - 1, 4, (i) => this.store.createLease({
      network: NET, node: `node-${i}`, subnet: `10.${(i >> 8) & 255}.${i & 255}.0/24`, ipv6Subnet: null, publicIP: this.agents[i - 1]!.hello().publicIP!, publicIPv6: null,
      backendType: 'vxlan', backendData: this.agents[i - 1]!.hello().backendData ?? {}, expiresAt: expires, createdAt: created,
    }));
    await batch(n - 1, 50, (i) => this.store.putStatus({ network: NET, node: `node-${i}`, status: { v: 2, state: 'online', agentVersion: VERSION, backend: 'vxlan', inSync: true, errors: [] }, updatedAt: created }));
    // What the broker retains for them (own leases, the config), as a running fabric's broker does.
    await this.controller.republishNetwork(NET);
    this.fake.throughput.paused = false;
  }

  /** The custom authorizer on a CONNECT or a refresh: the real one, reading the node from the store. */
  async authorize(node: string): Promise<void> {
    await this.broker.calls.run('Authorizer', async () => {
      const r = await authorize(
        { protocols: ['mqtt'], protocolData: { mqtt: { username: `${node}?x-amz-customauthorizer-name=twill`, password: Buffer.from(PASSWORD).toString('base64'), clientId: `twill:${NET}:${node}` } }, connectionMetadata: { id: 'bench' } } as Parameters<typeof authorize>[0],
        { store: this.store, topics: this.topics, log: this.log, region: 'us-east-1', accountId: '123456789012' },
      );
      if (!r.isAuthenticated) throw new Error(`the authorizer refused ${node}`);
    });
  }

  async get(node: string, path: string): Promise<unknown> {
    const [p, q] = path.split('?') as [string, string];
    const r = await this.broker.calls.run('NodeApi', () => handleNodeApi(
      { method: 'GET', path: `/v2/networks/${NET}/${p}`, query: new URLSearchParams(q), headers: { authorization: `Basic ${Buffer.from(`${node}:${PASSWORD}`).toString('base64')}`, 'accept-encoding': 'gzip' } },
      this.deps,
    ));
    this.broker.c.apiBytes += r.body.length;
    this.broker.c.dataOut += r.body.length + HEADER_BYTES + TLS_BYTES;
    if (r.status !== 200) throw new Error(`node API ${path}: HTTP ${r.status} ${r.body.toString()}`);
    return JSON.parse((r.headers['content-encoding'] === 'gzip' ? gunzipSync(r.body) : r.body).toString('utf8'));
  }

  /** The scheduled task's minute (functions/schedule.ts, control/lambda/schedule.ts): its run lock, its tasks and the fabric's metrics. */
  async scheduledRun(): Promise<void> {
    await this.broker.calls.run('Maintenance', async () => {
      const lock = await this.store.tryLock(RUN_LOCK, 'bench', 300_000, this.clock);
      if (!lock.acquired) throw new Error('the run lock is held');
      const { report, reports } = await runTasks(this.tasks(), ['expire', 'reconcile', 'republish'], this.log);
      if (Object.keys(report.failed).length) throw new Error(`the scheduled run failed: ${JSON.stringify(report.failed)}`);
      // Its CloudWatch metrics are log lines too (the embedded metric format,
      // written to stdout in Lambda only): counted, not shown.
      await this.countingStdout(() => emitFabric(this.store, 'twill', reports, report));
      await this.store.unlock(RUN_LOCK, 'bench');
    });
  }

  /** The hourly cleanup of retained topics (RetainedCleanup). */
  async cleanRun(): Promise<void> {
    await this.broker.calls.run('Maintenance', async () => {
      const { report } = await runTasks(this.tasks(), ['clean'], this.log);
      if (report.clean?.deleted.length || Object.keys(report.failed).length) throw new Error(`the cleanup found what it should not: ${JSON.stringify(report).slice(0, 300)}`);
    });
  }

  /** The plane's periodic tasks (control/tasks/tasks.ts), as the scheduled function runs them. */
  private tasks() {
    return createTasks({ controller: this.controller, store: this.store, log: this.log, retained: this.broker });
  }

  /** Runs body as in Lambda, counting what it writes to stdout instead of writing it. */
  private async countingStdout(body: () => Promise<void>): Promise<void> {
    const write = process.stdout.write;
    process.env.AWS_LAMBDA_FUNCTION_NAME = 'twill-bench-Maintenance';
    process.stdout.write = ((chunk: string | Uint8Array) => {
      this.broker.c.logBytes += Buffer.byteLength(chunk);
      return true;
    }) as typeof process.stdout.write;
    try {
      await body();
    } finally {
      process.stdout.write = write;
      delete process.env.AWS_LAMBDA_FUNCTION_NAME;
    }
  }

  async addNode(i: number): Promise<LightAgent> {
    const node = `node-${i}`;
    await this.store.putNode({ name: node, network: NET, passwordHash: this.hash, createdAt: new Date(this.clock).toISOString() });
    const a = new LightAgent(node, i, this);
    this.agents[i - 1] = a;
    return a;
  }

  /** Lets the status interval pass: rate-limited statuses go out. */
  async statusInterval(): Promise<void> {
    this.clock += STATUS_EVERY_MS;
    for (const a of this.agents) a.flushStatus();
    await this.broker.settle();
  }

  /** Counts one event: what it publishes, delivers, writes and reads until everything it set off is done. */
  async measure(what: () => Promise<void> | void): Promise<Count> {
    this.clock += 2 * STATUS_EVERY_MS;
    await this.broker.settle();
    this.broker.c = zero();
    this.fake.throughput.reset();
    await what();
    await this.broker.settle();
    await this.statusInterval();
    const c = this.broker.c;
    for (const load of this.fake.throughput.loads().values()) {
      c.rru += load.readUnits;
      c.wru += load.writeUnits;
    }
    this.broker.c = zero();
    const net = await this.store.getNetwork(NET);
    const behind = this.agents.filter((a) => a.revision !== net?.revision).length;
    if (behind) throw new Error(`${behind} agents do not hold revision ${net?.revision}`);
    return c;
  }
}

/** a + k * b, field by field and function by function */
function plus(a: Count, b: Count, k = 1): Count {
  const out = zero();
  for (const key of Object.keys(out) as (keyof Count)[]) if (key !== 'fns') (out[key] as number) = (a[key] as number) + k * (b[key] as number);
  for (const src of [a, b]) {
    for (const [fn, f] of Object.entries(src.fns)) {
      const m = src === a ? 1 : k;
      const o = (out.fns[fn] ??= { requests: 0, ms: 0 });
      o.requests += m * f.requests;
      o.ms += m * f.ms;
    }
  }
  return out;
}

async function run(n: number, hash: string): Promise<Record<string, Count>> {
  const fake = await startFakeDynamo();
  try {
    const w = new World(fake, hash);
    await w.start(n);
    const rev = (await w.store.getNetwork(NET))!.revision;
    for (const a of w.agents) {
      a.revision = rev;
      a.api = w.controller.api;
      a.lease = await w.store.getLease(NET, a.node);
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
    out.refresh = await w.measure(() => w.broker.queue(() => w.authorize(some.node)));
    out.poll = await w.measure(() => w.broker.queue(async () => void (await w.get(some.node, `changes?since=${some.revision}`))));
    out.schedule = await w.measure(() => w.broker.queue(() => w.scheduledRun()));
    out.clean = await w.measure(() => w.broker.queue(() => w.cleanRun()));
    out.restart = await w.measure(async () => {
      const fresh = new Controller(w.store, w.broker, { topics: w.topics, log: w.log, now: w.now, api: w.controller.api });
      await fresh.publishOnStart();
    });
    const leaver = w.agents.pop()!;
    w.broker.drop(leaver);
    out.leave = await w.measure(() => w.broker.queue(async () => void (await w.controller.release(NET, leaver.node))));
    out.day = dayOf(out, n, POLL_INTERVAL_MINUTES);
    return out;
  } finally {
    await fake.close();
  }
}

/**
 * A day in steady state. Per node: the renewal an hour before expiry, the
 * reconnect IoT Core forces (its hello renews too), the polls, and the
 * authorizer's hourly refreshes. Per deployment: the scheduled task every
 * minute and the cleanup every hour (whose reads grow with N).
 */
function dayOf(out: Record<string, Count>, n: number, pollMinutes: number): Count {
  let day = zero();
  day = plus(day, out.renewal!, n);
  day = plus(day, out.reconnect!, n);
  day = plus(day, out.poll!, n * pollsPerDay(pollMinutes));
  day = plus(day, out.refresh!, n * AUTHORIZER_REFRESHES_PER_DAY);
  day = plus(day, out.schedule!, SCHEDULE_RUNS_PER_DAY);
  day = plus(day, out.clean!, CLEAN_RUNS_PER_DAY);
  return day;
}

/** A month of a day's counts, as bench/cost.ts prices it (nodes connected all month). */
function monthOf(day: Count, n: number): Usage {
  const u = emptyUsage();
  const m = 30;
  u.iotMessages = day.iot * m;
  u.iotConnectionMinutes = n * 24 * 60 * m;
  // each message an agent publishes runs one rule with one action (the Lambda)
  u.iotRules = (day.fns.AgentMessages?.requests ?? 0) * m;
  u.functions = Object.entries(day.fns).map(([name, f]): FunctionUse => ({ name, requests: f.requests * m, ms: f.requests ? f.ms / f.requests : 0, memoryMb: MEMORY_MB[name as Fn] }));
  u.dynamoWru = day.wru * m;
  u.dynamoRru = day.rru * m;
  u.logBytes = day.logBytes * m;
  u.dataOutBytes = day.dataOut * m;
  return u;
}

const fmt = (x: number) => (x >= 100 ? Math.round(x).toLocaleString('en-US') : String(Math.round(x * 10) / 10));
const millions = (x: number) => (x >= 1e6 ? `${(x / 1e6).toFixed(x >= 1e8 ? 0 : 1)} M` : Math.round(x).toLocaleString('en-US'));

async function main(): Promise<void> {
  const hash = await hashPassword(PASSWORD);
  const results = new Map<number, Record<string, Count>>();
  for (const n of SIZES) {
    const t0 = performance.now();
    results.set(n, await run(n, hash));
    console.error(`N=${n}: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  const events = ['join', 'leave', 'renewal', 'reconnect', 'refresh', 'poll', 'schedule', 'clean', 'restart', 'day'];
  const cols: [keyof Count, string][] = [
    ['published', 'published'], ['delivered', 'delivered'], ['iot', 'IoT metered'], ['invocations', 'invocations'], ['writes', 'store writes'],
    ['wru', 'write units'], ['rru', 'read units'], ['logBytes', 'log bytes'], ['dataOut', 'bytes out'], ['statuses', 'of which statuses'],
  ];
  console.log(`\nbench/fanout: per event, protocol v2 (IoT metered = messages as IoT Core bills them; the agent's poll every ${POLL_INTERVAL_MINUTES} to ${2 * POLL_INTERVAL_MINUTES} min)\n`);
  console.log(`| event | N | ${cols.map((c) => c[1]).join(' | ')} |`);
  console.log(`|---|---|${cols.map(() => '---|').join('')}`);
  for (const e of events) {
    for (const n of SIZES) {
      const c = results.get(n)![e]!;
      console.log(`| ${e} | ${n.toLocaleString('en-US')} | ${cols.map(([k]) => fmt(c[k] as number)).join(' | ')} |`);
    }
  }
  console.log('\nper node per day (a day divided by N):\n');
  console.log(`| N | ${cols.map((c) => c[1]).join(' | ')} |`);
  console.log(`|---|${cols.map(() => '---|').join('')}`);
  for (const n of SIZES) {
    const c = results.get(n)!.day!;
    console.log(`| ${n.toLocaleString('en-US')} | ${cols.map(([k]) => fmt((c[k] as number) / n)).join(' | ')} |`);
  }
  console.log('\nfunction invocations a day, and their average billed duration (MODEL_MS):\n');
  const fns = Object.keys(MEMORY_MB);
  console.log(`| N | ${fns.map((f) => `${f} (${MEMORY_MB[f as Fn]} MB)`).join(' | ')} |`);
  console.log(`|---|${fns.map(() => '---|').join('')}`);
  for (const n of SIZES) {
    const d = results.get(n)!.day!;
    console.log(`| ${n.toLocaleString('en-US')} | ${fns.map((f) => { const x = d.fns[f]; return x ? `${fmt(x.requests)} × ${fmt(x.ms / x.requests)} ms` : '0'; }).join(' | ')} |`);
  }

  // The bill: what grows with the fabric, and the fixed costs apart.
  const months = SIZES.map((n) => ({ n, variable: bill(monthOf(results.get(n)!.day!, n)) }));
  const fixed = bill(addUsage(emptyUsage(), FIXED));
  const items = [...new Set([...months.flatMap((m) => Object.keys(m.variable))])];
  console.log('\na month (30 days), us-east-1 list prices (bench/cost.ts), no free tier; the scheduled task\'s share is in the rows above its fixed costs:\n');
  console.log(`| item | ${SIZES.map((n) => `N = ${n.toLocaleString('en-US')}`).join(' | ')} |`);
  console.log(`|---|${SIZES.map(() => '---|').join('')}`);
  for (const item of items) {
    if (months.every((m) => (m.variable[item] ?? 0) === 0)) continue;
    console.log(`| ${item} | ${months.map((m) => dollars(m.variable[item] ?? 0)).join(' | ')} |`);
  }
  console.log(`| **with the fabric** | ${months.map((m) => `**${dollars(total(m.variable))}**`).join(' | ')} |`);
  console.log(`| per node | ${months.map((m) => `${(total(m.variable) / m.n * 100).toFixed(2)} ¢`).join(' | ')} |`);
  console.log(`| fixed (${Object.entries(fixed).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${dollars(v)}`).join(', ')}) | ${months.map(() => dollars(total(fixed))).join(' | ')} |`);
  console.log(`| **total** | ${months.map((m) => `**${dollars(total(m.variable) + total(fixed))}**`).join(' | ')} |`);
  console.log('\nwhat grows with the fabric, by the agents\' poll interval (pollInterval; polls come one to two intervals apart):\n');
  console.log(`| pollInterval | ${SIZES.map((n) => `N = ${n.toLocaleString('en-US')}`).join(' | ')} |`);
  console.log(`|---|${SIZES.map(() => '---|').join('')}`);
  for (const p of OTHER_POLL_INTERVALS) {
    console.log(`| ${p}m | ${SIZES.map((n) => { const t = total(bill(monthOf(dayOf(results.get(n)!, n, p), n))); return `${dollars(t)} (${(t / n * 100).toFixed(2)} ¢ a node)`; }).join(' | ')} |`);
  }
  console.log(`\n(monthly usage: ${months.map((m) => { const u = monthOf(results.get(m.n)!.day!, m.n); return `N=${m.n}: ${millions(u.iotMessages)} IoT messages, ${millions(u.functions.reduce((s, f) => s + f.requests, 0))} invocations, ${millions(u.dynamoRru)} RRU, ${millions(u.dynamoWru)} WRU, ${(u.logBytes / 1024 ** 3).toFixed(2)} GB logs, ${(u.dataOutBytes / 1024 ** 3).toFixed(1)} GB out`; }).join('; ')})`);
}

await main();
