// How members of a cloud network with an overlay are reached, and the order
// of the moves between route and overlay: the pure planner (reach.ts) with
// literals. No store, no cloud.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Lease } from '../../core/lease.js';
import { leaseSchema } from '../../core/messages.js';
import type { CloudInstance, CloudRoute, RoutePool } from '../../control/routes/clouds/cloud.js';
import { planAdmission, planJoins, planRoutes, type RoutePlan } from '../../control/routes/plan.js';
import {
  ROUTE_SETTLE_MS, SETTLING, WHY, agentsBehind, appliedByAll, firstReach, fullWhy, needsAgents, planEvictions, planGate, planReach, planSettle, routedNodes, whyKind,
} from '../../control/routes/reach.js';
import { Notes, planStatus } from '../../control/routes/status.js';
import type { StatusRecord } from '../../control/store/store.js';
import { INFERRED, MARKED, NOW, T, TABLES, at, inst, lease, route, space } from '../helpers/route-fixtures.js';

const pool = (used: number, limit: number): RoutePool => ({ id: T, what: 'route table', used, limit, source: 'RouteLimit' });
const status = (node: string, state: 'online' | 'offline', revision?: number): StatusRecord =>
  ({ network: 'net', node, status: { v: 2, state, errors: [], ...(revision !== undefined && { revision }) }, updatedAt: at(0) });

function planOf(instances: CloudInstance[], leases: Lease[], routes: CloudRoute[], traits = INFERRED): RoutePlan {
  return planRoutes({ space, traits, instances, leasesBefore: leases, leases, routes });
}

// Four members a..d, created in that order; a and b routed (limit 2).
const L = [
  lease('a', '10.10.1.0/24', { createdAt: at(1) }),
  lease('b', '10.10.2.0/24', { createdAt: at(2) }),
  lease('c', '10.10.3.0/24', { createdAt: at(3) }),
  lease('d', '10.10.4.0/24', { createdAt: at(4) }),
];
const I = ['a', 'b', 'c', 'd'].map((id) => inst(id));
const R = [route('10.10.1.0/24', 'a'), route('10.10.2.0/24', 'b')];

describe('reach: who is reached through the route and who over the overlay, and why', () => {
  test('route when the snapshot shows the route with the right target; overlay with the table-full reason past the limit', () => {
    const p = planOf(I, L, R);
    const adm = planAdmission({ plan: p, deleted: [], pools: [pool(2, 2)], tables: TABLES, instances: I, traits: INFERRED });
    const notes = new Notes();
    for (const n of adm.notes) notes.add(n.node, n.state, n.reason, n.why);
    const r = planReach({ leases: L, instances: I, routed: routedNodes(p, I, new Set()), leaving: new Map(), notes });
    assert.deepEqual(Object.fromEntries(r.reach), {
      a: { via: 'route' }, b: { via: 'route' },
      c: { via: 'overlay', why: 'route table full' }, d: { via: 'overlay', why: 'route table full' },
    });
    assert.deepEqual(r.writes.map((w) => [w.node, w.revision]), [['a', 1], ['b', 1], ['c', 1], ['d', 1]], 'each lease judged once, on its revision');
    // Written already: nothing to write again.
    const again = planReach({ leases: L.map((l) => ({ ...l, reach: r.reach.get(l.node) })), instances: I, routed: routedNodes(p, I, new Set()), leaving: new Map(), notes });
    assert.deepEqual(again.writes, []);
  });

  test('a route created by this reconcile is not yet a route: its member stays on the overlay ("no route yet") until a later read shows it', () => {
    const p = planOf(I.slice(0, 3), L.slice(0, 3), R);
    const adm = planAdmission({ plan: p, deleted: [], pools: [pool(2, 3)], tables: TABLES, instances: I.slice(0, 3), traits: INFERRED });
    assert.deepEqual(adm.jobs.map((j) => j.node), ['c'], 'the oldest overlay member gets the room');
    const r = planReach({ leases: L.slice(0, 3), instances: I.slice(0, 3), routed: routedNodes(p, I, new Set()), leaving: new Map(), notes: new Notes() });
    assert.deepEqual(r.reach.get('c'), { via: 'overlay', why: WHY.noRoute });
    // Already on the overlay (its lease says table full): no write for the moment between, only route once confirmed.
    const waiting = L.slice(0, 3).map((l) => ({ ...l, reach: l.node === 'c' ? { via: 'overlay' as const, why: 'route table full' } : { via: 'route' as const } }));
    assert.deepEqual(planReach({ leases: waiting, instances: I.slice(0, 3), routed: routedNodes(p, I, new Set()), leaving: new Map(), notes: new Notes() }).writes, []);
    // The next read shows it: now route.
    const next = planOf(I.slice(0, 3), L.slice(0, 3), [...R, route('10.10.3.0/24', 'c')]);
    assert.ok(routedNodes(next, I, new Set()).has('c'));
  });

  test('the reasons: outside the cloud, not running, no private IP, a wrong target, an unprepared instance, an error', () => {
    const leases = [lease('host', '10.10.9.0/24'), lease('s', '10.10.5.0/24'), lease('p', '10.10.6.0/24'), lease('w', '10.10.7.0/24'), lease('u', '10.10.8.0/24'), lease('x', '10.10.10.0/24')];
    const instances = [
      inst('s', { state: 'stopped' }), inst('p', { state: 'pending', privateIP: undefined }), inst('w'), inst('u', { needsPrepare: true }),
      inst('x', { problem: 'the instance has two interfaces in the subnet' }),
    ];
    const p = planOf(instances, leases, [route('10.10.7.0/24', 'elsewhere', { blackhole: true }), route('10.10.8.0/24', 'u')]);
    const notes = new Notes();
    notes.add('x', 'error', 'the instance has two interfaces in the subnet');
    const r = planReach({ leases, instances, routed: routedNodes(p, instances, new Set()), leaving: new Map(), notes });
    assert.deepEqual(Object.fromEntries(r.reach), {
      host: { via: 'overlay', why: 'outside the cloud' },
      s: { via: 'overlay', why: 'instance is stopped' },
      p: { via: 'overlay', why: 'the instance has no private IP yet' },
      w: { via: 'overlay', why: 'no route yet' },
      u: { via: 'overlay', why: 'no route yet' },
      x: { via: 'overlay', why: WHY.error },
    });
    assert.deepEqual([...r.reach.values()].map(whyKind), ['outside_cloud', 'not_running', 'no_private_ip', 'no_route_yet', 'no_route_yet', 'route_error']);
    assert.equal(whyKind({ via: 'overlay', why: fullWhy({ what: 'route table rtb-9' }) }), 'table_full');
    assert.equal(whyKind({ via: 'route' }), 'none');
  });

  test('a reason is bounded and parses on the wire; a longer or unprintable one is refused by the lease schema', () => {
    const why = fullWhy({ what: `route quota of project ${'p'.repeat(200)}` });
    const wire = (o: object) => ({ ...lease('a', '10.10.1.0/24'), publicIP: '172.31.0.10', ...o });
    assert.equal(why.length, 120);
    assert.ok(leaseSchema.safeParse(wire({ reach: { via: 'overlay', why } })).success);
    assert.ok(leaseSchema.safeParse(wire({ reach: { via: 'route' } })).success);
    assert.match(JSON.stringify(leaseSchema.safeParse(wire({ reach: { via: 'overlay', why: `${why}x` } })).error?.issues), /printable/);
    assert.ok(!leaseSchema.safeParse(wire({ reach: { via: 'overlay', why: 'a\nb' } })).success);
    assert.ok(!leaseSchema.safeParse(wire({ reach: { via: 'route', why: 'x' } })).success, 'a route has no reason');
    assert.ok(!leaseSchema.safeParse(wire({ reach: { via: 'vpn' } })).success);
  });

  test('status: a member over the overlay is ok and says how and why; an error stays an error', () => {
    const leases = [lease('a', '10.10.1.0/24'), lease('host', '10.10.9.0/24'), lease('x', '10.10.10.0/24')];
    const notes = new Notes();
    notes.add('x', 'error', 'route for 10.10.10.0/24 in rtb-1 already points to eni-9, which is not twill\'s');
    const reach = new Map([['a', { via: 'route' as const }], ['host', { via: 'overlay' as const, why: WHY.outside }], ['x', { via: 'overlay' as const, why: WHY.error }]]);
    const s = planStatus({ network: 'net', leases, instances: [inst('a'), inst('x')], notes, previous: [], reach });
    assert.deepEqual(s.statuses.map((x) => [x.node, x.state, x.reason]), [
      ['a', 'ok', ''], ['host', 'ok', 'overlay (outside the cloud)'], ['x', 'error', notes.get('x')?.reason],
    ]);
    // Without an overlay, the same host waits as today.
    assert.deepEqual(planStatus({ network: 'net', leases, instances: [inst('a')], notes: new Notes(), previous: [] }).statuses[1]?.state, 'pending');
  });

  test('a new lease carries its first reach: "no route yet" while its table has room, in join order, the table\'s reason once full', () => {
    const r = planJoins({ instances: [inst('n3'), inst('n1'), inst('n2'), inst('odd', { problem: 'two interfaces' })], leases: [], space, now: NOW, ttlMs: 3_600_000, firstReach: firstReach([pool(0, 2)], TABLES) });
    assert.deepEqual(r.joins.map((j) => [j.node, j.reach]), [
      ['n1', { via: 'overlay', why: WHY.noRoute }], ['n2', { via: 'overlay', why: WHY.noRoute }], ['n3', { via: 'overlay', why: 'route table full' }],
      ['odd', { via: 'overlay', why: WHY.error }],
    ]);
    // A lease that exists is judged by planReach, never by its join.
    const again = planJoins({ instances: [inst('a')], leases: [lease('a', '10.10.1.0/24', { publicIP: 'old' })], space, now: NOW, ttlMs: 3_600_000, firstReach: firstReach([pool(0, 2)], TABLES) });
    assert.equal(again.joins[0]?.reach, undefined);
  });

  test('joins: the agent\'s own backend data (VtepMAC) beside the route target is no reason to write the lease again', () => {
    const l = lease('a', '10.10.1.0/24', { backendData: { RouteTarget: 'a', VtepMAC: '0a:00:00:00:00:01' } });
    assert.deepEqual(planJoins({ instances: [inst('a')], leases: [l], space, now: NOW, ttlMs: 3_600_000 }).joins, []);
    const moved = lease('a', '10.10.1.0/24', { backendData: { RouteTarget: 'old', VtepMAC: '0a:00:00:00:00:01' } });
    assert.deepEqual(planJoins({ instances: [inst('a')], leases: [moved], space, now: NOW, ttlMs: 3_600_000 }).joins.map((j) => j.backendData), [{ RouteTarget: 'a' }]);
  });
});

describe('moves: a live member\'s route goes only after every online agent has its overlay path', () => {
  test('the agents: offline, never reported and former members hold nothing up; an online agent without a revision holds everything', () => {
    assert.equal(appliedByAll(L, [status('a', 'online', 7), status('b', 'online', 9), status('c', 'offline', 1), status('gone', 'online', 0)]), 7);
    assert.equal(appliedByAll(L, []), Infinity, 'no agent online: nobody to wait for');
    assert.equal(appliedByAll(L, [status('a', 'online', 7), status('b', 'online')]), -1);
    assert.deepEqual(agentsBehind(L, [status('a', 'online', 7), status('b', 'online'), status('c', 'online', 9), status('d', 'offline', 1)], 8), ['a', 'b']);
  });

  test('a limit lowered below the routes in place evicts the youngest leases\' routes, just enough', () => {
    const routes = [...R, route('10.10.3.0/24', 'c')];
    const p = planOf(I, L, routes);
    const ev = planEvictions({ plan: p, pools: [pool(3, 1)], tables: TABLES, leases: L });
    assert.deepEqual(ev.map((d) => [d.node, d.why]), [['c', 'evict'], ['b', 'evict']]);
    assert.deepEqual(planEvictions({ plan: p, pools: [pool(3, 3)], tables: TABLES, leases: L }), []);
    // Another route of ours already going (a stopped instance's) makes the room: nothing evicted.
    const stopped = I.map((i) => (i.id === 'c' ? { ...i, state: 'stopped' as const } : i));
    const p2 = planOf(stopped, L, routes);
    assert.deepEqual(p2.deletes.map((d) => d.node), ['c']);
    assert.deepEqual(planEvictions({ plan: p2, pools: [pool(3, 2)], tables: TABLES, leases: L }), []);
  });

  test('the gate: reach=overlay first, then the delete once every online agent applied that revision; a departed member\'s route goes at once', () => {
    const p = planOf(I, L, R);
    const ev = planEvictions({ plan: p, pools: [pool(2, 1)], tables: TABLES, leases: L });
    assert.deepEqual(ev.map((d) => d.node), ['b']);
    assert.ok(needsAgents(ev, p, L, I));
    // Step 1: b's lease still says route: held, and b is leaving (overlay, with the table's reason).
    const g1 = planGate({ deletes: ev, plan: p, leases: L.map((l) => ({ ...l, reach: { via: 'route' as const } })), instances: I, applied: 100 });
    assert.deepEqual([g1.now.length, g1.held.map((d) => d.node)], [0, ['b']]);
    const leaving = new Map([['b', fullWhy(pool(2, 1))]]);
    const r = planReach({ leases: L, instances: I, routed: routedNodes(p, I, new Set(leaving.keys())), leaving, notes: new Notes() });
    assert.deepEqual(r.reach.get('b'), { via: 'overlay', why: 'route table full' });
    assert.deepEqual(r.reach.get('a'), { via: 'route' });
    // Step 2: written at revision 5; an agent at 4 holds it, every agent at 5 lets it go.
    const written = L.map((l) => (l.node === 'b' ? { ...l, revision: 5, reach: { via: 'overlay' as const, why: 'route table full' } } : l));
    assert.deepEqual(planGate({ deletes: ev, plan: p, leases: written, instances: I, applied: 4 }).held.map((d) => d.node), ['b']);
    assert.deepEqual(planGate({ deletes: ev, plan: p, leases: written, instances: I, applied: 5 }).now.map((d) => d.node), ['b']);
    assert.deepEqual(planGate({ deletes: ev, plan: p, leases: written, instances: I, applied: undefined }).held.map((d) => d.node), ['b']);
    // A terminated member's route (blackhole) is no move: at once, and no agent is asked.
    const gone = planOf(I.filter((i) => i.id !== 'b'), L, [R[0]!, route('10.10.2.0/24', 'b', { blackhole: true })]);
    assert.equal(needsAgents(gone.deletes, gone, L, I.filter((i) => i.id !== 'b')), false);
    assert.equal(planGate({ deletes: gone.deletes, plan: gone, leases: L, instances: I.filter((i) => i.id !== 'b'), applied: undefined }).now.length, 1);
  });

  test('a wrong target on a cloud that only deletes and creates again (GCE, Ali): held like a move, and not created again meanwhile', () => {
    const leases = [lease('a', '10.10.1.0/24', { revision: 3, reach: { via: 'overlay', why: WHY.noRoute } })];
    const instances = [inst('a', { target: 'new-target' })];
    const p = planOf(instances, leases, [route('10.10.1.0/24', 'a', { marked: true })], MARKED);
    assert.deepEqual(p.deletes.map((d) => d.why), ['retarget']);
    const g = planGate({ deletes: p.deletes, plan: p, leases, instances, applied: 2 });
    assert.equal(g.held.length, 1);
    const adm = planAdmission({ plan: p, deleted: [], pools: [pool(1, 5)], tables: TABLES, instances, traits: MARKED, held: g.held });
    assert.deepEqual(adm.jobs, [], 'the route is not created beside the one still held');
    assert.equal(planGate({ deletes: p.deletes, plan: p, leases, instances, applied: 3 }).now.length, 1);
  });
});

test('a new route settles before its member is reached through it: counted from the stored status, so a restart counts on; a member already on its route stays', () => {
  const leases = [
    lease('a', '10.10.1.0/24', { reach: { via: 'route' } }),
    lease('b', '10.10.2.0/24', { reach: { via: 'overlay', why: WHY.noRoute } }),
    lease('c', '10.10.3.0/24', { reach: { via: 'overlay', why: 'route table full' } }),
    lease('d', '10.10.4.0/24'),
    lease('e', '10.10.5.0/24', { reach: { via: 'overlay', why: WHY.noRoute } }),
  ];
  const settling = (node: string, ms: number) => ({ network: 'net', node, state: 'ok' as const, reason: `overlay (${SETTLING})`, updatedAt: at(ms) });
  const previous = [
    settling('b', 0),
    settling('c', 1),
    // d's route was found in place (a controller that died before saying so): it settles from now
    { network: 'net', node: 'd', state: 'ok' as const, reason: 'overlay (no route yet)', updatedAt: at(0) },
  ];
  const r = planSettle({ present: new Set(['a', 'b', 'c', 'd']), made: ['e'], leases, previous, now: NOW + ROUTE_SETTLE_MS, settleMs: ROUTE_SETTLE_MS });
  assert.deepEqual([...r.routed].sort(), ['a', 'b']);
  assert.deepEqual([...r.settling].sort(), ['c', 'd', 'e']);
  // a route made again (after it was deleted by hand) settles again, whatever the lease said
  const again = planSettle({ present: new Set(), made: ['a'], leases, previous, now: NOW, settleMs: ROUTE_SETTLE_MS });
  assert.deepEqual([[...again.routed], [...again.settling]], [[], ['a']]);
});
