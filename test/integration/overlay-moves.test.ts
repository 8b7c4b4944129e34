// Past the route limit with an overlay (issue 23): the route controller
// against the simulated cloud and the real SQLite store, agents simulated by
// the status messages they publish, taken through the controller's intake.
// A limit of 2 and 4 instances: 2 routed, 2 over the overlay; moves both
// ways in the order that loses no packet, surviving a controller restart.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { parseNetConf, type NetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import { silentLogger } from '../../core/log.js';
import { Metrics } from '../../core/metrics.js';
import { Topics } from '../../core/topics.js';
import { Controller } from '../../control/controller/controller.js';
import { SimCloud, SimVpc, simTable } from '../../control/routes/clouds/sim.js';
import { reconcileSettled } from '../../control/routes/poke.js';
import { ROUTE_SETTLE_MS } from '../../control/routes/reach.js';
import { reconcileNetwork, type RouteDeps } from '../../control/routes/routes.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { CountingPublisher } from '../helpers/counting.js';
import { removeTempDirs, tempDir } from '../helpers/procs.js';

after(() => removeTempDirs());

const topics = new Topics();

function overlayConf(limit: number, overlay = true): NetConf {
  const c = parseNetConf({ Network: '10.10.0.0/16', Backend: { Type: 'aws-vpc', RouteLimit: limit } }, {});
  // Backend.Overlay as the route controller reads it from the stored config.
  return overlay ? ({ ...c, Backend: { ...c.Backend, Overlay: { Type: 'vxlan' } } } as NetConf) : c;
}

function world(dir = tempDir('twill-overlay-')) {
  const store = new SqliteStore(join(dir, 'twill.db'));
  const vpc = new SimVpc(join(dir, 'sim.db'));
  const clock = { now: Date.parse('2030-01-01T00:00:00Z') };
  const metrics = new Metrics();
  const publisher = new CountingPublisher();
  /** a controller process: a new one is a restart, with nothing in memory but what the store and the cloud hold */
  const start = () => {
    const controller = new Controller(store, publisher, { topics, log: silentLogger, leaseTtlMs: 3_600_000, now: () => clock.now });
    const deps: RouteDeps = {
      controller, store, cloud: new SimCloud(vpc), log: silentLogger, metrics, now: () => clock.now,
      // the settle a new route waits, in the test's time
      sleep: async (ms) => { clock.now += ms; },
    };
    return { controller, deps, once: () => reconcileNetwork('net', deps), settled: () => reconcileSettled('net', deps) };
  };
  return { dir, store, vpc, clock, metrics, publisher, start };
}

const reachOf = async (store: SqliteStore) => Object.fromEntries((await store.listLeases('net')).map((l) => [l.node, l.reach]));
const routed = (vpc: SimVpc) => vpc.routes(simTable('net')).map((r) => r.target).sort();
const lease = async (store: SqliteStore, node: string) => (await store.getLease('net', node)) as Lease;

/** An agent's status as it publishes it: online at the revision it applied, or its will. */
async function agentSays(c: Controller, node: string, revision: number | 'offline'): Promise<void> {
  const status = revision === 'offline' ? { v: 2, state: 'offline' } : { v: 2, state: 'online', agentVersion: 'test', revision, inSync: true, errors: [] };
  await c.handleMessage(topics.nodeStatus('net', node), Buffer.from(JSON.stringify(status)), 'test', true);
}

describe('overlay moves (simulated cloud, SQLite store)', () => {
  test('limit 2, four instances and a host outside the cloud: routes confirmed before route is written, the oldest moves up, a route deleted by hand comes back, a lowered limit waits for the agents across a restart', async () => {
    const w = world();
    let c = w.start();
    await c.controller.applyNetwork('net', overlayConf(2));
    for (const id of ['i1', 'i2', 'i3', 'i4']) {
      w.vpc.start(id, 'net');
    }
    // Leases are made one clock tick apart, in instance id order: i1 is the oldest.
    const joinNow = c.controller.join.bind(c.controller);
    c.controller.join = async (net, node, req) => { w.clock.now += 1000; return joinNow(net, node, req); };
    // A host in the operator's rack, joined by its own agent's hello (twill node add).
    await c.controller.join('net', 'rack1', { publicIP: '192.0.2.10' });

    // 1. The first read makes two routes; their members stay on the overlay until a later read shows them.
    const r1At = w.clock.now;
    const r1 = await c.once();
    assert.deepEqual(routed(w.vpc), ['i1', 'i2']);
    // A new instance's lease carries its reach from its first write (one write, one message); only the host's is judged apart.
    assert.deepEqual(r1.overlay, { route: 0, overlay: 5, written: 1, confirming: 2, waiting: 0 });
    assert.equal(r1.joined, 4);
    assert.deepEqual(await reachOf(w.store), {
      i1: { via: 'overlay', why: 'no route yet' }, i2: { via: 'overlay', why: 'no route yet' },
      i3: { via: 'overlay', why: 'route table full' }, i4: { via: 'overlay', why: 'route table full' },
      rack1: { via: 'overlay', why: 'outside the cloud' },
    });
    assert.deepEqual(r1.pending, {}, 'past the limit is no wait on a network with an overlay');
    // A read before the routes have settled (the cloud's data plane may not carry them yet) keeps them on the overlay.
    // (the reconcile's joins moved the clock on; a route settles from the reconcile that made it)
    w.clock.now = r1At + ROUTE_SETTLE_MS - 1;
    const early = await c.once();
    assert.deepEqual(early.overlay, { route: 0, overlay: 5, written: 0, confirming: 2, waiting: 0 });
    assert.deepEqual((await w.store.listRouteStatus('net')).find((s) => s.node === 'i1')?.reason, 'overlay (route made, confirming)');
    w.clock.now += 1;
    const r2 = await c.once();
    assert.deepEqual(r2.overlay, { route: 2, overlay: 3, written: 2, confirming: 0, waiting: 0 });
    assert.deepEqual((await reachOf(w.store)).i1, { via: 'route' });
    const statuses = Object.fromEntries((await w.store.listRouteStatus('net')).map((s) => [s.node, `${s.state} ${s.reason}`]));
    assert.deepEqual(statuses, {
      i1: 'ok ', i2: 'ok ', i3: 'ok overlay (route table full (2 of 2, Backend.RouteLimit))', i4: 'ok overlay (route table full (2 of 2, Backend.RouteLimit))', rack1: 'ok overlay (outside the cloud)',
    });
    const metrics = w.metrics.render();
    assert.match(metrics, /twill_members\{network="net",via="route",why="none"\} 2/);
    assert.match(metrics, /twill_members\{network="net",via="overlay",why="table_full"\} 2/);
    assert.match(metrics, /twill_members\{network="net",via="overlay",why="outside_cloud"\} 1/);
    assert.doesNotMatch(metrics, /twill_route_pending\{/);
    // Nothing changed: nothing written, nothing published.
    const published = w.publisher.count;
    const quiet = await c.settled();
    assert.deepEqual([quiet.overlay?.written, quiet.joined, quiet.created], [0, 0, 0]);
    assert.equal(w.publisher.count, published);
    assert.ok(await w.store.getLease('net', 'rack1'), 'the host outside the cloud keeps its lease');

    // 2. A routed instance terminates: the oldest overlay member (i3) gets the room, and route once confirmed.
    w.vpc.terminate('i1');
    const t1 = await c.once();
    assert.deepEqual(routed(w.vpc), ['i2', 'i3']);
    assert.deepEqual((await lease(w.store, 'i3')).reach, { via: 'overlay', why: 'route table full' }, 'not route until a read shows it');
    assert.equal(t1.overlay?.confirming, 1);
    const t2 = await c.settled();
    assert.deepEqual((await lease(w.store, 'i3')).reach, { via: 'route' });
    assert.deepEqual((await lease(w.store, 'i4')).reach, { via: 'overlay', why: 'route table full' });
    assert.equal(t2.overlay?.route, 2);

    // 3. Someone deletes i2's route by hand: overlay at once, then the route again, then route.
    w.vpc.deleteRoute(simTable('net'), (await lease(w.store, 'i2')).subnet as string);
    const h1 = await c.once();
    assert.deepEqual((await lease(w.store, 'i2')).reach, { via: 'overlay', why: 'no route yet' });
    assert.deepEqual(routed(w.vpc), ['i2', 'i3'], 'made again in the same reconcile');
    assert.equal(h1.overlay?.confirming, 1);
    await c.settled();
    assert.deepEqual((await lease(w.store, 'i2')).reach, { via: 'route' });

    // 4. The limit is lowered to 1: the youngest routed lease (i3) moves to the overlay first.
    await c.controller.applyNetwork('net', overlayConf(1));
    const l1 = await c.once();
    const i3 = await lease(w.store, 'i3');
    assert.deepEqual(i3.reach, { via: 'overlay', why: 'route table full' });
    assert.deepEqual(routed(w.vpc), ['i2', 'i3'], 'the route stays until the agents have the overlay path');
    assert.deepEqual([l1.overlay?.waiting, l1.deleted], [1, 0]);
    // The agents: rack1's went away (its will), i4's never reported; i2 and i3 are behind.
    await agentSays(c.controller, 'rack1', 'offline');
    await agentSays(c.controller, 'i2', i3.revision - 1);
    await agentSays(c.controller, 'i3', i3.revision);
    await c.once();
    assert.deepEqual(routed(w.vpc), ['i2', 'i3'], 'i2 has not applied the move');

    // The controller restarts between the reach write and the delete: the store and the cloud say where the move stands.
    c = w.start();
    await agentSays(c.controller, 'i2', i3.revision);
    const l3 = await c.once();
    assert.deepEqual(routed(w.vpc), ['i2']);
    assert.deepEqual([l3.deleted, l3.overlay?.waiting, l3.overlay?.written], [1, 0, 0]);
    assert.equal((await lease(w.store, 'i3')).revision, i3.revision, 'no second write of its lease');
    assert.deepEqual((await w.store.listRouteStatus('net')).find((s) => s.node === 'i3')?.reason, 'overlay (route table full (1 of 1, Backend.RouteLimit))');
    // And it stays so: the table is at its limit.
    const l4 = await c.settled();
    assert.deepEqual([l4.created, l4.deleted, l4.overlay?.written], [0, 0, 0]);
  });

  test('without Backend.Overlay nothing changes: no reach written, a node past the limit waits, a host outside the cloud is released', async () => {
    const w = world();
    const c = w.start();
    await c.controller.applyNetwork('net', overlayConf(1, false));
    w.vpc.start('i1', 'net');
    w.vpc.start('i2', 'net');
    await c.controller.join('net', 'rack1', { publicIP: '192.0.2.10' });
    const r = await c.settled();
    assert.equal(r.overlay, undefined);
    assert.deepEqual(Object.keys(r.pending), ['i2']);
    assert.deepEqual(await reachOf(w.store), { i1: undefined, i2: undefined });
    assert.doesNotMatch(w.metrics.render(), /twill_members/);
  });
});
