// The lease: one node's claim on one subnet (and IPv6 subnet) of a network.
import { createHash } from 'node:crypto';
import { backendSpec } from './backends/index.js';
import type { BackendType } from './config.js';
import type { Reach } from './backends/overlay.js';

export interface Lease {
  network: string;
  node: string;
  /** IPv4 subnet in CIDR form, or null when the network is IPv6 only */
  subnet: string | null;
  ipv6Subnet: string | null;
  publicIP: string | null;
  publicIPv6: string | null;
  backendType: BackendType;
  /** per-backend data peers need, e.g. {"VtepMAC": "..."}; never secrets */
  backendData: Record<string, unknown>;
  /** ISO time; null for a reservation, which never expires */
  expiresAt: string | null;
  /** ISO time the node first got this subnet: decides who keeps a route when a cloud table is full */
  createdAt: string;
  /** the network's revision at this lease's last write, assigned by the store */
  revision: number;
  /**
   * A new key pair asked of this node (twill node rotate-key), as an opaque
   * token: the node makes one new key pair per token it has not seen, so the
   * request holds across restarts and needs no clock shared with the node.
   * Absent: none asked. Backends without keys ignore it.
   */
  rotateKey?: string;
  /**
   * On a cloud network with an overlay (core/backends/overlay.ts): how this
   * node is reached, written by the route controller only. Absent elsewhere.
   */
  reach?: Reach;
}

export type NewLease = Omit<Lease, 'revision'>;

/**
 * Whether a backend's nodes hold a key pair, whose public half their lease's
 * backend data carries (wireguard's PublicKey): only theirs can rotate.
 */
export function backendHasKeys(type: BackendType): boolean {
  return Object.hasOwn(backendSpec(type).agentData, 'PublicKey');
}

/**
 * Manifest digests are an XOR of per-lease digests: independent of order and
 * updatable in O(1) by the store on every write, so a network of 10,000
 * leases never rehashes all of them, and an agent can compute the same value
 * from the leases it has received to know its snapshot is complete.
 */
export function leaseDigest(node: string, revision: number): bigint {
  const h = createHash('sha256').update(`${node}\n${revision}`).digest();
  return h.readBigUInt64BE(0);
}

export function digestHex(d: bigint): string {
  return d.toString(16).padStart(16, '0');
}

function combineDigests(leases: Iterable<{ node: string; revision: number }>): bigint {
  let d = 0n;
  for (const l of leases) d ^= leaseDigest(l.node, l.revision);
  return d;
}

/** The manifest hash of a set of leases, as the store keeps it. */
export function leasesHash(leases: Iterable<{ node: string; revision: number }>): string {
  return digestHex(combineDigests(leases));
}

export function isExpired(lease: Lease, now: number): boolean {
  return lease.expiresAt !== null && Date.parse(lease.expiresAt) <= now;
}
