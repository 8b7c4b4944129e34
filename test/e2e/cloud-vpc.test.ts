// aws-vpc end to end on a simulated VPC made of real networking
// (test/helpers/vpc-lab.ts): instances as namespaces holding the sim's
// private IPs, each with a real agent and real pods, behind a router whose
// kernel follows the sim's route table and enforces EC2's source/destination
// check; every namespace with strict reverse-path filtering. The controller
// runs with --cloud sim and reconciles the sim every second.
//
// Without an overlay, the route table is the only path between pods: what
// it holds is reachable, what it cannot hold is not. With Backend.Overlay
// (issue 23), every pod reaches every pod, past the limit and from a
// bare-metal host outside the VPC, and members move between the two paths
// without losing a packet.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readNetConf } from '../../core/config.js';
import type { Pod } from '../helpers/netns.js';
import { START_BOUND_MS, waitFor } from '../helpers/procs.js';
import { VpcLab, type VpcLabOptions } from '../helpers/vpc-lab.js';
import { passesLater, skipKernel } from './scenario.js';

const NETWORK = '10.250.0.0/16';

/** Every ordered pair of pods on different nodes, each pinged: [from -> to, reached] for every pair whose outcome differs from want. */
async function reachMismatches(lab: VpcLab, pods: Pod[], want: (from: Pod, to: Pod) => boolean): Promise<string[]> {
  const wrong: string[] = [];
  for (const from of pods) {
    for (const to of pods) {
      if (from.host.name === to.host.name) continue;
      const expect = want(from, to);
      // A pair that must not reach: two echoes with a 2 s deadline, since an unreachable pair only ever answers with silence.
      const r = await lab.lab.ping(from, to.ip, expect ? { count: 2, interval: 0.2, deadline: 8 } : { count: 2, interval: 0.2, deadline: 2 });
      const reached = expect ? r.received === r.transmitted : r.received > 0;
      if (reached !== expect) wrong.push(`${from.name} (${from.host.name}) -> ${to.name} (${to.host.name}) ${to.ip}: ${expect ? 'expected replies' : 'expected none'}, got ${r.received} of ${r.transmitted}`);
    }
  }
  return wrong;
}

/** The node each route of the sim's table leads to, by the lease that holds its destination. */
async function routedNodes(lab: VpcLab, names: string[]): Promise<string[]> {
  const routes = lab.simRoutes();
  const out: string[] = [];
  for (const n of names) {
    const subnet = (await lab.lease(n))?.subnet;
    if (subnet && routes.get(subnet) === n) out.push(n);
  }
  return out.sort();
}

/** The router's kernel holds exactly one route per routed node, via that node's private IP. */
async function assertRouterFollows(lab: VpcLab, routed: string[]): Promise<void> {
  const want = new Map<string, unknown>();
  for (const n of routed) want.set((await lab.lease(n))?.subnet as string, { via: lab.instances.get(n)?.ip });
  assert.deepEqual(await lab.router.kernelRoutes(), want, await lab.diagnose());
}

/**
 * A lab for the describe it is called in (made before its tests, cleaned up
 * after them, even when one fails): i1 and i2 launched with their agents
 * first, so their leases are the oldest (routes go to the oldest leases
 * first), then i3 and i4 and the agents of `also` (hosts outside the VPC);
 * the controller has acted on all of it; a pod on each.
 */
function fourInstances(o: VpcLabOptions, set: (lab: VpcLab) => void, also: string[] = []): void {
  let made: VpcLab | undefined;
  before(async () => {
    const lab = await VpcLab.create(o);
    made = lab;
    set(lab);
    for (const n of ['i1', 'i2']) await lab.launch(n);
    await lab.startAgents(['i1', 'i2']);
    for (const n of ['i3', 'i4']) await lab.launch(n);
    await lab.startAgents(['i3', 'i4', ...also]);
    await lab.reconciled();
    for (const n of ['i1', 'i2', 'i3', 'i4', ...also]) await lab.addPod(n);
  });
  after(async () => {
    await made?.cleanup();
  });
}

describe('aws-vpc on a simulated VPC: room for every instance, every pod reaches every pod through the router', { skip: skipKernel }, () => {
  let lab: VpcLab;
  const names = ['i1', 'i2', 'i3', 'i4'];
  fourInstances({ conf: { Network: NETWORK, Backend: { Type: 'aws-vpc', RouteLimit: 10 } }, bareMetal: true }, (l) => (lab = l));

  test('each instance is routed with its check off; every pod pings every pod both ways, nothing dropped by the check', async () => {
    assert.deepEqual(await routedNodes(lab, names), names, await lab.diagnose());
    for (const n of names) assert.equal(lab.sim.instance(n)?.sourceDestCheck, false, `${n}'s source/destination check was turned off by the route controller`);
    await assertRouterFollows(lab, names);
    const pods = names.map((n) => lab.cluster.node(n).pods[0] as Pod);
    assert.deepEqual(await reachMismatches(lab, pods, () => true), [], await lab.diagnose());
    for (const n of names) assert.equal(await lab.router.drops(n), 0, `nothing of ${n}'s is dropped by the check`);
  });

  test("the bare-metal host reaches every instance's private IP over the VPN link, and the instances reach it: the underlay an overlay runs on", async () => {
    const bm = lab.cluster.node('bm').host;
    for (const n of names) {
      const inst = lab.instances.get(n)!;
      const there = await lab.lab.ping(bm, inst.ip, { count: 2, interval: 0.2, deadline: 8 });
      assert.equal(there.received, 2, `bm -> ${n} (${inst.ip}): ${there.output}`);
      const back = await lab.lab.ping(inst.node.host, bm.ip, { count: 2, interval: 0.2, deadline: 8 });
      assert.equal(back.received, 2, `${n} -> bm (${bm.ip}): ${back.output}`);
    }
  });
});

describe('aws-vpc past its route limit, without an overlay: what the route table cannot hold is unreachable', { skip: skipKernel }, () => {
  let lab: VpcLab;
  const names = ['i1', 'i2', 'i3', 'i4'];
  const pods = () => [...lab.instances.keys()].filter((n) => lab.agentRunning(n)).map((n) => lab.cluster.node(n).pods[0] as Pod);
  fourInstances({ conf: { Network: NETWORK, Backend: { Type: 'aws-vpc', RouteLimit: 2 } } }, (l) => (lab = l));

  test('limit 2 with 4 instances: the two routed ones reach each other; the two pending ones reach no one, their pods dropped by the router', async () => {
    assert.deepEqual(await routedNodes(lab, names), ['i1', 'i2'], await lab.diagnose());
    assert.deepEqual(names.map((n) => lab.sim.instance(n)?.sourceDestCheck), [false, false, true, true], 'only routed instances have their check turned off');
    await assertRouterFollows(lab, ['i1', 'i2']);
    const routed = new Set(['i1', 'i2']);
    const wrong = await reachMismatches(lab, pods(), (a, b) => routed.has(a.host.name) && routed.has(b.host.name));
    assert.deepEqual(wrong, [], await lab.diagnose());
    // What a pending instance's pods send carries a pod's address, not the instance's: the check drops it at the router.
    for (const n of ['i3', 'i4']) assert.ok((await lab.router.drops(n)) > 0, `the check dropped ${n}'s pods' packets\n${await lab.diagnose()}`);
    for (const n of ['i1', 'i2']) assert.equal(await lab.router.drops(n), 0);
  });

  test('a routed instance terminated: the oldest pending one gets its route and its check turned off, and its pods become reachable', async () => {
    const gone = (await lab.lease('i1'))?.subnet;
    await lab.terminate('i1');
    await lab.reconciled();
    assert.deepEqual(await routedNodes(lab, ['i2', 'i3', 'i4']), ['i2', 'i3'], await lab.diagnose());
    assert.equal(lab.simRoutes().has(gone as string), false, "the terminated instance's route is gone from the table");
    assert.equal(await lab.lease('i1'), undefined, "the terminated instance's lease is released");
    assert.equal(lab.sim.instance('i3')?.sourceDestCheck, false);
    await assertRouterFollows(lab, ['i2', 'i3']);
    const routed = new Set(['i2', 'i3']);
    assert.deepEqual(await reachMismatches(lab, pods(), (a, b) => routed.has(a.host.name) && routed.has(b.host.name)), [], await lab.diagnose());
  });
});

// ---- with the overlay (issue 23, parts 1, 2 and 4) ---------------------------
//
// Written against the shared contract (core/backends/overlay.ts, Lease.reach):
// they run once Backend.Overlay is parsed (the agent's branch) and need the
// route controller's reach (the control plane's branch) to pass.

const OVERLAY_CONF = { Network: NETWORK, Backend: { Type: 'aws-vpc', RouteLimit: 2, Overlay: { Type: 'vxlan' } } };
const overlayParsed = 'Overlay' in readNetConf(JSON.stringify(OVERLAY_CONF)).config.Backend;
const skipOverlay = skipKernel || (overlayParsed ? false : 'todo: Backend.Overlay is not parsed yet (waits for the agent branch: core/backends parsing and the overlay in the agent; and the control-plane branch: Lease.reach)');

describe('aws-vpc with a vxlan overlay on a simulated VPC: limit 2, 4 instances and a bare-metal host', { skip: skipOverlay }, () => {
  let lab: VpcLab;
  const instances = ['i1', 'i2', 'i3', 'i4'];
  const members = [...instances, 'bm'];
  const pod = (n: string) => lab.cluster.node(n).pods[0] as Pod;
  const live = () => members.filter((n) => lab.agentRunning(n));

  /** reach as the leases say it, by node: "route" or "overlay (why)" */
  const reaches = async (names: string[]) => {
    const out: Record<string, string> = {};
    for (const n of names) {
      const r = (await lab.lease(n))?.reach;
      out[n] = r ? (r.via === 'route' ? 'route' : `overlay (${r.why})`) : 'none';
    }
    return out;
  };
  /** Every live agent has a full view and has applied it (two kernel passes since). */
  const applied = async () => {
    const names = live();
    await lab.cluster.waitPeers(names.length - 1, names).catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await lab.diagnose()}`);
    });
    for (const n of names) await passesLater(lab.cluster, n);
  };
  /** A ping from pod of `from` to pod of `to` running in the background, 20 a second. */
  const pingRunning = (from: string, to: string) => lab.lab.spawn(pod(from), ['ping', '-c', '100000', '-i', '0.05', '-W', '1', pod(to).ip]);
  /**
   * Stops a running ping and returns the echoes lost: every sequence number
   * up to the last answered must have its reply (the one in flight when it
   * stops is not a loss).
   */
  const stopPing = async (p: ReturnType<typeof pingRunning>) => {
    p.child.kill('SIGINT');
    await p.exited;
    const seqs = new Set([...p.output().matchAll(/bytes from .* icmp_seq=(\d+)/g)].map((m) => Number(m[1])));
    const last = Math.max(0, ...seqs);
    const lost = Array.from({ length: last }, (_, i) => i + 1).filter((n) => !seqs.has(n));
    return { lost, answered: seqs.size, output: p.output().slice(-1500) };
  };
  // The bare-metal host joins with `twill node add` (its config is made by the lab) and its agent's hello.
  fourInstances({ conf: OVERLAY_CONF, bareMetal: true }, (l) => (lab = l), ['bm']);

  test('every pod pings every pod both ways: the two routed through the VPC, the rest over the overlay', async () => {
    assert.deepEqual(await routedNodes(lab, instances), ['i1', 'i2'], await lab.diagnose());
    // A route is confirmed in place before its lease says so, perhaps a reconcile later: wait for the leases to settle (a hang's bound).
    // The lease names the full table without counts (a count would rewrite every overlay member's lease whenever it moved); the route status has them.
    const settled = (r: Record<string, string>) => r.i1 === 'route' && r.i2 === 'route' &&
      ['i3', 'i4'].every((n) => /^overlay \(route table( \S+)? full\)$/.test(r[n] as string)) && /^overlay \(outside the cloud\)$/.test(r.bm as string);
    let last: Record<string, string> = {};
    await waitFor('every lease says how it is reached', async () => settled((last = await reaches(members))), START_BOUND_MS, 200).catch((e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(last)}`);
    });
    await applied();
    assert.deepEqual(await reachMismatches(lab, members.map(pod), () => true), [], await lab.diagnose());
  });

  test('a routed instance terminated: the oldest overlay member moves to the freed route with pings running, no packet lost', async () => {
    // Either overlay instance may be the oldest lease (two leases granted in one reconcile share their time): ping both.
    const pings = ['i3', 'i4'].flatMap((to) => [pingRunning('i2', to), pingRunning('bm', to)]);
    await waitFor('a first reply on every ping', () => pings.every((p) => / bytes from /.test(p.output())), START_BOUND_MS, 100);
    const [i3, i4] = [await lab.lease('i3'), await lab.lease('i4')];
    const oldest = Date.parse(i3?.createdAt ?? '') <= Date.parse(i4?.createdAt ?? '') ? 'i3' : 'i4';
    await lab.terminate('i1');
    // The move: the controller creates the route, lets it settle, then writes reach=route; the agents then drop its overlay pairs.
    let mover = '';
    await waitFor('an overlay member reached by its route', async () => {
      const r = await reaches(['i3', 'i4']);
      mover = r.i3 === 'route' ? 'i3' : r.i4 === 'route' ? 'i4' : '';
      return mover !== '';
    }, START_BOUND_MS, 200);
    if (i3?.createdAt !== i4?.createdAt) assert.equal(mover, oldest, 'the oldest overlay member moves first');
    await lab.router.sync();
    await applied();
    const outs = await Promise.all(pings.map(stopPing));
    for (const out of outs) assert.deepEqual(out.lost, [], `echoes lost during the move:\n${out.output}\n${await lab.diagnose()}`);
    assert.deepEqual(await routedNodes(lab, ['i2', 'i3', 'i4']), ['i2', mover].sort());
    assert.deepEqual(await reachMismatches(lab, live().map(pod), () => true), [], await lab.diagnose());
  });

  test('a route deleted by hand: its member falls back to the overlay, gets its route back, and a ping across the return loses nothing', async () => {
    const subnet = await lab.deleteRouteByHand('i2');
    // Level-triggered: the next reconcile finds the route gone (overlay at once, nothing to wait for) and makes it
    // again; the new route settles (5 s) before the lease says route, so the fallback is there to see.
    await waitFor('i2 on the overlay once its route is found gone', async () => !!(await reaches(['i2'])).i2?.startsWith('overlay'), START_BOUND_MS, 100);
    const [other] = await routedNodes(lab, ['i3', 'i4']);
    assert.ok(other, 'a routed member to ping from');
    // Traffic lost between the hand's delete and the agents' overlay path is the hand's doing; from here on nothing is lost.
    await applied();
    const p = pingRunning(other, 'i2');
    await waitFor('replies', () => / bytes from /.test(p.output()), START_BOUND_MS, 100);
    await waitFor('i2 routed again', async () => lab.simRoutes().get(subnet) === 'i2' && (await reaches(['i2'])).i2 === 'route', START_BOUND_MS, 200);
    await lab.router.sync();
    await applied();
    const out = await stopPing(p);
    assert.deepEqual(out.lost, [], `echoes lost across the return to the route:\n${out.output}\n${await lab.diagnose()}`);
    assert.deepEqual(await reachMismatches(lab, live().map(pod), () => true), [], await lab.diagnose());
  });
});
