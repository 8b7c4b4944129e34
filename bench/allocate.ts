// Allocation benchmark: 10,000 nodes join one network (10.0.0.0/8, SubnetLen
// 24) through Controller.join and the embedded SQLite store on a real file
// (WAL, synchronous=FULL, as the store sets it), first one at a time, then in
// batches of 64 concurrent joins. The publisher only counts what would go to
// the broker. Run: node --import tsx bench/allocate.ts [nodes]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseNetConf } from '../core/config.js';
import { ConflictError, errorMessage } from '../core/errors.js';
import { silentLogger } from '../core/log.js';
import { Topics } from '../core/topics.js';
import { Controller } from '../control/controller/controller.js';
import type { Publisher } from '../control/publish/publisher.js';
import { SqliteStore } from '../control/store/sqlite.js';

const NODES = Number(process.argv[2] ?? 10_000);
const BATCH = 64;

class CountingPublisher implements Publisher {
  messages = 0;
  bytes = 0;
  async publish(topic: string, payload: string): Promise<void> {
    this.messages++;
    this.bytes += Buffer.byteLength(topic) + Buffer.byteLength(payload);
  }
}

/** A store whose lost races are counted: each one is a join that read, picked and had to try again. */
function countConflicts(store: SqliteStore): { conflicts: number } {
  const counter = { conflicts: 0 };
  const create = store.createLease.bind(store);
  store.createLease = async (lease) => {
    try {
      return await create(lease);
    } catch (e) {
      if (e instanceof ConflictError) counter.conflicts++;
      throw e;
    }
  };
  return counter;
}

interface Result {
  mode: string;
  nodes: number;
  totalMs: number;
  latencies: number[];
  messages: number;
  bytes: number;
  duplicates: number;
  conflicts: number;
  /** mean ms per allocation for each tenth of the run, to show how cost grows with the lease count */
  byTenth: number[];
}

const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

async function duplicatesIn(store: SqliteStore, network: string): Promise<number> {
  const leases = await store.listLeases(network);
  const subnets = leases.map((l) => l.subnet);
  return subnets.length - new Set(subnets).size;
}

async function run(dir: string, mode: 'sequential' | 'concurrent'): Promise<Result> {
  const store = new SqliteStore(join(dir, `${mode}.db`));
  const counter = countConflicts(store);
  const pub = new CountingPublisher();
  const controller = new Controller(store, pub, { topics: new Topics(), log: silentLogger });
  try {
    await controller.applyNetwork('big', parseNetConf({ Network: '10.0.0.0/8', SubnetLen: 24 }, {}));
    pub.messages = 0;
    pub.bytes = 0;
    const latencies = new Array<number>(NODES);
    const joinOne = async (i: number) => {
      const t = performance.now();
      await controller.join('big', `node-${i}`, { publicIP: `192.0.${(i >> 8) & 255}.${i & 255}`, backendData: { VtepMAC: '02:00:00:00:00:01' } });
      latencies[i] = performance.now() - t;
    };
    const start = performance.now();
    if (mode === 'sequential') {
      for (let i = 0; i < NODES; i++) await joinOne(i);
    } else {
      for (let i = 0; i < NODES; i += BATCH) {
        await Promise.all(Array.from({ length: Math.min(BATCH, NODES - i) }, (_, k) => joinOne(i + k)));
      }
    }
    const totalMs = performance.now() - start;
    const tenth = Math.max(1, Math.floor(NODES / 10));
    const byTenth = [];
    for (let i = 0; i < NODES; i += tenth) {
      const slice = latencies.slice(i, i + tenth);
      byTenth.push(slice.reduce((a, b) => a + b, 0) / slice.length);
    }
    const net = await store.getNetwork('big');
    if (net?.leaseCount !== NODES) throw new Error(`expected ${NODES} leases, the store has ${net?.leaseCount}`);
    return {
      mode, nodes: NODES, totalMs, latencies: [...latencies].sort((a, b) => a - b),
      messages: pub.messages, bytes: pub.bytes, duplicates: await duplicatesIn(store, 'big'), conflicts: counter.conflicts, byTenth,
    };
  } finally {
    await store.close();
  }
}

async function exhaust(dir: string): Promise<string> {
  const store = new SqliteStore(join(dir, 'small.db'));
  try {
    const controller = new Controller(store, new CountingPublisher(), { topics: new Topics(), log: silentLogger });
    await controller.applyNetwork('small', parseNetConf({ Network: '10.9.0.0/22', SubnetLen: 24 }, {}));
    const got = [];
    for (const node of ['a', 'b', 'c']) got.push(`${node}=${(await controller.join('small', node, { publicIP: '192.0.2.1' })).subnet}`);
    try {
      await controller.join('small', 'd', { publicIP: '192.0.2.1' });
      return `${got.join(' ')}; the 4th node got a lease: this is a bug`;
    } catch (e) {
      return `${got.join(' ')}\n4th node: ${errorMessage(e)}`;
    }
  } finally {
    await store.close();
  }
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ')).join('\n');
}

const ms = (v: number) => v.toFixed(2);

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'twill-bench-'));
  try {
    const results = [await run(dir, 'sequential'), await run(dir, 'concurrent')];
    console.log(`\nAllocation: ${NODES} nodes join 10.0.0.0/8 (SubnetLen 24), SQLite WAL synchronous=FULL on ${dir}\n`);
    console.log(
      table([
        ['mode', 'nodes', 'total s', 'alloc/s', 'p50 ms', 'p99 ms', 'max ms', 'messages', 'MB out', 'lost races', 'duplicates'],
        ...results.map((r) => [
          r.mode === 'sequential' ? 'one at a time' : `${BATCH} concurrent`,
          String(r.nodes),
          (r.totalMs / 1000).toFixed(2),
          (r.nodes / (r.totalMs / 1000)).toFixed(0),
          ms(pct(r.latencies, 50)),
          ms(pct(r.latencies, 99)),
          ms(r.latencies[r.latencies.length - 1]!),
          String(r.messages),
          (r.bytes / 1e6).toFixed(1),
          String(r.conflicts),
          String(r.duplicates),
        ]),
      ]),
    );
    console.log('\nMean ms per allocation by tenth of the run (does cost grow with the lease count?)\n');
    console.log(
      table([
        ['mode', ...results[0]!.byTenth.map((_, i) => `${i * 10}-${(i + 1) * 10}%`)],
        ...results.map((r) => [r.mode === 'sequential' ? 'one at a time' : `${BATCH} concurrent`, ...r.byTenth.map(ms)]),
      ]),
    );
    console.log('\nExhaustion: 10.9.0.0/22 with SubnetLen 24\n');
    console.log(await exhaust(dir));
    if (results.some((r) => r.duplicates > 0)) process.exitCode = 1;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
