// How each member of a cloud network with an overlay (Backend.Overlay,
// core/backends/overlay.ts) is reached, and the order of the moves between
// the route and the overlay, as pure functions of what a reconcile read,
// like the rest of the plan (plan.ts). Networks without an overlay never
// come here: their nodes keep today's behaviour (pending past the limit).
//
// The rules, each level-triggered (everything they read is in the store and
// the cloud, so a controller restarted between any two steps finishes the move):
//   route    a member whose every route is in this reconcile's snapshot of
//            the cloud with the right target (and whose instance is ready to
//            forward) is reached through the VPC. A route created by this
//            reconcile is confirmed by the next one's read, and only then is
//            reach=route written: no member drops its overlay path before the
//            VPC carries the traffic.
//   overlay  every other member, with why ("route table rtb-1 full",
//            "outside the cloud", ...). A route that vanished behind our back
//            is overlay at once: there is nothing to wait for.
//   leaving  a live member's route that must go (past a lowered limit, or a
//            wrong target a cloud can only delete and create again) is held
//            in place until its lease says overlay and every online member's
//            agent has applied that lease's revision; then it is deleted.
//   evict    past a lowered limit, the youngest leases' routes go first (the
//            oldest keep theirs: the same line admission uses), until the
//            table is within its limit.
import { reachOf, type Reach } from '../../core/backends/overlay.js';
import type { Lease } from '../../core/lease.js';
import { MAX_REACH_WHY } from '../../core/messages.js';
import { isAlive, type CloudInstance, type RoutePool, type RouteTable } from './clouds/cloud.js';
import { PoolLedger, routeKey, type DeleteAction, type RoutePlan } from './plan.js';
import type { Note } from './status.js';
import type { RouteStatusRecord, StatusRecord } from '../store/store.js';

/** The reasons a member is reached over the overlay, in a few fixed words (the table-full one names its table). */
export const WHY = {
  outside: 'outside the cloud',
  noIP: 'the instance has no private IP yet',
  noRoute: 'no route yet',
  refused: 'route table full (the cloud refused another route)',
  replacing: 'route being replaced',
  error: 'route error (twill status says why)',
} as const;

const clip = (s: string): string => s.slice(0, MAX_REACH_WHY);

/**
 * "route table rtb-1 full". No counts: the lease carries it to every member,
 * and a count would rewrite every overlay member's lease (a message to every
 * member each) whenever the limit or the table's use moved. The counts are in
 * the node's route status ("overlay (route table full (2 of 2, account quota))").
 */
export function fullWhy(p: Pick<RoutePool, 'what'>): string {
  return clip(`${p.what} full`);
}

export const notRunningWhy = (state: string): string => `instance is ${state}`;

/** The metric's label for a reason: a small fixed set, whatever a table is named. */
export type WhyKind = 'none' | 'table_full' | 'outside_cloud' | 'not_running' | 'no_private_ip' | 'no_route_yet' | 'route_error';
export const WHY_KINDS: readonly WhyKind[] = ['none', 'table_full', 'outside_cloud', 'not_running', 'no_private_ip', 'no_route_yet', 'route_error'];

export function whyKind(reach: Reach): WhyKind {
  if (reach.via === 'route') return 'none';
  const w = reach.why;
  if (w === WHY.outside) return 'outside_cloud';
  if (w === WHY.noIP) return 'no_private_ip';
  if (w === WHY.noRoute || w === WHY.replacing) return 'no_route_yet';
  if (w.startsWith('instance is ')) return 'not_running';
  if (/ full\b/.test(w)) return 'table_full';
  return 'route_error';
}

/**
 * The newest revision every online member's agent has applied (its status's
 * `revision`): a lease write at or below it is in every online member's
 * kernel. An agent counts as offline, and holds nothing up, when its last
 * status says offline (its will, which the broker publishes when its session
 * is lost), when it never reported, or when its node holds no lease here
 * (gone, or expired: away longer than the lease TTL). An online agent that
 * reports no revision holds every move up: nothing says what it applied.
 * Infinity when no member is online.
 */
export function appliedByAll(leases: readonly Lease[], statuses: readonly StatusRecord[]): number {
  return Math.min(Infinity, ...onlineApplied(leases, statuses).values());
}

/** Each online member agent's applied revision (-1: it reports none), by node. */
function onlineApplied(leases: readonly Lease[], statuses: readonly StatusRecord[]): Map<string, number> {
  const members = new Set(leases.map((l) => l.node));
  const out = new Map<string, number>();
  for (const s of statuses) if (members.has(s.node) && s.status.state === 'online') out.set(s.node, s.status.revision ?? -1);
  return out;
}

/** The online agents that have not applied revision yet (at most `max`, by node): who holds a move, for the log. */
export function agentsBehind(leases: readonly Lease[], statuses: readonly StatusRecord[], revision: number, max = 5): string[] {
  return [...onlineApplied(leases, statuses)].filter(([, r]) => r < revision).map(([node]) => node).sort().slice(0, max);
}

/**
 * Past a limit lowered below the routes in place: the routes of the
 * youngest leases to delete, per pool, so that the pool is within its limit
 * once they and this reconcile's other deletes are gone.
 */
export function planEvictions(input: {
  plan: RoutePlan;
  pools: readonly RoutePool[];
  tables: readonly RouteTable[];
  leases: readonly Lease[];
}): DeleteAction[] {
  const { plan } = input;
  const ledger = new PoolLedger(input.pools, input.tables);
  for (const d of plan.deletes) ledger.free(d.route.table);
  const nodeOf = new Map<string, string>();
  for (const [node, wants] of plan.wanted) for (const w of wants) nodeOf.set(routeKey(w.table, w.destination), node);
  const line = new Map(plan.order.map((node, i) => [node, i]));
  const candidates = input.plan.owned
    .filter((r) => plan.present.has(routeKey(r.table, r.destination)))
    .map((route) => ({ route, node: nodeOf.get(routeKey(route.table, route.destination)) as string }))
    // youngest first: the back of the line admission uses
    .sort((a, b) => (line.get(b.node) ?? 0) - (line.get(a.node) ?? 0));
  const out: DeleteAction[] = [];
  for (const c of candidates) {
    const p = ledger.of(c.route.table);
    if (!p || p.used <= p.limit) continue;
    p.used--;
    out.push({ route: c.route, node: c.node, why: 'evict' });
  }
  return out;
}

/** A delete whose node lives on: its route still carries the node's traffic until every member has the overlay path. */
function guarded(d: DeleteAction, plan: RoutePlan, leases: ReadonlyMap<string, Lease>, instances: ReadonlyMap<string, CloudInstance>): boolean {
  if (!d.node || !leases.has(d.node)) return false;
  const inst = instances.get(d.node);
  if (!inst || !isAlive(inst.state)) return false;
  // A second route for a destination whose right one stays: nothing moves.
  return !(d.why === 'stale' && plan.present.has(routeKey(d.route.table, d.route.destination)));
}

/** Whether any delete waits on the agents: only then are their statuses read. */
export function needsAgents(deletes: readonly DeleteAction[], plan: RoutePlan, leases: readonly Lease[], instances: readonly CloudInstance[]): boolean {
  const byNode = new Map(leases.map((l) => [l.node, l]));
  const insts = new Map(instances.map((i) => [i.id, i]));
  return deletes.some((d) => guarded(d, plan, byNode, insts));
}

/**
 * Which deletes go now, and which are held (with their nodes, which are
 * reached over the overlay from now on): a guarded delete goes only once its
 * node's lease says overlay at a revision every online agent has applied.
 */
export function planGate(input: {
  deletes: readonly DeleteAction[];
  plan: RoutePlan;
  leases: readonly Lease[];
  instances: readonly CloudInstance[];
  /** appliedByAll, or undefined when no delete needed it */
  applied: number | undefined;
}): { now: DeleteAction[]; held: DeleteAction[] } {
  const leases = new Map(input.leases.map((l) => [l.node, l]));
  const instances = new Map(input.instances.map((i) => [i.id, i]));
  const now: DeleteAction[] = [];
  const held: DeleteAction[] = [];
  for (const d of input.deletes) {
    if (!guarded(d, input.plan, leases, instances)) {
      now.push(d);
      continue;
    }
    const lease = leases.get(d.node as string) as Lease;
    const ready = reachOf(lease, true) === 'overlay' && input.applied !== undefined && lease.revision <= input.applied;
    (ready ? now : held).push(d);
  }
  return { now, held };
}

/**
 * The members reached through their route: every route they want is in the
 * snapshot with the right target, none of them is leaving, and the instance
 * forwards (an unprepared one drops what the route brings it).
 */
export function routedNodes(plan: RoutePlan, instances: readonly CloudInstance[], leaving: ReadonlySet<string>): Set<string> {
  const insts = new Map(instances.map((i) => [i.id, i]));
  const out = new Set<string>();
  for (const [node, wants] of plan.wanted) {
    if (leaving.has(node) || insts.get(node)?.needsPrepare || !wants.length) continue;
    if (wants.every((w) => plan.present.has(routeKey(w.table, w.destination)))) out.add(node);
  }
  return out;
}

/**
 * How long a route stays in the cloud's reads before its member is reached
 * through it. A cloud's API shows a new route before its data plane is sure
 * to carry it (EC2's reads are eventually consistent, and the route table is
 * applied in the VPC's routers after the call returns); the overlay carries
 * the member meanwhile, so waiting costs nothing, and a move that drops the
 * overlay path too soon loses packets.
 */
export const ROUTE_SETTLE_MS = 5_000;
/** what a member's route status says while its new route settles */
export const SETTLING = 'route made, confirming';
const SETTLING_STATUS = `overlay (${SETTLING})`;

/**
 * Which members are reached through their routes now, and which routes are
 * still settling: a member whose lease already says route stays routed
 * while its route is in the read; another is routed once its route has been
 * in place for settleMs, counted from the status that said it was settling
 * (stored, so a controller restarted meanwhile counts on from it). A route
 * made or retargeted by this reconcile settles from now.
 */
export function planSettle(input: {
  /** members whose routes are in this reconcile's read, right and ready (routedNodes) */
  present: ReadonlySet<string>;
  /** members whose route this reconcile created or retargeted */
  made: readonly string[];
  leases: readonly Lease[];
  previous: readonly RouteStatusRecord[];
  now: number;
  settleMs: number;
}): { routed: Set<string>; settling: Set<string> } {
  const previous = new Map(input.previous.map((s) => [s.node, s]));
  const leases = new Map(input.leases.map((l) => [l.node, l]));
  const settling = new Set(input.made);
  const routed = new Set<string>();
  for (const node of input.present) {
    if (settling.has(node)) continue;
    if (leases.get(node)?.reach?.via === 'route') {
      routed.add(node);
      continue;
    }
    const p = previous.get(node);
    const since = p?.reason === SETTLING_STATUS ? Date.parse(p.updatedAt) : NaN;
    if (input.now - since >= input.settleMs) routed.add(node);
    else settling.add(node);
  }
  return { routed, settling };
}

export interface ReachWrite {
  node: string;
  /** the lease's revision the decision was made on: the write is conditional on it */
  revision: number;
  reach: Reach;
}

/** Why a member without its route is reached over the overlay. */
function overlayWhy(lease: Lease, inst: CloudInstance | undefined, note: Note | undefined, leavingWhy: string | undefined): string {
  if (!inst) return WHY.outside;
  if (leavingWhy) return leavingWhy;
  if (note?.why) return note.why;
  if (note?.state === 'error' || inst.problem || !lease.subnet) return WHY.error;
  if (!isAlive(inst.state)) return notRunningWhy(inst.state);
  if (!inst.privateIP) return WHY.noIP;
  return WHY.noRoute;
}

/**
 * Each member's reach as this reconcile decides it, and the writes of those
 * whose lease says otherwise (the only lease writes a reach costs).
 */
export function planReach(input: {
  leases: readonly Lease[];
  instances: readonly CloudInstance[];
  routed: ReadonlySet<string>;
  /** the nodes whose route is leaving, with why (the pool it is evicted from, or the retarget) */
  leaving: ReadonlyMap<string, string>;
  notes: { get(node: string): Note | undefined };
}): { reach: Map<string, Reach>; writes: ReachWrite[] } {
  const instances = new Map(input.instances.map((i) => [i.id, i]));
  const reach = new Map<string, Reach>();
  const writes: ReachWrite[] = [];
  for (const lease of input.leases) {
    const want: Reach = input.routed.has(lease.node)
      ? { via: 'route' }
      : { via: 'overlay', why: clip(overlayWhy(lease, instances.get(lease.node), input.notes.get(lease.node), input.leaving.get(lease.node))) };
    reach.set(lease.node, want);
    const cur = lease.reach;
    const same = cur?.via === want.via && (cur.via === 'route' || (want.via === 'overlay' && cur.why === want.why));
    // A member already on the overlay whose route is being made keeps the reason it has: its next
    // write is route, once confirmed (one lease write, one message to every member, per move).
    const transient = cur?.via === 'overlay' && want.via === 'overlay' && want.why === WHY.noRoute;
    if (!same && !transient) writes.push({ node: lease.node, revision: lease.revision, reach: want });
  }
  return { reach, writes };
}

/**
 * The reach a new member's first lease carries, so that its join is its only
 * lease write until its route is confirmed: "no route yet" while its tables
 * have room (admission gives it, oldest first, and new leases are the
 * youngest), the table's reason once they are full. Called in join order; a
 * guess that turns out wrong costs the one write it saves.
 */
export function firstReach(pools: readonly RoutePool[], tables: readonly RouteTable[]): (inst: CloudInstance) => Reach {
  const ledger = new PoolLedger(pools, tables);
  return (inst) => {
    const pools = inst.tables.map((t) => ledger.of(t));
    if (!inst.target || inst.problem || pools.length === 0 || pools.some((p) => !p)) return { via: 'overlay', why: WHY.error };
    const full = pools.find((p) => p!.used >= p!.limit);
    if (full) return { via: 'overlay', why: fullWhy(full) };
    for (const t of inst.tables) ledger.take(t);
    return { via: 'overlay', why: WHY.noRoute };
  };
}
