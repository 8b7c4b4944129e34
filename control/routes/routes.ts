// The route controller for aws-vpc, gce and ali-vpc networks: one
// level-triggered reconcile of one network, the same for every cloud.
//
//   instances -> leases: every alive tagged instance holds a lease (node id =
//     instance id, public IP = its private IP). A lease is written only when
//     something changed or less than half its TTL is left, so a reconcile
//     with nothing to do writes nothing and publishes nothing.
//   routes: stale routes go first (departed instance, blackhole, wrong
//     target), then leases of departed instances are released (only once
//     their routes are gone, so a crash never leaves a route nobody knows is
//     twill's), then routes are retargeted and created within the limit,
//     oldest lease first. A route once given is kept while its node stays:
//     nodes waiting for room never displace one that has a route, so routes
//     never flap between nodes.
//
// Which routes are twill's. A route is only ever considered when its next
// hop is an instance (or its interface) and its destination lies inside the
// network's CIDR; anything else (gateways, peering, other CIDRs) is never
// touched. Then, per cloud:
//   'marked' clouds (GCE): the route carries twill's mark, its name
//     twill-<network>-<cidr> and the fixed description. Nothing else is.
//   'inferred' clouds (AWS, which cannot label a route; Ali and the sim,
//     whose routes may predate the mark, e.g. flannel's): a route whose
//     destination is exactly one /SubnetLen subnet of the network and whose
//     next hop is
//       - an instance of this network (tagged, in any state), or
//       - the target recorded in the lease that holds that subnet, or
//       - gone (blackhole), or the route carries twill's mark.
//   A route to some other interface for a subnet twill leased is another
//   tool's: it is left alone and the node is reported in error.
import { subnetRanges, type NetConf } from '../../core/config.js';
import { fitsRange } from '../../core/allocator.js';
import { contains, parseCidr, type Cidr } from '../../core/cidr.js';
import { NotFoundError, TwillError, errorMessage } from '../../core/errors.js';
import type { Lease } from '../../core/lease.js';
import type { Logger } from '../../core/log.js';
import type { Metrics } from '../../core/metrics.js';
import {
  MEMBER_TAG, RouteLimitError, backendTypesOf, isAlive, isCloudBackend, mapLimit,
  type Cloud, type CloudInstance, type CloudRoute, type DesiredRoute, type NetworkRef, type RoutePool,
} from './clouds/cloud.js';
import type { Controller } from '../controller/controller.js';
import type { RouteStatusRecord, Store } from '../store/store.js';

export interface RouteDeps {
  controller: Controller;
  store: Store;
  cloud: Cloud;
  log: Logger;
  metrics?: Metrics;
  now?: () => number;
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
  /** each route table (or project quota) after the reconcile: routes in it of every owner, and its limit */
  tables: { what: string; used: number; limit: number }[];
}

type RouteState = RouteStatusRecord['state'];
interface Note { state: RouteState; reason: string }

const key = (table: string, destination: string) => `${table}\u0000${destination}`;

export const METRIC_ROUTES = 'twill_routes';
export const METRIC_PENDING = 'twill_route_pending';
const HELP_ROUTES = "twill's VPC routes in the network's route tables after the last reconcile";
const HELP_PENDING = '1 for a node that holds a lease but has no VPC route yet (table full, instance stopped)';

/** The lease's backendData for a cloud instance: its route target and what the cloud asked to keep. */
function leaseData(inst: CloudInstance): Record<string, string> {
  return { ...(inst.target ? { RouteTarget: inst.target } : {}), ...(inst.leaseData ?? {}) };
}

function sameData(a: Record<string, unknown>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

/** Checks that the network is one this cloud serves and returns its IPv4 allocation space. */
function networkSpace(name: string, config: NetConf, cloud: Cloud): { cidr: Cidr; len: number; fits: (l: Lease) => boolean } {
  const type = config.Backend.Type;
  if (!isCloudBackend(type) || !backendTypesOf(cloud.kind).includes(type)) {
    throw new TwillError(
      'WrongCloud',
      `network ${name} has backend ${type}: the ${cloud.kind} route controller serves ${backendTypesOf(cloud.kind).join(', ')} networks only`,
    );
  }
  const ranges = subnetRanges(config);
  if (!ranges.v4) {
    throw new TwillError('IPv6Only', `network ${name} has EnableIPv4 false: VPC routes are IPv4 only, so enable IPv4 (IPv6 subnets are leased but get no route)`);
  }
  const { v4, v6 } = ranges;
  const fits = (l: Lease) => l.backendType === type && fitsRange(v4, l.subnet) && (v6 ? fitsRange(v6, l.ipv6Subnet) : l.ipv6Subnet === null);
  return { cidr: v4.network, len: v4.len, fits };
}

/**
 * Reconciles one network against its cloud: leases for its instances, then
 * its routes. Safe to run at any time, any number of times, concurrently with
 * events: every run compares the whole desired state with the whole actual one.
 * Throws only when the network or the cloud cannot be read at all; failures of
 * single calls are reported per node and repaired by the next run.
 */
export async function reconcileNetwork(name: string, deps: RouteDeps): Promise<ReconcileReport> {
  const { controller, store, cloud } = deps;
  const log = deps.log;
  const now = (deps.now ?? Date.now)();
  const net = await store.getNetwork(name);
  if (!net) throw new NotFoundError(`network ${name} does not exist`);
  const space = networkSpace(name, net.config, cloud);
  const leases = await store.listLeases(name);
  const ref: NetworkRef = { name, config: net.config, leases };
  const snap = await cloud.snapshot(ref);
  const previous = new Map((await store.listRouteStatus(name)).map((s) => [s.node, s]));

  const report: ReconcileReport = {
    network: name, instances: snap.instances.length, joined: 0, released: 0, prepared: 0,
    created: 0, replaced: 0, deleted: 0, routes: 0, pending: {}, errors: {}, tables: [],
  };
  const notes = new Map<string, Note>();
  // An error outranks pending, which outranks ok: the worst thing wrong with a node is what it shows.
  const note = (node: string, state: RouteState, reason: string) => {
    const cur = notes.get(node);
    if (!cur || (cur.state !== 'error' && (state === 'error' || cur.state === 'ok'))) notes.set(node, { state, reason });
  };
  const fail = (node: string | undefined, what: string, e: unknown) => {
    // Cloud errors already name the call and the route; anything else gets the step that failed.
    const reason = e instanceof TwillError ? e.message : `${what}: ${errorMessage(e)}`;
    if (node) note(node, 'error', reason);
    else report.errors[name] = reason;
    log.warn('route change failed', { network: name, node, reason });
  };

  // ---- 1. leases for the instances ----
  const byNode = new Map(leases.map((l) => [l.node, l]));
  const instances = new Map(snap.instances.map((i) => [i.id, i]));
  const ttl = controller.leaseTtlMs;
  for (const inst of [...snap.instances].sort((a, b) => a.id.localeCompare(b.id))) {
    if (!isAlive(inst.state)) continue;
    if (!inst.privateIP) {
      // Just launched: the next reconcile (or the running event) gives it a lease.
      log.debug('instance has no private IP yet', { network: name, node: inst.id });
      continue;
    }
    const data = leaseData(inst);
    const cur = byNode.get(inst.id);
    const renewDue = cur !== undefined && cur.expiresAt !== null && Date.parse(cur.expiresAt) - now < ttl / 2;
    if (cur && cur.publicIP === inst.privateIP && sameData(cur.backendData, data) && !renewDue && space.fits(cur)) continue;
    try {
      byNode.set(inst.id, await controller.join(name, inst.id, { publicIP: inst.privateIP, backendData: data }));
      report.joined++;
    } catch (e) {
      fail(inst.id, 'lease failed', e);
    }
  }

  // ---- 2. the routes wanted: each alive, routable instance's subnet in each of its tables ----
  const wants = new Map<string, DesiredRoute>();
  const wantsByNode = new Map<string, DesiredRoute[]>();
  for (const lease of byNode.values()) {
    const inst = instances.get(lease.node);
    if (!inst || !isAlive(inst.state) || inst.problem || !inst.target || !lease.subnet) continue;
    const list: DesiredRoute[] = [];
    for (const table of inst.tables) {
      const w: DesiredRoute = { table, destination: lease.subnet, target: inst.target, node: inst.id };
      wants.set(key(table, lease.subnet), w);
      list.push(w);
    }
    wantsByNode.set(inst.id, list);
  }

  // ---- 3. which routes are twill's, and what each needs ----
  const memberTargets = new Set(snap.instances.flatMap((i) => (i.target ? [i.target] : [])));
  const recordedTarget = new Map<string, unknown>();
  for (const l of [...leases, ...byNode.values()]) if (l.subnet) recordedTarget.set(l.subnet, l.backendData.RouteTarget);
  const holder = new Map([...byNode.values()].flatMap((l) => (l.subnet ? [[l.subnet, l.node] as const] : [])));
  const inferred = cloud.ownership === 'inferred';
  const isTwills = (r: CloudRoute, c: Cidr): boolean => {
    if (!r.instanceHop || !contains(space.cidr, c)) return false;
    if (r.marked) return true;
    if (!inferred || c.prefix !== space.len) return false;
    return r.blackhole || (r.target !== undefined && (memberTargets.has(r.target) || recordedTarget.get(r.destination) === r.target));
  };

  const present = new Set<string>();
  const stale: CloudRoute[] = [];
  const retarget: { want: DesiredRoute; current: CloudRoute }[] = [];
  const conflicts = new Map<string, CloudRoute>();
  const owned: CloudRoute[] = [];
  for (const r of snap.routes) {
    const c = parseCidr(r.destination, true);
    if (!c || c.family !== 4 || !contains(space.cidr, c)) continue;
    const k = key(r.table, r.destination);
    const want = wants.get(k);
    if (!isTwills(r, c)) {
      if (want) conflicts.set(k, r);
      continue;
    }
    owned.push(r);
    if (!want || present.has(k)) stale.push(r);
    else if (r.blackhole || r.target !== want.target) retarget.push({ want, current: r });
    else present.add(k);
  }

  const pools = new Map<string, RoutePool>(snap.pools.map((p) => [p.id, { ...p }]));
  const poolOf = new Map(snap.tables.map((t) => [t.id, pools.get(t.pool)]));
  const release = (table: string) => {
    const p = poolOf.get(table);
    if (p) p.used--;
  };

  // A cloud that cannot retarget in place deletes first and creates again into the slot it freed.
  const viaDelete = cloud.canReplace && cloud.replaceRoute ? [] : retarget.splice(0);
  const deletions = [...stale.map((r) => ({ r, want: undefined as DesiredRoute | undefined })), ...viaDelete.map((x) => ({ r: x.current, want: x.want }))];

  // ---- 4. delete stale routes first: they free room for the ones waiting ----
  const gone = new Set<CloudRoute>();
  const recreate: DesiredRoute[] = [];
  const deleted = await mapLimit(deletions, cloud.concurrency, ({ r }) => cloud.deleteRoute(ref, r));
  deleted.forEach((res, i) => {
    const { r, want } = deletions[i] as (typeof deletions)[number];
    const node = want?.node ?? holder.get(r.destination);
    if (res.status === 'fulfilled') {
      gone.add(r);
      release(r.table);
      report.deleted++;
      log.info('route deleted', { network: name, table: r.table, destination: r.destination, target: r.target ?? 'none', node, why: want ? 'retarget' : r.blackhole ? 'blackhole' : 'stale' });
      if (want) recreate.push(want);
    } else {
      fail(node, `deleting route ${r.destination} from ${r.table} failed`, res.reason);
    }
  });

  // ---- 5. release the leases of instances that left, once none of their routes remain ----
  const remaining = new Set(owned.filter((r) => !gone.has(r)).map((r) => r.destination));
  for (const lease of [...byNode.values()]) {
    if (lease.expiresAt === null || instances.has(lease.node)) continue; // reservations stay; so do stopped instances' leases
    if (lease.subnet && remaining.has(lease.subnet)) continue; // a failed delete: keep knowing the route is twill's
    try {
      if (await controller.release(name, lease.node, lease.revision)) {
        report.released++;
        log.info('instance left the network: lease released', { network: name, node: lease.node, subnet: lease.subnet ?? undefined });
      }
      byNode.delete(lease.node);
    } catch (e) {
      fail(lease.node, 'releasing the lease failed', e);
    }
  }

  // ---- 6. admit missing routes within the limit, oldest lease first ----
  const recreateKeys = new Set(recreate.map((w) => key(w.table, w.destination)));
  const retargetKeys = new Set(retarget.map((x) => key(x.want.table, x.want.destination)));
  const creates: DesiredRoute[] = [...recreate];
  const order = [...wantsByNode.keys()].sort((a, b) => {
    const la = byNode.get(a) as Lease;
    const lb = byNode.get(b) as Lease;
    return la.createdAt.localeCompare(lb.createdAt) || a.localeCompare(b);
  });
  for (const node of order) {
    for (const w of wantsByNode.get(node) ?? []) {
      const k = key(w.table, w.destination);
      if (present.has(k) || retargetKeys.has(k) || recreateKeys.has(k)) continue;
      const other = conflicts.get(k);
      if (other) {
        note(node, 'error', `route for ${w.destination} in ${w.table} already points to ${other.target ?? 'something else'}, which is not twill's: twill leaves it alone; delete it and twill creates its own`);
        continue;
      }
      const p = poolOf.get(w.table);
      if (!p) {
        note(node, 'error', `route table ${w.table} was not found in the cloud: check that it exists and that twill may read it`);
        continue;
      }
      if (p.used >= p.limit) {
        note(node, 'pending', `route pending: ${p.what} full (${p.used} of ${p.limit})`);
        continue;
      }
      p.used++;
      creates.push(w);
    }
  }

  // ---- 7. per node, oldest lease first: prepare the instance (AWS source/destination check), retarget, create ----
  // One pipeline per node, several nodes at once: a node's calls are in order,
  // and different actions (each with its own rate budget on AWS) overlap.
  interface Work { node: string; prepare?: CloudInstance; replace: { want: DesiredRoute; current: CloudRoute }[]; create: DesiredRoute[] }
  const work = new Map<string, Work>();
  const workOf = (node: string): Work => {
    let x = work.get(node);
    if (!x) work.set(node, (x = { node, replace: [], create: [] }));
    return x;
  };
  const changing = new Set([...creates.map((w) => w.node), ...retarget.map((x) => x.want.node)]);
  for (const node of order) {
    const inst = instances.get(node) as CloudInstance;
    // Also a node whose routes all exist: someone may have switched its check back on.
    const routed = changing.has(node) || (wantsByNode.get(node) ?? []).some((w) => present.has(key(w.table, w.destination)));
    if (inst.needsPrepare && cloud.prepareInstance && routed) workOf(node).prepare = inst;
  }
  for (const x of retarget) workOf(x.want.node).replace.push(x);
  for (const w of creates) workOf(w.node).create.push(w);
  const rank = new Map(order.map((n, i) => [n, i]));
  const jobs = [...work.values()].sort((a, b) => (rank.get(a.node) ?? 0) - (rank.get(b.node) ?? 0));

  let routes = present.size;
  const runJob = async (job: Work): Promise<void> => {
    if (job.prepare) {
      try {
        await (cloud.prepareInstance as NonNullable<Cloud['prepareInstance']>)(ref, job.prepare);
        report.prepared++;
        log.info('instance prepared for routing', { network: name, node: job.node });
      } catch (e) {
        // Routing through an unprepared instance drops the traffic: no route until it is prepared.
        for (const w of job.create) release(w.table);
        fail(job.node, 'preparing the instance for routing failed', e);
        return;
      }
    }
    for (const { want, current } of job.replace) {
      try {
        await (cloud.replaceRoute as NonNullable<Cloud['replaceRoute']>).call(cloud, ref, want, current);
        routes++;
        report.replaced++;
        log.info('route retargeted', { network: name, node: want.node, table: want.table, destination: want.destination, from: current.target ?? 'none', to: want.target });
      } catch (e) {
        fail(want.node, `retargeting route ${want.destination} in ${want.table} failed`, e);
      }
    }
    for (const w of job.create) {
      try {
        await cloud.createRoute(ref, w);
        routes++;
        report.created++;
        log.info('route created', { network: name, node: w.node, table: w.table, destination: w.destination, target: w.target });
      } catch (e) {
        if (e instanceof RouteLimitError) {
          // The cloud's quota is lower than the limit twill counts with: wait for room like any pending node.
          release(w.table);
          note(w.node, 'pending', `route pending: ${e.message}`);
        } else {
          fail(w.node, `creating route ${w.destination} in ${w.table} failed`, e);
        }
      }
    }
  };
  await mapLimit(jobs, cloud.concurrency, runJob);
  report.routes = routes;

  // ---- 9. status per lease, written and logged on change only ----
  for (const lease of byNode.values()) {
    const node = lease.node;
    const inst = instances.get(node);
    if (!inst) note(node, 'pending', `route pending: no instance ${node} carries the tag ${MEMBER_TAG}=${name}`);
    else if (!isAlive(inst.state)) note(node, 'pending', `route pending: instance is ${inst.state}`);
    else if (inst.problem) note(node, 'error', inst.problem);
    else if (!inst.privateIP) note(node, 'pending', 'route pending: the instance has no private IP yet');
    else if (!lease.subnet) note(node, 'error', 'the lease has no IPv4 subnet, and VPC routes are IPv4 only');
    else note(node, 'ok', '');
  }
  const stamp = new Date(now).toISOString();
  for (const lease of byNode.values()) {
    const n = notes.get(lease.node) as Note;
    const before = previous.get(lease.node);
    if (n.state === 'pending') report.pending[lease.node] = n.reason;
    if (n.state === 'error') report.errors[lease.node] = n.reason;
    const labels = { network: name, node: lease.node };
    if (n.state === 'pending') deps.metrics?.set(METRIC_PENDING, HELP_PENDING, 1, labels);
    else deps.metrics?.remove(METRIC_PENDING, labels);
    if (before && before.state === n.state && before.reason === n.reason) continue;
    try {
      await store.putRouteStatus({ network: name, node: lease.node, state: n.state, reason: n.reason, updatedAt: stamp });
    } catch (e) {
      log.warn('route status not stored', { network: name, node: lease.node, reason: errorMessage(e) });
      continue;
    }
    if (n.state === 'ok') {
      if (before) log.info('route ready', { network: name, node: lease.node });
    } else {
      log.warn(n.state === 'pending' ? 'route pending' : 'route error', { network: name, node: lease.node, reason: n.reason });
    }
  }
  for (const node of previous.keys()) {
    if (byNode.has(node)) continue;
    deps.metrics?.remove(METRIC_PENDING, { network: name, node });
    await store.deleteRouteStatus(name, node).catch((e) => log.warn('route status not removed', { network: name, node, reason: errorMessage(e) }));
  }
  deps.metrics?.set(METRIC_ROUTES, HELP_ROUTES, routes, { network: name });
  // What the dashboard shows as each table's use against its limit: written when it moved.
  report.tables = [...pools.values()].map((p) => ({ what: p.what, used: p.used, limit: p.limit }));
  const stored = await store.getRouteTables(name).catch(() => undefined);
  if (JSON.stringify(stored?.tables) !== JSON.stringify(report.tables)) {
    await store.putRouteTables({ network: name, tables: report.tables, updatedAt: stamp })
      .catch((e) => log.warn('route tables not stored', { network: name, reason: errorMessage(e) }));
  }
  return report;
}
