// The route controller's applier: it carries out planned actions against the
// simulated cloud (in memory) and a real Controller on an in-memory store,
// and must keep the guarantees the plan relies on: lease writes go through
// the controller (so they are published), a node's calls run in order and a
// failed prepare stops them, a failure is recorded against its node and the
// rest goes on, a cloud that refuses for its limit leaves the node pending.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNetConf } from '../../core/config.js';
import { createLogger, silentLogger } from '../../core/log.js';
import { Metrics } from '../../core/metrics.js';
import { Topics } from '../../core/topics.js';
import { Controller } from '../../control/controller/controller.js';
import type { Cloud, CloudInstance, CloudRoute, DesiredRoute } from '../../control/routes/clouds/cloud.js';
import { SimCloud, SimVpc, simTable } from '../../control/routes/clouds/sim.js';
import { applyDeletes, applyJobs, applyJoins, applyReleases, applyStatus, type ApplyContext } from '../../control/routes/apply.js';
import { PoolLedger } from '../../control/routes/plan.js';
import { Notes } from '../../control/routes/status.js';
import { WHY } from '../../control/routes/reach.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { CountingPublisher } from '../helpers/counting.js';

const T = simTable('net');

interface Env {
  vpc: SimVpc;
  cloud: SimCloud;
  store: SqliteStore;
  controller: Controller;
  publisher: CountingPublisher;
  logs: string[];
  ctx(cloud?: Cloud): ApplyContext;
}

async function env(): Promise<Env> {
  const vpc = new SimVpc(':memory:');
  const cloud = new SimCloud(vpc);
  const store = new SqliteStore(':memory:');
  const publisher = new CountingPublisher();
  const controller = new Controller(store, publisher, { topics: new Topics(), log: silentLogger, leaseTtlMs: 3_600_000 });
  const config = parseNetConf({ Network: '10.10.0.0/16', Backend: { Type: 'aws-vpc', RouteLimit: 2 } }, {});
  await controller.applyNetwork('net', config);
  const logs: string[] = [];
  const log = createLogger('routes', 'info', (l) => logs.push(l));
  const ref = { name: 'net', config, leases: [] };
  return {
    vpc, cloud, store, controller, publisher, logs,
    ctx: (c = cloud) => ({ network: 'net', ref, cloud: c, leases: controller, log, notes: new Notes() }),
  };
}

const want = (node: string, destination: string): DesiredRoute => ({ table: T, destination, target: node, node });
const routes = (e: Env) => Object.fromEntries(e.vpc.routes(T).map((r) => [r.destination, r.target]));

describe('route applier', () => {
  let e: Env;
  beforeEach(async () => {
    e = await env();
  });
  afterEach(async () => {
    await e.store.close();
    e.vpc.close();
  });

  test('lease writes go through the controller, so peers hear of them; a release of a rewritten lease counts as gone but not released', async () => {
    const ctx = e.ctx();
    const written = await applyJoins(ctx, [{ node: 'a', publicIP: '172.31.0.10', backendData: { RouteTarget: 'a' } }, { node: 'b', publicIP: '172.31.0.11', backendData: {} }]);
    assert.deepEqual(written.map((l) => [l.node, l.publicIP, l.backendData]), [['a', '172.31.0.10', { RouteTarget: 'a' }], ['b', '172.31.0.11', {}]]);
    assert.equal(e.publisher.count > 0, true, 'published like any join');
    const published = e.publisher.count;
    const a = written[0] as (typeof written)[number];
    const r = await applyReleases(ctx, [{ node: 'a', revision: a.revision, subnet: a.subnet }, { node: 'b', revision: 999, subnet: null }]);
    assert.deepEqual(r, { released: 1, dropped: ['a', 'b'] });
    assert.equal(await e.store.getLease('net', 'a'), undefined);
    assert.ok(await e.store.getLease('net', 'b'), 'a revision that moved on is not released');
    assert.ok(e.publisher.count > published, 'the removal is published');
    assert.ok(e.logs.some((l) => l.includes('instance left the network: lease released') && l.includes('node=a')));
  });

  test('a lease write that fails is recorded against its node with the controller’s words', async () => {
    const ctx = { ...e.ctx(), network: 'nope' };
    const written = await applyJoins(ctx, [{ node: 'a', publicIP: '172.31.0.10', backendData: {} }]);
    assert.deepEqual(written, []);
    assert.equal(ctx.notes.get('a')?.state, 'error');
    assert.match(ctx.notes.get('a')?.reason ?? '', /nope/);
  });

  test('deletes: what succeeded comes back in the plan’s order; a failure is the node’s, or the network’s when nobody holds the subnet', async () => {
    e.vpc.start('a', 'net');
    for (const d of ['10.10.1.0/24', '10.10.2.0/24', '10.10.3.0/24']) e.vpc.addRoute({ table: T, destination: d, target: 'a', hop: 'instance', description: '' }, 50);
    const failing: Cloud = Object.create(e.cloud, {
      deleteRoute: { value: async (net: never, r: CloudRoute) => (r.destination === '10.10.1.0/24' ? e.cloud.deleteRoute(net, r) : Promise.reject(new Error('throttled'))) },
    });
    const ctx = e.ctx(failing);
    const r = (destination: string): CloudRoute => ({ table: T, destination, target: 'a', instanceHop: true, blackhole: false, marked: false });
    const deletes = [{ route: r('10.10.1.0/24'), why: 'stale' as const }, { route: r('10.10.2.0/24'), node: 'a', why: 'stale' as const }, { route: r('10.10.3.0/24'), why: 'stale' as const }];
    const done = await applyDeletes(ctx, deletes);
    assert.deepEqual(done, [deletes[0]]);
    assert.deepEqual(Object.keys(routes(e)), ['10.10.2.0/24', '10.10.3.0/24']);
    assert.deepEqual(ctx.notes.get('a'), { state: 'error', reason: 'deleting route 10.10.2.0/24 from rtb-sim-net failed: throttled' });
    assert.equal(ctx.networkError, 'deleting route 10.10.3.0/24 from rtb-sim-net failed: throttled');
  });

  test('a node’s pipeline runs in order; a failed prepare stops it and gives its room back, other nodes go on', async () => {
    for (const n of ['a', 'b']) e.vpc.start(n, 'net');
    const calls: string[] = [];
    const aws: Cloud = Object.create(e.cloud, {
      prepareInstance: { value: async (_n: unknown, i: CloudInstance) => { calls.push(`prepare ${i.id}`); if (i.id === 'a') throw new Error('UnauthorizedOperation'); } },
      createRoute: { value: async (net: never, w: DesiredRoute) => { calls.push(`create ${w.node}`); return e.cloud.createRoute(net, w); } },
    });
    const ctx = e.ctx(aws);
    const inst = (id: string): CloudInstance => ({ id, state: 'running', target: id, tables: [T], needsPrepare: true });
    const ledger = new PoolLedger([{ id: T, what: 'route table', used: 2, limit: 2, source: 'RouteLimit' }], [{ id: T, pool: T }]);
    const r = await applyJobs(ctx, [
      { node: 'a', prepare: inst('a'), replace: [], create: [want('a', '10.10.1.0/24')] },
      { node: 'b', prepare: inst('b'), replace: [], create: [want('b', '10.10.2.0/24')] },
    ], ledger);
    assert.deepEqual(r, { prepared: 1, replaced: 0, created: 1, made: ['b'] });
    assert.deepEqual(calls.filter((c) => c.endsWith(' b')), ['prepare b', 'create b']);
    assert.ok(!calls.includes('create a'), 'no route through an unprepared instance');
    assert.deepEqual(routes(e), { '10.10.2.0/24': 'b' });
    assert.deepEqual(ctx.notes.get('a'), { state: 'error', reason: 'preparing the instance for routing failed: UnauthorizedOperation' });
    assert.equal(ledger.of(T)?.used, 1, 'a’s slot is free again');
  });

  test('a cloud that refuses for its own limit leaves the node pending with the cloud’s words and gives its room back', async () => {
    e.vpc.start('a', 'net');
    e.vpc.addRoute({ table: T, destination: '0.0.0.0/0', target: 'igw-1', hop: 'gateway', description: '' }, 50);
    e.vpc.addRoute({ table: T, destination: '10.20.0.0/16', target: 'pcx-1', hop: 'gateway', description: '' }, 50);
    const ctx = e.ctx();
    // twill counted room the table does not have (the quota is lower than it was told).
    const ledger = new PoolLedger([{ id: T, what: 'route table', used: 1, limit: 5, source: 'RouteLimit' }], [{ id: T, pool: T }]);
    const r = await applyJobs(ctx, [{ node: 'a', replace: [], create: [want('a', '10.10.1.0/24')] }], ledger);
    assert.deepEqual(r, { prepared: 0, replaced: 0, created: 0, made: [] });
    assert.deepEqual(ctx.notes.get('a'), { state: 'pending', reason: `route pending: route table ${T} is full (2 of 2)`, why: WHY.refused });
    assert.equal(ledger.of(T)?.used, 0);
  });

  test('status: the pending metric always, the store and the log on change only, and gone nodes lose theirs', async () => {
    const metrics = new Metrics();
    const logs: string[] = [];
    const sinks = { network: 'net', store: e.store, log: createLogger('routes', 'info', (l) => logs.push(l)), metrics };
    await e.store.putRouteStatus({ network: 'net', node: 'left', state: 'ok', reason: '', updatedAt: '2030-01-01T00:00:00.000Z' });
    await applyStatus(sinks, [
      { node: 'a', state: 'pending', reason: 'route pending: full', changed: true, hadStatus: false },
      { node: 'b', state: 'ok', reason: '', changed: true, hadStatus: true },
      { node: 'c', state: 'pending', reason: 'route pending: full', changed: false, hadStatus: true },
    ], ['left'], '2030-01-01T00:01:00.000Z');
    assert.deepEqual((await e.store.listRouteStatus('net')).map((s) => [s.node, s.state]), [['a', 'pending'], ['b', 'ok']]);
    assert.equal(metrics.render().match(/twill_route_pending\{network="net",node="[ac]"\} 1/g)?.length, 2);
    assert.equal(logs.filter((l) => l.includes('route pending')).length, 1, 'c did not change: not logged again');
    assert.ok(logs.some((l) => l.includes('route ready') && l.includes('node=b')));
  });
});
