// The lease-write protocol, written once. Every write a peer can see (a lease
// created, replaced or deleted, a network's config put) moves its network to
// the next revision and leaves exactly one change in the log at that
// revision; a lease write also folds the lease's digest in or out of the
// network's hash and count, and takes or releases the subnet claims that
// keep two nodes off one subnet. A renewal moves only the lease's expiry.
//
// These functions decide all of that from what a store read and what the
// caller asked, and do no I/O: a plan names the values to write and the
// conditions under which they may be written, or refuses with its reason.
// The SQLite store executes a plan in one transaction (its reads are still
// true at the write); the DynamoDB store as one TransactWriteItems whose
// conditions keep its reads true, and it reads the plan's `failed` when a
// condition fails at the write instead.
import { parseCidr } from '../../core/cidr.js';
import type { NetConf } from '../../core/config.js';
import { ConflictError, NotFoundError } from '../../core/errors.js';
import { digestHex, leaseDigest, type Lease, type NewLease } from '../../core/lease.js';
import type { Change, NetworkRecord } from './store.js';

/**
 * Why a write is not made. `gone` is no error: a delete or renewal whose
 * lease is absent, changed or (at expiry) renewed answers undefined.
 */
export type Refusal =
  | { refuse: 'no-network'; message: string }
  | { refuse: 'conflict'; message: string }
  | { refuse: 'inconsistent'; message: string }
  | { refuse: 'gone' };

/** A refusal that is an error to the caller. */
export type Failure = Exclude<Refusal, { refuse: 'gone' }>;

export const isRefusal = (p: object): p is Refusal => 'refuse' in p;

/** The error a refusal is to its caller. */
export function refusalError(r: Failure): Error {
  if (r.refuse === 'no-network') return new NotFoundError(r.message);
  if (r.refuse === 'conflict') return new ConflictError(r.message);
  return new Error(r.message);
}

/** The network addresses a lease's subnets claim, one per family: what no other lease may hold. */
export interface Claims {
  v4?: bigint;
  v6?: bigint;
}

export function claimsOf(lease: Pick<NewLease, 'subnet' | 'ipv6Subnet'>): Claims {
  const v4 = lease.subnet ? parseCidr(lease.subnet, true) : undefined;
  const v6 = lease.ipv6Subnet ? parseCidr(lease.ipv6Subnet, true) : undefined;
  return { ...(v4 && { v4: v4.ip }), ...(v6 && { v6: v6.ip }) };
}

export interface Claim {
  family: 4 | 6;
  ip: bigint;
}

/** A lease write the caller asked for. */
export type LeaseRequest =
  | { kind: 'create'; lease: NewLease }
  /**
   * only while the node's lease is still at expectedRevision; with
   * keepExpiry, the lease keeps the expiry it has at the write (a change
   * that is no renewal: a renewal landing after the caller read stays)
   */
  | { kind: 'replace'; lease: NewLease; expectedRevision: number; keepExpiry?: boolean }
  /** with expectedRevision, only while the lease is still at it; with expiredBy (epoch ms), only when it expired by then */
  | { kind: 'delete'; network: string; node: string; expectedRevision?: number; expiredBy?: number };

/** What a lease write read: the network record and the node's lease (undefined when absent or, for a create, not read). */
export interface LeaseRead {
  network: NetworkRecord | undefined;
  lease: Lease | undefined;
}

/**
 * What the lease itself must still be at the write. expiresAt: its expiry
 * too, which a renewal moves without the revision (a replace that keeps it).
 */
export type LeaseCondition = { absent: true } | { revision: number; expiredBy?: number; expiresAt?: string | null };

export interface LeaseWritePlan {
  /** the network after the write, which must still be at readRevision */
  network: { name: string; readRevision: number; revision: number; leaseCount: number; leaseHash: string; updatedAt: string };
  /** the lease as written, or (deletes) the lease that goes */
  lease: Lease;
  deletes: boolean;
  /** the written lease's expiry in epoch ms, for the expiry index; null when it never expires (or goes) */
  expiresMs: number | null;
  leaseCondition: LeaseCondition;
  /** claims taken (must be free) and released (must be this node's, or already gone); an unchanged subnet is in neither */
  take: Claim[];
  release: Claim[];
  /** the change logged at the new revision */
  change: Change;
  /** epoch ms of the write: the change's time in the log */
  at: number;
  /**
   * What a condition that fails at the write means. `read-again`: the store
   * reads again at once and plans anew (a delete whose lease moved may still
   * find one to delete). A failed network condition always means another
   * write of the network got in first: read again after a backoff.
   */
  failed: { lease: Failure | 'read-again'; claim: Failure; release: Failure };
}

/** What createLease and replaceLease answer. */
export const written = (plan: LeaseWritePlan): Lease => plan.lease;
/** What deleteLease answers: the lease that went and the network's revision after it. */
export const deleted = (plan: LeaseWritePlan): { lease: Lease; revision: number } => ({ lease: plan.lease, revision: plan.network.revision });

const noNetwork = (name: string): Failure => ({ refuse: 'no-network', message: `network ${name} does not exist` });
const leaseChanged = (node: string, network: string): Failure => ({ refuse: 'conflict', message: `lease of node ${node} in network ${network} changed meanwhile` });
const alreadyHolds = (node: string, network: string): Failure => ({ refuse: 'conflict', message: `node ${node} already holds a lease in network ${network}` });

/**
 * Refuses a request on the lease read alone, so a delete whose lease is gone
 * or moved needs no network read. undefined: the lease is as asked.
 */
export function leaseRefusal(req: LeaseRequest, lease: Lease | undefined): Refusal | undefined {
  switch (req.kind) {
    case 'create':
      return lease ? alreadyHolds(req.lease.node, req.lease.network) : undefined;
    case 'replace':
      return !lease || lease.revision !== req.expectedRevision ? leaseChanged(req.lease.node, req.lease.network) : undefined;
    case 'delete':
      if (!lease || (req.expectedRevision !== undefined && lease.revision !== req.expectedRevision)) return { refuse: 'gone' };
      // A renewal that landed after the expiry scan keeps the lease, though its revision did not move.
      if (req.expiredBy !== undefined && (lease.expiresAt === null || Date.parse(lease.expiresAt) > req.expiredBy)) return { refuse: 'gone' };
      return undefined;
  }
}

/**
 * The plan of a lease write from what was read, at `now` (epoch ms).
 * Refusals come in the order the stores read: a delete asks about its lease
 * first, a create or replace about its network.
 */
export function planLeaseWrite(read: LeaseRead, req: LeaseRequest, now: number): LeaseWritePlan | Refusal {
  const network = req.kind === 'delete' ? req.network : req.lease.network;
  const node = req.kind === 'delete' ? req.node : req.lease.node;
  const refusal = req.kind === 'delete' ? leaseRefusal(req, read.lease) : read.network ? leaseRefusal(req, read.lease) : noNetwork(network);
  if (refusal) return refusal;
  if (!read.network) return noNetwork(network);

  const prev = req.kind === 'create' ? undefined : read.lease!;
  const keepExpiry = req.kind === 'replace' && req.keepExpiry === true;
  const revision = read.network.revision + 1;
  let hash = BigInt('0x' + read.network.leaseHash);
  let count = read.network.leaseCount;
  if (prev) { hash ^= leaseDigest(prev.node, prev.revision); count--; }
  const put: Lease | undefined = req.kind === 'delete' ? undefined : { ...req.lease, ...(keepExpiry && { expiresAt: prev!.expiresAt }), revision };
  if (put) { hash ^= leaseDigest(put.node, revision); count++; }

  const before = prev ? claimsOf(prev) : {};
  const after = put ? claimsOf(put) : {};
  const take: Claim[] = [];
  const release: Claim[] = [];
  for (const [fam, family] of [['v4', 4], ['v6', 6]] as const) {
    // An unchanged subnet keeps its claim (and a DynamoDB transaction may touch an item only once).
    if (before[fam] === after[fam]) continue;
    if (before[fam] !== undefined) release.push({ family, ip: before[fam] });
    if (after[fam] !== undefined) take.push({ family, ip: after[fam] });
  }

  const subnets = put ? [put.subnet, put.ipv6Subnet].filter(Boolean).join(' or ') : '';
  return {
    network: { name: network, readRevision: read.network.revision, revision, leaseCount: count, leaseHash: digestHex(hash), updatedAt: new Date(now).toISOString() },
    lease: put ?? prev!,
    deletes: !put,
    expiresMs: put && put.expiresAt !== null ? Date.parse(put.expiresAt) : null,
    leaseCondition: prev
      ? { revision: prev.revision, ...(req.kind === 'delete' && req.expiredBy !== undefined && { expiredBy: req.expiredBy }), ...(keepExpiry && { expiresAt: prev.expiresAt }) }
      : { absent: true },
    take,
    release,
    change: { revision, node, lease: put ?? null },
    at: now,
    failed: {
      // (a replace that keeps the expiry reads again: a renewal moved it, and the lease may be as asked still)
      lease: req.kind === 'create' ? alreadyHolds(node, network) : req.kind === 'replace' && !keepExpiry ? leaseChanged(node, network) : 'read-again',
      claim: { refuse: 'conflict', message: `subnet ${subnets} of network ${network} is already leased` },
      release: { refuse: 'inconsistent', message: `store inconsistent: a subnet claim of node ${node} in network ${network} belongs to another node` },
    },
  };
}

/** A renewal: the lease's expiry and nothing else (no revision, no change, no message to peers). */
export interface RenewPlan {
  lease: Lease;
  expiresMs: number;
  /** the lease must still be at this revision */
  revision: number;
}

export function planRenew(read: Lease | undefined, revision: number, expiresAt: string): RenewPlan | Refusal {
  // A reservation never expires, so it is never renewed.
  if (!read || read.revision !== revision || read.expiresAt === null) return { refuse: 'gone' };
  return { lease: { ...read, expiresAt }, expiresMs: Date.parse(expiresAt), revision };
}

/** A network's config put: a new network at revision 1, or the next revision of one. */
export interface NetworkPutPlan {
  /** the record after the write */
  record: NetworkRecord;
  /** create: the network must not exist; otherwise it must still be at expectedRevision, and only config, revision and updatedAt move */
  create: boolean;
  expectedRevision: number | undefined;
  change: Change;
  at: number;
  /** what a failed condition at the write means */
  failed: Failure;
}

/**
 * The plan of putNetwork. A store that does not read before creating a
 * network passes undefined and leaves the "must not exist" to the condition.
 */
export function planNetworkPut(read: NetworkRecord | undefined, name: string, config: NetConf, expectedRevision: number | undefined, now: number): NetworkPutPlan | Failure {
  if (read?.revision !== expectedRevision) {
    return { refuse: 'conflict', message: `network ${name} changed meanwhile (revision ${read?.revision ?? 'none'}, expected ${expectedRevision ?? 'none'})` };
  }
  const updatedAt = new Date(now).toISOString();
  // As the store will read it back: the config as stored (JSON).
  const stored = JSON.parse(JSON.stringify(config)) as NetConf;
  const record: NetworkRecord = read
    ? { ...read, config: stored, revision: read.revision + 1, updatedAt }
    : { name, config: stored, revision: 1, leaseCount: 0, leaseHash: digestHex(0n), updatedAt };
  return {
    record,
    create: !read,
    expectedRevision,
    change: { revision: record.revision, config: true },
    at: now,
    failed: { refuse: 'conflict', message: `network ${name} changed meanwhile (expected ${expectedRevision === undefined ? 'no network' : `revision ${expectedRevision}`})` },
  };
}
