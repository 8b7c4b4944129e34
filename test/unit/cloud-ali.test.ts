// ali-vpc against a local Alibaba Cloud RPC endpoint, through the real
// @alicloud/pop-core client (signed requests, checked by the fake).
import { after, afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNetConf } from '../../core/config.js';
import { ROUTE_DESCRIPTION } from '../../functions/clouds/cloud.js';
import { AliCloud } from '../../functions/clouds/ali.js';
import { FakeAli } from '../fakes/ali.js';
import { removeTempDirs } from '../helpers/procs.js';
import { FAKE_CREDENTIALS, callsSince, subnetOf, world, type World } from '../helpers/clouds.js';

after(() => removeTempDirs());

const backend = (extra: object = {}) => ({ Type: 'ali-vpc', AccessKeyID: FAKE_CREDENTIALS.accessKeyId, AccessKeySecret: FAKE_CREDENTIALS.secretAccessKey, ...extra });
const NET = { Network: '10.42.0.0/16', Backend: backend() };

describe('ali-vpc (Alibaba RPC fake, real SDK)', () => {
  let ali: FakeAli;
  let cloud: AliCloud;
  let w: World;

  async function setup(conf: object = NET) {
    ali = new FakeAli();
    const url = await ali.start();
    ali.addTable({ id: 'vtb-sys', vpcId: 'vpc-1', type: 'System' });
    ali.addTable({ id: 'vtb-b', vpcId: 'vpc-1', type: 'Custom', vSwitches: ['vsw-b'] });
    cloud = new AliCloud({ endpoint: url, region: 'cn-hangzhou', pollMs: 5, backoffMs: 10, accessKeyId: FAKE_CREDENTIALS.accessKeyId, accessKeySecret: FAKE_CREDENTIALS.secretAccessKey });
    w = await world(cloud, { net: conf });
  }
  beforeEach(async () => setup());
  afterEach(async () => {
    await ali.close();
    await w.close();
  });

  test("creates an entry per instance in its vSwitch's table or the system table, waits until Available, marks it", async () => {
    ali.pendingPolls = 2;
    ali.addInstance({ id: 'i-a', network: 'net' });
    ali.addInstance({ id: 'i-b', network: 'net', vSwitchId: 'vsw-b' });
    ali.addInstance({ id: 'i-c', network: 'net' });
    ali.addInstance({ id: 'i-x', network: 'other' });
    const r = await w.reconcile();
    assert.equal(r.created, 3);
    assert.deepEqual(ali.routeMap('vtb-sys'), { [await subnetOf(w, 'net', 'i-a')]: 'i-a', [await subnetOf(w, 'net', 'i-c')]: 'i-c' });
    assert.deepEqual(ali.routeMap('vtb-b'), { [await subnetOf(w, 'net', 'i-b')]: 'i-b' });
    for (const e of ali.entries.values()) if (e.type === 'Custom') assert.equal(e.description, ROUTE_DESCRIPTION);
    assert.equal(ali.conflicts, 0, 'one change at a time per VPC: never a TaskConflict');
    assert.ok([...ali.entries.values()].every((e) => e.status === 'Available'));

    const before = { ...ali.calls };
    await w.reconcile();
    assert.deepEqual(callsSince(ali.calls, before), { DescribeInstances: 1, DescribeRouteTableList: 1, DescribeRouteEntryList: 2 });
  });

  test('retargets by deleting and creating, and removes the entries of instances that left', async () => {
    ali.addInstance({ id: 'i-a', network: 'net' });
    ali.addInstance({ id: 'i-b', network: 'net' });
    ali.addInstance({ id: 'i-c', network: 'net' });
    await w.reconcile();
    const sa = await subnetOf(w, 'net', 'i-a');
    [...ali.entries.values()].find((e) => e.destination === sa)!.nextHopId = 'i-b';
    ali.instances.delete('i-c');
    const before = { ...ali.calls };
    const r = await w.reconcile();
    assert.equal(r.deleted, 2);
    assert.equal(r.created, 1);
    assert.equal(r.released, 1);
    assert.equal(callsSince(ali.calls, before).CreateRouteEntry, 1);
    assert.equal(ali.routeMap('vtb-sys')[sa], 'i-a');
    assert.deepEqual(Object.values(ali.routeMap('vtb-sys')).sort(), ['i-a', 'i-b']);
  });

  test("leaves other tools' entries alone: other next hop types, other CIDRs, other instances", async () => {
    ali.addInstance({ id: 'i-a', network: 'net' });
    ali.addInstance({ id: 'i-nat' });
    ali.addEntry({ tableId: 'vtb-sys', destination: '0.0.0.0/0', nextHopType: 'NatGateway', nextHopId: 'ngw-1' });
    ali.addEntry({ tableId: 'vtb-sys', destination: '10.42.250.0/24', nextHopType: 'VpnGateway', nextHopId: 'vpn-1' });
    ali.addEntry({ tableId: 'vtb-sys', destination: '10.42.251.0/24', nextHopType: 'Instance', nextHopId: 'i-nat' });
    ali.addEntry({ tableId: 'vtb-sys', destination: '172.20.0.0/24', nextHopType: 'Instance', nextHopId: 'i-a' });
    const before = JSON.stringify([...ali.entries.values()]);
    const r = await w.reconcile();
    assert.equal(r.created, 1);
    assert.equal(r.deleted, 0);
    for (const e of JSON.parse(before) as { id: string }[]) assert.ok(ali.entries.has(e.id), `${e.id} untouched`);
  });

  test('at the limit no create is attempted; the pending node gets its entry when another leaves; QuotaExceeded is pending too', async () => {
    await ali.close(); await w.close();
    await setup({ ...NET, Backend: backend({ RouteLimit: 3 }) });
    ali.addEntry({ tableId: 'vtb-sys', destination: '0.0.0.0/0', nextHopType: 'NatGateway', nextHopId: 'ngw-1' });
    for (const n of ['i-1', 'i-2', 'i-3', 'i-4']) ali.addInstance({ id: n, network: 'net' });
    const r = await w.reconcile();
    assert.equal(r.created, 2);
    assert.equal(ali.calls.CreateRouteEntry, 2);
    assert.deepEqual(Object.values(r.pending), ['route pending: route table vtb-sys full (3 of 3)', 'route pending: route table vtb-sys full (3 of 3)']);
    const waiting = Object.keys(r.pending).sort();
    ali.instances.delete(Object.values(ali.routeMap('vtb-sys')).find((t) => t.startsWith('i-'))!);
    const r2 = await w.reconcile();
    assert.equal(r2.created, 1);
    assert.ok(Object.values(ali.routeMap('vtb-sys')).includes(waiting[0]!));
    // The account's quota is lower than RouteLimit says.
    await w.controller.applyNetwork('net', parseNetConf({ ...NET, Backend: backend({ RouteLimit: 10 }) }, {}));
    ali.routeLimit = 3;
    const r3 = await w.reconcile();
    assert.match(r3.pending[waiting[1]!] ?? '', /Alibaba Cloud refused the entry \(QuotaExceeded\)/);
  });

  test('TaskConflict and throttling are retried and still converge; changes in one VPC never overlap', async () => {
    ali.pendingPolls = 3;
    for (let i = 1; i <= 6; i++) ali.addInstance({ id: `i-${i}`, network: 'net', vSwitchId: i % 2 ? 'vsw-a' : 'vsw-b' });
    ali.conflict.CreateRouteEntry = 3;
    ali.throttle.DescribeInstances = 1;
    ali.throttle.CreateRouteEntry = 1;
    const r = await w.reconcile();
    assert.equal(r.created, 6);
    assert.equal(ali.conflicts, 3, 'only the injected conflicts: twill never started a change while one was Pending');
    ali.instances.delete('i-1');
    ali.instances.delete('i-2');
    ali.conflict.DeleteRouteEntry = 2;
    const r2 = await w.reconcile();
    assert.equal(r2.deleted, 2);
    assert.equal(Object.keys(ali.routeMap('vtb-sys')).length + Object.keys(ali.routeMap('vtb-b')).length, 4);
  });

  test('a wrong secret is refused with a clear error that shows no signed URL', async () => {
    await w.controller.applyNetwork('net', parseNetConf({ ...NET, Backend: backend({ AccessKeySecret: 'wrong' }) }, {}));
    ali.addInstance({ id: 'i-a', network: 'net' });
    await assert.rejects(w.reconcile(), (e: Error) => {
      assert.match(e.message, /DescribeInstances\) failed: SignatureDoesNotMatch: Specified signature is not matched/);
      assert.doesNotMatch(e.message, /Signature=|AccessKeyId=|http:/);
      return true;
    });
  });

  test('InvalidRouteEntry.NotFound on delete is success; instanceNetworks reads the tag', async () => {
    ali.addInstance({ id: 'i-a', network: 'net' });
    const net = { name: 'net', config: (await w.store.getNetwork('net'))!.config, leases: [] };
    await cloud.deleteRoute(net, { table: 'vtb-sys', destination: '10.42.9.0/24', instanceHop: true, blackhole: false, marked: true, ref: 'rte-none' });
    assert.deepEqual(await cloud.instanceNetworks({ instanceId: 'i-a' }), ['net']);
    assert.equal(await cloud.instanceNetworks({ instanceId: 'i-gone' }), undefined);
  });
});
