// The reconcile itself, cloud-agnostic, against the simulated cloud in this
// process: leases, routes, the limit, ownership, renewal and crash repair.
import { CountingPublisher, countWrites } from '../helpers/counting.js';
import { after, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { parseNetConf } from '../../core/config.js';
import { createLogger, silentLogger } from '../../core/log.js';
import { Metrics } from '../../core/metrics.js';
import { Topics } from '../../core/topics.js';
import { Controller } from '../../control/controller/controller.js';
import type { Cloud } from '../../control/routes/clouds/cloud.js';
import { SimCloud, SimVpc, simTable } from '../../control/routes/clouds/sim.js';
import { reconcileNetwork, type RouteDeps } from '../../control/routes/routes.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { removeTempDirs, tempDir } from '../helpers/procs.js';



after(() => removeTempDirs());

interface Env {
  store: SqliteStore;
  vpc: SimVpc;
  cloud: SimCloud;
  controller: Controller;
  publisher: CountingPublisher;
  metrics: Metrics;
  logs: string[];
  deps: RouteDeps;
  clock: { now: number };
  run(): ReturnType<typeof reconcileNetwork>;
}

async function env(conf: object = { Network: '10.10.0.0/16', Backend: { Type: 'aws-vpc', RouteLimit: 3 } }): Promise<Env> {
  const dir = tempDir('twill-routes-');
  const store = new SqliteStore(join(dir, 'twill.db'));
  const vpc = new SimVpc(join(dir, 'sim.db'));
  const cloud = new SimCloud(vpc);
  const publisher = new CountingPublisher();
  const clock = { now: Date.parse('2030-01-01T00:00:00Z') };
  const controller = new Controller(store, publisher, { topics: new Topics(), log: silentLogger, leaseTtlMs: 3_600_000, now: () => clock.now });
  await controller.applyNetwork('net', parseNetConf(conf, {}));
  const metrics = new Metrics();
  const logs: string[] = [];
  const log = createLogger('routes', 'info', (l) => logs.push(l));
  const deps: RouteDeps = { controller, store, cloud, log, metrics, now: () => clock.now };
  return { store, vpc, cloud, controller, publisher, metrics, logs, deps, clock, run: () => reconcileNetwork('net', deps) };
}

const routeMap = (vpc: SimVpc) => Object.fromEntries(vpc.routes(simTable('net')).map((r) => [r.destination, r.target]));

async function subnetOf(e: Env, node: string): Promise<string> {
  const l = await e.store.getLease('net', node);
  assert.ok(l?.subnet, `${node} has a lease`);
  return l.subnet;
}

describe('route reconcile (simulated cloud)', () => {
  let e: Env;
  beforeEach(async () => {
    e = await env();
  });

  test('instances get leases and routes; a stopped one loses its route but keeps its lease; a terminated one loses both', async () => {
    e.vpc.start('a', 'net');
    e.clock.now += 1000;
    e.vpc.start('b', 'net');
    const r1 = await e.run();
    assert.equal(r1.created, 2);
    const sa = await subnetOf(e, 'a');
    const sb = await subnetOf(e, 'b');
    assert.deepEqual(routeMap(e.vpc), { [sa]: 'a', [sb]: 'b' });
    assert.equal((await e.store.getLease('net', 'a'))?.publicIP, e.vpc.instance('a')?.privateIP);

    e.vpc.stop('a');
    const r2 = await e.run();
    assert.equal(r2.deleted, 1);
    assert.deepEqual(routeMap(e.vpc), { [sb]: 'b' });
    assert.ok(await e.store.getLease('net', 'a'), 'a stopped instance keeps its lease');
    assert.match(r2.pending.a ?? '', /instance is stopped/);

    e.vpc.start('a', 'net');
    await e.run();
    assert.equal(await subnetOf(e, 'a'), sa, 'restarted with the same subnet');
    assert.deepEqual(routeMap(e.vpc), { [sa]: 'a', [sb]: 'b' });

    e.vpc.terminate('b');
    const r4 = await e.run();
    assert.equal(r4.deleted, 1);
    assert.equal(r4.released, 1);
    assert.equal(await e.store.getLease('net', 'b'), undefined);
    assert.deepEqual(routeMap(e.vpc), { [sa]: 'a' });
    assert.deepEqual((await e.store.listRouteStatus('net')).map((s) => [s.node, s.state]), [['a', 'ok']]);
  });

  test('a reconcile with nothing to change writes nothing, publishes nothing and calls only the list calls', async () => {
    for (const n of ['a', 'b', 'c']) e.vpc.start(n, 'net');
    await e.run();
    const writes = countWrites(e.store);
    const published = e.publisher.count;
    const before = { ...e.cloud.calls };
    e.clock.now += 20 * 60_000; // a third of the TTL: no renewal yet
    const r = await e.run();
    assert.deepEqual([r.joined, r.created, r.deleted, r.replaced, r.released], [0, 0, 0, 0, 0]);
    assert.equal(writes.writes, 0);
    assert.equal(e.publisher.count, published);
    const delta = Object.fromEntries(Object.entries(e.cloud.calls).map(([k, v]) => [k, v - (before[k] ?? 0)]).filter(([, v]) => v !== 0));
    assert.deepEqual(delta, { DescribeInstances: 1, DescribeRouteTables: 1 });
    // Past half the TTL every lease is renewed once, and nothing else changes.
    e.clock.now += 15 * 60_000;
    const r2 = await e.run();
    assert.equal(r2.joined, 3);
    assert.equal(writes.writes, 3);
  });

  test('the limit: no create past it, the oldest lease waits first in line, the pending node is marked once and gets its route when another leaves', async () => {
    for (const n of ['n1', 'n2', 'n3', 'n4', 'n5']) {
      e.vpc.start(n, 'net');
    }
    // Leases are created in id order by the first reconcile, one clock tick apart.
    const joinOrder: string[] = [];
    const join = e.controller.join.bind(e.controller);
    e.controller.join = async (net, node, req) => {
      e.clock.now += 1000;
      joinOrder.push(node);
      return join(net, node, req);
    };
    const r1 = await e.run();
    assert.equal(r1.created, 3);
    assert.deepEqual(Object.keys(r1.pending).sort(), ['n4', 'n5']);
    assert.equal(r1.pending.n4, 'route pending: route table full (3 of 3, Backend.RouteLimit)');
    assert.equal(e.cloud.calls.CreateRoute, 3, 'no create call past the limit');
    assert.equal(e.metrics.render().match(/twill_route_pending\{network="net",node="n\d"\} 1/g)?.length, 2);
    assert.match(e.metrics.render(), /twill_routes\{network="net"\} 3/);
    const pendingLogs = () => e.logs.filter((l) => l.includes('route pending')).length;
    assert.equal(pendingLogs(), 2);
    for (let i = 0; i < 3; i++) await e.run();
    assert.equal(pendingLogs(), 2, 'logged once, not on every reconcile');
    assert.equal(e.cloud.calls.CreateRoute, 3);
    const status = await e.store.listRouteStatus('net');
    assert.equal(status.find((s) => s.node === 'n4')?.reason, 'route pending: route table full (3 of 3, Backend.RouteLimit)');

    // n2 leaves: n4 (older than n5) gets the room, n5 keeps waiting.
    e.vpc.terminate('n2');
    const r2 = await e.run();
    assert.equal(r2.deleted, 1);
    assert.equal(r2.created, 1);
    assert.deepEqual(Object.keys(r2.pending), ['n5']);
    const routed = new Set(Object.values(routeMap(e.vpc)));
    assert.deepEqual([...routed].sort(), ['n1', 'n3', 'n4']);
    assert.doesNotMatch(e.metrics.render(), /node="n4"/);
    assert.ok(e.logs.some((l) => l.includes('route ready') && l.includes('node=n4')));

    // Routes never flap: n1 stopping and starting again does not take n5's new route back.
    e.vpc.stop('n1');
    await e.run();
    assert.deepEqual(new Set(Object.values(routeMap(e.vpc))), new Set(['n3', 'n4', 'n5']));
    e.vpc.start('n1', 'net');
    const r3 = await e.run();
    assert.deepEqual(new Set(Object.values(routeMap(e.vpc))), new Set(['n3', 'n4', 'n5']));
    assert.deepEqual(Object.keys(r3.pending), ['n1']);
  });

  test("routes of other tools are never touched: other next hops, other CIDRs, other prefix lengths; they count against the limit", async () => {
    e.vpc.start('a', 'net');
    await e.run();
    const sa = await subnetOf(e, 'a');
    const table = simTable('net');
    e.vpc.addRoute({ table, destination: '0.0.0.0/0', target: 'igw-1', hop: 'gateway', description: '' }, 100);
    e.vpc.addRoute({ table, destination: '10.10.200.0/24', target: 'pcx-1', hop: 'gateway', description: '' }, 100);
    e.vpc.addRoute({ table, destination: '192.168.0.0/24', target: 'x', hop: 'instance', description: '' }, 100);
    e.vpc.addRoute({ table, destination: '10.10.0.0/16', target: 'a', hop: 'instance', description: '' }, 100);
    const before = e.vpc.routes(table);
    const r = await e.run();
    assert.deepEqual([r.created, r.deleted, r.replaced], [0, 0, 0]);
    assert.deepEqual(e.vpc.routes(table), before);
    // The table now holds 5 routes against a limit of 3: a newcomer waits, the counting includes other tools' routes.
    e.vpc.start('b', 'net');
    const r2 = await e.run();
    assert.equal(r2.pending.b, 'route pending: route table full (5 of 3, Backend.RouteLimit)');
    assert.equal(routeMap(e.vpc)[sa], 'a');
  });

  test('wrong targets are retargeted in place, blackholes and stale routes deleted first', async () => {
    const big = await env({ Network: '10.10.0.0/16', Backend: { Type: 'aws-vpc' } });
    big.vpc.start('a', 'net');
    big.vpc.start('b', 'net');
    await big.run();
    const sa = await subnetOf(big, 'a');
    const sb = await subnetOf(big, 'b');
    const table = simTable('net');
    // Someone points a's subnet at b, and a stale route of a departed member lingers as a blackhole.
    big.vpc.replaceRoute(table, sa, 'b');
    big.vpc.start('gone', 'net');
    big.vpc.terminate('gone');
    // (Subnets past the first 100 candidates, so the allocator never gives them to a or b.)
    big.vpc.addRoute({ table, destination: '10.10.251.0/24', target: 'gone', hop: 'instance', description: '' }, 50);
    // A route twill made for a subnet nobody holds any more (a member's target).
    big.vpc.addRoute({ table, destination: '10.10.250.0/24', target: 'b', hop: 'instance', description: '' }, 50);
    const r = await big.run();
    assert.equal(r.replaced, 1);
    assert.equal(r.deleted, 2);
    assert.equal(big.cloud.calls.ReplaceRoute, 1);
    assert.deepEqual(routeMap(big.vpc), { [sa]: 'a', [sb]: 'b' });
  });

  test('a controller that dies between the lease and the route is repaired by the next reconcile', async () => {
    e.vpc.start('a', 'net');
    const failing: Cloud = Object.create(e.cloud, {
      createRoute: { value: async () => { throw new Error('connection reset'); } },
    });
    const r1 = await reconcileNetwork('net', { ...e.deps, cloud: failing });
    assert.ok(await e.store.getLease('net', 'a'), 'the lease was written');
    assert.deepEqual(routeMap(e.vpc), {});
    assert.match(r1.errors.a ?? '', /connection reset/);
    assert.equal((await e.store.listRouteStatus('net'))[0]?.state, 'error');
    const r2 = await e.run();
    assert.equal(r2.created, 1);
    assert.deepEqual(routeMap(e.vpc), { [await subnetOf(e, 'a')]: 'a' });
    assert.equal((await e.store.listRouteStatus('net'))[0]?.state, 'ok');
  });

  test('a failed delete keeps the departed lease, so the route is still known as twill’s next time', async () => {
    e.vpc.start('a', 'net');
    await e.run();
    const sa = await subnetOf(e, 'a');
    // Untagging is leaving too: the instance moves to another network.
    e.vpc.terminate('a');
    const failing: Cloud = Object.create(e.cloud, { deleteRoute: { value: async () => { throw new Error('throttled'); } } });
    const r1 = await reconcileNetwork('net', { ...e.deps, cloud: failing });
    assert.equal(r1.released, 0);
    assert.ok(await e.store.getLease('net', 'a'));
    const r2 = await e.run();
    assert.equal(r2.deleted, 1);
    assert.equal(r2.released, 1);
    assert.equal(routeMap(e.vpc)[sa], undefined);
    assert.deepEqual(await e.store.listRouteStatus('net'), []);
  });

  test('reservations are kept and routed once their instance runs; leases of non-instances are released', async () => {
    await e.controller.reserve('net', 'r1', '10.10.50.0/24');
    await e.controller.join('net', 'stranger', { publicIP: '192.0.2.9' });
    const r1 = await e.run();
    assert.equal(r1.released, 1);
    assert.equal(await e.store.getLease('net', 'stranger'), undefined);
    assert.match(r1.pending.r1 ?? '', /no instance r1 carries the tag twill-network=net/);
    e.vpc.start('r1', 'net');
    await e.run();
    assert.deepEqual(routeMap(e.vpc), { '10.10.50.0/24': 'r1' });
    assert.equal((await e.store.getLease('net', 'r1'))?.expiresAt, null);
  });

  test('a network of another backend or an IPv6-only one is refused with a clear error', async () => {
    await e.controller.applyNetwork('plain', parseNetConf({ Network: '10.1.0.0/16', Backend: { Type: 'vxlan' } }, {}));
    await assert.rejects(reconcileNetwork('plain', e.deps), /backend vxlan: the sim route controller serves aws-vpc, gce, ali-vpc networks only/);
    await assert.rejects(reconcileNetwork('nope', e.deps), /network nope does not exist/);
    await e.controller.applyNetwork('v6', parseNetConf({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:1::/48', Backend: { Type: 'aws-vpc' } }, {}));
    await assert.rejects(reconcileNetwork('v6', e.deps), /network v6 has EnableIPv4 false: VPC routes are IPv4 only/);
  });
});
