// aws-vpc against a local EC2 Query API endpoint and a local Service Quotas
// endpoint, through the real @aws-sdk/client-ec2 and
// @aws-sdk/client-service-quotas clients.
import { after, afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNetConf } from '../../core/config.js';
import { AwsCloud } from '../../control/routes/clouds/aws.js';
import { describePool } from '../../control/routes/clouds/cloud.js';
import { AccountLimits } from '../../control/routes/clouds/quota.js';
import { FakeEc2 } from '../fakes/ec2.js';
import { startFakeServiceQuotas, type FakeServiceQuotas } from '../fakes/service-quotas.js';
import { removeTempDirs } from '../helpers/procs.js';
import { FAKE_CREDENTIALS, callsSince, subnetOf, vpcRoutesQuota, warnings, world, type World } from '../helpers/clouds.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';
after(() => removeTempDirs());

const NET = { Network: '10.42.0.0/16', Backend: { Type: 'aws-vpc' } };

describe('aws-vpc (EC2 Query API fake, real SDK)', () => {
  let ec2: FakeEc2;
  let quotas: FakeServiceQuotas;
  let cloud: AwsCloud;
  let w: World;
  const clock = { now: Date.parse('2030-01-01T00:00:00Z') };

  async function setup(conf: object = NET, limits?: AccountLimits) {
    ec2 = new FakeEc2();
    const url = await ec2.start();
    ec2.addTable({ id: 'rtb-main', vpcId: 'vpc-1', main: true });
    ec2.addTable({ id: 'rtb-a', vpcId: 'vpc-1', subnets: ['subnet-a'] });
    quotas = await startFakeServiceQuotas({ region: 'us-east-1' });
    quotas.services.set('vpc', [vpcRoutesQuota(ec2)]);
    cloud = new AwsCloud({ endpoint: url, quotasEndpoint: quotas.endpoint, region: 'us-east-1', credentials: FAKE_CREDENTIALS, maxAttempts: 6, ...(limits ? { limits } : {}) });
    w = await world(cloud, { net: conf });
  }
  async function teardown() {
    await cloud.close();
    await ec2.close();
    await quotas.close();
    await w.close();
  }
  beforeEach(async () => setup());
  afterEach(teardown);

  /** Routes of another tool (peering connections, outside the network) until the table holds n routes. */
  function fillTable(table: string, n: number) {
    const routes = ec2.tables.get(table)!.routes;
    for (let i = 0; routes.length < n; i++) routes.push({ destinationCidrBlock: `172.20.${i}.0/24`, vpcPeeringConnectionId: `pcx-${i}`, origin: 'CreateRoute' });
  }
  const quotaReads = () => quotas.calls.filter((c) => c === 'GetServiceQuota').length;

  test('creates a route per instance to its primary interface, in its subnet table or the main table, after disabling the source/destination check', async () => {
    ec2.addInstance({ id: 'i-a1', network: 'net', subnetId: 'subnet-a' });
    ec2.addInstance({ id: 'i-b1', network: 'net', subnetId: 'subnet-b' });
    ec2.addInstance({ id: 'i-other', network: 'other' });
    const r = await w.reconcile();
    assert.equal(r.created, 2);
    assert.equal(r.prepared, 2);
    const sa = await subnetOf(w, 'net', 'i-a1');
    const sb = await subnetOf(w, 'net', 'i-b1');
    assert.deepEqual(ec2.routeMap('rtb-a'), { [sa]: 'eni-a1' });
    assert.deepEqual(ec2.routeMap('rtb-main'), { [sb]: 'eni-b1' });
    assert.equal(ec2.instances.get('i-a1')?.sourceDestCheck, false);
    assert.equal(ec2.instances.get('i-other')?.sourceDestCheck, true);
    const lease = await w.store.getLease('net', 'i-a1');
    assert.equal(lease?.publicIP, ec2.instances.get('i-a1')?.privateIp);
    assert.deepEqual(lease?.backendData, { RouteTarget: 'eni-a1', VpcId: 'vpc-1', RouteTables: 'rtb-a' });

    // Nothing to change: only the list calls, no writes anywhere.
    const before = { ...ec2.calls };
    const published = w.publisher.count;
    const again = await w.reconcile();
    assert.deepEqual(callsSince(ec2.calls, before), { DescribeInstances: 1, DescribeRouteTables: 1 });
    assert.equal(again.joined, 0);
    assert.equal(w.publisher.count, published);
  });

  test('RouteTableID (string or list): every table gets every route', async () => {
    await teardown();
    await setup({ ...NET, Backend: { Type: 'aws-vpc', RouteTableID: ['rtb-a', 'rtb-x'] } });
    ec2.addTable({ id: 'rtb-x', vpcId: 'vpc-1' });
    ec2.addInstance({ id: 'i-1', network: 'net', subnetId: 'subnet-a' });
    ec2.addInstance({ id: 'i-2', network: 'net', subnetId: 'subnet-b' });
    await w.reconcile();
    const expected = { [await subnetOf(w, 'net', 'i-1')]: 'eni-1', [await subnetOf(w, 'net', 'i-2')]: 'eni-2' };
    assert.deepEqual(ec2.routeMap('rtb-a'), expected);
    assert.deepEqual(ec2.routeMap('rtb-x'), expected);
    assert.deepEqual(ec2.routeMap('rtb-main'), {});
  });

  test('retargets a wrong route with ReplaceRoute, not delete and create', async () => {
    ec2.addInstance({ id: 'i-1', network: 'net' });
    ec2.addInstance({ id: 'i-2', network: 'net' });
    await w.reconcile();
    const s1 = await subnetOf(w, 'net', 'i-1');
    const route = ec2.routesOf('rtb-a').find((r) => r.destinationCidrBlock === s1);
    assert.ok(route);
    route.networkInterfaceId = 'eni-2';
    const before = { ...ec2.calls };
    const r = await w.reconcile();
    assert.equal(r.replaced, 1);
    assert.deepEqual(callsSince(ec2.calls, before), { DescribeInstances: 1, DescribeRouteTables: 1, ReplaceRoute: 1 });
    assert.equal(ec2.routeMap('rtb-a')[s1], 'eni-1');
  });

  test('deletes the route of an instance that left (terminated, or untagged) and releases its lease', async () => {
    ec2.addInstance({ id: 'i-1', network: 'net' });
    ec2.addInstance({ id: 'i-2', network: 'net' });
    ec2.addInstance({ id: 'i-3', network: 'net' });
    await w.reconcile();
    const s2 = await subnetOf(w, 'net', 'i-2');
    (ec2.instances.get('i-1') as { state: string }).state = 'terminated';
    ec2.instances.get('i-2')!.tags = {};
    const r = await w.reconcile();
    assert.equal(r.deleted, 2);
    assert.equal(r.released, 2);
    assert.deepEqual(Object.values(ec2.routeMap('rtb-a')), ['eni-3']);
    assert.equal(ec2.routeMap('rtb-a')[s2], undefined);
    assert.equal(await w.store.getLease('net', 'i-1'), undefined);
  });

  test('the last instance leaving still has its route cleaned: its lease remembers the table', async () => {
    ec2.addInstance({ id: 'i-1', network: 'net' });
    await w.reconcile();
    ec2.instances.delete('i-1');
    const r = await w.reconcile();
    assert.equal(r.deleted, 1);
    assert.equal(r.released, 1);
    assert.deepEqual(ec2.routeMap('rtb-a'), {});
  });

  test("cleans up blackholes inside the network and leaves every other tool's route alone", async () => {
    ec2.addInstance({ id: 'i-1', network: 'net' });
    ec2.addInstance({ id: 'i-nat' }); // an untagged instance: another tool's router
    await w.reconcile();
    const s1 = await subnetOf(w, 'net', 'i-1');
    const t = ec2.tables.get('rtb-a')!;
    t.routes.push(
      { destinationCidrBlock: '0.0.0.0/0', gatewayId: 'igw-1', origin: 'CreateRoute' },
      { destinationCidrBlock: '10.42.250.0/24', vpcPeeringConnectionId: 'pcx-1', origin: 'CreateRoute' },
      { destinationCidrBlock: '10.42.251.0/24', gatewayId: 'vgw-dead', origin: 'CreateRoute', blackhole: true },
      { destinationCidrBlock: '10.42.252.0/24', networkInterfaceId: 'eni-nat', origin: 'CreateRoute' },
      { destinationCidrBlock: '10.42.0.0/16', networkInterfaceId: 'eni-1', origin: 'CreateRoute' },
      { destinationCidrBlock: '192.168.7.0/24', networkInterfaceId: 'eni-gone', origin: 'CreateRoute' },
      // (beyond the first 100 subnets, where the allocator never picks with this few leases)
      { destinationCidrBlock: '10.42.199.0/24', networkInterfaceId: 'eni-gone', origin: 'CreateRoute' },
      { destinationCidrBlock: '10.42.198.0/24', instanceId: 'i-vanished', origin: 'CreateRoute' },
    );
    const others = () => t.routes.filter((r) => !['10.42.199.0/24', '10.42.198.0/24', s1].includes(r.destinationCidrBlock));
    const kept = JSON.stringify(others());
    const r = await w.reconcile();
    assert.equal(r.deleted, 2, 'the two blackholes to interfaces inside the network');
    assert.equal(r.created + r.replaced, 0);
    assert.equal(JSON.stringify(others()), kept);
    assert.equal(ec2.routeMap('rtb-a')['10.42.199.0/24'], undefined);
    assert.equal(ec2.routeMap('rtb-a')[s1], 'eni-1');
  });

  test("a subnet twill leased but another tool routes elsewhere: left alone, the node is in error", async () => {
    ec2.addInstance({ id: 'i-nat' });
    ec2.addInstance({ id: 'i-1', network: 'net' });
    await w.controller.reserve('net', 'i-1', '10.42.7.0/24');
    ec2.tables.get('rtb-a')!.routes.push({ destinationCidrBlock: '10.42.7.0/24', networkInterfaceId: 'eni-nat', origin: 'CreateRoute' });
    const r = await w.reconcile();
    assert.equal(r.created + r.replaced + r.deleted, 0);
    assert.match(r.errors['i-1'] ?? '', /10\.42\.7\.0\/24 in rtb-a already points to eni-nat, which is not twill's/);
    assert.equal(ec2.routeMap('rtb-a')['10.42.7.0/24'], 'eni-nat');
  });

  test('at the limit no create is attempted; the pending node gets its route when another leaves', async () => {
    await teardown();
    await setup({ ...NET, Backend: { Type: 'aws-vpc', RouteLimit: 4 } });
    ec2.routeLimit = 4;
    for (let i = 1; i <= 5; i++) ec2.addInstance({ id: `i-${i}`, network: 'net' });
    const r = await w.reconcile();
    // The local route counts: 3 of ours fit.
    assert.equal(r.created, 3);
    assert.equal(ec2.calls.CreateRoute, 3);
    assert.deepEqual(Object.values(r.pending), ['route pending: route table rtb-a full (4 of 4, Backend.RouteLimit)', 'route pending: route table rtb-a full (4 of 4, Backend.RouteLimit)']);
    await w.reconcile();
    assert.equal(ec2.calls.CreateRoute, 3, 'still no create past the limit');
    const pending = Object.keys(r.pending);
    const routed = Object.values(ec2.routeMap('rtb-a'));
    (ec2.instances.get(routed[0]!.replace('eni-', 'i-')) as { state: string }).state = 'terminated';
    const r2 = await w.reconcile();
    assert.equal(r2.deleted, 1);
    assert.equal(r2.created, 1);
    const winner = pending.sort((a, b) => a.localeCompare(b))[0]!;
    assert.equal(Object.keys(r2.pending).length, 1);
    assert.ok(Object.values(ec2.routeMap('rtb-a')).includes(winner.replace('i-', 'eni-')));
    assert.equal(quotaReads(), 0, 'Backend.RouteLimit given: the quota is not even read');
  });

  test("a quota lower than RouteLimit: RouteLimitExceeded makes the node pending, and nothing breaks", async () => {
    await w.controller.applyNetwork('net', parseNetConf({ ...NET, Backend: { Type: 'aws-vpc', RouteLimit: 10 } }, {}));
    ec2.routeLimit = 2; // the local route and one more
    ec2.addInstance({ id: 'i-1', network: 'net' });
    ec2.addInstance({ id: 'i-2', network: 'net' });
    const r = await w.reconcile();
    assert.equal(r.created, 1);
    assert.equal(Object.keys(r.pending).length, 1);
    assert.match(Object.values(r.pending)[0] ?? '', /RouteLimitExceeded/);
  });

  test("the account's quota raised to 120: 120 routes in the table, read once through Service Quotas and shown with its source", async () => {
    ec2.routeLimit = 120;
    fillTable('rtb-a', 101); // the local route and 100 of another tool: more than the default 50 already
    for (let i = 1; i <= 21; i++) ec2.addInstance({ id: `i-${i}`, network: 'net', subnetId: 'subnet-a' });
    const r = await w.reconcile();
    assert.equal(r.created, 19, '120 admitted: 19 routes fit beside the 101 there');
    assert.equal(ec2.routesOf('rtb-a').length, 120);
    assert.deepEqual(Object.values(r.pending), Array(2).fill('route pending: route table rtb-a full (120 of 120, account quota)'));
    assert.deepEqual(r.tables, [{ what: 'route table rtb-a', used: 120, limit: 120, source: 'quota' }]);
    const stored = await w.store.getRouteTables('net');
    assert.deepEqual(stored?.tables, r.tables, 'the dashboard and the status read it from the store');
    assert.equal(describePool(r.tables[0]!), 'route table rtb-a: 120 of 120 (account quota)');
    assert.equal(quotaReads(), 1);
    await w.reconcile();
    assert.equal(quotaReads(), 1, 'kept: a quota is not read on every pass');
    assert.deepEqual(warnings(w.logs, 'route limit not read from the account'), []);
  });

  test('the reading is kept 15 minutes, a raised quota is used after that, and a failed read keeps the last good one', async () => {
    await teardown();
    await setup(NET, new AccountLimits({ now: () => clock.now }));
    fillTable('rtb-a', 50);
    ec2.addInstance({ id: 'i-1', network: 'net', subnetId: 'subnet-a' });
    const r1 = await w.reconcile();
    assert.equal(r1.pending['i-1'], 'route pending: route table rtb-a full (50 of 50, account quota)');
    // The increase is granted; the reading is 14 minutes old: the node still waits.
    ec2.routeLimit = 60;
    clock.now += 14 * 60_000;
    assert.equal((await w.reconcile()).created, 0);
    assert.equal(quotaReads(), 1);
    clock.now += 2 * 60_000;
    const r3 = await w.reconcile();
    assert.equal(r3.created, 1);
    assert.equal(quotaReads(), 2);
    assert.deepEqual(r3.tables, [{ what: 'route table rtb-a', used: 51, limit: 60, source: 'quota' }]);
    // The permission goes: the quota read last still holds, not the default.
    quotas.deny.add('servicequotas:GetServiceQuota');
    clock.now += 16 * 60_000;
    const r4 = await w.reconcile();
    assert.equal(quotaReads(), 3);
    assert.deepEqual(r4.tables, [{ what: 'route table rtb-a', used: 51, limit: 60, source: 'quota' }]);
  });

  test('no permission to read the quota: the documented 50, and one warning naming the permission, however many passes', async () => {
    await teardown();
    // Every pass reads again (nothing kept), so only the warning's once-ness keeps the log quiet.
    await setup(NET, new AccountLimits({ ttlMs: 0, retryMs: 0 }));
    quotas.deny.add('servicequotas:GetServiceQuota');
    ec2.routeLimit = 120; // what the account has, unread
    fillTable('rtb-a', 50);
    ec2.addInstance({ id: 'i-1', network: 'net', subnetId: 'subnet-a' });
    const r = await w.reconcile();
    assert.equal(r.created, 0, 'the documented 50, not the unread 120');
    assert.equal(r.pending['i-1'], 'route pending: route table rtb-a full (50 of 50, documented default)');
    const why = 'no permission to read the account\'s quota "Routes per route table" (grant servicequotas:GetServiceQuota)';
    assert.deepEqual(r.tables, [{ what: 'route table rtb-a', used: 50, limit: 50, source: 'default', why }]);
    assert.equal(describePool(r.tables[0]!), `route table rtb-a: 50 of 50 (documented default: ${why})`);
    await w.reconcile();
    await w.reconcile();
    assert.equal(quotaReads(), 3);
    const said = warnings(w.logs, 'route limit not read from the account');
    assert.equal(said.length, 1, said.join('\n'));
    assert.match(said[0]!, /network=net .*aws-vpc network net: the route limit is the documented default, 50, because no permission .*grant servicequotas:GetServiceQuota/);
    // Another network of the same account is told once too.
    await w.controller.applyNetwork('other', parseNetConf({ Network: '10.43.0.0/16', Backend: { Type: 'aws-vpc' } }, {}));
    await w.reconcile('other');
    await w.reconcile('other');
    assert.equal(warnings(w.logs, 'route limit not read from the account').length, 2);
  });

  test('Service Quotas without an applied value for the quota: the documented default, and why', async () => {
    quotas.services.set('vpc', []);
    ec2.addInstance({ id: 'i-1', network: 'net', subnetId: 'subnet-a' });
    const r = await w.reconcile();
    assert.equal(r.created, 1);
    assert.deepEqual(r.tables, [{ what: 'route table rtb-a', used: 2, limit: 50, source: 'default', why: 'Service Quotas holds no applied value for vpc/L-93826ACB in this region' }]);
  });

  // The adaptive retry mode really slows the client down after throttling
  // (to half a call per second at first), so this test takes some seconds.
  test('throttling (503 RequestLimitExceeded) is retried with backoff and still converges', async () => {
    await cloud.close();
    cloud = new AwsCloud({ endpoint: ec2.url, quotasEndpoint: quotas.endpoint, region: 'us-east-1', credentials: FAKE_CREDENTIALS, maxAttempts: 3 });
    w.deps.cloud = cloud;
    for (let i = 1; i <= 6; i++) ec2.addInstance({ id: `i-${i}`, network: 'net' });
    ec2.throttle.DescribeInstances = 1;
    ec2.throttle.CreateRoute = 2;
    ec2.throttle.ModifyNetworkInterfaceAttribute = 1;
    const r = await w.reconcile();
    assert.equal(r.created, 6);
    assert.equal(ec2.throttled, 4);
    assert.equal(Object.keys(ec2.routeMap('rtb-a')).length, 6);
    // Throttled past every retry: the reconcile reports it, and the next one converges.
    ec2.addInstance({ id: 'i-7', network: 'net' });
    ec2.throttle.CreateRoute = 100;
    const r2 = await w.reconcile();
    assert.match(r2.errors['i-7'] ?? '', /CreateRoute .* failed: EC2 throttled it \(RequestLimitExceeded\) through every retry/);
    ec2.throttle.CreateRoute = 0;
    const r3 = await w.reconcile();
    assert.equal(r3.created, 1);
    assert.equal(Object.keys(ec2.routeMap('rtb-a')).length, 7);
  });

  test('an identical RouteAlreadyExists is success; InvalidRoute.NotFound on delete is success', async () => {
    ec2.addInstance({ id: 'i-1', network: 'net' });
    ec2.addInstance({ id: 'i-9', network: 'net' });
    const net = { name: 'net', config: (await w.store.getNetwork('net'))!.config, leases: [] };
    ec2.tables.get('rtb-a')!.routes.push({ destinationCidrBlock: '10.42.5.0/24', networkInterfaceId: 'eni-1', origin: 'CreateRoute' });
    await cloud.createRoute(net, { table: 'rtb-a', destination: '10.42.5.0/24', target: 'eni-1', node: 'i-1' });
    await assert.rejects(
      cloud.createRoute(net, { table: 'rtb-a', destination: '10.42.5.0/24', target: 'eni-9', node: 'i-9' }),
      /already exists in rtb-a with target eni-1/,
    );
    await cloud.deleteRoute(net, { table: 'rtb-a', destination: '10.42.77.0/24', instanceHop: true, blackhole: false, marked: false });
    assert.equal(ec2.calls.DeleteRoute, 1);
  });

  test('instanceNetworks reads the tag, and says undefined for an instance that is gone', async () => {
    ec2.addInstance({ id: 'i-1', network: 'net' });
    ec2.addInstance({ id: 'i-2' });
    assert.deepEqual(await cloud.instanceNetworks({ instanceId: 'i-1' }), ['net']);
    assert.deepEqual(await cloud.instanceNetworks({ instanceId: 'i-2' }), []);
    assert.equal(await cloud.instanceNetworks({ instanceId: 'i-gone' }), undefined);
  });
});
