// What each node shows after a reconcile (its route status), decided from
// plain data like the rest of the plan (plan.ts): the notes the reconcile
// gathered, the node's instance and lease, and the status stored last time,
// so a status is written and logged on change only.
import type { Reach } from '../../core/backends/overlay.js';
import type { Lease } from '../../core/lease.js';
import { MEMBER_TAG, isAlive, type CloudInstance } from './clouds/cloud.js';
import type { RouteStatusRecord } from '../store/store.js';

export type RouteState = RouteStatusRecord['state'];

export interface Note {
  state: RouteState;
  reason: string;
  /** on a network with an overlay, the few words its lease's reach says (reach.ts WHY) */
  why?: string;
}

export interface NodeNote extends Note {
  node: string;
}

/**
 * An error outranks pending, which outranks ok: the worst thing wrong with a
 * node is what it shows. Of two of the same rank, the first one stays.
 */
export function worse(cur: Note | undefined, next: Note): Note {
  if (!cur || (cur.state !== 'error' && (next.state === 'error' || cur.state === 'ok'))) return next;
  return cur;
}

/** The notes of one reconcile, by node. */
export class Notes {
  private readonly byNode = new Map<string, Note>();

  add(node: string, state: RouteState, reason: string, why?: string): void {
    this.byNode.set(node, worse(this.byNode.get(node), { state, reason, ...(why !== undefined && { why }) }));
  }

  get(node: string): Note | undefined {
    return this.byNode.get(node);
  }
}

/** Why a leased node has no route although nothing failed, or ok. */
export function leaseNote(network: string, lease: Lease, inst: CloudInstance | undefined): Note {
  const node = lease.node;
  if (!inst) return { state: 'pending', reason: `route pending: no instance ${node} carries the tag ${MEMBER_TAG}=${network}` };
  if (!isAlive(inst.state)) return { state: 'pending', reason: `route pending: instance is ${inst.state}` };
  if (inst.problem) return { state: 'error', reason: inst.problem };
  if (!inst.privateIP) return { state: 'pending', reason: 'route pending: the instance has no private IP yet' };
  if (!lease.subnet) return { state: 'error', reason: 'the lease has no IPv4 subnet, and VPC routes are IPv4 only' };
  return { state: 'ok', reason: '' };
}

/**
 * On a network with an overlay, a node without its route is no node in
 * waiting: it is reached over the overlay, so it shows ok and says how and
 * why ("overlay (route table full (2 of 2, account quota))"). An error stays an error: the
 * operator has something to fix, though the overlay carries the traffic.
 */
function overlaid(n: Note, reach: Reach | undefined): Note {
  if (!reach || reach.via === 'route' || n.state === 'error') return n;
  // A wait's own words say more than the lease's few (the table's count and where its limit came from).
  const why = n.state === 'pending' && n.why !== undefined ? n.reason.replace(/^route pending: /, '') : reach.why;
  return { state: 'ok', reason: `overlay (${why})` };
}

export interface StatusAction extends NodeNote {
  /** differs from the stored status: write it, then log the change */
  changed: boolean;
  /** a status was stored before (an ok after one is "route ready") */
  hadStatus: boolean;
}

/**
 * The status of every node holding a lease (in the leases' order), and the
 * nodes whose stored status goes because they hold none any more.
 */
export function planStatus(input: {
  network: string;
  leases: readonly Lease[];
  instances: readonly CloudInstance[];
  /** the notes gathered so far (a Notes, or any map of them) */
  notes: { get(node: string): Note | undefined };
  previous: readonly RouteStatusRecord[];
  /** on a network with an overlay, how each node is reached (reach.ts planReach) */
  reach?: ReadonlyMap<string, Reach>;
}): { statuses: StatusAction[]; removed: string[] } {
  const instances = new Map(input.instances.map((i) => [i.id, i]));
  const previous = new Map(input.previous.map((s) => [s.node, s]));
  const statuses = input.leases.map((lease): StatusAction => {
    const n = overlaid(worse(input.notes.get(lease.node), leaseNote(input.network, lease, instances.get(lease.node))), input.reach?.get(lease.node));
    const before = previous.get(lease.node);
    const changed = !before || before.state !== n.state || before.reason !== n.reason;
    return { node: lease.node, state: n.state, reason: n.reason, changed, hadStatus: before !== undefined };
  });
  const leased = new Set(input.leases.map((l) => l.node));
  return { statuses, removed: [...previous.keys()].filter((node) => !leased.has(node)) };
}
