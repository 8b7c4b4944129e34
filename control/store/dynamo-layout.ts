// The DynamoDB item layout: keys, shards, and the items as they are stored
// (control/store/dynamo.ts is the store that reads and writes them).
//
// ## Item layout (one table, string keys `pk`/`sk`, one sparse GSI `gsi1`)
//
// <ss> is a shard: two hex digits, a stable hash (FNV-1a) of the node name
// (leases, statuses) or of the claim's sort key (claims), modulo SHARDS (32).
//
// | item         | pk               | sk                     | gsi1pk / gsi1sk                              | other attributes |
// |--------------|------------------|------------------------|----------------------------------------------|------------------|
// | network      | NET#<network>    | NETWORK                | NETWORKS / <network>                         | name, config (JSON), revision (N), leaseCount (N), leaseHash, updatedAt |
// | route status | NET#<network>    | ROUTE#<node>           | ROUTES / <network>#<node>                    | network, node, state, reason, updatedAt |
// | route tables | NET#<network>    | ROUTETABLES            | -                                            | tables (JSON), updatedAt |
// | change       | NET#<network>#CHG| CHG#<15-digit revision>| -                                            | change (JSON), ttl (N: a day after the write) |
// | lease        | NET#<network>#L<ss> | LEASE#<node>        | EXPIRY#<network>#<ss> / <16-digit ms>#<node> | lease (JSON), revision (N), node, expiresMs and ttl (N, only when it expires) |
// |              |                  |                        |   (only when the lease expires; see below)   | |
// | subnet claim | NET#<network>#C<ss> | CLAIM#4#<8 hex digits>  | -                                       | node |
// |              |                  | CLAIM#6#<32 hex digits>|                                              | |
// | node status  | NET#<network>#S<ss> | STATUS#<node>       | -                                            | network, node, status (JSON), agent (its state), updatedAt |
// | agent counts | NET#<network>#S<ss> | AGENTS              | -                                            | online, outOfSync, offline (N): the shard's statuses by state |
// | node         | NODE#<name>      | NODE                   | NODES / <name>                               | name, network, passwordHash, createdAt |
// | layout       | TWILL            | LAYOUT                 | -                                            | version (N) |
//
// Why this shape:
// - DynamoDB serves about 1,000 write and 3,000 read units a second per
//   partition key value ("Best practices for designing and using partition
//   keys effectively"; burst capacity cannot lift it): past that it throttles,
//   on-demand tables too. A fleet of 10,000 joining or reconnecting at once
//   writes a lease, a claim and a few statuses each, and every new agent
//   lists every lease. So per-node items are spread over SHARDS (32) keys per
//   network, and a read of "all of them" is SHARDS queries in parallel (a
//   page of leases is a merge of the shards by node name). What stays on one
//   key: the network item (below), the change log (one item per revision,
//   written at the network item's pace) and route statuses (cloud networks,
//   bounded by their route tables).
// - The network item is the one hot item that cannot be spread: every lease
//   write moves its revision, conditioned on the revision read, so a
//   network's lease writes commit one at a time (tens a second). Each commit
//   costs it 2 write units (an item under 1 KB, transactional), each attempt
//   a read: it reaches a partition's rate only when a few hundred writers
//   retry at once, and then it is throttled like any other key and the
//   writers back off (bench/dynamo-storm measures it).
// - A claim item per family is what makes a subnet unique: DynamoDB has no
//   unique secondary index, but a Put with attribute_not_exists on the claim
//   key can succeed for only one writer. The claim's sort key is the subnet's
//   address as fixed-width hex; takenSubnets sorts the shards' claims.
// - Agent counts: the fabric's figures (agents online, out of sync, offline)
//   are read every minute, and reading every status for them cost N read
//   units a minute. Instead a status write that changes the node's state
//   (core/fabric.ts agentState) moves the counts of its shard in the same
//   transaction, conditioned on the state it replaces; one that keeps the
//   state (most of them) is one conditional put. agentCounts reads the
//   SHARDS count items, whatever the network's size.
// - gsi1 is KEYS_ONLY and sparse. It lists what has no natural partition
//   (networks, nodes, route statuses across networks) and the leases by
//   expiry, one index key per lease shard (a GSI key has the same per-key
//   rates as the table). Its keys never change on the hot path: a network's
//   revision, a status or a renewal does not touch them, so none costs an
//   index write. A renewal moves only the lease's expiresMs: the index keeps
//   the expiry the lease was indexed with, which is never later than the
//   real one; the scheduled expiry reads what the index says is due, deletes
//   what really expired and moves the index key of the rest to their real
//   expiry (at most one index move per renewal cycle, paced by the schedule
//   instead of by a fleet reconnecting at once). GSI reads are eventually
//   consistent, so every list reads the items themselves back with a
//   consistent BatchGetItem and filters again.
// - `ttl` (epoch seconds) is set on leases that expire, but at expiry plus a
//   grace period (a week by default), not at expiry. DynamoDB's TTL deletion is
//   lazy (up to days late) and deletes the lease item alone: it cannot free the
//   claim or fold the lease out of the network's count and hash. The scheduled
//   expiry (Controller.expire, via listExpired) is what removes leases; TTL is
//   only a backstop for a deployment whose schedule has stopped. Claims carry
//   no TTL: TTL deletes items in no particular order, and a claim deleted
//   before its lease would let a second node take a subnet still in use. An
//   orphaned claim only leaks a subnet; a missing one could duplicate it.
// - The layout item says which layout the table holds. A table written by a
//   twill from before the shards (leases, claims, statuses and changes on
//   NET#<network> itself) would look empty here, and a join could then take a
//   subnet an unmoved lease holds: the store refuses to serve it until the
//   one-off migration (control/store/dynamo-migrate.ts, docs/serverless.md
//   "a table from an earlier twill") has moved the items and written the
//   layout item.
//   A new table (no network yet) simply gets the layout item.
// - Locks (LOCK#<name> / LOCK) are apart from every network: see the locks in
//   dynamo.ts. How the lease writes use these items: dynamo-writes.ts.
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import type { NetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import { CHANGE_RETENTION_MS, type Change, type NetworkRecord, type NodeRecord, type RouteStatusRecord, type StatusRecord } from './store.js';
import type { Claim } from './lease-write.js';

export type Item = Record<string, AttributeValue>;
export type Key = { pk: AttributeValue; sk: AttributeValue };

export const GSI1 = 'gsi1';
export const TTL_ATTRIBUTE = 'ttl';
/**
 * Keys per network for each kind of per-node item. Part of every such key,
 * so it never changes for a table (a different number is a new layout).
 * The busiest shards in a join storm are the leases', read by every new
 * agent listing the network (each page about 80 read units at 1,000 leases a
 * page): 32 keys keep a 10,000-agent storm well under 3,000 read units a
 * second each (bench/dynamo-storm). The fixed cost is 32 small reads a
 * minute per network (the agent counts) and 32 index queries (the expiry
 * sweep), about $0.26 a month a network; a join's claims are 32 queries.
 */
export const SHARDS = 32;
/** The item layout this code reads and writes; see the layout item at the top. */
export const LAYOUT_VERSION = 2;

export const netPk = (network: string) => `NET#${network}`;
const NETWORK_SK = 'NETWORK';
export const LEASE_PREFIX = 'LEASE#';
export const CLAIM_PREFIX = 'CLAIM#';
const CHANGE_PREFIX = 'CHG#';
/** Fixed width, so the sort key orders changes by revision. */
export const changeSk = (revision: number) => `${CHANGE_PREFIX}${String(revision).padStart(15, '0')}`;
export const ROUTE_PREFIX = 'ROUTE#';
const ROUTE_TABLES_SK = 'ROUTETABLES';
export const STATUS_PREFIX = 'STATUS#';
export const AGENTS_SK = 'AGENTS';
const nodePk = (name: string) => `NODE#${name}`;
const NODE_SK = 'NODE';
const EXPIRY_DIGITS = 16;
export const SHARD_LIST = Array.from({ length: SHARDS }, (_, i) => i);

/** FNV-1a: a stable hash of a name (the same shard in every process and version). */
export function shardOf(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % SHARDS;
}

const hex2 = (shard: number) => shard.toString(16).padStart(2, '0');
export const changePk = (network: string) => `NET#${network}#CHG`;
export const leasePkOf = (network: string, shard: number) => `NET#${network}#L${hex2(shard)}`;
export const claimPkOf = (network: string, shard: number) => `NET#${network}#C${hex2(shard)}`;
export const statusPkOf = (network: string, shard: number) => `NET#${network}#S${hex2(shard)}`;
export const expiryPkOf = (network: string, shard: number) => `EXPIRY#${network}#${hex2(shard)}`;
export const leasePk = (network: string, node: string) => leasePkOf(network, shardOf(node));
export const claimPk = (network: string, sk: string) => claimPkOf(network, shardOf(sk));
export const statusPk = (network: string, node: string) => statusPkOf(network, shardOf(node));
/** Every partition key a network's items live under: what deleting it must sweep. */
export function networkPks(network: string): string[] {
  return [netPk(network), changePk(network), ...SHARD_LIST.flatMap((s) => [leasePkOf(network, s), claimPkOf(network, s), statusPkOf(network, s)])];
}

export const S = (s: string): AttributeValue => ({ S: s });
export const N = (n: number): AttributeValue => ({ N: String(n) });
export const key = (pk: string, sk: string): Key => ({ pk: S(pk), sk: S(sk) });
export const LAYOUT_KEY = key('TWILL', 'LAYOUT');
export const layoutItem = (): Item => ({ ...LAYOUT_KEY, version: N(LAYOUT_VERSION) });
export const networkKey = (network: string) => key(netPk(network), NETWORK_SK);
export const leaseKey = (network: string, node: string) => key(leasePk(network, node), LEASE_PREFIX + node);
export const statusKey = (network: string, node: string) => key(statusPk(network, node), STATUS_PREFIX + node);
export const routeStatusKey = (network: string, node: string) => key(netPk(network), ROUTE_PREFIX + node);
export const routeTablesKey = (network: string) => key(netPk(network), ROUTE_TABLES_SK);
export const nodeKey = (name: string) => key(nodePk(name), NODE_SK);
export const lockKey = (name: string) => key(`LOCK#${name}`, 'LOCK');

export function str(item: Item, name: string): string {
  const v = item[name]?.S;
  if (v === undefined) throw new Error(`store item ${item.pk?.S}/${item.sk?.S} has no string ${name}`);
  return v;
}

export function num(item: Item, name: string): number {
  const v = item[name]?.N;
  if (v === undefined) throw new Error(`store item ${item.pk?.S}/${item.sk?.S} has no number ${name}`);
  return Number(v);
}

/** Expiry as a sortable string: zero-padded milliseconds. */
export function expiryKey(ms: number): string {
  return String(Math.max(0, Math.floor(ms))).padStart(EXPIRY_DIGITS, '0');
}

/** A claim's sort key: the network address in fixed-width hex sorts numerically. */
export function claimSk(claim: Claim): string {
  return `${CLAIM_PREFIX}${claim.family}#${claim.ip.toString(16).padStart(claim.family === 4 ? 8 : 32, '0')}`;
}

/** The claimed address of a claim's sort key. */
export function claimOfSk(sk: string): Claim {
  const [, family, hex] = sk.split('#');
  return { family: family === '4' ? 4 : 6, ip: BigInt('0x' + hex) };
}

// ---- items ----

export function networkItem(rec: NetworkRecord): Item {
  return {
    ...networkKey(rec.name),
    gsi1pk: S('NETWORKS'),
    gsi1sk: S(rec.name),
    name: S(rec.name),
    config: S(JSON.stringify(rec.config)),
    revision: N(rec.revision),
    leaseCount: N(rec.leaseCount),
    leaseHash: S(rec.leaseHash),
    updatedAt: S(rec.updatedAt),
  };
}

/** expiresMs is what a delete at expiry is conditioned on; ttl follows it, a grace period later. */
export function expiryAttributes(ms: number, ttlGraceSeconds: number): Item {
  return { expiresMs: N(ms), [TTL_ATTRIBUTE]: N(Math.ceil(ms / 1000) + ttlGraceSeconds) };
}

/** A lease item; one that expires is on its shard's expiry index key. */
export function leaseItem(lease: Lease, ttlGraceSeconds: number): Item {
  const item: Item = {
    ...leaseKey(lease.network, lease.node),
    node: S(lease.node),
    revision: N(lease.revision),
    lease: S(JSON.stringify(lease)),
  };
  if (lease.expiresAt !== null) {
    const ms = Date.parse(lease.expiresAt);
    Object.assign(item, expiryAttributes(ms, ttlGraceSeconds), { gsi1pk: S(expiryPkOf(lease.network, shardOf(lease.node))), gsi1sk: S(`${expiryKey(ms)}#${lease.node}`) });
  }
  return item;
}

/** A change of the log, which DynamoDB's TTL removes once its retention is over. */
export function changeItem(network: string, change: Change, at: number): Item {
  return { ...key(changePk(network), changeSk(change.revision)), change: S(JSON.stringify(change)), [TTL_ATTRIBUTE]: N(Math.ceil((at + CHANGE_RETENTION_MS) / 1000)) };
}

export function toNetwork(item: Item): NetworkRecord {
  return {
    name: str(item, 'name'),
    config: JSON.parse(str(item, 'config')) as NetConf,
    revision: num(item, 'revision'),
    leaseCount: num(item, 'leaseCount'),
    leaseHash: str(item, 'leaseHash'),
    updatedAt: str(item, 'updatedAt'),
  };
}

export const toLease = (item: Item): Lease => JSON.parse(str(item, 'lease')) as Lease;

export const toNode = (item: Item): NodeRecord => ({
  name: str(item, 'name'),
  network: str(item, 'network'),
  passwordHash: str(item, 'passwordHash'),
  createdAt: str(item, 'createdAt'),
});

export const toStatus = (item: Item): StatusRecord => ({
  network: str(item, 'network'),
  node: str(item, 'node'),
  status: JSON.parse(str(item, 'status')) as StatusRecord['status'],
  updatedAt: str(item, 'updatedAt'),
});

export const toRouteStatus = (item: Item): RouteStatusRecord => ({
  network: str(item, 'network'),
  node: str(item, 'node'),
  state: str(item, 'state') as RouteStatusRecord['state'],
  reason: str(item, 'reason'),
  updatedAt: str(item, 'updatedAt'),
});

export const byNetworkNode = (a: { network: string; node: string }, b: { network: string; node: string }) =>
  a.network < b.network ? -1 : a.network > b.network ? 1 : a.node < b.node ? -1 : a.node > b.node ? 1 : 0;
export const byNode = (a: Lease, b: Lease) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0);

