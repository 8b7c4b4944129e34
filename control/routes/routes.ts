// The route controller for aws-vpc, gce and ali-vpc networks: one
// level-triggered reconcile of one network, the same for every cloud, in
// three parts as the Kubernetes route controller has them:
//
//   read   the network and its leases from the store, the network's
//          instances, route tables, limits and routes from the cloud
//          (one snapshot), and the route status stored last time;
//   plan   pure functions of what was read (plan.ts, status.ts): the lease
//          writes, which routes are twill's, the deletes, retargets and
//          creates within each table's limit, what each node shows;
//   apply  those actions (apply.ts), in an order that keeps it safe:
//
//   instances -> leases first: a new node's subnet is what its route is for.
//   Then stale routes go (departed instance, blackhole, wrong target), then
//   leases of departed instances are released (only once their routes are
//   gone, so a crash never leaves a route nobody knows is twill's), then
//   routes are retargeted and created within the limit, oldest lease first.
//   Each stage is planned from what the ones before achieved, so a failed
//   call changes what follows exactly as far as it must.
//
// Which routes are twill's (the ownership rule for 'marked' and 'inferred'
// clouds) and which networks a cloud serves (IPv4 only) are in plan.ts.
import { NotFoundError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { Metrics } from '../../core/metrics.js';
import { limitLabel, type Cloud, type NetworkRef, type NetworkSnapshot, type RoutePool } from './clouds/cloud.js';
import type { Controller } from '../controller/controller.js';
import type { RouteStatusRecord, Store } from '../store/store.js';
import {
  applyDeletes, applyJobs, applyJoins, applyMembers, applyReach, applyReleases, applyStatus, applyTables, type ApplyContext,
} from './apply.js';
import {
  PoolLedger, networkSpace, planAdmission, planJoins, planReleases, planRoutes,
  type CloudTraits, type DeleteAction, type RoutePlan, type Space,
} from './plan.js';
import {
  ROUTE_SETTLE_MS, SETTLING, WHY, agentsBehind, appliedByAll, firstReach, fullWhy, needsAgents, planEvictions, planGate, planReach, planSettle, routedNodes,
} from './reach.js';
import { overlayOf, type Reach } from '../../core/backends/overlay.js';
import type { Lease } from '../../core/lease.js';
import { Notes, planStatus, type NodeNote } from './status.js';

export { METRIC_MEMBERS, METRIC_PENDING, METRIC_ROUTES } from './apply.js';

export interface RouteDeps {
  /** lease writes go through the controller's join, release and reach write, as any node's do */
  controller: Pick<Controller, 'join' | 'release' | 'setReach' | 'leaseTtlMs'>;
  store: Store;
  cloud: Cloud;
  log: Logger;
  metrics?: Metrics;
  now?: () => number;
  /** how long a new route is in the cloud's reads before its member is reached through it (reach.ts ROUTE_SETTLE_MS) */
  settleMs?: number;
  /** waits that long (a test's clock moves instead) */
  sleep?: (ms: number) => Promise<void>;
}

export interface ReconcileReport {
  network: string;
  /** tagged instances that exist, alive or stopped */
  instances: number;
  /** leases created or rewritten */
  joined: number;
  released: number;
  prepared: number;
  created: number;
  replaced: number;
  deleted: number;
  /** twill's routes in the network's tables after the reconcile */
  routes: number;
  /** nodes holding a lease without their route, by node */
  pending: Record<string, string>;
  /** nodes in error, and failures that belong to no node */
  errors: Record<string, string>;
  /** each route table (or project quota) after the reconcile: routes in it of every owner, its limit and where that came from */
  tables: TableUse[];
  /** networks with an overlay only */
  overlay?: OverlayReport;
}

/** A route table's (or project's) use against its limit, as the status, the dashboard and the metrics show it. */
export type TableUse = Pick<RoutePool, 'what' | 'used' | 'limit' | 'source' | 'why'>;

/** On a network with an overlay: how its members are reached and the moves under way. */
export interface OverlayReport {
  route: number;
  overlay: number;
  /** reach written to leases by this reconcile */
  written: number;
  /** routes in place (or made by this reconcile) that settle before their members' reach says route (reach.ts planSettle) */
  confirming: number;
  /** routes held in place until every online agent has applied their member's move to the overlay */
  waiting: number;
}

function overlayReport(reach: ReadonlyMap<string, Reach>, written: number, confirming: number, waiting: number): OverlayReport {
  const route = [...reach.values()].filter((r) => r.via === 'route').length;
  return { route, overlay: reach.size - route, written, confirming, waiting };
}

/** Everything a reconcile decides from, read once at its start. */
interface Snapshot {
  space: Space;
  ref: NetworkRef;
  cloud: NetworkSnapshot;
  previous: RouteStatusRecord[];
  /** the network's config names an overlay (Backend.Overlay) */
  overlay: boolean;
}

interface Gate {
  now: DeleteAction[];
  held: DeleteAction[];
  /** members whose route is going, with the reason their lease says */
  leaving: Map<string, string>;
  notes: NodeNote[];
}

/**
 * On a network with an overlay: the evictions past a lowered limit join the
 * plan's deletes, and each delete of a live member's route is held until its
 * move to the overlay is safe (reach.ts). The agents' statuses are read only
 * when a delete needs them.
 */
async function gateDeletes(snap: Snapshot, plan: RoutePlan, leases: Lease[], deps: RouteDeps): Promise<Gate> {
  const { instances, pools, tables } = snap.cloud;
  const evictions = planEvictions({ plan, pools, tables, leases });
  const deletes = [...plan.deletes, ...evictions];
  const statuses = needsAgents(deletes, plan, leases, instances) ? await deps.store.listStatus(snap.ref.name) : undefined;
  const applied = statuses && appliedByAll(leases, statuses);
  const gate = planGate({ deletes, plan, leases, instances, applied });
  const byNode = new Map(leases.map((l) => [l.node, l]));
  for (const d of gate.held) {
    // Said at every reconcile while it lasts: an agent that never catches up holds the move, and this names it.
    const lease = byNode.get(d.node as string) as Lease;
    deps.log.info('route held until every online agent has the overlay path', {
      network: snap.ref.name, node: d.node, destination: d.route.destination, why: d.why, revision: lease.revision,
      behind: statuses ? agentsBehind(leases, statuses, lease.revision).join(',') || undefined : undefined,
    });
  }
  const ledger = new PoolLedger(pools, tables);
  const leaving = new Map<string, string>();
  const notes: NodeNote[] = [];
  for (const d of evictions) {
    const p = ledger.of(d.route.table) as RoutePool;
    leaving.set(d.node as string, fullWhy(p));
    // What it shows once its route is gone, and while it goes: it waits for room like any member past the limit.
    notes.push({ node: d.node as string, state: 'pending', reason: `route pending: ${p.what} full (${p.limit} of ${p.limit}, ${limitLabel(p.source)})`, why: fullWhy(p) });
  }
  for (const d of gate.held) if (d.node && !leaving.has(d.node)) leaving.set(d.node, WHY.replacing);
  return { ...gate, leaving, notes };
}

async function readSnapshot(name: string, deps: RouteDeps): Promise<Snapshot> {
  const net = await deps.store.getNetwork(name);
  if (!net) throw new NotFoundError(`network ${name} does not exist`);
  const space = networkSpace(name, net.config, deps.cloud.kind);
  const leases = await deps.store.listLeases(name);
  const ref: NetworkRef = { name, config: net.config, leases };
  const cloud = await deps.cloud.snapshot(ref);
  // The cloud says each only once per network and reason (a route limit it could not read): log every one.
  for (const reason of cloud.warnings ?? []) deps.log.warn('route limit not read from the account', { network: name, reason });
  const previous = await deps.store.listRouteStatus(name);
  return { space, ref, cloud, previous, overlay: overlayOf(net.config.Backend) !== undefined };
}

function traitsOf(cloud: Cloud): CloudTraits {
  return { ownership: cloud.ownership, replaceInPlace: cloud.canReplace && !!cloud.replaceRoute, canPrepare: !!cloud.prepareInstance };
}

/**
 * Reconciles one network against its cloud: leases for its instances, then
 * its routes. Safe to run at any time, any number of times, concurrently with
 * events: every run compares the whole desired state with the whole actual one.
 * Throws only when the network or the cloud cannot be read at all; failures of
 * single calls are reported per node and repaired by the next run.
 */
export async function reconcileNetwork(name: string, deps: RouteDeps): Promise<ReconcileReport> {
  const now = (deps.now ?? Date.now)();
  const snap = await readSnapshot(name, deps);
  const { instances, routes, pools, tables } = snap.cloud;
  const traits = traitsOf(deps.cloud);
  const ctx: ApplyContext = { network: name, ref: snap.ref, cloud: deps.cloud, leases: deps.controller, log: deps.log, notes: new Notes() };

  // The leases, as read and then as this reconcile changes them (the store's order, new ones last).
  const leases = new Map(snap.ref.leases.map((l) => [l.node, l]));
  const lease = planJoins({
    instances, leases: snap.ref.leases, space: snap.space, now, ttlMs: deps.controller.leaseTtlMs, ...(snap.overlay && { firstReach: firstReach(pools, tables) }),
  });
  for (const node of lease.unaddressed) deps.log.debug('instance has no private IP yet', { network: name, node });
  const joined = await applyJoins(ctx, lease.joins);
  for (const l of joined) leases.set(l.node, l);

  const plan = planRoutes({ space: snap.space, traits, instances, leasesBefore: snap.ref.leases, leases: [...leases.values()], routes });
  const gate: Gate = snap.overlay ? await gateDeletes(snap, plan, [...leases.values()], deps) : { now: plan.deletes, held: [], leaving: new Map(), notes: [] };
  const deleted = await applyDeletes(ctx, gate.now);

  const { released, dropped } = await applyReleases(ctx, planReleases({ leases: [...leases.values()], instances, owned: plan.owned, deleted, overlay: snap.overlay }));
  for (const node of dropped) leases.delete(node);

  const admission = planAdmission({ plan, deleted, pools, tables, instances, traits, held: gate.held });
  for (const n of [...gate.notes, ...admission.notes]) ctx.notes.add(n.node, n.state, n.reason, n.why);
  const ledger = new PoolLedger(admission.pools, tables);
  const done = await applyJobs(ctx, admission.jobs, ledger);
  const routed = plan.present.size + done.replaced + done.created;

  // Decided on this reconcile's read of the cloud: a route made just now, or seen only lately, settles first.
  const settle = snap.overlay
    ? planSettle({ present: routedNodes(plan, instances, new Set(gate.leaving.keys())), made: done.made, leases: [...leases.values()], previous: snap.previous, now, settleMs: deps.settleMs ?? ROUTE_SETTLE_MS })
    : undefined;
  for (const node of settle?.settling ?? []) ctx.notes.add(node, 'pending', `route pending: ${SETTLING}`, WHY.noRoute);
  const reach = settle ? planReach({ leases: [...leases.values()], instances, routed: settle.routed, leaving: gate.leaving, notes: ctx.notes }) : undefined;
  const reachWritten = reach ? await applyReach(ctx, reach.writes) : 0;
  const status = planStatus({ network: name, leases: [...leases.values()], instances, notes: ctx.notes, previous: snap.previous, reach: reach?.reach });
  const pending: Record<string, string> = {};
  const errors: Record<string, string> = ctx.networkError !== undefined ? { [name]: ctx.networkError } : {};
  for (const s of status.statuses) {
    if (s.state === 'pending') pending[s.node] = s.reason;
    if (s.state === 'error') errors[s.node] = s.reason;
  }
  const sinks = { network: name, store: deps.store, log: deps.log, metrics: deps.metrics };
  const stamp = new Date(now).toISOString();
  await applyStatus(sinks, status.statuses, status.removed, stamp);
  const used = ledger.list().map((p): TableUse => ({ what: p.what, used: p.used, limit: p.limit, source: p.source, ...(p.why ? { why: p.why } : {}) }));
  await applyTables(sinks, routed, used, stamp);
  applyMembers(sinks, reach?.reach);
  return {
    network: name, instances: instances.length, joined: joined.length, released, prepared: done.prepared,
    created: done.created, replaced: done.replaced, deleted: deleted.length, routes: routed, pending, errors, tables: used,
    ...(reach && { overlay: overlayReport(reach.reach, reachWritten, settle?.settling.size ?? 0, gate.held.length) }),
  };
}
