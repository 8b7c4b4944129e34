// The store on DynamoDB, for the serverless deployment: many function
// invocations write at once, so every multi-item change is one
// TransactWriteItems whose conditions make a lost race fail whole.
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
//
// ## Conditional writes
// Every lease write is one TransactWriteItems of
//   the lease item  (create: attribute_not_exists; replace/delete: revision = expected),
//   one claim item per family taken (attribute_not_exists) or released
//     (owned by this node, or already gone; never another node's),
//   the network item: revision, leaseCount and leaseHash, conditioned on the
//     revision this writer read. The hash is an XOR that DynamoDB cannot
//     compute in an update expression, so the writer computes it from the
//     network item it read, and the condition makes that read still true.
//   the change item of the new revision.
// A cancelled transaction tells which item failed (CancellationReasons, in
// request order). A failed lease or claim condition is a real conflict for the
// caller: ConflictError, and the controller retries with fresh reads. A failed
// network condition (or TransactionConflict) only means another lease of the
// same network was written meanwhile: nothing the caller asked about changed,
// so the store re-reads the network and tries again itself, with jittered
// backoff. A throttled call (ThrottlingException, or a transaction cancelled
// with ThrottlingError: on-demand tables answer both) is sent again with its
// own, longer backoff, after the SDK's own retries; anything else (a missing
// table, a validation error) propagates as it is.
// Every write that bumps a network's revision also puts that revision's
// change item in the same transaction, so the change log never misses or
// invents a revision; changesSince reads it with one Query and checks that
// no revision is missing (TTL removes old changes lazily and in any order).
// A renewal (renewLease) is the exception: it moves only the lease item's
// expiry (conditioned on its revision), never the network item, since nothing
// peers use changed; the delete at expiry is therefore conditioned on the
// expiry (expiresMs) as well as the revision.
import {
  BatchGetItemCommand,
  BatchWriteItemCommand,
  CreateTableCommand,
  DeleteItemCommand,
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  TransactWriteItemsCommand,
  UpdateItemCommand,
  UpdateTimeToLiveCommand,
  type AttributeValue,
  type CreateTableCommandInput,
  type DynamoDBClientConfig,
  type QueryCommandInput,
  type TransactWriteItem,
} from '@aws-sdk/client-dynamodb';
import { parseCidr } from '../../core/cidr.js';
import { ConflictError, NotFoundError } from '../../core/errors.js';
import { agentState, AGENT_STATES, noAgents, type AgentCounts, type AgentState } from '../../core/fabric.js';
import { digestHex, isExpired, leaseDigest, type Lease, type NewLease } from '../../core/lease.js';
import type { NetConf } from '../../core/config.js';
import { CHANGE_RETENTION_MS, changeRun, type Change, type ChangesSince, type NetworkRecord, type NodeRecord, type RouteStatusRecord, type RouteTablesRecord, type StatusRecord, type Store, type TakenSubnets, type LockResult, checkLockArgs } from './store.js';

type Item = Record<string, AttributeValue>;
type Key = { pk: AttributeValue; sk: AttributeValue };

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
/** The item layout this code reads and writes; see the layout item above. */
export const LAYOUT_VERSION = 2;
const DEFAULT_TTL_GRACE_SECONDS = 7 * 24 * 3600;
/**
 * Tries of one lease write against other writers of the same network. Each
 * lost round means another write of that network committed, so a writer only
 * runs out when this many others got in first while it backed off.
 */
const DEFAULT_WRITE_ATTEMPTS = 100;
const BACKOFF_BASE_MS = 4;
const BACKOFF_CAP_MS = 200;
/**
 * Sends of one call that DynamoDB throttled, each after the SDK's own
 * retries. The backoff doubles from THROTTLE_BASE_MS to THROTTLE_CAP_MS
 * with full jitter: at most about 20 s in all (half that on average), inside
 * a function's 30 s; a partition's capacity comes back within a second.
 */
const DEFAULT_THROTTLE_ATTEMPTS = 16;
const THROTTLE_BASE_MS = 50;
const THROTTLE_CAP_MS = 2000;
const BATCH_GET_LIMIT = 100;
/** Index keys moved to their lease's real expiry at once by a sweep: a handful, so a sweep never floods a shard. */
const REINDEX_CONCURRENCY = 8;

/** The table: its key schema and the one index. Also what infra must create. */
export function tableDefinition(tableName: string): CreateTableCommandInput {
  return {
    TableName: tableName,
    AttributeDefinitions: [
      { AttributeName: 'pk', AttributeType: 'S' },
      { AttributeName: 'sk', AttributeType: 'S' },
      { AttributeName: 'gsi1pk', AttributeType: 'S' },
      { AttributeName: 'gsi1sk', AttributeType: 'S' },
    ],
    KeySchema: [
      { AttributeName: 'pk', KeyType: 'HASH' },
      { AttributeName: 'sk', KeyType: 'RANGE' },
    ],
    GlobalSecondaryIndexes: [
      {
        IndexName: GSI1,
        KeySchema: [
          { AttributeName: 'gsi1pk', KeyType: 'HASH' },
          { AttributeName: 'gsi1sk', KeyType: 'RANGE' },
        ],
        // Keys only: the items are read back consistently anyway, and a
        // projection of all attributes would cost an index write on every
        // update of a network's revision.
        Projection: { ProjectionType: 'KEYS_ONLY' },
      },
    ],
    BillingMode: 'PAY_PER_REQUEST',
  };
}

/**
 * Creates the table (tests, or a deployment without infra code) and waits
 * until it is ACTIVE, then turns on TTL on `ttl` and writes the layout item.
 * Point-in-time recovery is the deployment's business (infra turns it on);
 * it changes nothing here. SST equivalent: sst.aws.Dynamo with fields {pk,
 * sk, gsi1pk, gsi1sk: string}, primaryIndex {hashKey: pk, rangeKey: sk},
 * globalIndexes {gsi1: {hashKey: gsi1pk, rangeKey: gsi1sk, projection:
 * keys-only}}, ttl: 'ttl' (a table made so gets its layout item from the
 * first function that finds it empty).
 */
export async function createTable(client: DynamoDBClient, tableName: string, opts: { timeoutMs?: number } = {}): Promise<void> {
  await client.send(new CreateTableCommand(tableDefinition(tableName)));
  const end = Date.now() + (opts.timeoutMs ?? 120_000);
  for (;;) {
    const d = await client.send(new DescribeTableCommand({ TableName: tableName }));
    const indexesActive = (d.Table?.GlobalSecondaryIndexes ?? []).every((i) => i.IndexStatus === 'ACTIVE');
    if (d.Table?.TableStatus === 'ACTIVE' && indexesActive) break;
    if (Date.now() > end) throw new Error(`table ${tableName} is still ${d.Table?.TableStatus ?? 'missing'} after ${opts.timeoutMs ?? 120_000} ms`);
    await sleep(100);
  }
  await client.send(new UpdateTimeToLiveCommand({
    TableName: tableName,
    TimeToLiveSpecification: { Enabled: true, AttributeName: TTL_ATTRIBUTE },
  }));
  await client.send(new PutItemCommand({ TableName: tableName, Item: layoutItem() }));
}

export interface DynamoStoreOptions {
  tableName: string;
  /** A client to use (and leave open on close); otherwise one is made from clientConfig. */
  client?: DynamoDBClient;
  clientConfig?: DynamoDBClientConfig;
  /** How long after a lease's expiry DynamoDB's TTL may delete it; see the top of this file. */
  ttlGraceSeconds?: number;
  /** Tries of one lease write while other writes of the same network keep winning. */
  maxWriteAttempts?: number;
  /** Sends of one call DynamoDB keeps throttling, after the SDK's own retries. */
  maxThrottleAttempts?: number;
  /** false only for the migration's own store, which writes the new layout before the layout item says so */
  checkLayout?: boolean;
  /** How the store waits between tries (a bench on simulated time passes its own). */
  sleep?: (ms: number) => Promise<void>;
}

// ---- keys and attribute values ----

const netPk = (network: string) => `NET#${network}`;
const NETWORK_SK = 'NETWORK';
const LEASE_PREFIX = 'LEASE#';
const CLAIM_PREFIX = 'CLAIM#';
const CHANGE_PREFIX = 'CHG#';
/** Fixed width, so the sort key orders changes by revision. */
const changeSk = (revision: number) => `${CHANGE_PREFIX}${String(revision).padStart(15, '0')}`;
const ROUTE_PREFIX = 'ROUTE#';
const ROUTE_TABLES_SK = 'ROUTETABLES';
/** BatchWriteItem takes at most 25 requests (DynamoDB API reference, BatchWriteItem). */
const BATCH_WRITE_LIMIT = 25;
const STATUS_PREFIX = 'STATUS#';
const AGENTS_SK = 'AGENTS';
const nodePk = (name: string) => `NODE#${name}`;
const NODE_SK = 'NODE';
const EXPIRY_DIGITS = 16;
const SHARD_LIST = Array.from({ length: SHARDS }, (_, i) => i);

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
const leasePkOf = (network: string, shard: number) => `NET#${network}#L${hex2(shard)}`;
const claimPkOf = (network: string, shard: number) => `NET#${network}#C${hex2(shard)}`;
const statusPkOf = (network: string, shard: number) => `NET#${network}#S${hex2(shard)}`;
export const expiryPkOf = (network: string, shard: number) => `EXPIRY#${network}#${hex2(shard)}`;
export const leasePk = (network: string, node: string) => leasePkOf(network, shardOf(node));
export const claimPk = (network: string, sk: string) => claimPkOf(network, shardOf(sk));
export const statusPk = (network: string, node: string) => statusPkOf(network, shardOf(node));
/** Every partition key a network's items live under: what deleting it must sweep. */
function networkPks(network: string): string[] {
  return [netPk(network), changePk(network), ...SHARD_LIST.flatMap((s) => [leasePkOf(network, s), claimPkOf(network, s), statusPkOf(network, s)])];
}

const S = (s: string): AttributeValue => ({ S: s });
const N = (n: number): AttributeValue => ({ N: String(n) });
const key = (pk: string, sk: string): Key => ({ pk: S(pk), sk: S(sk) });
export const LAYOUT_KEY = key('TWILL', 'LAYOUT');
export const layoutItem = (): Item => ({ ...LAYOUT_KEY, version: N(LAYOUT_VERSION) });
const leaseKey = (network: string, node: string) => key(leasePk(network, node), LEASE_PREFIX + node);
const statusKey = (network: string, node: string) => key(statusPk(network, node), STATUS_PREFIX + node);

function str(item: Item, name: string): string {
  const v = item[name]?.S;
  if (v === undefined) throw new Error(`store item ${item.pk?.S}/${item.sk?.S} has no string ${name}`);
  return v;
}

function num(item: Item, name: string): number {
  const v = item[name]?.N;
  if (v === undefined) throw new Error(`store item ${item.pk?.S}/${item.sk?.S} has no number ${name}`);
  return Number(v);
}

/** Expiry as a sortable string: zero-padded milliseconds. */
function expiryKey(ms: number): string {
  return String(Math.max(0, Math.floor(ms))).padStart(EXPIRY_DIGITS, '0');
}

/** The claim sort keys of a lease's subnets: the network address in fixed-width hex sorts numerically. */
function claimKeys(lease: Pick<NewLease, 'subnet' | 'ipv6Subnet'>): { v4?: string; v6?: string } {
  const v4 = lease.subnet ? parseCidr(lease.subnet, true) : undefined;
  const v6 = lease.ipv6Subnet ? parseCidr(lease.ipv6Subnet, true) : undefined;
  return {
    v4: v4 ? `${CLAIM_PREFIX}4#${v4.ip.toString(16).padStart(8, '0')}` : undefined,
    v6: v6 ? `${CLAIM_PREFIX}6#${v6.ip.toString(16).padStart(32, '0')}` : undefined,
  };
}

function toNetwork(item: Item): NetworkRecord {
  return {
    name: str(item, 'name'),
    config: JSON.parse(str(item, 'config')) as NetConf,
    revision: num(item, 'revision'),
    leaseCount: num(item, 'leaseCount'),
    leaseHash: str(item, 'leaseHash'),
    updatedAt: str(item, 'updatedAt'),
  };
}

const toLease = (item: Item): Lease => JSON.parse(str(item, 'lease')) as Lease;

const toNode = (item: Item): NodeRecord => ({
  name: str(item, 'name'),
  network: str(item, 'network'),
  passwordHash: str(item, 'passwordHash'),
  createdAt: str(item, 'createdAt'),
});

const toStatus = (item: Item): StatusRecord => ({
  network: str(item, 'network'),
  node: str(item, 'node'),
  status: JSON.parse(str(item, 'status')) as StatusRecord['status'],
  updatedAt: str(item, 'updatedAt'),
});

const toRouteStatus = (item: Item): RouteStatusRecord => ({
  network: str(item, 'network'),
  node: str(item, 'node'),
  state: str(item, 'state') as RouteStatusRecord['state'],
  reason: str(item, 'reason'),
  updatedAt: str(item, 'updatedAt'),
});

const byNetworkNode = (a: { network: string; node: string }, b: { network: string; node: string }) =>
  a.network < b.network ? -1 : a.network > b.network ? 1 : a.node < b.node ? -1 : a.node > b.node ? 1 : 0;
const byNode = (a: Lease, b: Lease) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0);

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Full jitter: writers that collided once spread out instead of colliding again. */
function jitter(attempt: number, base = BACKOFF_BASE_MS, cap = BACKOFF_CAP_MS): number {
  return Math.random() * Math.min(cap, base * 2 ** attempt);
}

function errorName(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null ? (e as { name?: string }).name : undefined;
}

const cancellationCodes = (e: unknown): string[] =>
  errorName(e) === 'TransactionCanceledException' ? ((e as { CancellationReasons?: { Code?: string }[] }).CancellationReasons ?? []).map((r) => r.Code ?? 'None') : [];

/**
 * DynamoDB refused the call for throughput: a partition key past its rate
 * (on-demand tables answer ThrottlingException; provisioned ones
 * ProvisionedThroughputExceededException), the account's request quota, or
 * a transaction cancelled because one of its items was throttled. Nothing
 * was written; the same call may be sent again.
 */
export function isThrottled(e: unknown): boolean {
  const name = errorName(e);
  if (name === 'ThrottlingException' || name === 'ProvisionedThroughputExceededException' || name === 'RequestLimitExceeded') return true;
  const codes = cancellationCodes(e);
  return codes.some((c) => c === 'ThrottlingError' || c === 'ProvisionedThroughputExceeded') && !codes.includes('ConditionalCheckFailed');
}

/** What each item of a lease transaction is, to read its cancellation reason. */
type Role = 'lease' | 'claim' | 'release' | 'network' | 'change';

/** How a cancelled lease transaction should be answered. */
type Outcome = { kind: 'lease' } | { kind: 'claim' } | { kind: 'release' } | { kind: 'retry' };

function classifyCancellation(e: unknown, roles: Role[]): Outcome | undefined {
  if (errorName(e) !== 'TransactionCanceledException') return undefined;
  const reasons = (e as { CancellationReasons?: { Code?: string }[] }).CancellationReasons ?? [];
  const failed = (role: Role) => reasons.some((r, i) => roles[i] === role && r.Code === 'ConditionalCheckFailed');
  // Order matters: the caller's own conflicts first; a busy network only
  // matters when nothing the caller asked about is wrong.
  if (failed('lease')) return { kind: 'lease' };
  if (failed('claim')) return { kind: 'claim' };
  if (failed('release')) return { kind: 'release' };
  const known = new Set(['None', 'ConditionalCheckFailed', 'TransactionConflict']);
  // Throttling past the retries, or a validation error inside the transaction, is not a race.
  if (reasons.some((r) => !known.has(r.Code ?? 'None'))) return undefined;
  return { kind: 'retry' };
}

/** A network's items of one kind, read shard by shard in node order: the cursor of one shard in a merge. */
interface ShardCursor {
  pk: string;
  buffer: Item[];
  start?: Item;
  done: boolean;
}

export class DynamoStore implements Store {
  private readonly client: DynamoDBClient;
  private readonly ownsClient: boolean;
  private readonly table: string;
  private readonly ttlGrace: number;
  private readonly maxAttempts: number;
  private readonly throttleAttempts: number;
  private layout?: Promise<void>;
  private readonly sleep: (ms: number) => Promise<void>;
  /** Calls DynamoDB throttled that this store sent again (after the SDK's own retries). */
  throttledCalls = 0;

  constructor(opts: DynamoStoreOptions) {
    this.table = opts.tableName;
    this.ownsClient = !opts.client;
    this.client = opts.client ?? new DynamoDBClient(opts.clientConfig ?? {});
    this.ttlGrace = opts.ttlGraceSeconds ?? DEFAULT_TTL_GRACE_SECONDS;
    this.maxAttempts = opts.maxWriteAttempts ?? DEFAULT_WRITE_ATTEMPTS;
    this.throttleAttempts = opts.maxThrottleAttempts ?? DEFAULT_THROTTLE_ATTEMPTS;
    if (opts.checkLayout === false) this.layout = Promise.resolve();
    this.sleep = opts.sleep ?? sleep;
  }

  // ---- helpers ----

  /**
   * One DynamoDB call, sent again while it is throttled. The call is a
   * function so each send is a new request (a transaction gets a new
   * idempotency token: the throttled one was never applied).
   */
  private async call<T>(send: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await send();
      } catch (e) {
        if (!isThrottled(e) || attempt + 1 >= this.throttleAttempts) throw e;
        this.throttledCalls++;
        await this.sleep(jitter(attempt, THROTTLE_BASE_MS, THROTTLE_CAP_MS));
      }
    }
  }

  /**
   * Refuses a table in an older item layout (it would look empty, and a join
   * could take a subnet an unmoved lease holds). Checked once per store; a
   * table with no network yet gets the layout item.
   */
  private ready(): Promise<void> {
    this.layout ??= this.checkLayout().catch((e: unknown) => {
      this.layout = undefined;
      throw e;
    });
    return this.layout;
  }

  private async checkLayout(): Promise<void> {
    const version = (await this.getItem(LAYOUT_KEY))?.version?.N;
    if (version !== undefined) {
      if (Number(version) === LAYOUT_VERSION) return;
      throw new Error(`table ${this.table} holds twill's item layout ${version}, and this twill reads layout ${LAYOUT_VERSION}: deploy the twill that wrote it, or a newer one`);
    }
    const r = await this.call(() => this.client.send(new QueryCommand({
      TableName: this.table, IndexName: GSI1, KeyConditionExpression: 'gsi1pk = :p', ExpressionAttributeValues: { ':p': S('NETWORKS') }, Limit: 1,
    })));
    if ((r.Items ?? []).length > 0) {
      throw new Error(`table ${this.table} holds networks in the item layout of an earlier twill (no layout item): migrate it once with \`node --import tsx cli/migrate-table.ts --table ${this.table}\` (docs/serverless.md, "a table from an earlier twill")`);
    }
    // A new table. The mark is a convenience (the next cold start skips the
    // query), so a function not allowed to write it (the node API) goes on.
    await this.client.send(new PutItemCommand({ TableName: this.table, Item: layoutItem(), ConditionExpression: 'attribute_not_exists(pk)' })).catch(() => {});
  }

  private async getItem(k: Key): Promise<Item | undefined> {
    const r = await this.call(() => this.client.send(new GetItemCommand({ TableName: this.table, Key: k, ConsistentRead: true })));
    return r.Item;
  }

  private async query(input: Omit<QueryCommandInput, 'TableName' | 'ExclusiveStartKey'>): Promise<Item[]> {
    const out: Item[] = [];
    let start: Item | undefined;
    do {
      const r = await this.call(() => this.client.send(new QueryCommand({ ...input, TableName: this.table, ExclusiveStartKey: start })));
      out.push(...(r.Items ?? []));
      start = r.LastEvaluatedKey;
    } while (start);
    return out;
  }

  /**
   * One consistent Query of a partition, for the items whose sort key has
   * this prefix. A projection saves bytes on the wire, not capacity:
   * DynamoDB charges a Query for the whole items it reads.
   */
  private queryPartition(pk: string, prefix: string, projection?: string): Promise<Item[]> {
    return this.query({
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
      ExpressionAttributeValues: { ':pk': S(pk), ':prefix': S(prefix) },
      ...(projection ? { ProjectionExpression: projection } : {}),
      ConsistentRead: true,
    });
  }

  /** The same query on every shard of a kind, in parallel. */
  private async queryShards(pkOf: (network: string, shard: number) => string, network: string, prefix: string, projection?: string): Promise<Item[]> {
    return (await Promise.all(SHARD_LIST.map((s) => this.queryPartition(pkOf(network, s), prefix, projection)))).flat();
  }

  /** Keys of an index partition (eventually consistent: GSIs have no other kind). */
  private async indexKeys(gsi1pk: string, below?: string): Promise<Key[]> {
    const items = await this.query({
      IndexName: GSI1,
      KeyConditionExpression: below === undefined ? 'gsi1pk = :p' : 'gsi1pk = :p AND gsi1sk < :below',
      ExpressionAttributeValues: { ':p': S(gsi1pk), ...(below === undefined ? {} : { ':below': S(below) }) },
    });
    return items.map((i) => ({ pk: i.pk!, sk: i.sk! }));
  }

  /** Reads items back consistently, so a list reflects every write that returned. */
  private async batchGet(keys: Key[]): Promise<Item[]> {
    const out: Item[] = [];
    for (let i = 0; i < keys.length; i += BATCH_GET_LIMIT) {
      let pending: Key[] = keys.slice(i, i + BATCH_GET_LIMIT);
      for (let attempt = 0; pending.length > 0; attempt++) {
        // Keys left unprocessed were throttled (or over the answer's 16 MB): wait as for a throttle.
        if (attempt > 0) await this.sleep(jitter(attempt - 1, THROTTLE_BASE_MS, THROTTLE_CAP_MS));
        if (attempt > 20) throw new Error(`DynamoDB left ${pending.length} keys unprocessed after ${attempt} tries of BatchGetItem`);
        const keysNow = pending;
        const r = await this.call(() => this.client.send(new BatchGetItemCommand({ RequestItems: { [this.table]: { Keys: keysNow, ConsistentRead: true } } })));
        out.push(...(r.Responses?.[this.table] ?? []));
        pending = (r.UnprocessedKeys?.[this.table]?.Keys as Key[] | undefined) ?? [];
      }
    }
    return out;
  }

  private async listIndexed(gsi1pk: string): Promise<Item[]> {
    return this.batchGet(await this.indexKeys(gsi1pk));
  }

  private leaseItem(lease: Lease): Item {
    const item: Item = {
      ...leaseKey(lease.network, lease.node),
      node: S(lease.node),
      revision: N(lease.revision),
      lease: S(JSON.stringify(lease)),
    };
    if (lease.expiresAt !== null) {
      const ms = Date.parse(lease.expiresAt);
      Object.assign(item, this.expiryAttributes(ms), { gsi1pk: S(expiryPkOf(lease.network, shardOf(lease.node))), gsi1sk: S(`${expiryKey(ms)}#${lease.node}`) });
    }
    return item;
  }

  /** expiresMs is what a delete at expiry is conditioned on; ttl follows it. */
  private expiryAttributes(ms: number): Item {
    return { expiresMs: N(ms), [TTL_ATTRIBUTE]: N(Math.ceil(ms / 1000) + this.ttlGrace) };
  }

  /** The network item update of a lease write: conditioned on the revision read. */
  private networkUpdate(network: string, read: NetworkRecord, revision: number, count: number, hash: bigint): TransactWriteItem {
    return {
      Update: {
        TableName: this.table,
        Key: key(netPk(network), NETWORK_SK),
        UpdateExpression: 'SET #rev = :rev, #count = :count, #hash = :hash, #updated = :updated',
        ConditionExpression: '#rev = :read',
        ExpressionAttributeNames: { '#rev': 'revision', '#count': 'leaseCount', '#hash': 'leaseHash', '#updated': 'updatedAt' },
        ExpressionAttributeValues: {
          ':rev': N(revision),
          ':count': N(count),
          ':hash': S(digestHex(hash)),
          ':updated': S(new Date().toISOString()),
          ':read': N(read.revision),
        },
      },
    };
  }

  private changePut(network: string, change: Change): TransactWriteItem {
    return {
      Put: {
        TableName: this.table,
        Item: { ...key(changePk(network), changeSk(change.revision)), change: S(JSON.stringify(change)), [TTL_ATTRIBUTE]: N(Math.ceil((Date.now() + CHANGE_RETENTION_MS) / 1000)) },
      },
    };
  }

  async changesSince(network: string, after: number, limit: number): Promise<ChangesSince | undefined> {
    const net = await this.getNetwork(network);
    if (!net) return undefined;
    const rows: Change[] = [];
    let start: Item | undefined;
    // (BETWEEN refuses an empty range, as DynamoDB does)
    if (after < net.revision) do {
      const from = start;
      const r = await this.call(() => this.client.send(new QueryCommand({
        TableName: this.table,
        KeyConditionExpression: 'pk = :pk AND sk BETWEEN :from AND :to',
        ExpressionAttributeValues: { ':pk': S(changePk(network)), ':from': S(changeSk(after + 1)), ':to': S(changeSk(net.revision)) },
        ConsistentRead: true,
        Limit: limit + 1 - rows.length,
        ExclusiveStartKey: from,
      })));
      for (const item of r.Items ?? []) rows.push(JSON.parse(str(item, 'change')) as Change);
      start = r.LastEvaluatedKey;
    } while (start && rows.length < limit + 1);
    return changeRun(after, net.revision, rows, limit);
  }

  private claimPut(network: string, sk: string, node: string): TransactWriteItem {
    return {
      Put: {
        TableName: this.table,
        Item: { ...key(claimPk(network, sk), sk), node: S(node) },
        ConditionExpression: 'attribute_not_exists(pk)',
      },
    };
  }

  /** Never releases another node's claim; one already gone is no reason to block the write. */
  private claimDelete(network: string, sk: string, node: string): TransactWriteItem {
    return {
      Delete: {
        TableName: this.table,
        Key: key(claimPk(network, sk), sk),
        ConditionExpression: 'attribute_not_exists(pk) OR #node = :node',
        ExpressionAttributeNames: { '#node': 'node' },
        ExpressionAttributeValues: { ':node': S(node) },
      },
    };
  }

  private async transact(items: TransactWriteItem[]): Promise<void> {
    await this.call(() => this.client.send(new TransactWriteItemsCommand({ TransactItems: items })));
  }

  // ---- networks ----

  async getNetwork(name: string): Promise<NetworkRecord | undefined> {
    await this.ready();
    const item = await this.getItem(key(netPk(name), NETWORK_SK));
    return item && toNetwork(item);
  }

  async listNetworks(): Promise<NetworkRecord[]> {
    await this.ready();
    return (await this.listIndexed('NETWORKS')).map(toNetwork).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async putNetwork(name: string, config: NetConf, expectedRevision: number | undefined): Promise<NetworkRecord> {
    await this.ready();
    const now = new Date().toISOString();
    const conflict = () =>
      new ConflictError(`network ${name} changed meanwhile (expected ${expectedRevision === undefined ? 'no network' : `revision ${expectedRevision}`})`);
    let rec: NetworkRecord;
    let write: TransactWriteItem;
    if (expectedRevision === undefined) {
      const item: Item = {
        ...key(netPk(name), NETWORK_SK),
        gsi1pk: S('NETWORKS'),
        gsi1sk: S(name),
        name: S(name),
        config: S(JSON.stringify(config)),
        revision: N(1),
        leaseCount: N(0),
        leaseHash: S(digestHex(0n)),
        updatedAt: S(now),
      };
      rec = toNetwork(item);
      write = { Put: { TableName: this.table, Item: item, ConditionExpression: 'attribute_not_exists(pk)' } };
    } else {
      // The condition keeps this read true at the write, lease count and hash included.
      const cur = await this.getNetwork(name);
      if (!cur || cur.revision !== expectedRevision) throw conflict();
      rec = { ...cur, config, revision: expectedRevision + 1, updatedAt: now };
      // Only config and revision: the lease count and hash belong to the lease writes.
      write = {
        Update: {
          TableName: this.table,
          Key: key(netPk(name), NETWORK_SK),
          UpdateExpression: 'SET #config = :config, #rev = :rev, #updated = :updated',
          ConditionExpression: '#rev = :expected',
          ExpressionAttributeNames: { '#config': 'config', '#rev': 'revision', '#updated': 'updatedAt' },
          ExpressionAttributeValues: { ':config': S(JSON.stringify(config)), ':rev': N(rec.revision), ':updated': S(now), ':expected': N(expectedRevision) },
        },
      };
    }
    try {
      await this.transact([write, this.changePut(name, { revision: rec.revision, config: true })]);
      return rec;
    } catch (e) {
      // The network's condition failed or another transaction crossed it: the caller reads again.
      if (classifyCancellation(e, ['network', 'change'])) throw conflict();
      throw e;
    }
  }

  // ---- leases ----

  async getLease(network: string, node: string): Promise<Lease | undefined> {
    await this.ready();
    const item = await this.getItem(leaseKey(network, node));
    return item && toLease(item);
  }

  async listLeases(network: string): Promise<Lease[]> {
    await this.ready();
    return (await this.queryShards(leasePkOf, network, LEASE_PREFIX)).map(toLease).sort(byNode);
  }

  /**
   * A page of leases by node name: a merge of the shards, each read a little
   * past its share of the page at a time, so a page costs about what one
   * partition's page would (each Query rounds up to 4 KB, once per shard).
   */
  async listLeasesPage(network: string, after: string | undefined, limit: number): Promise<Lease[]> {
    await this.ready();
    const chunk = Math.ceil(limit / SHARDS) + 8;
    const cursors: ShardCursor[] = SHARD_LIST.map((s) => ({ pk: leasePkOf(network, s), buffer: [], done: false }));
    const fill = async (c: ShardCursor) => {
      const r = await this.call(() => this.client.send(new QueryCommand({
        TableName: this.table,
        // Node names are printable ASCII, so the page runs from just past `after` to the end of LEASE#.
        KeyConditionExpression: 'pk = :pk AND sk BETWEEN :from AND :to',
        ExpressionAttributeValues: { ':pk': S(c.pk), ':from': S(`${LEASE_PREFIX}${after ?? ''}\u0001`), ':to': S(`${LEASE_PREFIX}\u007f`) },
        ConsistentRead: true,
        Limit: chunk,
        ExclusiveStartKey: c.start,
      })));
      c.buffer.push(...(r.Items ?? []));
      c.start = r.LastEvaluatedKey;
      c.done = !r.LastEvaluatedKey;
    };
    const out: Lease[] = [];
    while (out.length < limit) {
      // A shard whose buffer ran dry may hold the next node: read on before choosing.
      await Promise.all(cursors.filter((c) => !c.done && c.buffer.length === 0).map(fill));
      let next: ShardCursor | undefined;
      for (const c of cursors) if (c.buffer.length && (!next || str(c.buffer[0]!, 'sk') < str(next.buffer[0]!, 'sk'))) next = c;
      if (!next) break;
      out.push(toLease(next.buffer.shift()!));
    }
    return out;
  }

  async takenSubnets(network: string): Promise<TakenSubnets> {
    await this.ready();
    const taken: TakenSubnets = { v4: [], v6: [] };
    for (const item of await this.queryShards(claimPkOf, network, CLAIM_PREFIX, 'sk')) {
      const [, family, hex] = str(item, 'sk').split('#');
      (family === '4' ? taken.v4 : taken.v6).push(BigInt('0x' + hex));
    }
    const ascending = (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0);
    taken.v4.sort(ascending);
    taken.v6.sort(ascending);
    return taken;
  }

  createLease(lease: NewLease): Promise<Lease> {
    return this.writeLease(lease, undefined);
  }

  replaceLease(lease: NewLease, expectedRevision: number): Promise<Lease> {
    return this.writeLease(lease, expectedRevision);
  }

  private async writeLease(lease: NewLease, expectedRevision: number | undefined): Promise<Lease> {
    await this.ready();
    const replacing = expectedRevision !== undefined;
    const next = claimKeys(lease);
    for (let attempt = 0; ; attempt++) {
      const net = await this.getNetwork(lease.network);
      if (!net) throw new NotFoundError(`network ${lease.network} does not exist`);
      let prev: Lease | undefined;
      if (replacing) {
        prev = await this.getLease(lease.network, lease.node);
        if (!prev || prev.revision !== expectedRevision) {
          throw new ConflictError(`lease of node ${lease.node} in network ${lease.network} changed meanwhile`);
        }
      }
      const revision = net.revision + 1;
      let hash = BigInt('0x' + net.leaseHash);
      if (prev) hash ^= leaseDigest(prev.node, prev.revision);
      hash ^= leaseDigest(lease.node, revision);
      const full: Lease = { ...lease, revision };

      const items: TransactWriteItem[] = [];
      const roles: Role[] = [];
      const add = (role: Role, item: TransactWriteItem) => { roles.push(role); items.push(item); };
      add('lease', {
        Put: {
          TableName: this.table,
          Item: this.leaseItem(full),
          ...(prev
            ? { ConditionExpression: '#rev = :expected', ExpressionAttributeNames: { '#rev': 'revision' }, ExpressionAttributeValues: { ':expected': N(prev.revision) } }
            : { ConditionExpression: 'attribute_not_exists(pk)' }),
        },
      });
      const old = prev ? claimKeys(prev) : {};
      for (const fam of ['v4', 'v6'] as const) {
        // An unchanged subnet keeps its claim: a transaction may touch an item only once.
        if (old[fam] === next[fam]) continue;
        if (old[fam]) add('release', this.claimDelete(lease.network, old[fam], lease.node));
        if (next[fam]) add('claim', this.claimPut(lease.network, next[fam], lease.node));
      }
      add('network', this.networkUpdate(lease.network, net, revision, net.leaseCount + (prev ? 0 : 1), hash));
      add('change', this.changePut(lease.network, { revision, node: lease.node, lease: full }));

      try {
        await this.transact(items);
        return full;
      } catch (e) {
        const outcome = classifyCancellation(e, roles);
        if (!outcome) throw e;
        if (outcome.kind === 'lease') {
          throw new ConflictError(replacing
            ? `lease of node ${lease.node} in network ${lease.network} changed meanwhile`
            : `node ${lease.node} already holds a lease in network ${lease.network}`);
        }
        if (outcome.kind === 'claim') {
          throw new ConflictError(`subnet ${[lease.subnet, lease.ipv6Subnet].filter(Boolean).join(' or ')} of network ${lease.network} is already leased`);
        }
        if (outcome.kind === 'release') {
          throw new Error(`store inconsistent: a subnet claim of node ${lease.node} in network ${lease.network} belongs to another node`);
        }
        if (attempt + 1 >= this.maxAttempts) {
          throw new ConflictError(`network ${lease.network} kept changing: ${this.maxAttempts} tries to write the lease of ${lease.node} lost to other writes`);
        }
        await this.sleep(jitter(attempt));
      }
    }
  }

  async renewLease(network: string, node: string, revision: number, expiresAt: string): Promise<Lease | undefined> {
    const prev = await this.getLease(network, node);
    if (!prev || prev.revision !== revision || prev.expiresAt === null) return undefined;
    const full: Lease = { ...prev, expiresAt };
    const attrs = this.expiryAttributes(Date.parse(expiresAt));
    try {
      // One item, no transaction, no index key: neither the network item nor gsi1 is touched.
      await this.call(() => this.client.send(new UpdateItemCommand({
        TableName: this.table,
        Key: leaseKey(network, node),
        UpdateExpression: 'SET #lease = :lease, #exp = :exp, #ttl = :ttl',
        ConditionExpression: '#rev = :rev',
        ExpressionAttributeNames: { '#lease': 'lease', '#exp': 'expiresMs', '#ttl': TTL_ATTRIBUTE, '#rev': 'revision' },
        ExpressionAttributeValues: { ':lease': S(JSON.stringify(full)), ':exp': attrs.expiresMs!, ':ttl': attrs[TTL_ATTRIBUTE]!, ':rev': N(revision) },
      })));
      return full;
    } catch (e) {
      if (errorName(e) === 'ConditionalCheckFailedException') return undefined;
      throw e;
    }
  }

  async deleteLease(network: string, node: string, expectedRevision?: number, expiredBy?: number): Promise<{ lease: Lease; revision: number } | undefined> {
    for (let attempt = 0; ; attempt++) {
      const prev = await this.getLease(network, node);
      if (!prev || (expectedRevision !== undefined && prev.revision !== expectedRevision)) return undefined;
      if (expiredBy !== undefined && (prev.expiresAt === null || Date.parse(prev.expiresAt) > expiredBy)) return undefined;
      const net = await this.getNetwork(network);
      if (!net) throw new NotFoundError(`network ${network} does not exist`);
      const revision = net.revision + 1;
      const hash = BigInt('0x' + net.leaseHash) ^ leaseDigest(prev.node, prev.revision);

      const items: TransactWriteItem[] = [];
      const roles: Role[] = [];
      const add = (role: Role, item: TransactWriteItem) => { roles.push(role); items.push(item); };
      add('lease', {
        Delete: {
          TableName: this.table,
          Key: leaseKey(network, node),
          // At expiry, also on the expiry read: a renewal meanwhile moves it but not the revision.
          ConditionExpression: expiredBy === undefined ? '#rev = :expected' : '#rev = :expected AND (attribute_not_exists(#exp) OR #exp <= :by)',
          ExpressionAttributeNames: { '#rev': 'revision', ...(expiredBy !== undefined && { '#exp': 'expiresMs' }) },
          ExpressionAttributeValues: { ':expected': N(prev.revision), ...(expiredBy !== undefined && { ':by': N(expiredBy) }) },
        },
      });
      const claims = claimKeys(prev);
      for (const sk of [claims.v4, claims.v6]) if (sk) add('release', this.claimDelete(network, sk, node));
      add('network', this.networkUpdate(network, net, revision, net.leaseCount - 1, hash));
      add('change', this.changePut(network, { revision, node, lease: null }));

      try {
        await this.transact(items);
        return { lease: prev, revision };
      } catch (e) {
        const outcome = classifyCancellation(e, roles);
        if (!outcome) throw e;
        if (outcome.kind === 'release') {
          throw new Error(`store inconsistent: a subnet claim of node ${node} in network ${network} belongs to another node`);
        }
        if (attempt + 1 >= this.maxAttempts) {
          throw new ConflictError(`network ${network} kept changing: ${this.maxAttempts} tries to delete the lease of ${node} lost to other writes`);
        }
        // A changed lease is read again at once (with an expected revision,
        // that read answers "changed meanwhile"); a busy network waits a little.
        if (outcome.kind === 'retry') await this.sleep(jitter(attempt));
      }
    }
  }

  async listExpired(now: number): Promise<Lease[]> {
    await this.ready();
    // A query per lease shard of each network on the expiry index rather than
    // one index partition for every lease: index keys have a partition's rates too.
    // DynamoDB's TTL is never relied on (it is lazy, and set a week late).
    const below = expiryKey(now + 1);
    const keys: Key[] = [];
    for (const net of await this.indexKeys('NETWORKS')) {
      const name = net.pk.S!.slice('NET#'.length);
      keys.push(...(await Promise.all(SHARD_LIST.map((s) => this.indexKeys(expiryPkOf(name, s), below)))).flat());
    }
    // The index may lag a write, and holds the expiry a lease was indexed
    // with, not a later renewal's: the consistent read decides.
    const expired: Lease[] = [];
    const renewed: Item[] = [];
    for (const item of await this.batchGet(keys)) {
      const lease = toLease(item);
      if (isExpired(lease, now)) expired.push(lease);
      else if (lease.expiresAt !== null) renewed.push(item);
    }
    for (let i = 0; i < renewed.length; i += REINDEX_CONCURRENCY) await Promise.all(renewed.slice(i, i + REINDEX_CONCURRENCY).map((item) => this.reindexExpiry(item)));
    return expired.sort((a, b) => Date.parse(a.expiresAt!) - Date.parse(b.expiresAt!));
  }

  /**
   * Moves a renewed lease's index key to the expiry it now has; a lease
   * renewed or rewritten meanwhile keeps its key (the next sweep sees it).
   */
  private async reindexExpiry(item: Item): Promise<void> {
    const lease = toLease(item);
    await this.call(() => this.client.send(new UpdateItemCommand({
      TableName: this.table,
      Key: { pk: item.pk!, sk: item.sk! },
      UpdateExpression: 'SET gsi1sk = :sk',
      ConditionExpression: '#exp = :exp AND #rev = :rev',
      ExpressionAttributeNames: { '#exp': 'expiresMs', '#rev': 'revision' },
      ExpressionAttributeValues: { ':sk': S(`${expiryKey(num(item, 'expiresMs'))}#${lease.node}`), ':exp': item.expiresMs!, ':rev': item.revision! },
    }))).catch((e: unknown) => {
      if (errorName(e) !== 'ConditionalCheckFailedException') throw e;
    });
  }

  // ---- nodes ----

  async putNode(node: NodeRecord): Promise<void> {
    // createdAt is kept from the first put, as the SQLite store does.
    await this.call(() => this.client.send(new UpdateItemCommand({
      TableName: this.table,
      Key: key(nodePk(node.name), NODE_SK),
      UpdateExpression: 'SET #name = :name, #network = :network, #hash = :hash, #created = if_not_exists(#created, :created), gsi1pk = :g, gsi1sk = :name',
      ExpressionAttributeNames: { '#name': 'name', '#network': 'network', '#hash': 'passwordHash', '#created': 'createdAt' },
      ExpressionAttributeValues: { ':name': S(node.name), ':network': S(node.network), ':hash': S(node.passwordHash), ':created': S(node.createdAt), ':g': S('NODES') },
    })));
  }

  async getNode(name: string): Promise<NodeRecord | undefined> {
    const item = await this.getItem(key(nodePk(name), NODE_SK));
    return item && toNode(item);
  }

  async listNodes(): Promise<NodeRecord[]> {
    return (await this.listIndexed('NODES')).map(toNode).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async deleteNode(name: string): Promise<boolean> {
    const r = await this.call(() => this.client.send(new DeleteItemCommand({ TableName: this.table, Key: key(nodePk(name), NODE_SK), ReturnValues: 'ALL_OLD' })));
    return r.Attributes !== undefined;
  }

  // ---- status ----

  async putStatus(rec: StatusRecord): Promise<void> {
    await this.ready();
    const state = agentState(rec.status);
    const k = statusKey(rec.network, rec.node);
    const item: Item = {
      ...k,
      network: S(rec.network),
      node: S(rec.node),
      status: S(JSON.stringify(rec.status)),
      agent: S(state),
      updatedAt: S(rec.updatedAt),
    };
    const names = { '#agent': 'agent' };
    for (let attempt = 0; ; attempt++) {
      // Most statuses keep the node's state (a newer revision, other errors):
      // one conditional put, and the counts stay as they are.
      try {
        await this.call(() => this.client.send(new PutItemCommand({
          TableName: this.table, Item: item, ConditionExpression: '#agent = :state', ExpressionAttributeNames: names, ExpressionAttributeValues: { ':state': S(state) },
        })));
        return;
      } catch (e) {
        if (errorName(e) !== 'ConditionalCheckFailedException') throw e;
      }
      // A new node, or a new state: the status and its shard's counts move together, from the state read.
      const was = (await this.getItem(k))?.agent?.S as AgentState | undefined;
      if (was === state) continue;
      try {
        await this.transact([
          {
            Put: {
              TableName: this.table,
              Item: item,
              ...(was
                ? { ConditionExpression: '#agent = :was', ExpressionAttributeNames: names, ExpressionAttributeValues: { ':was': S(was) } }
                : { ConditionExpression: 'attribute_not_exists(pk)' }),
            },
          },
          {
            Update: {
              TableName: this.table,
              Key: key(k.pk.S!, AGENTS_SK),
              UpdateExpression: was ? 'ADD #now :one, #was :less' : 'ADD #now :one',
              ExpressionAttributeNames: { '#now': state, ...(was && { '#was': was }) },
              ExpressionAttributeValues: { ':one': N(1), ...(was && { ':less': N(-1) }) },
            },
          },
        ]);
        return;
      } catch (e) {
        // Another status of this node landed between the read and the write: read it again.
        const codes = cancellationCodes(e);
        if (!codes.some((c) => c === 'ConditionalCheckFailed' || c === 'TransactionConflict')) throw e;
        if (attempt + 1 >= this.maxAttempts) throw new ConflictError(`status of node ${rec.node} in network ${rec.network} kept changing: ${this.maxAttempts} tries lost to other writes`);
        await this.sleep(jitter(attempt));
      }
    }
  }

  async listStatus(network?: string): Promise<StatusRecord[]> {
    await this.ready();
    const names = network === undefined ? (await this.listNetworks()).map((n) => n.name) : (await this.getNetwork(network)) ? [network] : [];
    const items = (await Promise.all(names.map((n) => this.queryShards(statusPkOf, n, STATUS_PREFIX)))).flat();
    return items.map(toStatus).sort(byNetworkNode);
  }

  async agentCounts(network: string): Promise<AgentCounts> {
    await this.ready();
    const counts = noAgents();
    for (const item of await this.batchGet(SHARD_LIST.map((s) => key(statusPkOf(network, s), AGENTS_SK)))) {
      for (const state of AGENT_STATES) counts[state] += Number(item[state]?.N ?? 0);
    }
    return counts;
  }

  async putRouteStatus(rec: RouteStatusRecord): Promise<void> {
    await this.ready();
    await this.call(() => this.client.send(new PutItemCommand({
      TableName: this.table,
      Item: {
        ...key(netPk(rec.network), ROUTE_PREFIX + rec.node),
        gsi1pk: S('ROUTES'),
        gsi1sk: S(`${rec.network}#${rec.node}`),
        network: S(rec.network),
        node: S(rec.node),
        state: S(rec.state),
        reason: S(rec.reason),
        updatedAt: S(rec.updatedAt),
      },
    })));
  }

  async deleteRouteStatus(network: string, node: string): Promise<void> {
    await this.ready();
    await this.call(() => this.client.send(new DeleteItemCommand({ TableName: this.table, Key: key(netPk(network), ROUTE_PREFIX + node) })));
  }

  async listRouteStatus(network?: string): Promise<RouteStatusRecord[]> {
    await this.ready();
    const items = network === undefined ? await this.listIndexed('ROUTES') : await this.queryPartition(netPk(network), ROUTE_PREFIX);
    return items.map(toRouteStatus).sort(byNetworkNode);
  }

  async putRouteTables(rec: RouteTablesRecord): Promise<void> {
    await this.ready();
    await this.call(() => this.client.send(new PutItemCommand({
      TableName: this.table,
      Item: { ...key(netPk(rec.network), ROUTE_TABLES_SK), tables: S(JSON.stringify(rec.tables)), updatedAt: S(rec.updatedAt) },
    })));
  }

  async getRouteTables(network: string): Promise<RouteTablesRecord | undefined> {
    await this.ready();
    const item = await this.getItem(key(netPk(network), ROUTE_TABLES_SK));
    return item && { network, tables: JSON.parse(str(item, 'tables')) as RouteTablesRecord['tables'], updatedAt: str(item, 'updatedAt') };
  }

  async deleteNetwork(name: string): Promise<boolean> {
    const net = await this.getNetwork(name);
    if (!net) return false;
    if (net.leaseCount > 0) throw new ConflictError(`network ${name} still holds ${net.leaseCount} lease(s)`);
    // Every lease write moves the revision: conditioned on the one read, a
    // lease taken meanwhile keeps the network, and no lease can be written
    // once its network item is gone (their updates are conditioned on it).
    try {
      await this.call(() => this.client.send(new DeleteItemCommand({
        TableName: this.table,
        Key: key(netPk(name), NETWORK_SK),
        ConditionExpression: '#rev = :rev',
        ExpressionAttributeNames: { '#rev': 'revision' },
        ExpressionAttributeValues: { ':rev': N(net.revision) },
      })));
    } catch (e) {
      if ((e as { name?: string }).name === 'ConditionalCheckFailedException') throw new ConflictError(`network ${name} changed meanwhile: try again`);
      throw e;
    }
    // What is left under its keys: changes, statuses and their counts, route statuses and tables.
    const keys = (await Promise.all(networkPks(name).map((pk) => this.queryPartition(pk, '', 'pk, sk')))).flat().map((i) => ({ pk: i.pk!, sk: i.sk! }));
    for (let i = 0; i < keys.length; i += BATCH_WRITE_LIMIT) {
      let pending = keys.slice(i, i + BATCH_WRITE_LIMIT).map((k) => ({ DeleteRequest: { Key: k } }));
      for (let attempt = 0; pending.length > 0; attempt++) {
        if (attempt > 0) await this.sleep(jitter(attempt));
        if (attempt > 20) throw new Error(`DynamoDB left ${pending.length} deletes unprocessed after ${attempt} tries of BatchWriteItem`);
        const batch = pending;
        const r = await this.call(() => this.client.send(new BatchWriteItemCommand({ RequestItems: { [this.table]: batch } })));
        pending = (r.UnprocessedItems?.[this.table] ?? []) as typeof pending;
      }
    }
    return true;
  }

  // ---- locks ----
  // One item per lock name, in a partition of its own (LOCK#<name> / LOCK),
  // apart from the network and node items: owner, expiresMs (epoch ms) and
  // ttl. Taking it is one conditional PutItem (free, expired, or already
  // the owner's); releasing it one DeleteItem conditioned on the owner. A
  // refused take reads the item back (a read, not a write) to say who holds
  // it until when. Expiry is judged by the writer's clock: Lambda's clocks
  // are synchronized, and a lock's ttl is minutes against their
  // milliseconds of skew. `ttl` lets DynamoDB delete the item of a lock
  // nobody takes any more (a VPC gone) a day after it expired.

  async tryLock(name: string, owner: string, ttlMs: number, now = Date.now()): Promise<LockResult> {
    checkLockArgs(name, owner, ttlMs);
    const expiresAt = now + ttlMs;
    try {
      await this.client.send(new PutItemCommand({
        TableName: this.table,
        Item: {
          ...key(lockPk(name), LOCK_SK),
          owner: S(owner),
          expiresMs: N(expiresAt),
          [TTL_ATTRIBUTE]: N(Math.ceil(expiresAt / 1000) + LOCK_TTL_GRACE_SECONDS),
        },
        ConditionExpression: 'attribute_not_exists(pk) OR expiresMs <= :now OR #owner = :owner',
        ExpressionAttributeNames: { '#owner': 'owner' },
        ExpressionAttributeValues: { ':now': N(now), ':owner': S(owner) },
      }));
      return { acquired: true, expiresAt };
    } catch (e) {
      if (errorName(e) !== 'ConditionalCheckFailedException') throw e;
    }
    const held = await this.getItem(key(lockPk(name), LOCK_SK));
    // Released between the two calls: free now, the caller's next try takes it.
    return { acquired: false, owner: held?.owner?.S ?? '', expiresAt: held?.expiresMs?.N ? Number(held.expiresMs.N) : now };
  }

  async unlock(name: string, owner: string): Promise<boolean> {
    checkLockArgs(name, owner);
    try {
      await this.client.send(new DeleteItemCommand({
        TableName: this.table,
        Key: key(lockPk(name), LOCK_SK),
        ConditionExpression: '#owner = :owner',
        ExpressionAttributeNames: { '#owner': 'owner' },
        ExpressionAttributeValues: { ':owner': S(owner) },
      }));
      return true;
    } catch (e) {
      if (errorName(e) === 'ConditionalCheckFailedException') return false;
      throw e;
    }
  }

  async close(): Promise<void> {
    if (this.ownsClient) this.client.destroy();
  }
}

const lockPk = (name: string) => `LOCK#${name}`;
const LOCK_SK = 'LOCK';
const LOCK_TTL_GRACE_SECONDS = 24 * 3600;
