// The table as the DynamoDB store reaches it: every call sent again while
// DynamoDB throttles it, and the reads every part of the store shares
// (consistent gets and queries, a query per shard, index keys read back
// with a consistent BatchGetItem). What a cancelled transaction means is
// read here too.
import {
  BatchGetItemCommand,
  BatchWriteItemCommand,
  DynamoDBClient,
  GetItemCommand,
  QueryCommand,
  TransactWriteItemsCommand,
  type QueryCommandInput,
  type TransactWriteItem,
} from '@aws-sdk/client-dynamodb';
import { GSI1, S, SHARD_LIST, type Item, type Key } from './dynamo-layout.js';

const BACKOFF_BASE_MS = 4;
const BACKOFF_CAP_MS = 200;
/**
 * Sends of one call that DynamoDB throttled, each after the SDK's own
 * retries. The backoff doubles from THROTTLE_BASE_MS to THROTTLE_CAP_MS
 * with full jitter: at most about 20 s in all (half that on average), inside
 * a function's 30 s; a partition's capacity comes back within a second.
 */
export const DEFAULT_THROTTLE_ATTEMPTS = 16;
const THROTTLE_BASE_MS = 50;
const THROTTLE_CAP_MS = 2000;
const BATCH_GET_LIMIT = 100;
/** BatchWriteItem takes at most 25 requests (DynamoDB API reference, BatchWriteItem). */
const BATCH_WRITE_LIMIT = 25;

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Full jitter: writers that collided once spread out instead of colliding again. */
export function jitter(attempt: number, base = BACKOFF_BASE_MS, cap = BACKOFF_CAP_MS): number {
  return Math.random() * Math.min(cap, base * 2 ** attempt);
}

export function errorName(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null ? (e as { name?: string }).name : undefined;
}

export const cancellationCodes = (e: unknown): string[] =>
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
export type Role = 'lease' | 'claim' | 'release' | 'network' | 'change';

/** How a cancelled lease transaction should be answered: the role whose condition failed, or retry (the network was busy). */
type Outcome = { kind: 'lease' } | { kind: 'claim' } | { kind: 'release' } | { kind: 'retry' };

export function classifyCancellation(e: unknown, roles: Role[]): Outcome | undefined {
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

export interface DynamoTableOptions {
  client: DynamoDBClient;
  tableName: string;
  /** Tries of one write while other writes of the same items keep winning. */
  writeAttempts: number;
  /** Sends of one call DynamoDB keeps throttling, after the SDK's own retries. */
  throttleAttempts: number;
  sleep: (ms: number) => Promise<void>;
}

export class DynamoTable {
  readonly client: DynamoDBClient;
  readonly name: string;
  readonly writeAttempts: number;
  readonly sleep: (ms: number) => Promise<void>;
  private readonly throttleAttempts: number;
  /** Calls DynamoDB throttled that were sent again (after the SDK's own retries). */
  throttledCalls = 0;

  constructor(opts: DynamoTableOptions) {
    this.client = opts.client;
    this.name = opts.tableName;
    this.writeAttempts = opts.writeAttempts;
    this.throttleAttempts = opts.throttleAttempts;
    this.sleep = opts.sleep;
  }

  /**
   * One DynamoDB call, sent again while it is throttled. The call is a
   * function so each send is a new request (a transaction gets a new
   * idempotency token: the throttled one was never applied).
   */
  async call<T>(send: () => Promise<T>): Promise<T> {
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

  /** The backoff of a write that lost to another writer of the same items. */
  backoff(attempt: number): Promise<void> {
    return this.sleep(jitter(attempt));
  }

  async getItem(k: Key): Promise<Item | undefined> {
    const r = await this.call(() => this.client.send(new GetItemCommand({ TableName: this.name, Key: k, ConsistentRead: true })));
    return r.Item;
  }

  async transact(items: TransactWriteItem[]): Promise<void> {
    await this.call(() => this.client.send(new TransactWriteItemsCommand({ TransactItems: items })));
  }

  async query(input: Omit<QueryCommandInput, 'TableName' | 'ExclusiveStartKey'>): Promise<Item[]> {
    const out: Item[] = [];
    let start: Item | undefined;
    do {
      const r = await this.call(() => this.client.send(new QueryCommand({ ...input, TableName: this.name, ExclusiveStartKey: start })));
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
  queryPartition(pk: string, prefix: string, projection?: string): Promise<Item[]> {
    return this.query({
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :prefix)',
      ExpressionAttributeValues: { ':pk': S(pk), ':prefix': S(prefix) },
      ...(projection ? { ProjectionExpression: projection } : {}),
      ConsistentRead: true,
    });
  }

  /** The same query on every shard of a kind, in parallel. */
  async queryShards(pkOf: (network: string, shard: number) => string, network: string, prefix: string, projection?: string): Promise<Item[]> {
    return (await Promise.all(SHARD_LIST.map((s) => this.queryPartition(pkOf(network, s), prefix, projection)))).flat();
  }

  /** Keys of an index partition (eventually consistent: GSIs have no other kind). */
  async indexKeys(gsi1pk: string, below?: string): Promise<Key[]> {
    const items = await this.query({
      IndexName: GSI1,
      KeyConditionExpression: below === undefined ? 'gsi1pk = :p' : 'gsi1pk = :p AND gsi1sk < :below',
      ExpressionAttributeValues: { ':p': S(gsi1pk), ...(below === undefined ? {} : { ':below': S(below) }) },
    });
    return items.map((i) => ({ pk: i.pk!, sk: i.sk! }));
  }

  /** Reads items back consistently, so a list reflects every write that returned. */
  async batchGet(keys: Key[]): Promise<Item[]> {
    const out: Item[] = [];
    for (let i = 0; i < keys.length; i += BATCH_GET_LIMIT) {
      let pending: Key[] = keys.slice(i, i + BATCH_GET_LIMIT);
      for (let attempt = 0; pending.length > 0; attempt++) {
        // Keys left unprocessed were throttled (or over the answer's 16 MB): wait as for a throttle.
        if (attempt > 0) await this.sleep(jitter(attempt - 1, THROTTLE_BASE_MS, THROTTLE_CAP_MS));
        if (attempt > 20) throw new Error(`DynamoDB left ${pending.length} keys unprocessed after ${attempt} tries of BatchGetItem`);
        const keysNow = pending;
        const r = await this.call(() => this.client.send(new BatchGetItemCommand({ RequestItems: { [this.name]: { Keys: keysNow, ConsistentRead: true } } })));
        out.push(...(r.Responses?.[this.name] ?? []));
        pending = (r.UnprocessedKeys?.[this.name]?.Keys as Key[] | undefined) ?? [];
      }
    }
    return out;
  }

  /** The items an index partition lists, read back consistently. */
  async listIndexed(gsi1pk: string): Promise<Item[]> {
    return this.batchGet(await this.indexKeys(gsi1pk));
  }

  /** Deletes items by key, 25 a BatchWriteItem, sending again what DynamoDB left unprocessed. */
  async batchDelete(keys: Key[]): Promise<void> {
    for (let i = 0; i < keys.length; i += BATCH_WRITE_LIMIT) {
      let pending = keys.slice(i, i + BATCH_WRITE_LIMIT).map((k) => ({ DeleteRequest: { Key: k } }));
      for (let attempt = 0; pending.length > 0; attempt++) {
        if (attempt > 0) await this.sleep(jitter(attempt));
        if (attempt > 20) throw new Error(`DynamoDB left ${pending.length} deletes unprocessed after ${attempt} tries of BatchWriteItem`);
        const batch = pending;
        const r = await this.call(() => this.client.send(new BatchWriteItemCommand({ RequestItems: { [this.name]: batch } })));
        pending = (r.UnprocessedItems?.[this.name] ?? []) as typeof pending;
      }
    }
  }
}
