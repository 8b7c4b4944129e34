// gce against a local Compute Engine REST endpoint, through the real
// @google-cloud/compute clients (REST transport, a static token: nothing is
// fetched from Google).
import { after, afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNetConf } from '../../core/config.js';
import { ROUTE_DESCRIPTION, describePool, routeName } from '../../control/routes/clouds/cloud.js';
import { GceCloud } from '../../control/routes/clouds/gce.js';
import { AccountLimits } from '../../control/routes/clouds/quota.js';
import { FakeGce } from '../fakes/gce.js';
import { removeTempDirs } from '../helpers/procs.js';
import { callsSince, subnetOf, warnings, world, type World } from '../helpers/clouds.js';

after(() => removeTempDirs());

const NET = { Network: '10.42.0.0/16', Backend: { Type: 'gce' } };
const named = (s: string) => routeName('net', s);

describe('gce (Compute REST fake, real SDK)', () => {
  let gce: FakeGce;
  let cloud: GceCloud;
  let w: World;

  async function setup(conf: object = NET, limits?: AccountLimits) {
    gce = new FakeGce('test-project');
    const url = await gce.start();
    cloud = new GceCloud({ endpoint: url, project: 'test-project', accessToken: 'test-token', backoffMs: 20, ...(limits ? { limits } : {}) });
    w = await world(cloud, { net: conf });
  }
  beforeEach(async () => setup());
  afterEach(async () => {
    await cloud.close();
    await gce.close();
    await w.close();
  });

  const id = (name: string) => [...gce.instances.values()].find((i) => i.name === name)!.id;

  test('creates one marked route per instance to its selfLink in its network, and reports an instance without canIpForward', async () => {
    gce.addInstance({ name: 'a', twill: 'net' });
    gce.addInstance({ name: 'b', twill: 'net', zone: 'europe-west1-c', network: 'blue' });
    gce.addInstance({ name: 'c', twill: 'net', canIpForward: false });
    gce.addInstance({ name: 'x', twill: 'other' });
    const r = await w.reconcile();
    assert.equal(r.created, 2);
    assert.match(r.errors[id('c')] ?? '', /instance c has canIpForward off: .*recreate it with --can-ip-forward/);
    assert.ok(await w.store.getLease('net', id('c')), 'it still gets its lease');
    const sa = await subnetOf(w, 'net', id('a'));
    const sb = await subnetOf(w, 'net', id('b'));
    const ra = gce.routes.get(named(sa));
    assert.ok(ra, `route ${named(sa)} exists`);
    assert.equal(ra.description, ROUTE_DESCRIPTION);
    assert.equal(ra.priority, 1000);
    assert.equal(ra.nextHopInstance, gce.selfLink({ zone: 'us-east1-b', name: 'a' }));
    assert.equal(ra.network, gce.networkUrl('default'));
    assert.equal(gce.routes.get(named(sb))?.network, gce.networkUrl('blue'));
    assert.equal(gce.calls['globalOperations.wait'], 2, 'every insert waited for');
    assert.deepEqual([...gce.authHeaders], ['Bearer test-token']);

    const before = { ...gce.calls };
    const again = await w.reconcile();
    assert.deepEqual(callsSince(gce.calls, before), { 'instances.aggregatedList': 1, 'routes.list': 1 });
    assert.equal(again.joined, 0);
  });

  test('lists page by page: one call per page of 500', async () => {
    await w.controller.applyNetwork('net', parseNetConf({ ...NET, Backend: { Type: 'gce', RouteLimit: 1000 } }, {}));
    gce.routeLimit = 1000;
    for (let i = 0; i < 3; i++) gce.addInstance({ name: `n${i}`, twill: 'net' });
    for (let i = 0; i < 600; i++) gce.addRoute({ name: `other-${i}`, destRange: `172.16.${i >> 8}.${i & 255}/32`, nextHopIp: '10.128.0.9' });
    const r = await w.reconcile();
    assert.equal(r.created, 3);
    const before = { ...gce.calls };
    await w.reconcile();
    assert.deepEqual(callsSince(gce.calls, before), { 'instances.aggregatedList': 1, 'routes.list': 2 });
  });

  test('retargets by deleting and inserting (GCE routes cannot change), deletes routes of departed instances and blackholes', async () => {
    gce.addInstance({ name: 'a', twill: 'net' });
    gce.addInstance({ name: 'b', twill: 'net' });
    gce.addInstance({ name: 'c', twill: 'net' });
    await w.reconcile();
    const sa = await subnetOf(w, 'net', id('a'));
    gce.routes.get(named(sa))!.nextHopInstance = gce.selfLink({ zone: 'us-east1-b', name: 'b' });
    gce.instances.delete('us-east1-b/c');
    // A marked route to an instance that no longer exists.
    gce.addRoute({ name: named('10.42.99.0/24'), destRange: '10.42.99.0/24', description: ROUTE_DESCRIPTION, nextHopInstance: gce.selfLink({ zone: 'us-east1-b', name: 'gone' }) });
    const before = { ...gce.calls };
    const r = await w.reconcile();
    assert.equal(r.deleted, 3);
    assert.equal(r.created, 1);
    assert.equal(r.released, 1);
    assert.deepEqual(callsSince(gce.calls, before), { 'instances.aggregatedList': 1, 'routes.list': 1, 'routes.delete': 3, 'routes.insert': 1, 'globalOperations.wait': 4 });
    assert.equal(gce.routes.get(named(sa))?.nextHopInstance, gce.selfLink({ zone: 'us-east1-b', name: 'a' }));
    assert.deepEqual(Object.values(gce.routeMap()).sort(), ['a', 'b']);
  });

  test("never touches another tool's routes, even with a twill-like name or inside the network", async () => {
    gce.addInstance({ name: 'a', twill: 'net' });
    gce.addRoute({ name: 'default-route-abc', destRange: '0.0.0.0/0', nextHopGateway: 'global/gateways/default-internet-gateway' });
    gce.addRoute({ name: named('10.42.200.0/24'), destRange: '10.42.200.0/24', description: 'made by hand', nextHopInstance: gce.selfLink({ zone: 'us-east1-b', name: 'a' }) });
    gce.addRoute({ name: 'k8s-pods', destRange: '10.42.201.0/24', nextHopInstance: gce.selfLink({ zone: 'us-east1-b', name: 'a' }) });
    gce.addRoute({ name: named('10.43.1.0/24'), destRange: '10.43.1.0/24', description: ROUTE_DESCRIPTION, nextHopIp: '10.128.0.50' });
    const foreign = JSON.stringify([...gce.routes.values()]);
    const r = await w.reconcile();
    assert.equal(r.created, 1);
    assert.equal(r.deleted, 0);
    for (const name of ['default-route-abc', named('10.42.200.0/24'), 'k8s-pods', named('10.43.1.0/24')]) {
      assert.deepEqual(gce.routes.get(name), (JSON.parse(foreign) as { name: string }[]).find((x) => x.name === name), `${name} untouched`);
    }
  });

  test('the project quota counts every network; no insert past it; the pending node gets its route when one leaves', async () => {
    await cloud.close(); await gce.close(); await w.close();
    await setup({ ...NET, Backend: { Type: 'gce', RouteLimit: 5 } });
    gce.routeLimit = 5;
    gce.addRoute({ name: 'default-route-abc', destRange: '0.0.0.0/0', nextHopGateway: 'global/gateways/default-internet-gateway' });
    gce.addRoute({ name: 'blue-vpn', destRange: '192.168.0.0/16', nextHopIp: '10.0.0.1', network: gce.networkUrl('blue') });
    for (const n of ['n1', 'n2', 'n3', 'n4', 'n5']) gce.addInstance({ name: n, twill: 'net' });
    const r = await w.reconcile();
    assert.equal(r.created, 3);
    assert.equal(gce.calls['routes.insert'], 3);
    assert.deepEqual(Object.values(r.pending), [
      'route pending: route quota of project test-project full (5 of 5, Backend.RouteLimit)',
      'route pending: route quota of project test-project full (5 of 5, Backend.RouteLimit)',
    ]);
    await w.reconcile();
    assert.equal(gce.calls['routes.insert'], 3, 'no insert past the limit');
    const waiting = Object.keys(r.pending).sort();
    const routed = Object.values(gce.routeMap());
    gce.instances.delete(`us-east1-b/${routed[0]}`);
    const r2 = await w.reconcile();
    assert.equal(r2.deleted, 1);
    assert.equal(r2.created, 1);
    const firstWaiting = [...gce.instances.values()].find((i) => i.id === waiting[0])!.name;
    assert.ok(Object.values(gce.routeMap()).includes(firstWaiting), 'the older of the two waiting got the room');
    assert.equal(gce.calls['projects.get'], undefined, 'Backend.RouteLimit given: the quota is not even read');
  });

  /** Static routes of another network of the project, none of them twill's. */
  function otherNetworkRoutes(n: number) {
    for (let i = 0; i < n; i++) gce.addRoute({ name: `blue-${i}`, destRange: `172.20.${i}.0/24`, nextHopIp: '10.0.0.1', network: gce.networkUrl('blue') });
  }

  test("the project's ROUTES quota raised to 120: read through projects.get, and other networks' routes take their share of it", async () => {
    gce.routeLimit = 120;
    otherNetworkRoutes(100);
    for (let i = 0; i < 22; i++) gce.addInstance({ name: `n${i}`, twill: 'net' });
    const r = await w.reconcile();
    assert.equal(r.created, 20, 'the quota less the 100 routes of network blue');
    assert.deepEqual(Object.values(r.pending), Array(2).fill('route pending: route quota of project test-project full (120 of 120, account quota)'));
    assert.deepEqual(r.tables, [{ what: 'route quota of project test-project', used: 120, limit: 120, source: 'quota' }]);
    assert.equal(describePool(r.tables[0]!), 'route quota of project test-project: 120 of 120 (account quota)');
    assert.deepEqual((await w.store.getRouteTables('net'))?.tables, r.tables);
    assert.equal(gce.calls['projects.get'], 1);
    await w.reconcile();
    assert.equal(gce.calls['projects.get'], 1, 'kept: a quota is not read on every pass');
  });

  test("another network's routes take room from twill's, and give it back when they go", async () => {
    gce.routeLimit = 5;
    for (const n of ['a', 'b', 'c', 'd']) gce.addInstance({ name: n, twill: 'net' });
    otherNetworkRoutes(3);
    const r = await w.reconcile();
    assert.equal(r.created, 2);
    assert.deepEqual(r.tables, [{ what: 'route quota of project test-project', used: 5, limit: 5, source: 'quota' }]);
    // Network blue's routes go: room for the two waiting.
    for (const k of [...gce.routes.keys()].filter((k) => k.startsWith('blue-'))) gce.routes.delete(k);
    const r2 = await w.reconcile();
    assert.equal(r2.created, 2);
    assert.equal(Object.keys(r2.pending).length, 0);
  });

  test('no permission to read the quota (403 on projects.get): the documented 100, and one warning naming compute.projects.get', async () => {
    await cloud.close(); await gce.close(); await w.close();
    await setup(NET, new AccountLimits({ ttlMs: 0, retryMs: 0 }));
    gce.deny['projects.get'] = Infinity;
    gce.routeLimit = 300; // what the project has, unread
    otherNetworkRoutes(99);
    gce.addInstance({ name: 'a', twill: 'net' });
    gce.addInstance({ name: 'b', twill: 'net' });
    const r = await w.reconcile();
    assert.equal(r.created, 1, 'the documented 100, not the unread 300');
    const why = "no permission to read the ROUTES quota of project test-project (grant compute.projects.get)";
    assert.deepEqual(r.tables, [{ what: 'route quota of project test-project', used: 100, limit: 100, source: 'default', why }]);
    assert.deepEqual(Object.values(r.pending), ['route pending: route quota of project test-project full (100 of 100, documented default)']);
    await w.reconcile();
    await w.reconcile();
    assert.equal(gce.calls['projects.get'], 3);
    const said = warnings(w.logs, 'route limit not read from the account');
    assert.equal(said.length, 1, said.join('\n'));
    assert.match(said[0]!, /gce network net: the route limit is the documented default, 100, because no permission .*grant compute\.projects\.get/);
  });

  for (const style of ['http', 'operation'] as const) {
    test(`a quota lower than RouteLimit (403 QUOTA_EXCEEDED, ${style === 'http' ? 'on the insert' : 'in the operation'}) makes the node pending`, async () => {
      await w.controller.applyNetwork('net', parseNetConf({ ...NET, Backend: { Type: 'gce', RouteLimit: 10 } }, {}));
      gce.routeLimit = 1;
      gce.quotaStyle = style;
      gce.addInstance({ name: 'a', twill: 'net' });
      gce.addInstance({ name: 'b', twill: 'net' });
      const r = await w.reconcile();
      assert.equal(r.created, 1);
      assert.match(Object.values(r.pending)[0] ?? '', /route pending: route quota of project test-project is exhausted: GCE refused the route \(QUOTA_EXCEEDED\)/);
    });
  }

  test('409 on insert is success; 404 on delete is success; rate limits (429) are retried', async () => {
    gce.addInstance({ name: 'a', twill: 'net' });
    const net = { name: 'net', config: (await w.store.getNetwork('net'))!.config, leases: [] };
    const want = { table: 'projects/test-project/global/networks/default', destination: '10.42.5.0/24', target: 'projects/test-project/zones/us-east1-b/instances/a', node: 'a' };
    await cloud.createRoute(net, want);
    await cloud.createRoute(net, want);
    assert.equal(gce.calls['routes.insert'], 2);
    await cloud.deleteRoute(net, { table: want.table, destination: '10.42.77.0/24', instanceHop: true, blackhole: false, marked: true });
    gce.throttle['routes.insert'] = 2;
    gce.throttle['routes.list'] = 1;
    gce.addInstance({ name: 'b', twill: 'net' });
    const r = await w.reconcile();
    assert.equal(gce.throttled, 3);
    assert.equal(r.created, 2);
  });

  test('route names fit GCE: at most 63 characters of [a-z0-9-], distinct for distinct networks', () => {
    const re = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
    const names = ['net', 'Net', 'my.net', 'a_b', 'x'.repeat(63), 'x'.repeat(62) + 'y'].map((n) => routeName(n, '10.244.123.0/24'));
    for (const n of names) assert.match(n, re);
    assert.equal(new Set(names).size, names.length);
    assert.equal(routeName('net', '10.244.1.0/24'), 'twill-net-10-244-1-0-24');
  });

  test('a network name that cannot be a label value is refused with a clear error', async () => {
    await w.controller.applyNetwork('Blue.Net', parseNetConf(NET, {}));
    await assert.rejects(w.reconcile('Blue.Net'), /network name Blue\.Net cannot be a GCE label value/);
  });

  test('instanceNetworks reads the label by zone and name, undefined once deleted', async () => {
    gce.addInstance({ name: 'a', twill: 'net' });
    assert.deepEqual(await cloud.instanceNetworks({ instanceId: id('a'), zone: 'us-east1-b', name: 'a' }), ['net']);
    assert.equal(await cloud.instanceNetworks({ instanceId: '1', zone: 'us-east1-b', name: 'zz' }), undefined);
  });
});
