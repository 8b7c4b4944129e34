// bench/dynamo-storm: a fleet of N agents joins one network at once on the
// serverless path, against the DynamoDB stand-in (test/fakes/dynamodb.ts),
// which meters every call per partition key as on-demand DynamoDB does and
// throttles a key past 1,000 write / 3,000 read units a second. Run twice:
// with the item layout before the shards (functions/store/dynamo.ts as of
// BEFORE, loaded from git) and with the current one. Printed: per partition
// key (or group of shards) its peak write and read units a second and its
// throttled calls; the storm's length, commits and throttles; and what the
// scheduled run's fabric figures read, before and after.
//
// The storm measured is its last STORM agents, joining while the first
// N - STORM already hold their leases and statuses (written beforehand,
// unmetered): the busiest stretch of a storm of N, where every read (the
// claims a join reads, the snapshot pages an agent lists) is of a network
// near its full size, and the rate is what the network item lets through,
// as all along. A whole storm of 10,000 reads about 10^8 items through
// dynalite, hours on a small machine; its last thousand, under half an hour.
//
// Each agent, as on AWS: its hello (the AgentMessages function:
// Controller.handleMessage, as the IoT rule hands it over), a status when it
// has its lease (online, not yet in sync), the node API's snapshot pages and
// changes (handleNodeApi with its one-second page cache, one function URL
// call each), a status once in sync. Functions run as INSTANCES concurrent
// instances of each function, each with its own store and client, handling
// one event at a time; a call that fails is handled again 10 s later (the
// agent repeats an unanswered hello; Lambda retries an IoT rule's event).
//
// Time is simulated: this 2-core box serves a few hundred DynamoDB calls a
// second through dynalite, where AWS serves the fleet in parallel, so real
// seconds would only measure dynalite. Each instance keeps its own clock; a
// DynamoDB call takes LATENCY_MS (single-digit milliseconds, as DynamoDB
// serves a Lambda in its region; a page of items a little more) and is
// stamped with its start, which the stand-in meters and throttles by; no
// instance runs more than SLACK_MS ahead of the slowest busy one. Backoff
// sleeps (the store's, and the SDK's standard retry: 3 attempts, jittered
// exponential from 500 ms on a throttle) pass on the simulated clock.
//
// Run: node --import tsx bench/dynamo-storm.ts [N, default 10000] [STORM, default 1000] [layouts, default before,after] [instances, default 100]
import { AsyncLocalStorage } from 'node:async_hooks';
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { parseNetConf } from '../core/config.js';
import { silentLogger } from '../core/log.js';
import type { Status } from '../core/messages.js';
import { Topics } from '../core/topics.js';
import { VERSION } from '../core/version.js';
import { Controller } from '../control/controller/controller.js';
import { hashPassword, VerifiedCredentials } from '../control/auth/credentials.js';
import { readFabric } from '../control/metrics/fabric.js';
import { handleNodeApi, SnapshotCache, type NodeApiDeps } from '../control/http/node-api.js';
import { createTable, DynamoStore, SHARDS } from '../control/store/dynamo.js';
import type { Store } from '../control/store/store.js';
import { startFakeDynamo, type FakeDynamo } from '../test/fakes/dynamodb.js';
import type { KeyLoad } from '../test/fakes/dynamodb-throughput.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

const N = Number(process.argv[2] ?? 10_000);
const STORM = Math.min(N, Number(process.argv[3] ?? 1000));
const LAYOUTS = (process.argv[4] ?? 'before,after').split(',');
const INSTANCES = Number(process.argv[5] ?? 100);
/** The last commit whose store kept every item of a network under NET#<network>. */
const BEFORE = 'a1d2052';
const ROOT = resolve(import.meta.dirname, '..');
const NET = 'storm';
const TABLE = 'twill-storm';
const PASSWORD = 'storm-bench-password-of-every-agent';
const PAGE = 1000;
/** Simulated milliseconds: what a DynamoDB call takes, seen from a Lambda in its region. */
const LATENCY_MS: Record<string, number> = { GetItem: 4, PutItem: 6, UpdateItem: 6, DeleteItem: 6, Query: 5, BatchGetItem: 8, BatchWriteItem: 10, TransactWriteItems: 15 };
/** and per 100 items a Query or BatchGetItem returns */
const LATENCY_PER_100_ITEMS_MS = 2;
/** from an agent's message to its function's invocation, and from a publish to the agent */
const HOP_MS = 40;
const SLACK_MS = 25;
const RETRY_AFTER_MS = 10_000;
const MAX_TRIES = 20;

// ---- simulated time ----

interface Instance {
  pool: string;
  clock: number;
  busy: boolean;
  store: Store;
  controller: Controller;
  api: NodeApiDeps;
}

interface SimEvent {
  at: number;
  pool: string;
  tries: number;
  run(inst: Instance): Promise<void>;
}

const als = new AsyncLocalStorage<Instance>();

class Sim {
  readonly instances: Instance[] = [];
  private readonly queues = new Map<string, SimEvent[]>();
  private waiters: { inst: Instance; go: () => void }[] = [];
  private idle = new Map<string, (() => void)[]>();
  failedInvocations = 0;
  invocations = 0;
  end = 0;
  /** the longest an invocation ran, in simulated ms (Lambda ends one at its timeout: 30 s for AgentMessages) */
  longest = 0;

  enqueue(e: SimEvent): void {
    const q = this.queues.get(e.pool) ?? [];
    this.queues.set(e.pool, q);
    // Kept in time order (inserted from the back: new events are mostly the latest).
    let i = q.length;
    while (i > 0 && q[i - 1]!.at > e.at) i--;
    q.splice(i, 0, e);
    this.idle.get(e.pool)?.shift()?.();
  }

  /** The clock of the slowest busy instance: nobody may run more than SLACK_MS ahead of it. */
  private floor(): number {
    let min = Infinity;
    for (const i of this.instances) if (i.busy) min = Math.min(min, i.clock);
    return min;
  }

  /** Re-checks who may go on. */
  changed(): void {
    const floor = this.floor();
    const go = this.waiters.filter((w) => w.inst.clock <= floor + SLACK_MS);
    this.waiters = this.waiters.filter((w) => w.inst.clock > floor + SLACK_MS);
    for (const w of go) w.go();
  }

  /** Waits until the caller is no more than SLACK_MS ahead of the slowest busy instance. */
  gate(inst: Instance): Promise<void> {
    // Whoever moved last (this caller, maybe) may be what others wait for: everyone is looked at again.
    const p = new Promise<void>((go) => this.waiters.push({ inst, go }));
    this.changed();
    return p;
  }

  /** A sleep on the simulated clock of whoever calls it. */
  sleep = async (ms: number): Promise<void> => {
    const inst = als.getStore();
    if (!inst) return;
    inst.clock += ms;
    this.changed();
    await this.gate(inst);
  };

  /** Set once every instance is idle with nothing queued: the storm is over. */
  private over = false;

  async worker(inst: Instance): Promise<void> {
    for (;;) {
      const q = this.queues.get(inst.pool) ?? [];
      const e = q.shift();
      if (!e) {
        inst.busy = false;
        this.changed();
        if (this.instances.every((i) => !i.busy) && [...this.queues.values()].every((x) => x.length === 0)) {
          this.over = true;
          this.wakeAll();
        }
        if (this.over) return;
        await new Promise<void>((r) => {
          const list = this.idle.get(inst.pool) ?? [];
          this.idle.set(inst.pool, list);
          list.push(r);
        });
        continue;
      }
      inst.clock = Math.max(inst.clock, e.at);
      inst.busy = true;
      this.invocations++;
      const began = inst.clock;
      await this.gate(inst);
      try {
        await als.run(inst, () => e.run(inst));
      } catch {
        this.failedInvocations++;
        if (e.tries + 1 < MAX_TRIES) this.enqueue({ ...e, at: inst.clock + RETRY_AFTER_MS, tries: e.tries + 1 });
      }
      this.end = Math.max(this.end, inst.clock);
      this.longest = Math.max(this.longest, inst.clock - began);
      this.changed();
    }
  }

  wakeAll(): void {
    for (const list of this.idle.values()) for (const r of list.splice(0)) r();
  }
}

const THROTTLES = new Set(['ThrottlingException', 'ProvisionedThroughputExceededException', 'RequestLimitExceeded']);

/** A client whose calls take simulated time and are stamped with it; the SDK's standard retry runs on that time too. */
function simulatedClient(fake: FakeDynamo, sim: Sim): DynamoDBClient {
  const client = new DynamoDBClient({ ...fake.clientConfig, maxAttempts: 1 });
  client.middlewareStack.add(
    (next) => async (args) => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await next(args);
        } catch (e) {
          if (!THROTTLES.has((e as { name?: string }).name ?? '') || attempt >= 2) throw e;
          await sim.sleep(Math.random() * Math.min(20_000, 500 * 2 ** attempt));
        }
      }
    },
    { step: 'initialize', name: 'simulatedRetry' },
  );
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const inst = als.getStore();
      if (!inst) return next(args);
      await sim.gate(inst);
      const start = inst.clock;
      (args.request as { headers: Record<string, string> }).headers['x-twill-sim-time'] = String(start);
      const op = String(context.commandName).replace(/Command$/, '');
      let items = 0;
      try {
        const out = await next(args);
        const o = out.output as { Items?: unknown[]; Responses?: Record<string, unknown[]> };
        items = o.Items?.length ?? Object.values(o.Responses ?? {}).reduce((n, l) => n + l.length, 0);
        return out;
      } finally {
        inst.clock = Math.max(inst.clock, start + (LATENCY_MS[op] ?? 10) + (LATENCY_PER_100_ITEMS_MS * items) / 100);
        sim.changed();
      }
    },
    { step: 'build', name: 'simulatedClock' },
  );
  return client;
}

// ---- the layouts ----

type StoreClass = new (opts: { tableName: string; client: DynamoDBClient; sleep?: (ms: number) => Promise<void> }) => Store;

/** The store as it was at BEFORE, its sleeps routed to the simulated clock; undefined without git history. */
async function storeBefore(): Promise<{ Store: StoreClass; cleanup(): void } | undefined> {
  let source: string;
  try {
    source = execFileSync('git', ['show', `${BEFORE}:functions/store/dynamo.ts`], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return undefined;
  }
  const sleep = 'function sleep(ms: number): Promise<void> {\n  return new Promise((r) => setTimeout(r, ms));\n}';
  if (!source.includes(sleep)) throw new Error(`the store at ${BEFORE} has no sleep to route to the simulated clock`);
  source = source.replace(sleep, 'function sleep(ms: number): Promise<void> {\n  return (globalThis as unknown as { benchSleep: (ms: number) => Promise<void> }).benchSleep(ms);\n}');
  // Next to the store it imports from (and ignored by git); its types are an older Store's.
  const file = join(ROOT, 'control', 'store', `.dynamo-before-${process.pid}.ts`);
  writeFileSync(file, `// @ts-nocheck\n${source}`);
  const mod = (await import(file)) as { DynamoStore: StoreClass };
  return { Store: mod.DynamoStore, cleanup: () => rmSync(file, { force: true }) };
}

// ---- one storm ----

interface Result {
  layout: string;
  seconds: number;
  longest: number;
  joined: number;
  invocations: number;
  failed: number;
  transactions: number;
  cancelled: number;
  throttled: number;
  storeResends: number;
  loads: Map<string, KeyLoad>;
  scheduledReadUnits: number;
  scheduledCalls: string;
}

async function storm(layout: string, Store: StoreClass): Promise<Result> {
  const sim = new Sim();
  (globalThis as unknown as { benchSleep: (ms: number) => Promise<void> }).benchSleep = sim.sleep;
  // The storm's calls carry their simulated time; the setup's and the scheduled run's, the wall clock's.
  const fake = await startFakeDynamo({ now: (h) => (h['x-twill-sim-time'] === undefined ? Date.now() : Number(h['x-twill-sim-time'])) });
  const setupClient = new DynamoDBClient(fake.clientConfig);
  const stores: Store[] = [];
  try {
    await createTable(setupClient, TABLE);
    fake.throughput.paused = true;
    const admin = new Store({ tableName: TABLE, client: setupClient });
    stores.push(admin);
    const topics = new Topics('twill/bench');
    const publisher = { publish: async () => {} };
    await new Controller(admin, publisher, { topics, log: silentLogger }).applyNetwork(NET, parseNetConf({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'vxlan' } }));
    const hash = await hashPassword(PASSWORD);
    const created = new Date().toISOString();
    const expires = new Date(Date.now() + 24 * 3600_000).toISOString();
    for (let i = 0; i < N; i += 50) {
      await Promise.all(Array.from({ length: Math.min(50, N - i) }, (_, j) => admin.putNode({ name: `node-${i + j}`, network: NET, passwordHash: hash, createdAt: created })));
    }
    // The fleet before the measured stretch (unmetered): a few writers at a
    // time, as they all move the network item.
    for (let i = 0; i < N - STORM; i += 4) {
      await Promise.all(Array.from({ length: Math.min(4, N - STORM - i) }, (_, j) => admin.createLease({
        network: NET, node: `node-${i + j}`, subnet: `10.${((i + j) >> 8) & 255}.${(i + j) & 255}.0/24`, ipv6Subnet: null, publicIP: `172.16.${((i + j) >> 8) & 255}.${(i + j) & 255}`, publicIPv6: null,
        backendType: 'vxlan', backendData: { VtepMAC: '0a:00:00:00:00:01' }, expiresAt: expires, createdAt: created,
      })));
      if (i % 1000 >= 996) console.error(`  ${layout}: ${i + 4} of ${N - STORM} leases written beforehand`);
    }
    for (let i = 0; i < N - STORM; i += 50) {
      await Promise.all(Array.from({ length: Math.min(50, N - STORM - i) }, (_, j) =>
        admin.putStatus({ network: NET, node: `node-${i + j}`, status: { v: 2, state: 'online', agentVersion: VERSION, backend: 'vxlan', inSync: true, errors: [] }, updatedAt: created })));
    }
    fake.throughput.paused = false;
    fake.throughput.reset();
    fake.stats.transactions = 0;
    fake.stats.cancelled = 0;

    for (const pool of ['messages', 'api']) {
      for (let k = 0; k < INSTANCES; k++) {
        const client = simulatedClient(fake, sim);
        const store = new Store({ tableName: TABLE, client, sleep: sim.sleep });
        stores.push(store);
        const inst: Instance = {
          pool, clock: 0, busy: false, store,
          controller: new Controller(store, publisher, { topics, log: silentLogger, now: () => als.getStore()?.clock ?? 0, api: 'https://node-api.lambda-url.example/' }),
          api: { store, credentials: new VerifiedCredentials(store), log: silentLogger, cache: new SnapshotCache(), now: () => als.getStore()?.clock ?? 0 },
        };
        sim.instances.push(inst);
      }
    }

    let joined = 0;
    let finished = 0;
    const auth = (node: string) => `Basic ${Buffer.from(`${node}:${PASSWORD}`).toString('base64')}`;
    const get = async (inst: Instance, node: string, path: string, query: Record<string, string>) => {
      const r = await handleNodeApi({ method: 'GET', path: `/v2/networks/${NET}/${path}`, query: new URLSearchParams(query), headers: { authorization: auth(node) } }, inst.api);
      if (r.status !== 200) throw new Error(`node API ${path}: ${r.status} ${r.body.toString()}`);
      return JSON.parse(r.body.toString()) as { revision: number; next?: string | null; more?: boolean };
    };
    const status = (node: string, s: Partial<Status>) => (inst: Instance) =>
      inst.controller.handleMessage(topics.nodeStatus(NET, node), Buffer.from(JSON.stringify({ v: 2, state: 'online', agentVersion: VERSION, backend: 'vxlan', errors: [], ...s })), node);
    const failOnError = async (work: Promise<unknown>) => {
      // handleMessage never throws (it logs): a failed write shows as the lease or status missing.
      await work;
    };

    for (let i = N - STORM; i < N; i++) {
      const node = `node-${i}`;
      const listFrom = (after: string | null, revision: number | undefined) => async (inst: Instance) => {
        const page = await get(inst, node, 'snapshot', { limit: String(PAGE), ...(after ? { after } : {}) });
        const from = Math.min(revision ?? page.revision, page.revision);
        if (page.next) sim.enqueue({ at: inst.clock + HOP_MS, pool: 'api', tries: 0, run: listFrom(page.next, from) });
        else sim.enqueue({ at: inst.clock + HOP_MS, pool: 'api', tries: 0, run: changes(from) });
      };
      const changes = (since: number) => async (inst: Instance) => {
        const c = await get(inst, node, 'changes', { since: String(since), limit: String(PAGE) });
        if (c.more) sim.enqueue({ at: inst.clock + HOP_MS, pool: 'api', tries: 0, run: changes(c.revision) });
        else sim.enqueue({ at: inst.clock + HOP_MS, pool: 'messages', tries: 0, run: async (x) => { await failOnError(status(node, { inSync: true, revision: c.revision })(x)); finished++; } });
      };
      sim.enqueue({
        at: 0, pool: 'messages', tries: 0,
        run: async (inst) => {
          await inst.controller.handleMessage(topics.nodeHello(NET, node), Buffer.from(JSON.stringify({ v: 2, agentVersion: VERSION, publicIP: `172.16.${(i >> 8) & 255}.${i & 255}`, backendData: { VtepMAC: '0a:00:00:00:00:01' } })), node);
          const lease = await inst.store.getLease(NET, node);
          if (!lease) throw new Error(`no lease for ${node} yet`); // the agent says hello again
          joined++;
          sim.enqueue({ at: inst.clock + HOP_MS, pool: 'messages', tries: 0, run: status(node, { inSync: false, subnet: lease.subnet }) });
          sim.enqueue({ at: inst.clock + HOP_MS, pool: 'api', tries: 0, run: listFrom(null, undefined) });
        },
      });
    }
    const t0 = performance.now();
    const progress = setInterval(() => console.error(`  ${layout}: ${joined} of ${STORM} joined, ${finished} in sync, ${(sim.end / 1000).toFixed(1)} simulated s, ${((performance.now() - t0) / 1000).toFixed(0)} real s`), 30_000);
    try {
      await Promise.all(sim.instances.map((inst) => sim.worker(inst)));
    } finally {
      clearInterval(progress);
    }
    const loads = fake.throughput.loads();
    const { transactions, cancelled } = fake.stats;
    const throttled = fake.throughput.throttled;

    // The scheduled run's fabric figures, as emitFabric reads them (before: every status).
    fake.throughput.reset();
    const reader = new Store({ tableName: TABLE, client: setupClient });
    stores.push(reader);
    let calls: string;
    if (layout === 'before') {
      await Promise.all([reader.listNetworks(), reader.listStatus(), reader.listRouteStatus()]);
      calls = 'listNetworks, listStatus (gsi1 query + consistent BatchGetItem of every status), listRouteStatus';
    } else {
      await readFabric(reader);
      calls = `listNetworks, agentCounts (${SHARDS} count items), listRouteStatus`;
    }
    const scheduledReadUnits = [...fake.throughput.loads().values()].reduce((n, l) => n + l.readUnits, 0);
    return {
      layout, seconds: sim.end / 1000, longest: sim.longest, joined, invocations: sim.invocations, failed: sim.failedInvocations, transactions, cancelled, throttled,
      storeResends: stores.reduce((n, s) => n + ((s as { throttledCalls?: number }).throttledCalls ?? 0), 0),
      loads, scheduledReadUnits, scheduledCalls: calls,
    };
  } finally {
    await Promise.all(stores.map((s) => s.close()));
    setupClient.destroy();
    await fake.close();
  }
}

// ---- the report ----

/** Shards of one kind are one row: their busiest key's peaks, and all their units. */
function group(key: string): string {
  return key
    .replace(new RegExp(`^NET#${NET}#([LCS])[0-9a-f]{2}$`), (_, k: string) => `NET#${NET}#${k}<shard> (${SHARDS} keys: ${{ L: 'leases', C: 'subnet claims', S: 'statuses, counts' }[k]})`)
    .replace(new RegExp(`^gsi1:EXPIRY#${NET}#[0-9a-f]{2}$`), `gsi1:EXPIRY#${NET}#<shard> (${SHARDS} index keys)`)
    .replace(/^NODE#.*$/, `NODE#<node> (${N} keys: node records)`);
}

const fmt = (x: number) => (x >= 100 ? Math.round(x).toLocaleString('en-US') : String(Math.round(x * 10) / 10));

function table(r: Result): string {
  const rows = new Map<string, { peakW: number; peakR: number; w: number; rd: number; throttled: number; keys: number }>();
  for (const [key, l] of r.loads) {
    const g = group(key);
    const row = rows.get(g) ?? { peakW: 0, peakR: 0, w: 0, rd: 0, throttled: 0, keys: 0 };
    row.peakW = Math.max(row.peakW, l.peakWriteUnitsPerSecond);
    row.peakR = Math.max(row.peakR, l.peakReadUnitsPerSecond);
    row.w += l.writeUnits;
    row.rd += l.readUnits;
    row.throttled += l.throttled;
    row.keys++;
    rows.set(g, row);
  }
  const sorted = [...rows].sort((a, b) => Math.max(b[1].peakW / 1000, b[1].peakR / 3000) - Math.max(a[1].peakW / 1000, a[1].peakR / 3000));
  const lines = ['| partition key | peak write units/s | peak read units/s | write units | read units | throttled calls |', '|---|---|---|---|---|---|'];
  for (const [g, x] of sorted) lines.push(`| ${g} | ${fmt(x.peakW)} | ${fmt(x.peakR)} | ${fmt(x.w)} | ${fmt(x.rd)} | ${fmt(x.throttled)} |`);
  return lines.join('\n');
}

async function main(): Promise<void> {
  const results: Result[] = [];
  const before = LAYOUTS.includes('before') ? await storeBefore() : undefined;
  try {
    for (const layout of LAYOUTS) {
      const Store = layout === 'before' ? before?.Store : (DynamoStore as unknown as StoreClass);
      if (!Store) {
        console.error(`layout ${layout}: no store (the "before" layout needs the repository's git history)`);
        continue;
      }
      const t0 = performance.now();
      console.error(`${layout}: ${N} agents, ${INSTANCES} instances of each function...`);
      results.push(await storm(layout, Store));
      console.error(`${layout}: done in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    }
  } finally {
    before?.cleanup();
  }
  console.log(`\nbench/dynamo-storm: ${N.toLocaleString('en-US')} agents join one network at once; measured: the last ${STORM.toLocaleString('en-US')} (the first ${(N - STORM).toLocaleString('en-US')} hold their leases and statuses already); ${INSTANCES} instances each of AgentMessages and the node API; on-demand limits 1,000 write / 3,000 read units a second per partition key (simulated time)\n`);
  console.log('| layout | measured stretch (simulated s) | joins a second | agents joined | invocations | failed, retried | longest invocation (s) | transactions | of which cancelled | throttled calls | sent again by the store |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of results) console.log(`| ${r.layout} | ${fmt(r.seconds)} | ${fmt(r.joined / r.seconds)} | ${fmt(r.joined)} | ${fmt(r.invocations)} | ${fmt(r.failed)} | ${fmt(r.longest / 1000)} | ${fmt(r.transactions)} | ${fmt(r.cancelled)} | ${fmt(r.throttled)} | ${fmt(r.storeResends)} |`);
  for (const r of results) console.log(`\nper partition key, ${r.layout} (busiest first):\n\n${table(r)}`);
  console.log('\nthe scheduled run\'s fabric figures (once a minute):\n');
  console.log('| layout | read units a run | a month (43,200 runs) | reads |');
  console.log('|---|---|---|---|');
  for (const r of results) console.log(`| ${r.layout} | ${fmt(r.scheduledReadUnits)} | ${fmt(r.scheduledReadUnits * 43_200)} | ${r.scheduledCalls} |`);
}

await main();
