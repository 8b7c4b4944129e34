// The store is the truth: every lease, network and node credential lives here,
// and everything published over MQTT is derived from it. Each method is one
// atomic, conditional step, so a controller killed between any two calls
// leaves a consistent store, and two writers racing never share a subnet.
import type { NetConf } from '../../core/config.js';
import type { AgentCounts } from '../../core/fabric.js';
import type { Lease, NewLease } from '../../core/lease.js';
import type { Status } from '../../core/messages.js';
import type { LimitSource } from '../routes/clouds/cloud.js';
import { TwillError } from '../../core/errors.js';

export interface NetworkRecord {
  name: string;
  config: NetConf;
  /** bumped by every change to the network or any of its leases */
  revision: number;
  leaseCount: number;
  /** XOR of leaseDigest over the leases, as 16 hex digits */
  leaseHash: string;
  updatedAt: string;
}

export interface NodeRecord {
  name: string;
  network: string;
  /** salted hash (control/auth/credentials.ts); the password itself is never stored */
  passwordHash: string;
  createdAt: string;
}

export interface StatusRecord {
  network: string;
  node: string;
  status: Status;
  updatedAt: string;
}

/**
 * Whether a cloud network's node has its VPC route, and why not when it has
 * none. On a network with an overlay, a node without its route is reached
 * over the overlay: its state is ok and its reason "overlay (why)".
 */
export interface RouteStatusRecord {
  network: string;
  node: string;
  state: 'ok' | 'pending' | 'error';
  /** e.g. "route pending: route table full (50 of 50)", "overlay (outside the cloud)"; empty when ok through its route */
  reason: string;
  updatedAt: string;
}

/** A cloud network's route tables (or GCE project quota) as its last reconcile saw them. */
export interface RouteTablesRecord {
  network: string;
  /** each place routes count against a limit: what it is, routes in it of every owner, its limit */
  tables: { what: string; used: number; limit: number; source?: LimitSource; why?: string }[];
  updatedAt: string;
}

/**
 * One peer-visible write: a lease created, changed (lease) or removed (null),
 * or the network's config replaced (config). Every write that bumps a
 * network's revision leaves exactly one, so a run of changes with no gap in
 * its revisions is the whole story between two revisions.
 */
export interface Change {
  revision: number;
  node?: string;
  lease?: Lease | null;
  config?: true;
}

/** How long the change log keeps a change: an agent away longer fetches the snapshot instead. */
export const CHANGE_RETENTION_MS = 24 * 3600 * 1000;

export interface ChangesSince {
  /** the network's revision when read */
  revision: number;
  /** every change after the asked revision, in order, up to revision (or the limit) */
  changes: Change[];
  /** the limit cut the list: ask again after the last one */
  more: boolean;
}

/**
 * What tryLock found: the lock is the caller's until expiresAt (epoch ms), or
 * another owner's until then.
 */
export type LockResult = { acquired: true; expiresAt: number } | { acquired: false; owner: string; expiresAt: number };

/** Names and owners are short printable strings: they are keys and log fields. */
export const LOCK_NAME = /^[\x21-\x7e]{1,200}$/;

/** Refuses a lock call whose arguments could not be a key, before anything is written. */
export function checkLockArgs(name: string, owner: string, ttlMs?: number): void {
  if (!LOCK_NAME.test(name)) throw new TwillError('InvalidLock', `lock name ${JSON.stringify(name.slice(0, 40))} must be 1 to 200 printable ASCII characters without spaces`);
  if (!LOCK_NAME.test(owner)) throw new TwillError('InvalidLock', `lock owner ${JSON.stringify(owner.slice(0, 40))} must be 1 to 200 printable ASCII characters without spaces`);
  if (ttlMs !== undefined && !(Number.isSafeInteger(ttlMs) && ttlMs > 0)) throw new TwillError('InvalidLock', `lock ttl ${ttlMs} must be a whole number of milliseconds above 0`);
}

export interface TakenSubnets {
  /** network addresses of leased IPv4 subnets, ascending */
  v4: bigint[];
  v6: bigint[];
}

export interface Store {
  getNetwork(name: string): Promise<NetworkRecord | undefined>;
  listNetworks(): Promise<NetworkRecord[]>;
  /**
   * Creates or replaces a network's config. With expectedRevision, fails with
   * ConflictError unless the network is still at that revision (undefined: must
   * not exist yet), so a check made on a read stays true at the write.
   */
  putNetwork(name: string, config: NetConf, expectedRevision: number | undefined): Promise<NetworkRecord>;

  getLease(network: string, node: string): Promise<Lease | undefined>;
  listLeases(network: string): Promise<Lease[]>;
  /** Up to limit leases of the nodes named after `after` (all when undefined), by node name. */
  listLeasesPage(network: string, after: string | undefined, limit: number): Promise<Lease[]>;
  takenSubnets(network: string): Promise<TakenSubnets>;
  /** ConflictError if the node already holds a lease or a subnet is taken. */
  createLease(lease: NewLease): Promise<Lease>;
  /**
   * ConflictError unless the node's lease is still at expectedRevision, or
   * if a new subnet is taken. keepExpiry: the lease keeps the expiry it has
   * at the write, not lease.expiresAt, so a renewal that lands after the
   * caller read is not undone (a change that is no renewal: a key rotation).
   */
  replaceLease(lease: NewLease, expectedRevision: number, opts?: { keepExpiry?: boolean }): Promise<Lease>;
  /**
   * Moves a lease's expiry and nothing else: its revision, the network's
   * revision, count and hash stay as they are, since nothing a peer uses
   * changed (a renewal costs O(1), never a message to every peer). Returns
   * the renewed lease; undefined when the lease is gone, is no longer at
   * revision, or is a reservation.
   */
  renewLease(network: string, node: string, revision: number, expiresAt: string): Promise<Lease | undefined>;
  /**
   * Returns the deleted lease and the network's revision after the delete;
   * undefined if absent, (with expectedRevision) changed meanwhile, or (with
   * expiredBy, epoch ms) not expired by then: a renewal that lands between
   * the expiry scan and the delete keeps the lease, though its revision did
   * not move.
   */
  deleteLease(network: string, node: string, expectedRevision?: number, expiredBy?: number): Promise<{ lease: Lease; revision: number } | undefined>;
  /** Leases whose expiry is at or before now, in every network. */
  listExpired(now: number): Promise<Lease[]>;
  /**
   * The changes of a network after revision `after`, oldest first, at most
   * `limit`; undefined when the log no longer reaches back that far (or
   * `after` is ahead of the network): the caller needs the whole snapshot.
   */
  changesSince(network: string, after: number, limit: number): Promise<ChangesSince | undefined>;

  putNode(node: NodeRecord): Promise<void>;
  getNode(name: string): Promise<NodeRecord | undefined>;
  listNodes(): Promise<NodeRecord[]>;
  deleteNode(name: string): Promise<boolean>;

  /**
   * Stores a node's status (the latest wins) and keeps its network's agent
   * counts (agentCounts) exact in the same atomic step.
   */
  putStatus(rec: StatusRecord): Promise<void>;
  /** The statuses of a network's nodes, or of every network's; only networks that exist are listed. */
  listStatus(network?: string): Promise<StatusRecord[]>;
  /**
   * A network's agents by the state their last status reports
   * (core/fabric.ts agentState), whether or not the network exists: what
   * the fabric's figures read every minute, so it must not read every status.
   */
  agentCounts(network: string): Promise<AgentCounts>;

  putRouteStatus(rec: RouteStatusRecord): Promise<void>;
  deleteRouteStatus(network: string, node: string): Promise<void>;
  listRouteStatus(network?: string): Promise<RouteStatusRecord[]>;

  putRouteTables(rec: RouteTablesRecord): Promise<void>;
  getRouteTables(network: string): Promise<RouteTablesRecord | undefined>;

  /**
   * Deletes a network with no lease left, and everything kept for it
   * (changes, statuses, route statuses and tables). Nodes are the caller's.
   * ConflictError while it holds leases; false when there is no such network.
   */
  deleteNetwork(name: string): Promise<boolean>;

  /**
   * A named lock shared by everything that uses this store (every function
   * instance of a deployment, or the processes on one SQLite file): taken
   * for owner until now + ttlMs when it is free, expired, or already the
   * owner's (then its expiry moves). One conditional write; the holder of an
   * expired lock has lost it, so ttlMs must cover the longest time the
   * holder works under it.
   */
  tryLock(name: string, owner: string, ttlMs: number, now?: number): Promise<LockResult>;
  /** Releases the lock if owner still holds it; false when it did not (expired and taken over, or never taken). */
  unlock(name: string, owner: string): Promise<boolean>;

  close(): Promise<void>;
}

/**
 * The answer to changesSince from the rows a store read after `after`
 * (ascending, at most limit + 1 of them): complete only when the first is
 * after + 1 and none is missing, since each revision has exactly one change.
 */
export function changeRun(after: number, current: number, rows: Change[], limit: number): ChangesSince | undefined {
  if (after > current) return undefined;
  const changes = rows.slice(0, limit);
  for (let i = 0; i < changes.length; i++) if (changes[i]!.revision !== after + 1 + i) return undefined;
  const last = changes.length ? changes[changes.length - 1]!.revision : after;
  const more = last < current;
  // Short of the current revision without hitting the limit: the log has a hole at its end.
  if (more && changes.length < limit) return undefined;
  return { revision: current, changes, more };
}
