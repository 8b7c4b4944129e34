// The route controller's decisions, as pure functions of plain data: what
// the store and the cloud hold goes in, the actions to take come out. Nothing
// here reads a clock, a store or a cloud, so every rule is tested with
// literals (test/unit/route-plan.test.ts). routes.ts reads the snapshot and
// runs the stages; apply.ts carries out their actions.
//
// A reconcile is planned in stages, because what a later stage may do depends
// on what an earlier one achieved, not on what it meant to achieve:
//   planJoins      the lease writes the instances need (before any route:
//                  a new node's subnet is what its route points at)
//   planRoutes     which routes are twill's, and the deletes (stale ones and,
//                  where the cloud cannot retarget in place, wrong targets)
//                  and in-place retargets they need
//   planReleases   the leases of departed instances, once none of their
//                  routes remain (a failed delete keeps the lease, so the
//                  route is still known as twill's next time)
//   planAdmission  missing routes within each table's room as the deletes
//                  left it, oldest lease first, and per node its pipeline:
//                  prepare the instance, retarget, create
//   planStatus     (status.ts) what each node shows afterwards
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
import { subnetRanges, type NetConf, type SubnetRange } from '../../core/config.js';
import { fitsRange } from '../../core/allocator.js';
import { contains, parseCidr, type Cidr } from '../../core/cidr.js';
import { TwillError } from '../../core/errors.js';
import type { Lease } from '../../core/lease.js';
import type { Reach } from '../../core/backends/overlay.js';
import {
  backendTypesOf, isAlive, isCloudBackend, limitLabel,
  type CloudInstance, type CloudKind, type CloudRoute, type DesiredRoute, type RoutePool, type RouteTable,
} from './clouds/cloud.js';
import type { NodeNote } from './status.js';
import { fullWhy } from './reach.js';

/** A network's IPv4 allocation space, and what a lease must match to stay. */
export interface Space {
  type: string;
  v4: SubnetRange;
  v6?: SubnetRange;
}

/** What the planner needs to know of the cloud: how it tells its routes and what it can do. */
export interface CloudTraits {
  ownership: 'marked' | 'inferred';
  /** retargets a route in place (AWS, sim); otherwise it deletes and creates again */
  replaceInPlace: boolean;
  /** switches something on the instance before routing through it (AWS source/destination check) */
  canPrepare: boolean;
}

export interface JoinAction {
  node: string;
  publicIP: string;
  backendData: Record<string, string>;
  /** a network with an overlay: a new lease's first reach (reach.ts firstReach) */
  reach?: Reach;
}

export interface DeleteAction {
  route: CloudRoute;
  /** the node the route is reported against, if any holds its subnet */
  node?: string;
  /** evict: the route of a live node past its table's limit (a network with an overlay only) */
  why: 'stale' | 'blackhole' | 'retarget' | 'evict';
  /** the route to create in the slot this delete frees: a retarget on a cloud that cannot replace */
  recreate?: DesiredRoute;
}

export interface ReplaceAction {
  want: DesiredRoute;
  current: CloudRoute;
}

export interface ReleaseAction {
  node: string;
  revision: number;
  subnet: string | null;
}

/** One node's route changes, in the order they must happen. */
export interface NodeJob {
  node: string;
  /** routing through an unprepared instance drops the traffic: this comes first, and on failure nothing else of the node runs */
  prepare?: CloudInstance;
  replace: ReplaceAction[];
  create: DesiredRoute[];
}

export const routeKey = (table: string, destination: string): string => `${table}\u0000${destination}`;

/** Checks that the network is one this cloud serves and returns its allocation space. */
export function networkSpace(name: string, config: NetConf, kind: CloudKind): Space {
  const type = config.Backend.Type;
  if (!isCloudBackend(type) || !backendTypesOf(kind).includes(type)) {
    throw new TwillError(
      'WrongCloud',
      `network ${name} has backend ${type}: the ${kind} route controller serves ${backendTypesOf(kind).join(', ')} networks only`,
    );
  }
  const { v4, v6 } = subnetRanges(config);
  if (!v4) {
    throw new TwillError('IPv6Only', `network ${name} has EnableIPv4 false: VPC routes are IPv4 only, so enable IPv4 (IPv6 subnets are leased but get no route)`);
  }
  return { type, v4, ...(v6 ? { v6 } : {}) };
}

/** A lease written under another configuration (other backend, ranges moved) is written again. */
export function fitsSpace(space: Space, l: Lease): boolean {
  return l.backendType === space.type && fitsRange(space.v4, l.subnet) && (space.v6 ? fitsRange(space.v6, l.ipv6Subnet) : l.ipv6Subnet === null);
}

/** The lease's backendData for a cloud instance: its route target and what the cloud asked to keep. */
export function leaseData(inst: CloudInstance): Record<string, string> {
  return { ...(inst.target ? { RouteTarget: inst.target } : {}), ...(inst.leaseData ?? {}) };
}

/**
 * Whether the lease already carries the cloud's data. Other keys are the
 * node's own agent's (an overlay's VtepMAC): a join merges, never erases
 * them, so they are no reason to write the lease again.
 */
function carriesData(lease: Record<string, unknown>, data: Record<string, string>): boolean {
  return Object.keys(data).every((k) => lease[k] === data[k]);
}

/**
 * Every alive tagged instance holds a lease (node id = instance id, public IP
 * = its private IP). A lease is written only when something changed or less
 * than half its TTL is left, so a reconcile with nothing to do writes nothing
 * and publishes nothing. In instance id order.
 */
export function planJoins(input: {
  instances: readonly CloudInstance[];
  leases: readonly Lease[];
  space: Space;
  now: number;
  ttlMs: number;
  /** a network with an overlay: the reach a new lease carries from its first write */
  firstReach?: (inst: CloudInstance) => Reach;
}): { joins: JoinAction[]; unaddressed: string[] } {
  const byNode = new Map(input.leases.map((l) => [l.node, l]));
  const joins: JoinAction[] = [];
  const unaddressed: string[] = [];
  for (const inst of [...input.instances].sort((a, b) => a.id.localeCompare(b.id))) {
    if (!isAlive(inst.state)) continue;
    if (!inst.privateIP) {
      // Just launched: the next reconcile (or the running event) gives it a lease.
      unaddressed.push(inst.id);
      continue;
    }
    const data = leaseData(inst);
    const cur = byNode.get(inst.id);
    const renewDue = cur !== undefined && cur.expiresAt !== null && Date.parse(cur.expiresAt) - input.now < input.ttlMs / 2;
    if (cur && cur.publicIP === inst.privateIP && carriesData(cur.backendData, data) && !renewDue && fitsSpace(input.space, cur)) continue;
    const reach = !cur && input.firstReach ? { reach: input.firstReach(inst) } : {};
    joins.push({ node: inst.id, publicIP: inst.privateIP, backendData: data, ...reach });
  }
  return { joins, unaddressed };
}

export interface RoutePlan {
  /** nodes that want routes, oldest lease first: the line for room in a full table */
  order: string[];
  /** each such node's routes: its subnet in each of its tables */
  wanted: Map<string, DesiredRoute[]>;
  /** keys (routeKey) of wanted routes that exist with the right target */
  present: Set<string>;
  /** every route that is twill's, whatever is to become of it */
  owned: CloudRoute[];
  /** wanted routes whose table and destination another tool's route holds */
  conflicts: Map<string, CloudRoute>;
  /** stale routes first, then retargets done as delete and create */
  deletes: DeleteAction[];
  /** retargets done in place */
  replaces: ReplaceAction[];
}

/**
 * The routes wanted (each alive, routable instance's subnet in each of its
 * tables), which routes are twill's, and what each needs.
 * `leasesBefore` are the leases as read, `leases` as they stand after the
 * joins (the store's order, new ones last).
 */
export function planRoutes(input: {
  space: Space;
  traits: CloudTraits;
  instances: readonly CloudInstance[];
  leasesBefore: readonly Lease[];
  leases: readonly Lease[];
  routes: readonly CloudRoute[];
}): RoutePlan {
  const { space, instances: all, leases } = input;
  const instances = new Map(all.map((i) => [i.id, i]));
  const wants = new Map<string, DesiredRoute>();
  const wanted = new Map<string, DesiredRoute[]>();
  for (const lease of leases) {
    const inst = instances.get(lease.node);
    if (!inst || !isAlive(inst.state) || inst.problem || !inst.target || !lease.subnet) continue;
    const list: DesiredRoute[] = [];
    for (const table of inst.tables) {
      const w: DesiredRoute = { table, destination: lease.subnet, target: inst.target, node: inst.id };
      wants.set(routeKey(table, lease.subnet), w);
      list.push(w);
    }
    wanted.set(inst.id, list);
  }

  const isTwills = ownershipRule(input);
  const present = new Set<string>();
  const stale: CloudRoute[] = [];
  const retarget: ReplaceAction[] = [];
  const conflicts = new Map<string, CloudRoute>();
  const owned: CloudRoute[] = [];
  for (const r of input.routes) {
    const c = parseCidr(r.destination, true);
    if (!c || c.family !== 4 || !contains(space.v4.network, c)) continue;
    const k = routeKey(r.table, r.destination);
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

  const holder = new Map(leases.flatMap((l) => (l.subnet ? [[l.subnet, l.node] as const] : [])));
  const deletes: DeleteAction[] = stale.map((r) => ({ route: r, node: holder.get(r.destination), why: r.blackhole ? 'blackhole' : 'stale' }));
  // A cloud that cannot retarget in place deletes first and creates again into the slot it freed.
  const replaces = input.traits.replaceInPlace ? retarget : [];
  if (!input.traits.replaceInPlace) {
    for (const x of retarget) deletes.push({ route: x.current, node: x.want.node, why: 'retarget', recreate: x.want });
  }

  const byNode = new Map(leases.map((l) => [l.node, l]));
  const order = [...wanted.keys()].sort((a, b) => {
    const la = byNode.get(a) as Lease;
    const lb = byNode.get(b) as Lease;
    return la.createdAt.localeCompare(lb.createdAt) || a.localeCompare(b);
  });
  return { order, wanted, present, owned, conflicts, deletes, replaces };
}

/** The test of "is this route twill's" for this network and cloud (see the header). */
function ownershipRule(input: {
  space: Space;
  traits: CloudTraits;
  instances: readonly CloudInstance[];
  leasesBefore: readonly Lease[];
  leases: readonly Lease[];
}): (r: CloudRoute, c: Cidr) => boolean {
  const memberTargets = new Set(input.instances.flatMap((i) => (i.target ? [i.target] : [])));
  const recordedTarget = new Map<string, unknown>();
  for (const l of [...input.leasesBefore, ...input.leases]) if (l.subnet) recordedTarget.set(l.subnet, l.backendData.RouteTarget);
  const inferred = input.traits.ownership === 'inferred';
  const { network, len } = input.space.v4;
  return (r, c) => {
    if (!r.instanceHop || !contains(network, c)) return false;
    if (r.marked) return true;
    if (!inferred || c.prefix !== len) return false;
    return r.blackhole || (r.target !== undefined && (memberTargets.has(r.target) || recordedTarget.get(r.destination) === r.target));
  };
}

/**
 * Leases of instances that left the network, once none of their routes
 * remain. Reservations stay; so do stopped instances' leases.
 * `deleted` are the deletes of plan.deletes that succeeded (the same objects:
 * a cloud may hold two routes for one destination).
 */
export function planReleases(input: {
  leases: readonly Lease[];
  instances: readonly CloudInstance[];
  owned: readonly CloudRoute[];
  deleted: readonly DeleteAction[];
  /**
   * the network has an overlay: a lease that never was an instance's (no
   * RouteTarget: a host outside the cloud, joined by its own agent's hello)
   * is a member reached over the overlay, and stays until it expires
   */
  overlay?: boolean;
}): ReleaseAction[] {
  const present = new Set(input.instances.map((i) => i.id));
  const gone = new Set(input.deleted.map((d) => d.route));
  const remaining = new Set(input.owned.filter((r) => !gone.has(r)).map((r) => r.destination));
  const out: ReleaseAction[] = [];
  for (const lease of input.leases) {
    if (lease.expiresAt === null || present.has(lease.node)) continue;
    if (input.overlay && lease.backendData.RouteTarget === undefined) continue;
    if (lease.subnet && remaining.has(lease.subnet)) continue; // a failed delete: keep knowing the route is twill's
    out.push({ node: lease.node, revision: lease.revision, subnet: lease.subnet });
  }
  return out;
}

/** Route limits by table: how many routes count against each pool, changed as routes come and go. */
export class PoolLedger {
  private readonly pools: Map<string, RoutePool>;
  private readonly poolOf: Map<string, RoutePool | undefined>;

  constructor(pools: readonly RoutePool[], tables: readonly RouteTable[]) {
    this.pools = new Map(pools.map((p) => [p.id, { ...p }]));
    this.poolOf = new Map(tables.map((t) => [t.id, this.pools.get(t.pool)]));
  }

  of(table: string): RoutePool | undefined {
    return this.poolOf.get(table);
  }

  free(table: string): void {
    const p = this.poolOf.get(table);
    if (p) p.used--;
  }

  take(table: string): void {
    const p = this.poolOf.get(table);
    if (p) p.used++;
  }

  list(): RoutePool[] {
    return [...this.pools.values()].map((p) => ({ ...p }));
  }
}

/**
 * Missing routes admitted within each pool's room, oldest lease first. A
 * route once given is kept while its node stays: nodes waiting for room never
 * displace one that has a route, so routes never flap between nodes.
 * `pools` are as read; `deleted` are the deletes that succeeded (each freed
 * its slot, and a retarget's route is created again into it). Returns each
 * node's pipeline in line order, the notes for nodes that wait or cannot have
 * a route, and the pools with the deletes and admitted routes counted.
 */
export function planAdmission(input: {
  plan: RoutePlan;
  deleted: readonly DeleteAction[];
  pools: readonly RoutePool[];
  tables: readonly RouteTable[];
  instances: readonly CloudInstance[];
  traits: CloudTraits;
  /** deletes held until their move to the overlay is safe (reach.ts planGate): a held retarget is not created again yet */
  held?: readonly DeleteAction[];
}): { jobs: NodeJob[]; notes: NodeNote[]; pools: RoutePool[] } {
  const { plan } = input;
  const ledger = new PoolLedger(input.pools, input.tables);
  for (const d of input.deleted) ledger.free(d.route.table);
  const recreate = input.deleted.flatMap((d) => (d.recreate ? [d.recreate] : []));
  // A retarget's route goes back into the slot its delete freed: that slot
  // is not room for a node waiting in line.
  for (const w of recreate) ledger.take(w.table);
  const notes: NodeNote[] = [];
  const recreateKeys = new Set([...recreate, ...(input.held ?? []).flatMap((d) => (d.recreate ? [d.recreate] : []))].map((w) => routeKey(w.table, w.destination)));
  const replaceKeys = new Set(plan.replaces.map((x) => routeKey(x.want.table, x.want.destination)));
  const creates: DesiredRoute[] = [...recreate];
  for (const node of plan.order) {
    for (const w of plan.wanted.get(node) ?? []) {
      const k = routeKey(w.table, w.destination);
      if (plan.present.has(k) || replaceKeys.has(k) || recreateKeys.has(k)) continue;
      const other = plan.conflicts.get(k);
      if (other) {
        notes.push({ node, state: 'error', reason: `route for ${w.destination} in ${w.table} already points to ${other.target ?? 'something else'}, which is not twill's: twill leaves it alone; delete it and twill creates its own` });
        continue;
      }
      const p = ledger.of(w.table);
      if (!p) {
        notes.push({ node, state: 'error', reason: `route table ${w.table} was not found in the cloud: check that it exists and that twill may read it` });
        continue;
      }
      if (p.used >= p.limit) {
        notes.push({ node, state: 'pending', reason: `route pending: ${p.what} full (${p.used} of ${p.limit}, ${limitLabel(p.source)})`, why: fullWhy(p) });
        continue;
      }
      p.used++;
      creates.push(w);
    }
  }
  return { jobs: pipelines(input, creates), notes, pools: ledger.list() };
}

/** Per node, in line order: prepare the instance, retarget, create. */
function pipelines(
  input: { plan: RoutePlan; instances: readonly CloudInstance[]; traits: CloudTraits },
  creates: readonly DesiredRoute[],
): NodeJob[] {
  const { plan } = input;
  const jobs = new Map(plan.order.map((node) => [node, { node, replace: [], create: [] } as NodeJob]));
  for (const x of plan.replaces) jobs.get(x.want.node)?.replace.push(x);
  for (const w of creates) jobs.get(w.node)?.create.push(w);
  const instances = new Map(input.instances.map((i) => [i.id, i]));
  for (const job of jobs.values()) {
    const inst = instances.get(job.node) as CloudInstance;
    // Also a node whose routes all exist: someone may have switched its check back on.
    const routed = job.replace.length > 0 || job.create.length > 0
      || (plan.wanted.get(job.node) ?? []).some((w) => plan.present.has(routeKey(w.table, w.destination)));
    if (inst.needsPrepare && input.traits.canPrepare && routed) job.prepare = inst;
  }
  return [...jobs.values()].filter((j) => j.prepare || j.replace.length > 0 || j.create.length > 0);
}
