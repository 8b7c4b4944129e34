// The route controller's planner: plain data in (leases, instances, routes,
// limits), plain data out (the lease writes, deletes, retargets, creates,
// pending nodes with their reason, each node's status). No store, no cloud.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import type { CloudInstance, CloudRoute, RoutePool } from '../../control/routes/clouds/cloud.js';
import {
  networkSpace, planAdmission, planJoins, planReleases, planRoutes, type CloudTraits, type DeleteAction, type RoutePlan,
} from '../../control/routes/plan.js';
import { Notes, planStatus } from '../../control/routes/status.js';
import { HOUR, INFERRED, MARKED, NOW, T, TABLES, at, inst, lease, route, space } from '../helpers/route-fixtures.js';

const pool = (used: number, limit: number): RoutePool => ({ id: T, what: `route table ${T}`, used, limit, source: 'quota' });

interface World {
  instances: CloudInstance[];
  leases: Lease[];
  routes: CloudRoute[];
  traits?: CloudTraits;
}
function plan(w: World): RoutePlan {
  return planRoutes({ space, traits: w.traits ?? INFERRED, instances: w.instances, leasesBefore: w.leases, leases: w.leases, routes: w.routes });
}
function admit(w: World, p: RoutePlan, pools: RoutePool[], deleted: DeleteAction[] = []) {
  return planAdmission({ plan: p, deleted, pools, tables: TABLES, instances: w.instances, traits: w.traits ?? INFERRED });
}

describe('planJoins: the lease writes', () => {
  const joins = (instances: CloudInstance[], leases: Lease[], now = NOW) => planJoins({ instances, leases, space, now, ttlMs: HOUR });

  test('an alive instance without a lease gets one with its private IP and route target; stopped or unaddressed ones do not', () => {
    const r = joins([inst('b'), inst('a', { leaseData: { RouteTables: 'rtb-1,rtb-2' } }), inst('s', { state: 'stopped' }), inst('p', { state: 'pending', privateIP: undefined })], []);
    assert.deepEqual(r.joins, [
      { node: 'a', publicIP: 'ip-a', backendData: { RouteTarget: 'a', RouteTables: 'rtb-1,rtb-2' } },
      { node: 'b', publicIP: 'ip-b', backendData: { RouteTarget: 'b' } },
    ], 'in instance id order');
    assert.deepEqual(r.unaddressed, ['p']);
  });

  test('a lease that is up to date is written again only when less than half its TTL is left', () => {
    const l = lease('a', '10.10.1.0/24', { expiresAt: at(HOUR) });
    assert.deepEqual(joins([inst('a')], [l], NOW + 29 * 60_000).joins, []);
    assert.deepEqual(joins([inst('a')], [l], NOW + 31 * 60_000).joins.map((j) => j.node), ['a']);
    // A reservation never expires: nothing to renew.
    assert.deepEqual(joins([inst('r')], [lease('r', '10.10.9.0/24', { expiresAt: null })], NOW + 10 * HOUR).joins, []);
  });

  test('a lease is written again when the private IP, the recorded data or the network changed under it', () => {
    const l = lease('a', '10.10.1.0/24');
    assert.equal(joins([inst('a', { privateIP: 'ip-new' })], [l]).joins[0]?.publicIP, 'ip-new');
    assert.deepEqual(joins([inst('a', { target: 'eni-2' })], [l]).joins[0]?.backendData, { RouteTarget: 'eni-2' });
    assert.equal(joins([inst('a')], [lease('a', '10.99.1.0/24')]).joins.length, 1, 'subnet outside the network');
    assert.equal(joins([inst('a')], [lease('a', '10.10.1.0/24', { backendType: 'vxlan' })]).joins.length, 1, 'other backend');
  });
});

describe('planRoutes: which routes are twill’s, and what each needs', () => {
  test('each alive, routable instance wants its subnet in each of its tables; the line is oldest lease first', () => {
    const w: World = {
      instances: [inst('a', { tables: [T, 'rtb-2'] }), inst('b'), inst('stopped', { state: 'stopped' }), inst('bad', { problem: 'no ENI' }), inst('nohop', { target: undefined })],
      leases: [
        lease('a', '10.10.1.0/24', { createdAt: at(2000) }), lease('b', '10.10.2.0/24', { createdAt: at(1000) }),
        lease('stopped', '10.10.3.0/24'), lease('bad', '10.10.4.0/24'), lease('nohop', '10.10.5.0/24'), lease('gone', '10.10.6.0/24'),
      ],
      routes: [],
    };
    const p = plan(w);
    assert.deepEqual(p.order, ['b', 'a']);
    assert.deepEqual(p.wanted.get('a')?.map((r) => r.table), [T, 'rtb-2']);
    assert.deepEqual(p.wanted.get('b'), [{ table: T, destination: '10.10.2.0/24', target: 'b', node: 'b' }]);
    assert.deepEqual([p.deletes, p.replaces], [[], []]);
  });

  test('a route with the wanted target is present and left alone', () => {
    const w: World = { instances: [inst('a')], leases: [lease('a', '10.10.1.0/24')], routes: [route('10.10.1.0/24', 'a')] };
    const p = plan(w);
    assert.equal(p.present.size, 1);
    assert.deepEqual([p.deletes, p.replaces], [[], []]);
    assert.deepEqual(admit(w, p, [pool(1, 50)]).jobs, []);
  });

  test('a route whose target changed is retargeted in place where the cloud can', () => {
    const r = route('10.10.1.0/24', 'b');
    const w: World = { instances: [inst('a'), inst('b')], leases: [lease('a', '10.10.1.0/24'), lease('b', '10.10.2.0/24')], routes: [r, route('10.10.2.0/24', 'b')] };
    const p = plan(w);
    assert.deepEqual(p.replaces, [{ want: { table: T, destination: '10.10.1.0/24', target: 'a', node: 'a' }, current: r }]);
    assert.deepEqual(p.deletes, []);
    assert.deepEqual(admit(w, p, [pool(2, 2)]).jobs, [{ node: 'a', replace: p.replaces, create: [] }], 'a full table does not hold a retarget back');
  });

  test('where the cloud cannot retarget (GCE, Ali), the route is deleted and created again into the slot it freed', () => {
    const r = route('10.10.1.0/24', 'b', { marked: true });
    const w: World = { instances: [inst('a'), inst('b')], leases: [lease('a', '10.10.1.0/24'), lease('b', '10.10.2.0/24')], routes: [r, route('10.10.2.0/24', 'b', { marked: true })], traits: MARKED };
    const p = plan(w);
    const want = { table: T, destination: '10.10.1.0/24', target: 'a', node: 'a' };
    assert.deepEqual(p.deletes, [{ route: r, node: 'a', why: 'retarget', recreate: want }]);
    assert.deepEqual(p.replaces, []);
    // The table is full: the recreate needs no room of its own once the delete succeeded.
    assert.deepEqual(admit(w, p, [pool(2, 2)], p.deletes).jobs, [{ node: 'a', replace: [], create: [want] }]);
    // The delete failed: no recreate (creating would collide with the route still there).
    const failed = admit(w, p, [pool(2, 2)], []);
    assert.deepEqual(failed.jobs, []);
    assert.deepEqual(failed.notes, [{ node: 'a', state: 'pending', reason: `route pending: route table ${T} full (2 of 2, account quota)`, why: `route table ${T} full` }]);
  });

  test('the slot a retarget freed is taken back by its recreate, never by a node waiting for room', () => {
    const r = route('10.10.1.0/24', 'b', { marked: true });
    const w: World = {
      instances: [inst('a'), inst('b'), inst('c')],
      leases: [lease('a', '10.10.1.0/24'), lease('b', '10.10.2.0/24'), lease('c', '10.10.3.0/24', { createdAt: at(1) })],
      routes: [r, route('10.10.2.0/24', 'b', { marked: true })],
      traits: MARKED,
    };
    const p = plan(w);
    const a = admit(w, p, [pool(2, 2)], p.deletes);
    assert.deepEqual(a.jobs.map((j) => [j.node, j.create.map((c) => c.destination)]), [['a', ['10.10.1.0/24']]]);
    assert.deepEqual(a.notes, [{ node: 'c', state: 'pending', reason: `route pending: route table ${T} full (2 of 2, account quota)`, why: `route table ${T} full` }]);
    assert.deepEqual(a.pools, [pool(2, 2)], 'the table holds what it held: two routes');
  });

  test('routes of other tools are never touched, and one holding a wanted subnet puts its node in error', () => {
    const foreign = [
      route('0.0.0.0/0', 'igw-1', { instanceHop: false }),
      route('10.10.200.0/24', 'pcx-1', { instanceHop: false }),
      route('192.168.0.0/24', 'a'),
      route('10.10.0.0/16', 'a'),
      route('10.10.7.0/25', 'a'),
      route('10.10.1.0/24', 'eni-other'),
    ];
    const w: World = { instances: [inst('a')], leases: [lease('a', '10.10.1.0/24')], routes: foreign };
    const p = plan(w);
    assert.deepEqual([p.owned, p.deletes, p.replaces], [[], [], []]);
    assert.equal(p.conflicts.size, 1);
    const a = admit(w, p, [pool(6, 50)]);
    assert.deepEqual(a.jobs, []);
    assert.deepEqual(a.notes, [{
      node: 'a', state: 'error',
      reason: "route for 10.10.1.0/24 in rtb-1 already points to eni-other, which is not twill's: twill leaves it alone; delete it and twill creates its own",
    }]);
  });

  test('on a cloud that marks its routes, only marked ones are twill’s, whatever their next hop or prefix', () => {
    const unmarked = route('10.10.9.0/24', 'a');
    const marked = route('10.10.8.0/25', 'b', { marked: true });
    const w: World = { instances: [inst('a')], leases: [lease('a', '10.10.1.0/24')], routes: [unmarked, marked], traits: MARKED };
    const p = plan(w);
    assert.deepEqual(p.owned, [marked]);
    assert.deepEqual(p.deletes, [{ route: marked, node: undefined, why: 'stale' }]);
  });

  test('inferred ownership: a member’s target, the target a lease recorded, or a blackhole make a /SubnetLen route twill’s', () => {
    const member = route('10.10.20.0/24', 'b'); // b is stopped, still a member
    const recorded = route('10.10.6.0/24', 'eni-gone'); // the departed node's lease recorded it
    const moved = route('10.10.40.0/24', 'eni-m-old'); // the lease as read held this subnet, before the join moved it
    const blackhole = route('10.10.21.0/24', undefined, { blackhole: true });
    const stranger = route('10.10.22.0/24', 'eni-stranger');
    const gone = lease('gone', '10.10.6.0/24', { backendData: { RouteTarget: 'eni-gone' } });
    const p = planRoutes({
      space, traits: INFERRED,
      instances: [inst('m', { target: 'eni-m' }), inst('b', { state: 'stopped' })],
      leasesBefore: [gone, lease('m', '10.10.40.0/24', { backendData: { RouteTarget: 'eni-m-old' } })],
      leases: [gone, lease('m', '10.10.41.0/24', { backendData: { RouteTarget: 'eni-m' } })],
      routes: [member, recorded, moved, blackhole, stranger],
    });
    assert.deepEqual(p.owned, [member, recorded, moved, blackhole]);
    assert.deepEqual(p.deletes.map((d) => [d.route.destination, d.node, d.why]), [
      ['10.10.20.0/24', undefined, 'stale'], ['10.10.6.0/24', 'gone', 'stale'], ['10.10.40.0/24', undefined, 'stale'], ['10.10.21.0/24', undefined, 'blackhole'],
    ]);
  });

  test('stale routes go first, named after the lease that holds their subnet; a second route for one subnet is stale', () => {
    const gone = route('10.10.6.0/24', 'gone', { blackhole: true });
    const twice = route('10.10.1.0/24', 'a', { table: T });
    const w: World = { instances: [inst('a')], leases: [lease('a', '10.10.1.0/24'), lease('gone', '10.10.6.0/24')], routes: [route('10.10.1.0/24', 'a'), twice, gone] };
    const p = plan(w);
    assert.deepEqual(p.deletes, [{ route: twice, node: 'a', why: 'stale' }, { route: gone, node: 'gone', why: 'blackhole' }]);
    assert.equal(p.present.size, 1);
  });
});

describe('planReleases: instances that left', () => {
  const w: World = {
    instances: [inst('stopped', { state: 'stopped' })],
    leases: [lease('left', '10.10.6.0/24'), lease('stopped', '10.10.3.0/24'), lease('reserved', '10.10.50.0/24', { expiresAt: null }), lease('stranger', '10.10.7.0/24', { revision: 7 })],
    routes: [route('10.10.6.0/24', 'left', { blackhole: true })],
  };
  const p = plan(w);

  test('a departed instance’s route is deleted, and its lease released only once the delete succeeded', () => {
    assert.deepEqual(p.deletes.map((d) => d.route.destination), ['10.10.6.0/24']);
    const after = planReleases({ leases: w.leases, instances: w.instances, owned: p.owned, deleted: p.deletes });
    assert.deepEqual(after, [{ node: 'left', revision: 1, subnet: '10.10.6.0/24' }, { node: 'stranger', revision: 7, subnet: '10.10.7.0/24' }]);
    const failed = planReleases({ leases: w.leases, instances: w.instances, owned: p.owned, deleted: [] });
    assert.deepEqual(failed.map((x) => x.node), ['stranger'], 'the route is still there: keep knowing it is twill’s');
  });

  test('reservations and stopped instances keep their leases', () => {
    const nodes = planReleases({ leases: w.leases, instances: w.instances, owned: p.owned, deleted: p.deletes }).map((x) => x.node);
    assert.ok(!nodes.includes('reserved') && !nodes.includes('stopped'));
  });
});

describe('planAdmission: room in each table, oldest lease first', () => {
  const nodes = ['n1', 'n2', 'n3', 'n4', 'n5'];
  const w: World = {
    instances: nodes.map((n) => inst(n)),
    leases: nodes.map((n, i) => lease(n, `10.10.${i + 1}.0/24`, { createdAt: at(i * 1000) })),
    routes: [],
  };

  test('no create past the limit: the oldest get routes, the rest wait with the table and its count', () => {
    const a = admit(w, plan(w), [pool(0, 3)]);
    assert.deepEqual(a.jobs.map((j) => [j.node, j.create.map((c) => c.destination)]), [['n1', ['10.10.1.0/24']], ['n2', ['10.10.2.0/24']], ['n3', ['10.10.3.0/24']]]);
    assert.deepEqual(a.notes, [
      { node: 'n4', state: 'pending', reason: 'route pending: route table rtb-1 full (3 of 3, account quota)', why: 'route table rtb-1 full' },
      { node: 'n5', state: 'pending', reason: 'route pending: route table rtb-1 full (3 of 3, account quota)', why: 'route table rtb-1 full' },
    ]);
    assert.deepEqual(a.pools, [pool(3, 3)]);
  });

  test('routes never flap: a node that has its route keeps it while an older one waits', () => {
    const routed: World = { ...w, routes: [route('10.10.2.0/24', 'n2'), route('10.10.3.0/24', 'n3'), route('10.10.5.0/24', 'n5')] };
    const a = admit(routed, plan(routed), [pool(3, 3)]);
    assert.deepEqual(a.jobs, []);
    assert.deepEqual(a.notes.map((n) => n.node), ['n1', 'n4']);
  });

  test('a delete frees room for the next in line; a route someone deleted is created again', () => {
    const stale = route('10.10.99.0/24', 'n9', { blackhole: true });
    const routed: World = { ...w, routes: [route('10.10.1.0/24', 'n1'), route('10.10.3.0/24', 'n3'), stale] };
    const p = plan(routed);
    assert.deepEqual(p.deletes.map((d) => d.route), [stale]);
    const a = admit(routed, p, [pool(3, 3)], p.deletes);
    assert.deepEqual(a.jobs.map((j) => j.node), ['n2']);
    assert.deepEqual(a.notes.map((n) => n.node), ['n4', 'n5']);
  });

  test('a table the cloud did not return is an error that names it', () => {
    const lost: World = { instances: [inst('a', { tables: ['rtb-lost'] })], leases: [lease('a', '10.10.1.0/24')], routes: [] };
    const a = admit(lost, plan(lost), [pool(0, 50)]);
    assert.deepEqual(a.notes, [{ node: 'a', state: 'error', reason: 'route table rtb-lost was not found in the cloud: check that it exists and that twill may read it' }]);
  });

  test('AWS: an instance with its check on is prepared before its routes, also when they all exist; not when it waits', () => {
    const aws: CloudTraits = { ...INFERRED, canPrepare: true };
    const x: World = {
      instances: [inst('new', { needsPrepare: true }), inst('old', { needsPrepare: true }), inst('ok'), inst('waits', { needsPrepare: true })],
      leases: [lease('old', '10.10.2.0/24', { createdAt: at(0) }), lease('new', '10.10.1.0/24', { createdAt: at(1) }), lease('ok', '10.10.3.0/24', { createdAt: at(2) }), lease('waits', '10.10.4.0/24', { createdAt: at(3) })],
      routes: [route('10.10.2.0/24', 'old')],
      traits: aws,
    };
    const a = admit(x, plan(x), [pool(1, 3)]);
    assert.deepEqual(a.jobs.map((j) => [j.node, j.prepare?.id, j.create.length]), [['old', 'old', 0], ['new', 'new', 1], ['ok', undefined, 1]]);
    assert.deepEqual(a.notes.map((n) => n.node), ['waits']);
    // A cloud with nothing to prepare never asks for it.
    assert.ok(admit({ ...x, traits: INFERRED }, plan({ ...x, traits: INFERRED }), [pool(1, 3)]).jobs.every((j) => !j.prepare));
  });
});

describe('planStatus: what each node shows', () => {
  test('why a leased node has no route: no instance, stopped, a problem, no address, no IPv4 subnet', () => {
    const leases = [lease('none', '10.10.1.0/24'), lease('s', '10.10.2.0/24'), lease('p', '10.10.3.0/24'), lease('ip', '10.10.4.0/24'), lease('v6', null), lease('ok', '10.10.5.0/24')];
    const instances = [inst('s', { state: 'stopped' }), inst('p', { problem: 'instance p cannot forward IP' }), inst('ip', { privateIP: undefined }), inst('v6'), inst('ok')];
    const r = planStatus({ network: 'net', leases, instances, notes: new Notes(), previous: [] });
    assert.deepEqual(r.statuses.map((s) => [s.node, s.state, s.reason]), [
      ['none', 'pending', 'route pending: no instance none carries the tag twill-network=net'],
      ['s', 'pending', 'route pending: instance is stopped'],
      ['p', 'error', 'instance p cannot forward IP'],
      ['ip', 'pending', 'route pending: the instance has no private IP yet'],
      ['v6', 'error', 'the lease has no IPv4 subnet, and VPC routes are IPv4 only'],
      ['ok', 'ok', ''],
    ]);
  });

  test('the worst note wins, the first of equal rank stays; only a change is written; nodes without a lease lose their status', () => {
    const notes = new Notes();
    notes.add('a', 'pending', 'route pending: first');
    notes.add('a', 'pending', 'route pending: second');
    notes.add('b', 'pending', 'route pending: full');
    notes.add('b', 'error', 'creating failed');
    notes.add('b', 'error', 'later');
    const previous = [
      { network: 'net', node: 'a', state: 'pending' as const, reason: 'route pending: first', updatedAt: at(0) },
      { network: 'net', node: 'c', state: 'pending' as const, reason: 'x', updatedAt: at(0) },
      { network: 'net', node: 'left', state: 'ok' as const, reason: '', updatedAt: at(0) },
    ];
    const r = planStatus({ network: 'net', leases: [lease('a', '10.10.1.0/24'), lease('b', '10.10.2.0/24'), lease('c', '10.10.3.0/24')], instances: [inst('a'), inst('b'), inst('c')], notes, previous });
    assert.deepEqual(r.statuses, [
      { node: 'a', state: 'pending', reason: 'route pending: first', changed: false, hadStatus: true },
      { node: 'b', state: 'error', reason: 'creating failed', changed: true, hadStatus: false },
      { node: 'c', state: 'ok', reason: '', changed: true, hadStatus: true },
    ]);
    assert.deepEqual(r.removed, ['left']);
  });
});

describe('networkSpace: the networks a cloud serves', () => {
  test('another backend or an IPv6-only network is refused with what to do', () => {
    assert.throws(() => networkSpace('plain', parseNetConf({ Network: '10.1.0.0/16', Backend: { Type: 'vxlan' } }, {}), 'aws'), /network plain has backend vxlan: the aws route controller serves aws-vpc networks only/);
    assert.throws(() => networkSpace('g', parseNetConf({ Network: '10.1.0.0/16', Backend: { Type: 'gce' } }, {}), 'aws'), /backend gce: the aws route controller/);
    const v6 = parseNetConf({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:1::/48', Backend: { Type: 'aws-vpc' } }, {});
    assert.throws(() => networkSpace('v6', v6, 'sim'), /network v6 has EnableIPv4 false: VPC routes are IPv4 only, so enable IPv4/);
  });
});
