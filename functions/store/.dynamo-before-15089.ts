// The store on DynamoDB, for the serverless deployment: many function
// invocations write at once, so every multi-item change is one
// TransactWriteItems whose conditions make a lost race fail whole.
//
// ## Item layout (one table, string keys `pk`/`sk`, one sparse GSI `gsi1`)
//
// | item         | pk             | sk                     | gsi1pk / gsi1sk                          | other attributes |
// |--------------|----------------|------------------------|------------------------------------------|------------------|
// | network      | NET#<network>  | NETWORK                | NETWORKS / <network>                     | name, config (JSON), revision (N), leaseCount (N), leaseHash, updatedAt |
// | lease        | NET#<network>  | LEASE#<node>           | EXPIRY#<network> / <16-digit ms>#<node>  | lease (JSON), revision (N), node, expiresMs and ttl (N, only when it expires) |
// |              |                |                        |   (only when the lease expires)          | |
// | subnet claim | NET#<network>  | CLAIM#4#<8 hex digits> | -                                        | node |
// |              |                | CLAIM#6#<32 hex digits>|                                          | |
// | route status | NET#<network>  | ROUTE#<node>           | ROUTES / <network>#<node>                | network, node, state, reason, updatedAt |
// | route tables | NET#<network>  | ROUTETABLES            | -                                        | tables (JSON), updatedAt |
// | node status  | NET#<network>  | STATUS#<node>          | STATUS / <network>#<node>                | network, node, status (JSON), updatedAt |
// | change       | NET#<network>  | CHG#<15-digit revision>| -                                        | change (JSON), ttl (N: a day after the write) |
// | node         | NODE#<name>    | NODE                   | NODES / <name>                           | name, network, passwordHash, createdAt |
//
// Why this shape:
// - A network's leases and claims share its partition, so listLeases and
//   takenSubnets are each one Query on (pk, begins_with sk) with no scan, and
//   strongly consistent. The claim's sort key is the subnet's address as
//   fixed-width hex, so the Query returns it in numeric order.
// - A claim item per family is what makes a subnet unique: DynamoDB has no
//   unique secondary index, but a Put with attribute_not_exists on the claim
//   key can succeed for only one writer.
// - gsi1 is KEYS_ONLY and sparse. It lists what has no natural partition
//   (networks, nodes, statuses, route statuses across networks) and the leases
//   by expiry. Its keys never change on the hot path (a network's revision or
//   a status update does not touch them), so it costs no index write there;
//   only a renewal moves a lease's expiry key. GSI reads are eventually
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
// A cancelled transaction tells which item failed (CancellationReasons, in
// request order). A failed lease or claim condition is a real conflict for the
// caller: ConflictError, and the controller retries with fresh reads. A failed
// network condition (or TransactionConflict) only means another lease of the
// same network was written meanwhile: nothing the caller asked about changed,
// so the store re-reads the network and tries again itself, with jittered
// backoff. Anything else (throttling past the SDK's retries, a missing table,
// a validation error) propagates as it is.
// Every write that bumps a network's revision also puts that revision's
// change item in the same transaction, so the change log never misses or
// invents a revision; changesSince reads it with one Query and checks that
// no revision is missing (TTL removes old changes lazily and in any order).
// A renewal (renewLease) is the exception: it moves only the lease item's
// expiry (conditioned on its revision), never the network item, since nothing
// peers use changed; the delete at expiry is therefore conditioned on the
// expiry (expiresMs) as well as the revision.
// The price: the lease writes of one network are serialized through its
// network item, one commit per round trip (tens per second). That is plenty
// for joins and renewals; 64 simultaneous joins settle in seconds.
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
import { digestHex, isExpired, leaseDigest, type Lease, type NewLease } from '../../core/lease.js';
import type { NetConf } from '../../core/config.js';
import { CHANGE_RETENTION_MS, changeRun, type Change, type ChangesSince, type NetworkRecord, type NodeRecord, type RouteStatusRecord, type RouteTablesRecord, type StatusRecord, type Store, type TakenSubnets } from './store.js';

type Item = Record<string, AttributeValue>;
type Key = { pk: AttributeValue; sk: AttributeValue };

export const GSI1 = 'gsi1';
export const TTL_ATTRIBUTE = 'ttl';
const DEFAULT_TTL_GRACE_SECONDS = 7 * 24 * 3600;
/**
 * Tries of one lease write against other writers of the same network. Each
 * lost round means another write of that network committed, so a writer only
 * runs out when this many others got in first while it backed off.
 */
const DEFAULT_WRITE_ATTEMPTS = 100;
const BACKOFF_BASE_MS = 4;
const BACKOFF_CAP_MS = 200;
const BATCH_GET_LIMIT = 100;

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
 * until it is ACTIVE, then turns on TTL on `ttl`. Point-in-time recovery is
 * the deployment's business (infra turns it on); it changes nothing here.
 * SST equivalent: sst.aws.Dynamo with fields {pk, sk, gsi1pk, gsi1sk: string},
 * primaryIndex {hashKey: pk, rangeKey: sk}, globalIndexes {gsi1: {hashKey:
 * gsi1pk, rangeKey: gsi1sk, projection: keys-only}}, ttl: 'ttl'.
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
const nodePk = (name: string) => `NODE#${name}`;
const NODE_SK = 'NODE';
const EXPIRY_DIGITS = 16;

const S = (s: string): AttributeValue => ({ S: s });
const N = (n: number): AttributeValue => ({ N: String(n) });
const key = (pk: string, sk: string): Key => ({ pk: S(pk), sk: S(sk) });

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

function sleep(ms: number): Promise<void> {
  return (globalThis as unknown as { benchSleep: (ms: number) => Promise<void> }).benchSleep(ms);
}

/** Full jitter: writers that collided once spread out instead of colliding again. */
function backoff(attempt: number): Promise<void> {
  return sleep(Math.random() * Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt));
}

function errorName(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null ? (e as { name?: string }).name : undefined;
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
  // Throttling or a validation error inside the transaction is not a race.
  if (reasons.some((r) => !known.has(r.Code ?? 'None'))) return undefined;
  return { kind: 'retry' };
}

export class DynamoStore implements Store {
  private readonly client: DynamoDBClient;
  private readonly ownsClient: boolean;
  private readonly table: string;
  private readonly ttlGrace: number;
  private readonly maxAttempts: number;

  constructor(opts: DynamoStoreOptions) {
    this.table = opts.tableName;
    this.ownsClient = !opts.client;
    this.client = opts.client ?? new DynamoDBClient(opts.clientConfig ?? {});
    this.ttlGrace = opts.ttlGraceSeconds ?? DEFAULT_TTL_GRACE_SECONDS;
    this.maxAttempts = opts.maxWriteAttempts ?? DEFAULT_WRITE_ATTEMPTS;
  }

  // ---- helpers ----

  private async getItem(k: Key): Promise<Item | undefined> {
    const r = await this.client.send(new GetItemCommand({ TableName: this.table, Key: k, ConsistentRead: true }));
    return r.Item;
  }

  private async query(input: Omit<QueryCommandInput, 'TableName' | 'ExclusiveStartKey'>): Promise<Item[]> {
    const out: Item[] = [];
    let start: Item | undefined;
    do {
      const r = await this.client.send(new QueryCommand({ ...input, TableName: this.table, ExclusiveStartKey: start }));
      out.push(...(r.Items ?? []));
      start = r.LastEvaluatedKey;
    } while (start);
    return out;
  }

  /**
   * One consistent Query of a network's partition, for the items whose sort
   * key has this prefix. A projection saves bytes on the wire, not capacity:
   * DynamoDB charges a Query for the whole items it reads.
   */
  private queryPartition(network: string, prefix: string, projection?: string): Promise<Item[]> {
    return this.query({
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
      ExpressionAttributeValues: { ':pk': S(netPk(network)), ':prefix': S(prefix) },
      ...(projection ? { ProjectionExpression: projection } : {}),
      ConsistentRead: true,
    });
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
        if (attempt > 0) await backoff(attempt);
        if (attempt > 20) throw new Error(`DynamoDB left ${pending.length} keys unprocessed after ${attempt} tries of BatchGetItem`);
        const r = await this.client.send(new BatchGetItemCommand({ RequestItems: { [this.table]: { Keys: pending, ConsistentRead: true } } }));
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
      ...key(netPk(lease.network), LEASE_PREFIX + lease.node),
      node: S(lease.node),
      revision: N(lease.revision),
      lease: S(JSON.stringify(lease)),
    };
    if (lease.expiresAt !== null) Object.assign(item, this.expiryAttributes(lease.network, lease.node, Date.parse(lease.expiresAt)));
    return item;
  }

  /** expiresMs is what a delete at expiry is conditioned on; the index keys and ttl follow it. */
  private expiryAttributes(network: string, node: string, ms: number): Item {
    return {
      expiresMs: N(ms),
      gsi1pk: S(`EXPIRY#${network}`),
      gsi1sk: S(`${expiryKey(ms)}#${node}`),
      [TTL_ATTRIBUTE]: N(Math.ceil(ms / 1000) + this.ttlGrace),
    };
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
        Item: { ...key(netPk(network), changeSk(change.revision)), change: S(JSON.stringify(change)), [TTL_ATTRIBUTE]: N(Math.ceil((Date.now() + CHANGE_RETENTION_MS) / 1000)) },
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
      const r = await this.client.send(new QueryCommand({
        TableName: this.table,
        KeyConditionExpression: 'pk = :pk AND sk BETWEEN :from AND :to',
        ExpressionAttributeValues: { ':pk': S(netPk(network)), ':from': S(changeSk(after + 1)), ':to': S(changeSk(net.revision)) },
        ConsistentRead: true,
        Limit: limit + 1 - rows.length,
        ExclusiveStartKey: start,
      }));
      for (const item of r.Items ?? []) rows.push(JSON.parse(str(item, 'change')) as Change);
      start = r.LastEvaluatedKey;
    } while (start && rows.length < limit + 1);
    return changeRun(after, net.revision, rows, limit);
  }

  private claimPut(network: string, sk: string, node: string): TransactWriteItem {
    return {
      Put: {
        TableName: this.table,
        Item: { ...key(netPk(network), sk), node: S(node) },
        ConditionExpression: 'attribute_not_exists(pk)',
      },
    };
  }

  /** Never releases another node's claim; one already gone is no reason to block the write. */
  private claimDelete(network: string, sk: string, node: string): TransactWriteItem {
    return {
      Delete: {
        TableName: this.table,
        Key: key(netPk(network), sk),
        ConditionExpression: 'attribute_not_exists(pk) OR #node = :node',
        ExpressionAttributeNames: { '#node': 'node' },
        ExpressionAttributeValues: { ':node': S(node) },
      },
    };
  }

  // ---- networks ----

  async getNetwork(name: string): Promise<NetworkRecord | undefined> {
    const item = await this.getItem(key(netPk(name), NETWORK_SK));
    return item && toNetwork(item);
  }

  async listNetworks(): Promise<NetworkRecord[]> {
    return (await this.listIndexed('NETWORKS')).map(toNetwork).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async putNetwork(name: string, config: NetConf, expectedRevision: number | undefined): Promise<NetworkRecord> {
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
      await this.client.send(new TransactWriteItemsCommand({ TransactItems: [write, this.changePut(name, { revision: rec.revision, config: true })] }));
      return rec;
    } catch (e) {
      // The network's condition failed or another transaction crossed it: the caller reads again.
      if (classifyCancellation(e, ['network', 'change'])) throw conflict();
      throw e;
    }
  }

  // ---- leases ----

  async getLease(network: string, node: string): Promise<Lease | undefined> {
    const item = await this.getItem(key(netPk(network), LEASE_PREFIX + node));
    return item && toLease(item);
  }

  async listLeases(network: string): Promise<Lease[]> {
    // Sort keys are LEASE#<node>, so the Query returns them by node already.
    return (await this.queryPartition(network, LEASE_PREFIX)).map(toLease);
  }

  async listLeasesPage(network: string, after: string | undefined, limit: number): Promise<Lease[]> {
    const out: Lease[] = [];
    let start: Item | undefined;
    do {
      const r = await this.client.send(new QueryCommand({
        TableName: this.table,
        // Node names are printable ASCII, so the page runs from just past `after` to the end of LEASE#.
        KeyConditionExpression: 'pk = :pk AND sk BETWEEN :from AND :to',
        ExpressionAttributeValues: { ':pk': S(netPk(network)), ':from': S(`${LEASE_PREFIX}${after ?? ''}\u0001`), ':to': S(`${LEASE_PREFIX}\u007f`) },
        ConsistentRead: true,
        Limit: limit - out.length,
        ExclusiveStartKey: start,
      }));
      out.push(...(r.Items ?? []).map(toLease));
      start = r.LastEvaluatedKey;
    } while (start && out.length < limit);
    return out;
  }

  async takenSubnets(network: string): Promise<TakenSubnets> {
    const taken: TakenSubnets = { v4: [], v6: [] };
    for (const item of await this.queryPartition(network, CLAIM_PREFIX, 'sk')) {
      const [, family, hex] = str(item, 'sk').split('#');
      (family === '4' ? taken.v4 : taken.v6).push(BigInt('0x' + hex));
    }
    return taken;
  }

  createLease(lease: NewLease): Promise<Lease> {
    return this.writeLease(lease, undefined);
  }

  replaceLease(lease: NewLease, expectedRevision: number): Promise<Lease> {
    return this.writeLease(lease, expectedRevision);
  }

  private async writeLease(lease: NewLease, expectedRevision: number | undefined): Promise<Lease> {
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
        await this.client.send(new TransactWriteItemsCommand({ TransactItems: items }));
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
        await backoff(attempt);
      }
    }
  }

  async renewLease(network: string, node: string, revision: number, expiresAt: string): Promise<Lease | undefined> {
    const prev = await this.getLease(network, node);
    if (!prev || prev.revision !== revision || prev.expiresAt === null) return undefined;
    const full: Lease = { ...prev, expiresAt };
    const attrs = this.expiryAttributes(network, node, Date.parse(expiresAt));
    try {
      // One item, no transaction: the network item is not touched.
      await this.client.send(new UpdateItemCommand({
        TableName: this.table,
        Key: key(netPk(network), LEASE_PREFIX + node),
        UpdateExpression: 'SET #lease = :lease, #exp = :exp, #g1pk = :g1pk, #g1sk = :g1sk, #ttl = :ttl',
        ConditionExpression: '#rev = :rev',
        ExpressionAttributeNames: { '#lease': 'lease', '#exp': 'expiresMs', '#g1pk': 'gsi1pk', '#g1sk': 'gsi1sk', '#ttl': TTL_ATTRIBUTE, '#rev': 'revision' },
        ExpressionAttributeValues: {
          ':lease': S(JSON.stringify(full)), ':exp': attrs.expiresMs!, ':g1pk': attrs.gsi1pk!, ':g1sk': attrs.gsi1sk!, ':ttl': attrs[TTL_ATTRIBUTE]!, ':rev': N(revision),
        },
      }));
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
          Key: key(netPk(network), LEASE_PREFIX + node),
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
        await this.client.send(new TransactWriteItemsCommand({ TransactItems: items }));
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
        if (outcome.kind === 'retry') await backoff(attempt);
      }
    }
  }

  async listExpired(now: number): Promise<Lease[]> {
    // A query per network on the expiry index rather than one index partition
    // for every lease: a fleet renewing at once then spreads its index writes
    // over one partition per network instead of one for the whole table.
    // DynamoDB's TTL is never relied on (it is lazy, and set a week late).
    const below = expiryKey(now + 1);
    const keys: Key[] = [];
    for (const net of await this.indexKeys('NETWORKS')) {
      const name = net.pk.S!.slice('NET#'.length);
      keys.push(...(await this.indexKeys(`EXPIRY#${name}`, below)));
    }
    // The index may lag a renewal: the consistent read decides.
    return (await this.batchGet(keys))
      .map(toLease)
      .filter((l) => isExpired(l, now))
      .sort((a, b) => Date.parse(a.expiresAt!) - Date.parse(b.expiresAt!));
  }

  // ---- nodes ----

  async putNode(node: NodeRecord): Promise<void> {
    // createdAt is kept from the first put, as the SQLite store does.
    await this.client.send(new UpdateItemCommand({
      TableName: this.table,
      Key: key(nodePk(node.name), NODE_SK),
      UpdateExpression: 'SET #name = :name, #network = :network, #hash = :hash, #created = if_not_exists(#created, :created), gsi1pk = :g, gsi1sk = :name',
      ExpressionAttributeNames: { '#name': 'name', '#network': 'network', '#hash': 'passwordHash', '#created': 'createdAt' },
      ExpressionAttributeValues: { ':name': S(node.name), ':network': S(node.network), ':hash': S(node.passwordHash), ':created': S(node.createdAt), ':g': S('NODES') },
    }));
  }

  async getNode(name: string): Promise<NodeRecord | undefined> {
    const item = await this.getItem(key(nodePk(name), NODE_SK));
    return item && toNode(item);
  }

  async listNodes(): Promise<NodeRecord[]> {
    return (await this.listIndexed('NODES')).map(toNode).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async deleteNode(name: string): Promise<boolean> {
    const r = await this.client.send(new DeleteItemCommand({ TableName: this.table, Key: key(nodePk(name), NODE_SK), ReturnValues: 'ALL_OLD' }));
    return r.Attributes !== undefined;
  }

  // ---- status ----

  async putStatus(rec: StatusRecord): Promise<void> {
    await this.client.send(new PutItemCommand({
      TableName: this.table,
      Item: {
        ...key(netPk(rec.network), STATUS_PREFIX + rec.node),
        gsi1pk: S('STATUS'),
        gsi1sk: S(`${rec.network}#${rec.node}`),
        network: S(rec.network),
        node: S(rec.node),
        status: S(JSON.stringify(rec.status)),
        updatedAt: S(rec.updatedAt),
      },
    }));
  }

  async listStatus(): Promise<StatusRecord[]> {
    return (await this.listIndexed('STATUS')).map(toStatus).sort(byNetworkNode);
  }

  async putRouteStatus(rec: RouteStatusRecord): Promise<void> {
    await this.client.send(new PutItemCommand({
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
    }));
  }

  async deleteRouteStatus(network: string, node: string): Promise<void> {
    await this.client.send(new DeleteItemCommand({ TableName: this.table, Key: key(netPk(network), ROUTE_PREFIX + node) }));
  }

  async listRouteStatus(network?: string): Promise<RouteStatusRecord[]> {
    const items = network === undefined ? await this.listIndexed('ROUTES') : await this.queryPartition(network, ROUTE_PREFIX);
    return items.map(toRouteStatus).sort(byNetworkNode);
  }

  async putRouteTables(rec: RouteTablesRecord): Promise<void> {
    await this.client.send(new PutItemCommand({
      TableName: this.table,
      Item: { ...key(netPk(rec.network), ROUTE_TABLES_SK), tables: S(JSON.stringify(rec.tables)), updatedAt: S(rec.updatedAt) },
    }));
  }

  async getRouteTables(network: string): Promise<RouteTablesRecord | undefined> {
    const r = await this.client.send(new GetItemCommand({ TableName: this.table, Key: key(netPk(network), ROUTE_TABLES_SK), ConsistentRead: true }));
    return r.Item && { network, tables: JSON.parse(str(r.Item, 'tables')) as RouteTablesRecord['tables'], updatedAt: str(r.Item, 'updatedAt') };
  }

  async deleteNetwork(name: string): Promise<boolean> {
    const net = await this.getNetwork(name);
    if (!net) return false;
    if (net.leaseCount > 0) throw new ConflictError(`network ${name} still holds ${net.leaseCount} lease(s)`);
    // Every lease write moves the revision: conditioned on the one read, a
    // lease taken meanwhile keeps the network, and no lease can be written
    // once its network item is gone (their updates are conditioned on it).
    try {
      await this.client.send(new DeleteItemCommand({
        TableName: this.table,
        Key: key(netPk(name), NETWORK_SK),
        ConditionExpression: '#rev = :rev',
        ExpressionAttributeNames: { '#rev': 'revision' },
        ExpressionAttributeValues: { ':rev': N(net.revision) },
      }));
    } catch (e) {
      if ((e as { name?: string }).name === 'ConditionalCheckFailedException') throw new ConflictError(`network ${name} changed meanwhile: try again`);
      throw e;
    }
    // What is left in its partition: changes, statuses, route statuses and tables.
    const keys = (await this.queryPartition(name, '', 'pk, sk')).map((i) => ({ pk: i.pk!, sk: i.sk! }));
    for (let i = 0; i < keys.length; i += BATCH_WRITE_LIMIT) {
      let pending = keys.slice(i, i + BATCH_WRITE_LIMIT).map((k) => ({ DeleteRequest: { Key: k } }));
      for (let attempt = 0; pending.length > 0; attempt++) {
        if (attempt > 0) await backoff(attempt);
        if (attempt > 20) throw new Error(`DynamoDB left ${pending.length} deletes unprocessed after ${attempt} tries of BatchWriteItem`);
        const r = await this.client.send(new BatchWriteItemCommand({ RequestItems: { [this.table]: pending } }));
        pending = (r.UnprocessedItems?.[this.table] ?? []) as typeof pending;
      }
    }
    return true;
  }

  async close(): Promise<void> {
    if (this.ownsClient) this.client.destroy();
  }
}
