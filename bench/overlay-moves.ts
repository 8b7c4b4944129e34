// Moves between route and overlay at scale (issue 23): one cloud network of
// 1,000 members with a limit of 50 routes and an overlay, on the simulated
// cloud and the real SQLite store, the controller publishing to a counter.
// For each event, the time from the event (an instance started, terminated,
// a limit lowered) to the reach written in the member's lease, the lease
// writes it cost and the messages: on the changes topic (each delivered to
// every member) and on members' own topics (one member each).
//   first reconcile    1,000 instances start at once: 50 routed, 950 overlay
//   overlay member     one more instance starts: its lease, reach overlay
//   routed member out  a routed instance terminates: the oldest overlay
//                      member's route made, confirmed, reach route written
//   route -> overlay   the limit lowered by one: reach overlay written, then
//                      (every agent reporting it applied) the route deleted
// Run: node --import tsx bench/overlay-moves.ts [members, default 1000] [limit, default 50]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseNetConf, type NetConf } from '../core/config.js';
import { silentLogger } from '../core/log.js';
import { Topics } from '../core/topics.js';
import { Controller } from '../control/controller/controller.js';
import { SimCloud, SimVpc, simTable } from '../control/routes/clouds/sim.js';
import { reconcileSettled } from '../control/routes/poke.js';
import { reconcileNetwork, type ReconcileReport, type RouteDeps } from '../control/routes/routes.js';
import { SqliteStore } from '../control/store/sqlite.js';
import { countWrites } from '../test/helpers/counting.js';

const MEMBERS = Number(process.argv[2] ?? 1000);
const LIMIT = Number(process.argv[3] ?? 50);
const topics = new Topics();

/** Publishes counted by kind: the network's changes topic reaches every member, an own topic one. */
class TopicCounter {
  changes = 0;
  own = 0;
  async publish(topic: string): Promise<void> {
    if (topic === topics.netChanges('net')) this.changes++;
    else if (topic.endsWith('/lease')) this.own++;
  }
}

function conf(limit: number): NetConf {
  const c = parseNetConf({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'aws-vpc', RouteLimit: limit } }, {});
  return { ...c, Backend: { ...c.Backend, Overlay: { Type: 'vxlan' } } } as NetConf;
}

interface Row {
  step: string;
  ms: number;
  reconciles: number;
  leaseWrites: number;
  changes: number;
  own: number;
  note: string;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'twill-bench-overlay-'));
  const store = new SqliteStore(join(dir, 'twill.db'));
  const vpc = new SimVpc(join(dir, 'sim.db'));
  const pub = new TopicCounter();
  const controller = new Controller(store, pub, { topics, log: silentLogger, leaseTtlMs: 24 * 3_600_000 });
  const deps: RouteDeps = { controller, store, cloud: new SimCloud(vpc), log: silentLogger };
  const writes = countWrites(store);
  const rows: Row[] = [];
  const id = (i: number) => `i${String(i).padStart(5, '0')}`;
  const reachOf = async (node: string) => (await store.getLease('net', node))?.reach;

  /** Runs fn, counting its time, reconciles, lease writes and messages. */
  const measure = async (step: string, fn: () => Promise<{ reconciles: number; note: string }>) => {
    const before = { w: writes.writes, c: pub.changes, o: pub.own };
    const t = performance.now();
    const r = await fn();
    rows.push({ step, ms: performance.now() - t, reconciles: r.reconciles, leaseWrites: writes.writes - before.w, changes: pub.changes - before.c, own: pub.own - before.o, note: r.note });
  };
  const settled = async (): Promise<{ report: ReconcileReport; runs: number }> => {
    const report = await reconcileSettled('net', deps);
    return { report, runs: report.created + report.replaced > 0 ? 2 : 1 };
  };

  try {
    await controller.applyNetwork('net', conf(LIMIT));
    for (let i = 0; i < MEMBERS; i++) vpc.start(id(i), 'net');
    await measure(`first reconcile (${MEMBERS} instances)`, async () => {
      const { report, runs } = await settled();
      return { reconciles: runs, note: `${report.overlay?.route} route, ${report.overlay?.overlay} overlay` };
    });

    await measure('overlay member starts', async () => {
      vpc.start(id(MEMBERS), 'net');
      const { runs } = await settled();
      return { reconciles: runs, note: `reach ${JSON.stringify(await reachOf(id(MEMBERS)))}` };
    });

    // The oldest overlay member is the first lease past the limit.
    const leases = (await store.listLeases('net')).sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.node.localeCompare(b.node));
    const firstOverlay = leases.find((l) => l.reach?.via === 'overlay')!.node;
    const routedOne = vpc.routes(simTable('net'))[0]!.target;
    await measure('routed member terminates', async () => {
      vpc.terminate(routedOne);
      const { runs } = await settled();
      return { reconciles: runs, note: `${firstOverlay} reach ${JSON.stringify(await reachOf(firstOverlay))}` };
    });

    // The limit lowered by one: a reach write, every agent reporting it applied, then the delete.
    await controller.applyNetwork('net', conf(LIMIT - 1));
    let moved = '';
    await measure('route -> overlay: reach written', async () => {
      const r = await reconcileNetwork('net', deps);
      moved = (await store.listLeases('net')).filter((l) => l.reach?.via === 'overlay' && vpc.routes(simTable('net')).some((x) => x.target === l.node))[0]?.node ?? '?';
      return { reconciles: 1, note: `${moved} overlay, ${r.overlay?.waiting} route held` };
    });
    const revision = (await store.getNetwork('net'))!.revision;
    const status = JSON.stringify({ v: 2, state: 'online', agentVersion: 'bench', revision, inSync: true, errors: [] });
    for (const l of await store.listLeases('net')) await controller.handleMessage(topics.nodeStatus('net', l.node), Buffer.from(status), 'bench', true);
    await measure('route -> overlay: agents applied, route deleted', async () => {
      const r = await reconcileNetwork('net', deps);
      return { reconciles: 1, note: `${r.deleted} deleted, ${r.overlay?.route} route` };
    });
  } finally {
    vpc.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }

  console.log(`\nOverlay moves: ${MEMBERS} members, limit ${LIMIT}, simulated cloud, SQLite store`);
  console.log('messages: on the changes topic each is delivered to every member; own: one member\'s own topic\n');
  const header = ['step', 'time ms', 'reconciles', 'store writes', 'changes msgs', 'own msgs', 'outcome'];
  const cells = rows.map((r) => [r.step, r.ms.toFixed(0), String(r.reconciles), String(r.leaseWrites), String(r.changes), String(r.own), r.note]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  console.log(header.map((h, i) => h.padEnd(widths[i]!)).join('  '));
  for (const c of cells) console.log(c.map((x, i) => x.padEnd(widths[i]!)).join('  ').trimEnd());
}

await main();
