// ali-vpc against a local Alibaba Cloud RPC endpoint, through the real
// @alicloud/pop-core client (signed requests, checked by the fake).
import { after, afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNetConf } from '../../core/config.js';
import { ROUTE_DESCRIPTION, describePool } from '../../control/routes/clouds/cloud.js';
import { AccountLimits } from '../../control/routes/clouds/quota.js';
import { join } from 'node:path';
import RPCClient from '@alicloud/pop-core';
import { AliCloud, type AliOptions } from '../../control/routes/clouds/ali.js';
import { StoreLocks } from '../../control/store/locks.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import type { Store } from '../../control/store/store.js';
import { FakeAli } from '../fakes/ali.js';
import { removeTempDirs, tempDir } from '../helpers/procs.js';
import { FAKE_CREDENTIALS, callsSince, subnetOf, warnings, world, type World } from '../helpers/clouds.js';

after(() => removeTempDirs());

const backend = (extra: object = {}) => ({ Type: 'ali-vpc', AccessKeyID: FAKE_CREDENTIALS.accessKeyId, AccessKeySecret: FAKE_CREDENTIALS.secretAccessKey, ...extra });
const NET = { Network: '10.42.0.0/16', Backend: backend() };

describe('ali-vpc (Alibaba RPC fake, real SDK)', () => {
  let ali: FakeAli;
  let cloud: AliCloud;
  let w: World;

  async function setup(conf: object = NET, limits?: AccountLimits) {
    ali = new FakeAli();
    const url = await ali.start();
    ali.addTable({ id: 'vtb-sys', vpcId: 'vpc-1', type: 'System' });
    ali.addTable({ id: 'vtb-b', vpcId: 'vpc-1', type: 'Custom', vSwitches: ['vsw-b'] });
    cloud = new AliCloud({
      endpoint: url, region: 'cn-hangzhou', pollMs: 5, backoffMs: 10, accessKeyId: FAKE_CREDENTIALS.accessKeyId, accessKeySecret: FAKE_CREDENTIALS.secretAccessKey,
      ...(limits ? { limits } : {}),
    });
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
    assert.deepEqual(Object.values(r.pending), ['route pending: route table vtb-sys full (3 of 3, Backend.RouteLimit)', 'route pending: route table vtb-sys full (3 of 3, Backend.RouteLimit)']);
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
    assert.equal(ali.calls.GetProductQuota, undefined, 'Backend.RouteLimit given: the quota is not even read');
  });

  /** Custom entries of another tool (a VPN gateway's, outside the network) until the table holds n. */
  function fillTable(table: string, n: number) {
    const custom = () => [...ali.entries.values()].filter((e) => e.tableId === table && e.type === 'Custom').length;
    for (let i = 0; custom() < n; i++) ali.addEntry({ tableId: table, destination: `172.20.${i}.0/24`, nextHopType: 'VpnGateway', nextHopId: 'vpn-1' });
  }

  test("the account's quota from Quota Center: 120 entries per table admitted, the documented 200 never assumed", async () => {
    ali.pendingPolls = 0;
    ali.routeLimit = 120;
    fillTable('vtb-sys', 100);
    for (let i = 1; i <= 22; i++) ali.addInstance({ id: `i-${i}`, network: 'net' });
    const r = await w.reconcile();
    assert.equal(r.created, 20, '120 admitted: 20 beside the 100 there');
    assert.equal(ali.calls.CreateRouteEntry, 20, 'no entry tried past the quota');
    assert.deepEqual(Object.values(r.pending), Array(2).fill('route pending: route table vtb-sys full (120 of 120, account quota)'));
    assert.deepEqual(r.tables, [{ what: 'route table vtb-sys', used: 120, limit: 120, source: 'quota' }]);
    assert.equal(describePool(r.tables[0]!), 'route table vtb-sys: 120 of 120 (account quota)');
    assert.equal(ali.calls.GetProductQuota, 1);
    await w.reconcile();
    assert.equal(ali.calls.GetProductQuota, 1, 'kept: a quota is not read on every pass');
  });

  test('no permission to read the quota (RAM.PERMISSION.DENIED): the documented 200, and one warning naming quotas:GetProductQuota', async () => {
    await ali.close(); await w.close();
    await setup(NET, new AccountLimits({ ttlMs: 0, retryMs: 0 }));
    ali.pendingPolls = 0;
    ali.forbid.GetProductQuota = Infinity;
    ali.routeLimit = 250; // what the account has, unread
    fillTable('vtb-sys', 199);
    ali.addInstance({ id: 'i-1', network: 'net' });
    ali.addInstance({ id: 'i-2', network: 'net' });
    const r = await w.reconcile();
    assert.equal(r.created, 1, 'the documented 200, not the unread 250');
    const why = "no permission to read the account's quota of route entries per route table (grant quotas:GetProductQuota)";
    assert.deepEqual(r.tables, [{ what: 'route table vtb-sys', used: 200, limit: 200, source: 'default', why }]);
    assert.deepEqual(Object.values(r.pending), ['route pending: route table vtb-sys full (200 of 200, documented default)']);
    await w.reconcile();
    await w.reconcile();
    assert.equal(ali.calls.GetProductQuota, 3);
    const said = warnings(w.logs, 'route limit not read from the account');
    assert.equal(said.length, 1, said.join('\n'));
    assert.match(said[0]!, /ali-vpc network net: the route limit is the documented default, 200, because no permission .*grant quotas:GetProductQuota/);
  });

  test('the stand-in: Quota Center answers as documented, and refuses what the service refuses', async () => {
    const q = new RPCClient({ endpoint: ali.url, apiVersion: '2020-05-10', accessKeyId: FAKE_CREDENTIALS.accessKeyId, accessKeySecret: FAKE_CREDENTIALS.secretAccessKey });
    const get = (params: object) => q.request<{ Quota: { TotalQuota: number; TotalUsage: number } }>('GetProductQuota', params, { method: 'POST' });
    const region = [{ Key: 'regionId', Value: 'cn-hangzhou' }];
    ali.addEntry({ tableId: 'vtb-b', destination: '172.20.0.0/24', nextHopType: 'VpnGateway', nextHopId: 'vpn-1' });
    const ok = await get({ ProductCode: 'vpc', QuotaActionCode: 'vpc_quota_route_entrys_num', Dimensions: region });
    assert.deepEqual([ok.Quota.TotalQuota, ok.Quota.TotalUsage], [200, 1]);
    const code = (e: unknown) => (e as { code?: string }).code;
    await assert.rejects(get({ QuotaActionCode: 'vpc_quota_route_entrys_num', Dimensions: region }), (e) => code(e) === 'MissingProductCode');
    await assert.rejects(get({ ProductCode: 'vpc', QuotaActionCode: 'vpc_quota_no_such', Dimensions: region }), (e) => code(e) === 'QUOTA.NOT.FOUND');
    await assert.rejects(get({ ProductCode: 'vpc', QuotaActionCode: 'vpc_quota_route_entrys_num' }), (e) => code(e) === 'QUOTA.DIMENSION.MISS');
    await assert.rejects(get({ ProductCode: 'vpc', QuotaActionCode: 'vpc_quota_route_entrys_num', Dimensions: [{ Key: 'zoneId', Value: 'cn-hangzhou-a' }] }), (e) => code(e) === 'QUOTA.DIMENSION.UNSUPPORT');
    ali.forbid.GetProductQuota = 1;
    await assert.rejects(get({ ProductCode: 'vpc', QuotaActionCode: 'vpc_quota_route_entrys_num', Dimensions: region }), (e) => code(e) === 'RAM.PERMISSION.DENIED');
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

// Bounded for a hang only (a lock never released, a change that never settles).
describe('ali-vpc: asynchronous changes, one VPC at a time across instances', { timeout: 120_000 }, () => {
  let ali: FakeAli;
  let url: string;
  const dbs: SqliteStore[] = [];
  const worlds: World[] = [];
  const cloudOpts = (extra: Partial<AliOptions> = {}): AliOptions => ({
    endpoint: url, region: 'cn-hangzhou', pollMs: 5, backoffMs: 10,
    accessKeyId: FAKE_CREDENTIALS.accessKeyId, accessKeySecret: FAKE_CREDENTIALS.secretAccessKey, ...extra,
  });
  /** A function instance: its own cloud client, its own connection to the shared store, the store's VPC lock. */
  async function instance(dir: string, opts: { shared?: boolean; lockStore?: (s: SqliteStore) => Pick<Store, 'tryLock' | 'unlock'>; extra?: Partial<AliOptions> } = {}) {
    const db = new SqliteStore(join(dir, 'twill.db'));
    dbs.push(db);
    const cloud = new AliCloud(cloudOpts({ ...(opts.shared === false ? {} : { locks: new StoreLocks(opts.lockStore?.(db) ?? db, { pollMs: 5, maxPollMs: 20 }) }), ...opts.extra }));
    const w = await world(cloud, { net: NET }, { dir });
    worlds.push(w);
    return { cloud, w, db };
  }
  const netRef = async (w: World) => ({ name: 'net', config: (await w.store.getNetwork('net'))!.config, leases: [] });
  const route = (destination: string, target: string) => ({ table: 'vtb-sys', destination, target, node: target });

  beforeEach(async () => {
    ali = new FakeAli();
    url = await ali.start();
    ali.addTable({ id: 'vtb-sys', vpcId: 'vpc-1', type: 'System' });
    ali.addTable({ id: 'vtb-b', vpcId: 'vpc-1', type: 'Custom', vSwitches: ['vsw-b'] });
  });
  afterEach(async () => {
    await ali.close();
    for (const w of worlds.splice(0)) await w.close();
    for (const d of dbs.splice(0)) await d.close();
  });

  test('the stand-in: a deleted entry is Deleting, then gone; meanwhile the VPC refuses changes as Alibaba does', async () => {
    const rpc = new RPCClient({ endpoint: url, apiVersion: '2016-04-28', accessKeyId: FAKE_CREDENTIALS.accessKeyId, accessKeySecret: FAKE_CREDENTIALS.secretAccessKey });
    const call = (action: string, params: Record<string, unknown>) => rpc.request<Record<string, unknown>>(action, { RegionId: 'cn-hangzhou', ...params });
    const codeOf = (p: Promise<unknown>) => p.then(() => 'ok', (e: { code?: string }) => e.code ?? 'no code');
    ali.addInstance({ id: 'i-a' });
    ali.addInstance({ id: 'i-b', vSwitchId: 'vsw-b' });
    const e1 = ali.addEntry({ tableId: 'vtb-sys', destination: '10.42.1.0/24', nextHopId: 'i-a' });
    ali.deletingPolls = 2;
    ali.pendingPolls = 2;
    assert.equal(await codeOf(call('DeleteRouteEntry', { RouteEntryId: e1.id })), 'ok');
    const status = async (id: string) => ((await call('DescribeRouteEntryList', { RouteTableId: 'vtb-sys', RouteEntryId: id })).RouteEntrys as { RouteEntry: { Status: string }[] }).RouteEntry[0]?.Status;
    // The VPC is busy while the entry is Deleting: another table of it too.
    assert.equal(await codeOf(call('CreateRouteEntry', { RouteTableId: 'vtb-b', DestinationCidrBlock: '10.42.2.0/24', NextHopType: 'Instance', NextHopId: 'i-b' })), 'TaskConflict');
    assert.equal(await codeOf(call('DeleteRouteEntry', { RouteEntryId: e1.id })), 'IncorrectStatus.VpcRouteEntry', 'only an Available entry can be deleted');
    assert.equal(await status(e1.id), 'Deleting');
    assert.equal(await status(e1.id), 'Deleting');
    assert.equal(await status(e1.id), undefined, 'gone: DescribeRouteEntryList no longer finds it');
    // A new entry is Pending: its table refuses the next change, and it cannot be deleted yet.
    const made = await call('CreateRouteEntry', { RouteTableId: 'vtb-sys', DestinationCidrBlock: '10.42.3.0/24', NextHopType: 'Instance', NextHopId: 'i-a' });
    const id = made.RouteEntryId as string;
    assert.equal(await codeOf(call('CreateRouteEntry', { RouteTableId: 'vtb-sys', DestinationCidrBlock: '10.42.4.0/24', NextHopType: 'Instance', NextHopId: 'i-a' })), 'IncorrectRouteEntryStatus');
    assert.equal(await codeOf(call('DeleteRouteEntry', { RouteEntryId: id })), 'IncorrectStatus.VpcRouteEntry');
    assert.equal(ali.conflicts, 4, 'each refusal counted');
    assert.equal(await status(id), 'Pending');
    assert.equal(await status(id), 'Pending');
    assert.equal(await status(id), 'Available');
    assert.equal(await codeOf(call('CreateRouteEntry', { RouteTableId: 'vtb-sys', DestinationCidrBlock: '10.42.4.0/24', NextHopType: 'Instance', NextHopId: 'i-a' })), 'ok');
  });

  test('a delete waits until its entry is gone before the VPC takes the next change: no refusal, nothing left Deleting', async () => {
    const { w } = await instance(tempDir('twill-ali-'));
    ali.pendingPolls = 2;
    ali.deletingPolls = 3;
    for (const n of ['i-1', 'i-2', 'i-3', 'i-4']) ali.addInstance({ id: n, network: 'net', vSwitchId: n === 'i-4' ? 'vsw-b' : 'vsw-a' });
    assert.equal((await w.reconcile()).created, 4);
    // Two leave, one entry is pointed elsewhere: three deletes and one create, in one VPC.
    ali.instances.delete('i-1');
    ali.instances.delete('i-4');
    const s3 = await subnetOf(w, 'net', 'i-3');
    [...ali.entries.values()].find((e) => e.destination === s3)!.nextHopId = 'i-2';
    const before = { ...ali.calls };
    const r = await w.reconcile();
    assert.deepEqual([r.deleted, r.created, r.released], [3, 1, 2], JSON.stringify(r.errors));
    assert.equal(ali.conflicts, 0, 'no change was sent while another was still settling');
    assert.ok([...ali.entries.values()].every((e) => e.status === 'Available'), 'every delete waited until gone');
    assert.deepEqual(ali.routeMap('vtb-sys'), { [await subnetOf(w, 'net', 'i-2')]: 'i-2', [s3]: 'i-3' });
    assert.deepEqual(ali.routeMap('vtb-b'), {});
    // Each delete polled its entry until gone (3 describes showing Deleting, 1 finding nothing), the create until Available (2 Pending, 1 Available).
    assert.equal(callsSince(ali.calls, before)['DescribeRouteEntryList(wait)'], 3 * (3 + 1) + (2 + 1));
  });

  test('two instances changing one VPC at once: the second waits for the store lock, never for a refusal', async () => {
    const dir = tempDir('twill-ali-');
    let refused!: () => void;
    const secondWaits = new Promise<void>((r) => (refused = r));
    const a = await instance(dir);
    // The second instance's store tells the test when its lock was refused (held by the first).
    const b = await instance(dir, {
      lockStore: (db) => ({
        tryLock: async (...args: Parameters<Store['tryLock']>) => { const res = await db.tryLock(...args); if (!res.acquired) refused(); return res; },
        unlock: (n: string, o: string) => db.unlock(n, o),
      }),
    });
    ali.addInstance({ id: 'i-a', network: 'net' });
    ali.addInstance({ id: 'i-b', network: 'net' });
    await a.w.reconcile(); // learns which VPC each table is in
    await b.w.reconcile();
    for (const e of [...ali.entries.values()]) if (e.type === 'Custom') ali.entries.delete(e.id);
    // Hold the first instance's change Pending until the second has found the VPC locked.
    let held = false;
    ali.onAction = async (action) => {
      if (action === 'DescribeRouteEntryList' && !held) {
        held = true;
        await secondWaits;
      }
    };
    ali.pendingPolls = 2;
    await Promise.all([a.cloud.createRoute(await netRef(a.w), route('10.42.7.0/24', 'i-a')), b.cloud.createRoute(await netRef(b.w), route('10.42.8.0/24', 'i-b'))]);
    assert.equal(ali.conflicts, 0, 'the second change was sent only after the first had settled');
    assert.deepEqual(ali.routeMap('vtb-sys'), { '10.42.7.0/24': 'i-a', '10.42.8.0/24': 'i-b' });
    assert.equal(await a.db.unlock('ali-vpc/vpc-1', 'nobody'), false);
    assert.equal((await a.db.tryLock('ali-vpc/vpc-1', 'probe', 1000)).acquired, true, 'released by both');
  });

  test('without the shared lock, two instances do collide: what the lock prevents', async () => {
    const dir = tempDir('twill-ali-');
    const a = await instance(dir, { shared: false });
    const b = await instance(dir, { shared: false });
    ali.addInstance({ id: 'i-a', network: 'net' });
    ali.addInstance({ id: 'i-b', network: 'net' });
    await a.w.reconcile();
    await b.w.reconcile();
    for (const e of [...ali.entries.values()]) if (e.type === 'Custom') ali.entries.delete(e.id);
    let creates = 0;
    let release!: () => void;
    const bothSent = new Promise<void>((r) => (release = r));
    let held = false;
    ali.onAction = async (action) => {
      if (action === 'CreateRouteEntry' && ++creates === 2) release();
      if (action === 'DescribeRouteEntryList' && !held) {
        held = true;
        await bothSent;
      }
    };
    await Promise.all([a.cloud.createRoute(await netRef(a.w), route('10.42.7.0/24', 'i-a')), b.cloud.createRoute(await netRef(b.w), route('10.42.8.0/24', 'i-b'))]);
    assert.ok(ali.conflicts >= 1, 'the second instance changed the VPC while the first change was Pending');
    assert.deepEqual(ali.routeMap('vtb-sys'), { '10.42.7.0/24': 'i-a', '10.42.8.0/24': 'i-b' }, 'retried, it converges all the same');
  });

  test('two instances reconciling one network at once converge without a single refusal', async () => {
    const dir = tempDir('twill-ali-');
    const a = await instance(dir);
    const b = await instance(dir);
    ali.pendingPolls = 2;
    ali.deletingPolls = 2;
    for (let i = 1; i <= 6; i++) ali.addInstance({ id: `i-${i}`, network: 'net', vSwitchId: i % 2 ? 'vsw-a' : 'vsw-b' });
    const [ra, rb] = await Promise.all([a.w.reconcile(), b.w.reconcile()]);
    assert.deepEqual({ ...ra.errors, ...rb.errors }, {});
    assert.equal(ali.conflicts, 0);
    assert.equal(Object.keys(ali.routeMap('vtb-sys')).length + Object.keys(ali.routeMap('vtb-b')).length, 6);
    for (const n of ['i-1', 'i-2', 'i-3']) ali.instances.delete(n);
    await Promise.all([a.w.reconcile(), b.w.reconcile()]);
    assert.equal(ali.conflicts, 0);
    assert.deepEqual(Object.values({ ...ali.routeMap('vtb-sys'), ...ali.routeMap('vtb-b') }).sort(), ['i-4', 'i-5', 'i-6']);
  });

  test('a VPC locked past the change deadline: the change fails saying who holds it, and the next reconcile makes it', async () => {
    const dir = tempDir('twill-ali-');
    const { w, db } = await instance(dir, { extra: { changeTimeoutMs: 1000 } });
    ali.addInstance({ id: 'i-a', network: 'net' });
    await w.reconcile();
    for (const e of [...ali.entries.values()]) if (e.type === 'Custom') ali.entries.delete(e.id);
    assert.equal((await db.tryLock('ali-vpc/vpc-1', 'another-instance', 600_000)).acquired, true);
    const r = await w.reconcile();
    assert.equal(r.created, 0);
    assert.match(r.errors['i-a'] ?? '', /lock ali-vpc\/vpc-1 is held by another-instance until .*past this caller's deadline/);
    assert.equal(ali.calls.CreateRouteEntry ?? 0, 1, 'only the first reconcile created: nothing was sent while locked');
    await db.unlock('ali-vpc/vpc-1', 'another-instance');
    assert.equal((await w.reconcile()).created, 1);
  });

  test("the caller's deadline: no change starts with too little time left to settle", async () => {
    let deadline = Date.now() + 100;
    const { w } = await instance(tempDir('twill-ali-'), { extra: { deadline: () => deadline } });
    ali.addInstance({ id: 'i-a', network: 'net' });
    const r = await w.reconcile();
    assert.match(r.errors['i-a'] ?? '', /CreateRouteEntry .* was not started: \d+ ms were left before the deadline; the next reconcile makes it/);
    assert.equal(ali.calls.CreateRouteEntry ?? 0, 0);
    deadline = Date.now() + 60_000;
    assert.equal((await w.reconcile()).created, 1);
  });
});
