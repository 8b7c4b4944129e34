// Route reconcile benchmark against the local fake endpoints of EC2, Compute
// Engine and Alibaba Cloud, through the real SDK clients. For each cloud and
// each size (100 and 1,000 tagged instances, the limit raised with
// Backend.RouteLimit so that all fit), three reconciles:
//   from empty       every instance gets a lease and a route
//   nothing to do    the same again: goal, the list calls only (one per page), no writes
//   one out, one in  one instance terminated, one launched: goal, a constant
//                    number of calls whatever the size
// The fakes simulate a budget of 5 mutating calls per second per action (as
// AWS documents) and report the simulated time instead of sleeping through it:
// a call is served no earlier than the last answer already sent and no earlier
// than its action's budget allows. Wall time is the real time against the fakes.
// Run: node --import tsx bench/reconcile.ts [sizes, default 100,1000]
import { CountingPublisher, countWrites } from '../test/helpers/counting.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseNetConf } from '../core/config.js';
import { silentLogger } from '../core/log.js';
import { Topics } from '../core/topics.js';
import { AliCloud } from '../control/routes/clouds/ali.js';
import { AwsCloud } from '../control/routes/clouds/aws.js';
import type { Cloud } from '../control/routes/clouds/cloud.js';
import { GceCloud } from '../control/routes/clouds/gce.js';
import { Controller } from '../control/controller/controller.js';
import { reconcileNetwork, type ReconcileReport } from '../control/routes/routes.js';
import { SqliteStore } from '../control/store/sqlite.js';
import { FakeAli } from '../test/fakes/ali.js';
import { FakeEc2 } from '../test/fakes/ec2.js';
import type { FakeCloud } from '../test/fakes/fake.js';
import { FakeGce } from '../test/fakes/gce.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';
const SIZES = (process.argv[2] ?? '100,1000').split(',').map(Number);
const BUDGET = 5;
const CREDS = { accessKeyId: 'AKIDFAKEFAKEFAKE', secretAccessKey: 'fake-secret-for-tests' };



/** One cloud behind its fake: how to build it, add an instance, remove one. */
interface Rig {
  cloud: Cloud;
  fake: FakeCloud;
  backend: object;
  add(i: number): void;
  remove(i: number): void;
  lists: string[];
  close(): Promise<void>;
}

async function awsRig(n: number): Promise<Rig> {
  const fake = new FakeEc2();
  const url = await fake.start();
  fake.routeLimit = n + 10;
  fake.addTable({ id: 'rtb-1', vpcId: 'vpc-1', main: true });
  const cloud = new AwsCloud({ endpoint: url, region: 'us-east-1', credentials: CREDS });
  return {
    cloud, fake, backend: { Type: 'aws-vpc', RouteLimit: n + 10 },
    add: (i) => fake.addInstance({ id: `i-${i.toString(16).padStart(8, '0')}`, network: 'net' }),
    remove: (i) => { fake.instances.delete(`i-${i.toString(16).padStart(8, '0')}`); },
    lists: ['DescribeInstances', 'DescribeRouteTables'],
    close: async () => { await cloud.close(); await fake.close(); },
  };
}

async function gceRig(n: number): Promise<Rig> {
  const fake = new FakeGce('bench');
  const url = await fake.start();
  fake.routeLimit = n + 10;
  const cloud = new GceCloud({ endpoint: url, project: 'bench', accessToken: 'bench-token' });
  return {
    cloud, fake, backend: { Type: 'gce', RouteLimit: n + 10 },
    add: (i) => fake.addInstance({ name: `n-${i}`, twill: 'net' }),
    remove: (i) => { fake.instances.delete(`us-east1-b/n-${i}`); },
    lists: ['instances.aggregatedList', 'routes.list'],
    close: async () => { await cloud.close(); await fake.close(); },
  };
}

async function aliRig(n: number): Promise<Rig> {
  const fake = new FakeAli();
  const url = await fake.start();
  fake.routeLimit = n + 10;
  fake.addTable({ id: 'vtb-1', vpcId: 'vpc-1', type: 'System' });
  const cloud = new AliCloud({ endpoint: url, region: 'cn-hangzhou', pollMs: 0 });
  return {
    cloud, fake, backend: { Type: 'ali-vpc', AccessKeyID: CREDS.accessKeyId, AccessKeySecret: CREDS.secretAccessKey, RouteLimit: n + 10 },
    add: (i) => fake.addInstance({ id: `i-${i.toString(36)}`, network: 'net' }),
    remove: (i) => { fake.instances.delete(`i-${i.toString(36)}`); },
    lists: ['DescribeInstances', 'DescribeRouteTableList', 'DescribeRouteEntryList'],
    close: () => fake.close(),
  };
}

interface Measure {
  calls: Record<string, number>;
  total: number;
  mutating: number;
  simulated: number;
  wallMs: number;
  writes: number;
  published: number;
  report: ReconcileReport;
}

async function bench(name: string, make: (n: number) => Promise<Rig>, n: number): Promise<Record<string, Measure>> {
  const dir = mkdtempSync(join(tmpdir(), 'twill-bench-'));
  const rig = await make(n);
  const store = new SqliteStore(join(dir, 'twill.db'));
  const publisher = new CountingPublisher();
  const controller = new Controller(store, publisher, { topics: new Topics(), log: silentLogger });
  await controller.applyNetwork('net', parseNetConf({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: rig.backend }, {}));
  const writes = countWrites(store);
  const deps = { controller, store, cloud: rig.cloud, log: silentLogger };
  for (let i = 1; i <= n; i++) rig.add(i);

  const run = async (): Promise<Measure> => {
    rig.fake.resetCounters();
    rig.fake.budget = { perSecond: BUDGET };
    const w0 = writes.writes;
    const p0 = publisher.count;
    const t0 = performance.now();
    const report = await reconcileNetwork('net', deps);
    const wallMs = performance.now() - t0;
    if (Object.keys(report.errors).length || Object.keys(report.pending).length) {
      throw new Error(`${name} ${n}: unexpected errors or pending nodes: ${JSON.stringify({ errors: report.errors, pending: report.pending })}`);
    }
    return {
      calls: { ...rig.fake.calls },
      total: rig.fake.total(),
      mutating: rig.fake.mutatingCalls(),
      simulated: rig.fake.simulatedSeconds,
      wallMs,
      writes: writes.writes - w0,
      published: publisher.count - p0,
      report,
    };
  };
  try {
    const empty = await run();
    if (empty.report.created !== n) throw new Error(`${name} ${n}: created ${empty.report.created} routes, expected ${n}`);
    const idle = await run();
    rig.remove(1);
    rig.add(n + 1);
    const churn = await run();
    if (churn.report.created !== 1 || churn.report.deleted !== 1) throw new Error(`${name} ${n}: churn made ${churn.report.created} creates and ${churn.report.deleted} deletes`);
    return { empty, idle, churn };
  } finally {
    await rig.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const pad = (s: string, n: number) => s.padEnd(n);
const fmtCalls = (m: Measure, lists: string[]) => {
  const list = lists.reduce((a, k) => a + (m.calls[k] ?? 0), 0);
  return `${m.total} (${list} list, ${m.mutating} mutating${m.total - list - m.mutating ? `, ${m.total - list - m.mutating} waits` : ''})`;
};
const byAction = (m: Measure) => Object.entries(m.calls).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k} ${v}`).join(', ');

const rigs: [string, (n: number) => Promise<Rig>][] = [['aws-vpc', awsRig], ['gce', gceRig], ['ali-vpc', aliRig]];
for (const [name, make] of rigs) {
  const results = new Map<number, Record<string, Measure>>();
  for (const n of SIZES) results.set(n, await bench(name, make, n));
  const lists = (await make(1).then(async (r) => { await r.close(); return r.lists; }));
  console.log(`\n${name}: reconcile of one network, calls to the cloud (budget ${BUDGET} mutating calls/s per action, simulated)`);
  const header = ['scenario', ...SIZES.map((n) => `${n} instances`)];
  const rows: string[][] = [];
  const line = (label: string, f: (m: Measure) => string, key: string) => rows.push([label, ...SIZES.map((n) => f((results.get(n) as Record<string, Measure>)[key] as Measure))]);
  line('from empty: calls', (m) => fmtCalls(m, lists), 'empty');
  line('from empty: simulated time', (m) => `${m.simulated.toFixed(1)} s`, 'empty');
  line('from empty: wall time (fake)', (m) => `${(m.wallMs / 1000).toFixed(2)} s`, 'empty');
  line('nothing to do: calls', (m) => fmtCalls(m, lists), 'idle');
  line('nothing to do: store writes, publishes', (m) => `${m.writes}, ${m.published}`, 'idle');
  line('nothing to do: wall time (fake)', (m) => `${m.wallMs.toFixed(0)} ms`, 'idle');
  line('one out, one in: calls', (m) => fmtCalls(m, lists), 'churn');
  line('one out, one in: store writes', (m) => `${m.writes}`, 'churn');
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  console.log(header.map((h, i) => pad(h, widths[i] ?? 0)).join('  '));
  for (const r of rows) console.log(r.map((c, i) => pad(c, widths[i] ?? 0)).join('  ').trimEnd());
  for (const n of SIZES) {
    const r = results.get(n) as Record<string, Measure>;
    console.log(`  ${n}: from empty: ${byAction(r.empty as Measure)}`);
    console.log(`  ${n}: nothing to do: ${byAction(r.idle as Measure)}`);
    console.log(`  ${n}: one out, one in: ${byAction(r.churn as Measure)}`);
  }
}
