// aws-vpc against a local EC2 Query API endpoint, through the real
// @aws-sdk/client-ec2 client.
import { after, afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AwsCloud } from '../../control/routes/clouds/aws.js';
import { FakeEc2 } from '../fakes/ec2.js';
import { removeTempDirs } from '../helpers/procs.js';
import { FAKE_CREDENTIALS, callsSince, subnetOf, world, type World } from '../helpers/clouds.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';
after(() => removeTempDirs());

const NET = { Network: '10.42.0.0/16', Backend: { Type: 'aws-vpc' } };

describe('aws-vpc (EC2 Query API fake, real SDK)', () => {
  let ec2: FakeEc2;
  let cloud: AwsCloud;
  let w: World;

  async function setup(conf: object = NET) {
    ec2 = new FakeEc2();
    const url = await ec2.start();
    ec2.addTable({ id: 'rtb-main', vpcId: 'vpc-1', main: true });
    ec2.addTable({ id: 'rtb-a', vpcId: 'vpc-1', subnets: ['subnet-a'] });
    cloud = new AwsCloud({ endpoint: url, region: 'us-east-1', credentials: FAKE_CREDENTIALS, maxAttempts: 6 });
    w = await world(cloud, { net: conf });
  }
  beforeEach(async () => setup());
  afterEach(async () => {
    await cloud.close();
    await ec2.close();
    await w.close();
  });

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
    await cloud.close(); await ec2.close(); await w.close();
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
    await cloud.close(); await ec2.close(); await w.close();
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
  });

  test("a quota lower than RouteLimit: RouteLimitExceeded makes the node pending, and nothing breaks", async () => {
    ec2.routeLimit = 2; // the local route and one more
    ec2.addInstance({ id: 'i-1', network: 'net' });
    ec2.addInstance({ id: 'i-2', network: 'net' });
    const r = await w.reconcile();
    assert.equal(r.created, 1);
    assert.equal(Object.keys(r.pending).length, 1);
    assert.match(Object.values(r.pending)[0] ?? '', /RouteLimitExceeded/);
  });

  // The adaptive retry mode really slows the client down after throttling
  // (to half a call per second at first), so this test takes some seconds.
  test('throttling (503 RequestLimitExceeded) is retried with backoff and still converges', async () => {
    await cloud.close();
    cloud = new AwsCloud({ endpoint: ec2.url, region: 'us-east-1', credentials: FAKE_CREDENTIALS, maxAttempts: 3 });
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
