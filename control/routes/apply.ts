// Carries out what the planner (plan.ts, status.ts) decided: lease writes
// through the controller's own join and release (the same calls a node's
// hello makes, so a lease the route controller writes is published like any
// other), route changes through the cloud, status through the store. Each
// function runs one stage and says what it achieved; a failed call is
// recorded against its node and the rest goes on, for the next reconcile
// repairs it. Nothing here decides what to change.
import { TwillError, errorMessage } from '../../core/errors.js';
import type { Lease } from '../../core/lease.js';
import type { Logger } from '../../core/log.js';
import type { Metrics } from '../../core/metrics.js';
import type { Controller } from '../controller/controller.js';
import type { RouteTablesRecord, Store } from '../store/store.js';
import { RouteLimitError, mapLimit, type Cloud, type NetworkRef } from './clouds/cloud.js';
import type { DeleteAction, JoinAction, NodeJob, PoolLedger, ReleaseAction } from './plan.js';
import type { Notes, StatusAction } from './status.js';
import { WHY, WHY_KINDS, whyKind, type ReachWrite, type WhyKind } from './reach.js';
import type { Reach } from '../../core/backends/overlay.js';

export const METRIC_ROUTES = 'twill_routes';
export const METRIC_PENDING = 'twill_route_pending';
const HELP_ROUTES = "twill's VPC routes in the network's route tables after the last reconcile";
const HELP_PENDING = '1 for a node that holds a lease but has no VPC route yet (table full, instance stopped)';

/** The lease writes the route controller makes: the controller's public API, as for any node. */
export type LeaseWriter = Pick<Controller, 'join' | 'release' | 'setReach'>;

export const METRIC_MEMBERS = 'twill_members';
const HELP_MEMBERS = 'members of a cloud network with an overlay by how they are reached (via route or overlay) and why (a fixed set of reasons)';

export interface ApplyContext {
  network: string;
  ref: NetworkRef;
  cloud: Cloud;
  leases: LeaseWriter;
  log: Logger;
  notes: Notes;
  /** the last failure that belongs to no node */
  networkError?: string;
}

function fail(ctx: ApplyContext, node: string | undefined, what: string, e: unknown): void {
  // Cloud errors already name the call and the route; anything else gets the step that failed.
  const reason = e instanceof TwillError ? e.message : `${what}: ${errorMessage(e)}`;
  if (node) ctx.notes.add(node, 'error', reason);
  else ctx.networkError = reason;
  ctx.log.warn('route change failed', { network: ctx.network, node, reason });
}

/** One at a time, in the plan's order; returns the leases written. */
export async function applyJoins(ctx: ApplyContext, joins: readonly JoinAction[]): Promise<Lease[]> {
  const written: Lease[] = [];
  for (const j of joins) {
    try {
      written.push(await ctx.leases.join(ctx.network, j.node, { publicIP: j.publicIP, backendData: j.backendData, ...(j.reach && { reach: j.reach }) }));
    } catch (e) {
      fail(ctx, j.node, 'lease failed', e);
    }
  }
  return written;
}

/**
 * One at a time, each conditional on the lease revision it was decided on
 * (a lease changed meanwhile is decided again next time); returns how many
 * were written.
 */
export async function applyReach(ctx: ApplyContext, writes: readonly ReachWrite[]): Promise<number> {
  let n = 0;
  for (const w of writes) {
    try {
      if (await ctx.leases.setReach(ctx.network, w.node, w.reach, w.revision)) n++;
    } catch (e) {
      fail(ctx, w.node, 'writing how the node is reached failed', e);
    }
  }
  return n;
}

/**
 * The members by reach, every (via, why) pair set (to 0 when none), so a
 * series never lingers; none at all on a network without an overlay (reach
 * undefined), one whose overlay was taken out of its config included.
 */
export function applyMembers(s: StatusSinks, reach: ReadonlyMap<string, Reach> | undefined): void {
  const counts = new Map<WhyKind, number>(WHY_KINDS.map((k) => [k, 0]));
  for (const r of reach?.values() ?? []) counts.set(whyKind(r), (counts.get(whyKind(r)) ?? 0) + 1);
  for (const [why, n] of counts) {
    const labels = { network: s.network, via: why === 'none' ? 'route' : 'overlay', why };
    if (reach) s.metrics?.set(METRIC_MEMBERS, HELP_MEMBERS, n, labels);
    else s.metrics?.remove(METRIC_MEMBERS, labels);
  }
}

/** Up to the cloud's concurrency at once; returns the deletes that succeeded, in the plan's order. */
export async function applyDeletes(ctx: ApplyContext, deletes: readonly DeleteAction[]): Promise<DeleteAction[]> {
  const results = await mapLimit(deletes, ctx.cloud.concurrency, (d) => ctx.cloud.deleteRoute(ctx.ref, d.route));
  const done: DeleteAction[] = [];
  results.forEach((res, i) => {
    const d = deletes[i] as DeleteAction;
    const r = d.route;
    if (res.status === 'fulfilled') {
      done.push(d);
      ctx.log.info('route deleted', { network: ctx.network, table: r.table, destination: r.destination, target: r.target ?? 'none', node: d.node, why: d.why });
    } else {
      fail(ctx, d.node, `deleting route ${r.destination} from ${r.table} failed`, res.reason);
    }
  });
  return done;
}

/**
 * One at a time; returns how many leases the controller released and the
 * nodes that hold none any more (a lease already gone or rewritten counts
 * as gone from this reconcile's view, as the controller answers).
 */
export async function applyReleases(ctx: ApplyContext, releases: readonly ReleaseAction[]): Promise<{ released: number; dropped: string[] }> {
  let released = 0;
  const dropped: string[] = [];
  for (const x of releases) {
    try {
      if (await ctx.leases.release(ctx.network, x.node, x.revision)) {
        released++;
        ctx.log.info('instance left the network: lease released', { network: ctx.network, node: x.node, subnet: x.subnet ?? undefined });
      }
      dropped.push(x.node);
    } catch (e) {
      fail(ctx, x.node, 'releasing the lease failed', e);
    }
  }
  return { released, dropped };
}

export interface JobResults {
  prepared: number;
  replaced: number;
  created: number;
  /** the nodes whose route was created or retargeted */
  made: string[];
}

/**
 * One pipeline per node, several nodes at once: a node's calls are in order,
 * and different actions (each with its own rate budget on AWS) overlap.
 * `pools` gives back the room of a route that was not made.
 */
export async function applyJobs(ctx: ApplyContext, jobs: readonly NodeJob[], pools: PoolLedger): Promise<JobResults> {
  const out: JobResults = { prepared: 0, replaced: 0, created: 0, made: [] };
  const { cloud, ref, network, log } = ctx;
  const runJob = async (job: NodeJob): Promise<void> => {
    if (job.prepare) {
      try {
        await (cloud.prepareInstance as NonNullable<Cloud['prepareInstance']>)(ref, job.prepare);
        out.prepared++;
        log.info('instance prepared for routing', { network, node: job.node });
      } catch (e) {
        // Routing through an unprepared instance drops the traffic: no route until it is prepared.
        for (const w of job.create) pools.free(w.table);
        fail(ctx, job.node, 'preparing the instance for routing failed', e);
        return;
      }
    }
    for (const { want, current } of job.replace) {
      try {
        await (cloud.replaceRoute as NonNullable<Cloud['replaceRoute']>).call(cloud, ref, want, current);
        out.replaced++;
        out.made.push(want.node);
        log.info('route retargeted', { network, node: want.node, table: want.table, destination: want.destination, from: current.target ?? 'none', to: want.target });
      } catch (e) {
        fail(ctx, want.node, `retargeting route ${want.destination} in ${want.table} failed`, e);
      }
    }
    for (const w of job.create) {
      try {
        await cloud.createRoute(ref, w);
        out.created++;
        out.made.push(w.node);
        log.info('route created', { network, node: w.node, table: w.table, destination: w.destination, target: w.target });
      } catch (e) {
        if (e instanceof RouteLimitError) {
          // The cloud's quota is lower than the limit twill counts with: wait for room like any pending node.
          pools.free(w.table);
          ctx.notes.add(w.node, 'pending', `route pending: ${e.message}`, WHY.refused);
        } else {
          fail(ctx, w.node, `creating route ${w.destination} in ${w.table} failed`, e);
        }
      }
    }
  };
  await mapLimit(jobs, cloud.concurrency, runJob);
  return out;
}

export interface StatusSinks {
  network: string;
  store: Store;
  log: Logger;
  metrics?: Metrics;
}

/** Each node's status: the pending metric always, the store and the log on change only. */
export async function applyStatus(s: StatusSinks, statuses: readonly StatusAction[], removed: readonly string[], stamp: string): Promise<void> {
  const { network, store, log } = s;
  for (const n of statuses) {
    const labels = { network, node: n.node };
    if (n.state === 'pending') s.metrics?.set(METRIC_PENDING, HELP_PENDING, 1, labels);
    else s.metrics?.remove(METRIC_PENDING, labels);
    if (!n.changed) continue;
    try {
      await store.putRouteStatus({ network, node: n.node, state: n.state, reason: n.reason, updatedAt: stamp });
    } catch (e) {
      log.warn('route status not stored', { network, node: n.node, reason: errorMessage(e) });
      continue;
    }
    if (n.state === 'ok') {
      if (n.hadStatus) log.info('route ready', { network, node: n.node });
    } else {
      log.warn(n.state === 'pending' ? 'route pending' : 'route error', { network, node: n.node, reason: n.reason });
    }
  }
  for (const node of removed) {
    s.metrics?.remove(METRIC_PENDING, { network, node });
    await store.deleteRouteStatus(network, node).catch((e) => log.warn('route status not removed', { network, node, reason: errorMessage(e) }));
  }
}

/** The routes metric, and each table's use against its limit for the dashboard: written when it moved. */
export async function applyTables(s: StatusSinks, routes: number, tables: RouteTablesRecord['tables'], stamp: string): Promise<void> {
  s.metrics?.set(METRIC_ROUTES, HELP_ROUTES, routes, { network: s.network });
  const stored = await s.store.getRouteTables(s.network).catch(() => undefined);
  if (JSON.stringify(stored?.tables) !== JSON.stringify(tables)) {
    await s.store.putRouteTables({ network: s.network, tables, updatedAt: stamp })
      .catch((e) => s.log.warn('route tables not stored', { network: s.network, reason: errorMessage(e) }));
  }
}
