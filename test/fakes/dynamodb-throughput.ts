// DynamoDB's throughput, as an on-demand table meters and throttles it, for
// the stand-in in test/fakes/dynamodb.ts: every data-plane call is charged in
// read and write units to the partition key values it touches, and a key past
// its rate is throttled. What each rule rests on (Amazon DynamoDB developer
// guide unless said otherwise):
//
// - Units ("DynamoDB read and write operations", "DynamoDB item sizes and
//   formats"): a write is 1 unit per KB of the larger of the item before and
//   after it, at least 1; a read 1 unit per 4 KB strongly consistent, half
//   eventually consistent (GSI queries always are); GetItem and each item of
//   BatchGetItem round up on their own, a Query rounds the sum of the items it
//   read once (a filter or a projection saves nothing), and a read that finds
//   nothing still costs the minimum. A conditional write whose condition fails
//   still consumes write units (of the item it found, at least 1).
//   Transactions cost twice: 2 units per KB per item ("Amazon DynamoDB
//   Transactions: How it works", capacity management: every item is written
//   twice, to prepare and to commit). A cancelled transaction is charged here
//   as if it had run, which is never kinder than the service.
// - Index writes (same pages, "Global secondary indexes", provisioned
//   throughput considerations): a write that puts an item in a GSI costs an
//   index write unit per KB of the projected entry, one that removes it
//   another; changing an index key attribute is both (delete the old entry,
//   put the new); an update that leaves a KEYS_ONLY index's keys alone costs
//   the index nothing. Index writes are charged to the index's partition key
//   value, which has the same rates as a table's, and a GSI partition that
//   throttles throttles the table write (IndexWriteKeyRangeThroughputExceeded).
// - Rates ("Best practices for designing and using partition keys
//   effectively"; re:Post knowledge center "Why is my on-demand DynamoDB
//   table being throttled?"): each partition serves up to 3,000 read units or
//   1,000 write units a second, or a linear combination of both, in on-demand
//   mode as in provisioned (the newer "Key range throughput exceeded" page
//   says reads and writes are throttled independently: the stand-in keeps
//   the linear combination, the stricter of the two); "burst capacity can't alleviate partition-level
//   throttling" ("How does DynamoDB handle spiky workloads?"). Adaptive
//   capacity may move a hot key to a partition of its own, but never past
//   those rates ("Burst and adaptive capacity"). So each partition key value is
//   modelled as its own partition (never kinder than a real partition, which
//   may hold several keys) that serves a call only while what it consumed in
//   the last second (a sliding window) is under a second's rate. A call takes
//   what it is expected to cost as it is admitted, so calls sent together are
//   throttled as they arrive; the rest when its outcome is known (a big read
//   may overshoot, as real consumption does).
//   Not modelled: the table-level rates of a new on-demand table (4,000 write
//   and 12,000 read units a second until its traffic has been higher) and the
//   account's per-table quotas.
// - What a throttled call gets ("DynamoDB throttling resolution guide",
//   "ThrottlingReason"; the SDK's TransactWriteItems documentation): on an
//   on-demand table, ThrottlingException "Throughput exceeds the current
//   capacity of your table or index..." with a ThrottlingReason such as
//   TableWriteKeyRangeThroughputExceeded; a transaction is cancelled
//   (TransactionCanceledException) with the reason ThrottlingError on each
//   throttled item; BatchGetItem and BatchWriteItem return the throttled keys
//   as UnprocessedKeys / UnprocessedItems, and throw only when none could be
//   served. A throttled call consumes nothing and changes nothing.
// Time is the wall clock unless the fake is given another (now): a test's own
// clock, or a bench's simulated one, read from each request.
import type { AttributeValue, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DescribeTableCommand, GetItemCommand } from '@aws-sdk/client-dynamodb';

type Item = Record<string, AttributeValue>;
/** An attribute value as it is on the wire (binary as base64) or as the SDK returns it (binary as bytes). */
type AnyValue = AttributeValue | Record<string, unknown>;

export interface ThroughputLimits {
  /** write units a second one partition key value serves */
  writeUnitsPerKey: number;
  /** read units a second one partition key value serves */
  readUnitsPerKey: number;
}

/** On-demand tables, per partition: 1,000 write and 3,000 read units a second. */
export const ON_DEMAND_LIMITS: ThroughputLimits = { writeUnitsPerKey: 1000, readUnitsPerKey: 3000 };

/** What one partition key value (a table's, or "<index>:<value>" for an index's) consumed. */
export interface KeyLoad {
  readUnits: number;
  writeUnits: number;
  /** the most units consumed within one second of the clock */
  peakReadUnitsPerSecond: number;
  peakWriteUnitsPerSecond: number;
  /** calls refused for this key */
  throttled: number;
}

export const THROTTLE_MESSAGE =
  'Throughput exceeds the current capacity of your table or index. DynamoDB is automatically scaling your table or index so please try again shortly. If exceptions persist, check if you have a hot key: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-partition-key-design.html';

/**
 * One partition key value: what it consumed over the last second (a sliding
 * window, so no second anywhere holds more than the rate) and its totals.
 */
class Partition {
  /** (time, share of a second's capacity) of each charge in the last second */
  private window: { at: number; share: number }[] = [];
  private used = 0;
  private latest = -Infinity;
  /** this calendar second's units, for the peaks */
  private second = -Infinity;
  private secondReads = 0;
  private secondWrites = 0;
  readonly load: KeyLoad = { readUnits: 0, writeUnits: 0, peakReadUnitsPerSecond: 0, peakWriteUnitsPerSecond: 0, throttled: 0 };

  /** Share of a second's capacity used in the second up to `now` (calls may arrive slightly out of order). */
  usedAt(now: number): number {
    this.latest = Math.max(this.latest, now);
    while (this.window.length && this.window[0]!.at <= this.latest - 1000) this.used -= this.window.shift()!.share;
    return this.used;
  }

  take(now: number, share: number, reads: number, writes: number): void {
    this.usedAt(now);
    this.window.push({ at: now, share });
    this.used += share;
    const second = Math.floor(now / 1000);
    if (second > this.second) {
      this.second = second;
      this.secondReads = 0;
      this.secondWrites = 0;
    }
    if (second === this.second) {
      this.secondReads += reads;
      this.secondWrites += writes;
    }
    this.load.readUnits += reads;
    this.load.writeUnits += writes;
    this.load.peakReadUnitsPerSecond = Math.max(this.load.peakReadUnitsPerSecond, this.secondReads);
    this.load.peakWriteUnitsPerSecond = Math.max(this.load.peakWriteUnitsPerSecond, this.secondWrites);
  }
}

/** The meter: what each partition key value used, and which may serve a call. */
export class Throughput {
  limits: ThroughputLimits;
  throttled = 0;
  /** While true, calls go to dynalite unmetered (a bench's setup, which it does not measure). */
  paused = false;
  private readonly partitions = new Map<string, Partition>();

  constructor(
    private readonly now: () => number,
    limits: Partial<ThroughputLimits> = {},
  ) {
    this.limits = { ...ON_DEMAND_LIMITS, ...limits };
  }

  private partition(name: string): Partition {
    let p = this.partitions.get(name);
    if (!p) this.partitions.set(name, (p = new Partition()));
    return p;
  }

  /**
   * Whether each of these partitions may serve a call at `now`: not once
   * it has used a second's rate within the last second. The first that may
   * not, if any.
   */
  refused(names: Iterable<string>, now = this.now()): string | undefined {
    for (const name of names) {
      const p = this.partition(name);
      // (a tolerance: five writes of a fifth of the rate each add up to 1 - 1e-16)
      if (p.usedAt(now) >= 1 - 1e-9) {
        p.load.throttled++;
        this.throttled++;
        return name;
      }
    }
    return undefined;
  }

  /** Takes units from a partition at `now` (negative: gives back what an estimate took too many). */
  charge(name: string, reads: number, writes: number, now = this.now()): void {
    if (reads === 0 && writes === 0) return;
    this.partition(name).take(now, reads / this.limits.readUnitsPerKey + writes / this.limits.writeUnitsPerKey, reads, writes);
  }

  /** Every partition key value seen, with what it consumed. */
  loads(): Map<string, KeyLoad> {
    return new Map([...this.partitions].map(([name, p]) => [name, { ...p.load }]));
  }

  reset(): void {
    this.partitions.clear();
    this.throttled = 0;
  }
}

// ---- item sizes ("DynamoDB item sizes and formats") ----

const utf8 = (s: string) => Buffer.byteLength(s, 'utf8');

/** Numbers: about one byte per two significant digits, plus one. */
function numberSize(n: string): number {
  const digits = n.replace(/^[-+]/, '').replace(/[eE].*$/, '').replace('.', '').replace(/^0+/, '').replace(/0+$/, '');
  return Math.ceil(Math.max(1, digits.length) / 2) + 1;
}

function binarySize(b: unknown): number {
  return typeof b === 'string' ? Buffer.from(b, 'base64').length : (b as Uint8Array).length;
}

function valueSize(v: AnyValue): number {
  const r = v as Record<string, unknown>;
  if (typeof r.S === 'string') return utf8(r.S);
  if (typeof r.N === 'string') return numberSize(r.N);
  if (r.B !== undefined) return binarySize(r.B);
  if (r.BOOL !== undefined || r.NULL !== undefined) return 1;
  if (Array.isArray(r.SS)) return (r.SS as string[]).reduce((n, s) => n + utf8(s), 0);
  if (Array.isArray(r.NS)) return (r.NS as string[]).reduce((n, s) => n + numberSize(s), 0);
  if (Array.isArray(r.BS)) return (r.BS as unknown[]).reduce((n: number, b) => n + binarySize(b), 0);
  // Lists and maps: 3 bytes, and 1 more per element.
  if (Array.isArray(r.L)) return 3 + (r.L as AnyValue[]).reduce((n: number, e) => n + 1 + valueSize(e), 0);
  if (r.M !== undefined) return 3 + Object.entries(r.M as Record<string, AnyValue>).reduce((n, [k, e]) => n + 1 + utf8(k) + valueSize(e), 0);
  return 0;
}

export function itemSize(item: Record<string, AnyValue>): number {
  return Object.entries(item).reduce((n, [name, v]) => n + utf8(name) + valueSize(v), 0);
}

const writeUnits = (item: Record<string, AnyValue> | undefined) => (item ? Math.max(1, Math.ceil(itemSize(item) / 1024)) : 1);
const readUnits = (item: Record<string, AnyValue> | undefined, consistent: boolean) =>
  Math.max(1, Math.ceil((item ? itemSize(item) : 0) / 4096)) * (consistent ? 1 : 0.5);

// ---- the tables' shapes ----

interface IndexInfo {
  name: string;
  hash: string;
  range?: string;
  projection: string;
  include: string[];
}

interface TableInfo {
  hash: string;
  range?: string;
  indexes: IndexInfo[];
}

const scalar = (v: AnyValue | undefined): string | undefined => {
  const r = v as Record<string, unknown> | undefined;
  return typeof r?.S === 'string' ? r.S : typeof r?.N === 'string' ? r.N : undefined;
};

/** The index entry an item has (the projected attributes), or undefined when the item is not in the index. */
function indexEntry(item: Record<string, AnyValue> | undefined, t: TableInfo, idx: IndexInfo): Record<string, AnyValue> | undefined {
  if (!item || scalar(item[idx.hash]) === undefined || (idx.range && scalar(item[idx.range]) === undefined)) return undefined;
  if (idx.projection === 'ALL') return item;
  const names = [t.hash, t.range, idx.hash, idx.range, ...(idx.projection === 'INCLUDE' ? idx.include : [])].filter((n): n is string => !!n);
  return Object.fromEntries(names.filter((n) => item[n] !== undefined).map((n) => [n, item[n]!]));
}

const indexPartition = (idx: IndexInfo, entry: Record<string, AnyValue>) => `${idx.name}:${scalar(entry[idx.hash])}`;

export interface Forwarded {
  status: number;
  body: Record<string, unknown>;
}

/** What the meter needs of the fake: a way to dynalite past the meter, and a client that reads past it. */
export interface MeterDeps {
  throughput: Throughput;
  /** reads an item past the meter (consistently) */
  direct: DynamoDBClient;
  /** sends a call to dynalite as it is, answered as dynalite answers it */
  forward(op: string, body: Record<string, unknown>): Promise<Forwarded>;
  region: string;
  account: string;
}

/** The calls whose units the meter counts (control-plane calls and Scan are not metered). */
export const METERED = new Set(['GetItem', 'Query', 'BatchGetItem', 'PutItem', 'UpdateItem', 'DeleteItem', 'BatchWriteItem']);

/** Where a write lands: its table partition, with the item it replaces (read past the meter). */
interface WriteTarget {
  table: string;
  info: TableInfo;
  key: Item;
  old: Item | undefined;
}

/** Units per partition key value. */
type Units = Map<string, number>;

function addUnits(to: Units, name: string, units: number): void {
  to.set(name, (to.get(name) ?? 0) + units);
}

export class Meter {
  private readonly tables = new Map<string, TableInfo>();

  constructor(private readonly deps: MeterDeps) {}

  private async info(table: string): Promise<TableInfo | undefined> {
    let t = this.tables.get(table);
    if (!t) {
      try {
        const d = (await this.deps.direct.send(new DescribeTableCommand({ TableName: table }))).Table;
        const key = (ks: { AttributeName?: string; KeyType?: string }[] | undefined, type: string) => ks?.find((k) => k.KeyType === type)?.AttributeName;
        t = {
          hash: key(d?.KeySchema, 'HASH')!,
          range: key(d?.KeySchema, 'RANGE'),
          indexes: (d?.GlobalSecondaryIndexes ?? []).map((g) => ({
            name: g.IndexName!, hash: key(g.KeySchema, 'HASH')!, range: key(g.KeySchema, 'RANGE'),
            projection: g.Projection?.ProjectionType ?? 'ALL', include: g.Projection?.NonKeyAttributes ?? [],
          })),
        };
      } catch {
        return undefined; // no such table: dynalite answers the call itself
      }
      this.tables.set(table, t);
    }
    return t;
  }

  private throttle(kind: 'Read' | 'Write', table: string, index: string | undefined): Forwarded {
    const resource = `arn:aws:dynamodb:${this.deps.region}:${this.deps.account}:table/${table}${index ? `/index/${index}` : ''}`;
    return {
      status: 400,
      body: {
        __type: 'com.amazonaws.dynamodb.v20120810#ThrottlingException',
        message: THROTTLE_MESSAGE,
        throttlingReasons: [{ reason: `${index ? 'Index' : 'Table'}${kind}KeyRangeThroughputExceeded`, resource }],
      },
    };
  }

  private async read(table: string, key: Item): Promise<Item | undefined> {
    return (await this.deps.direct.send(new GetItemCommand({ TableName: table, Key: key, ConsistentRead: true }))).Item;
  }

  private keyOf(info: TableInfo, item: Record<string, AnyValue>): Item {
    return Object.fromEntries([info.hash, info.range].filter((n): n is string => !!n).map((n) => [n, item[n] as AttributeValue]));
  }

  /** Where a write of this key lands, with the item it replaces. */
  async target(table: string, key: Item): Promise<WriteTarget | undefined> {
    const info = await this.info(table);
    if (!info) return undefined;
    return { table, info, key, old: await this.read(table, key) };
  }

  /**
   * What a write costs each partition it touches, given the item it leaves
   * (undefined: deleted), times factor (2 in a transaction; index writes are
   * not doubled), or only its table write when its condition failed.
   */
  private writeCost(t: WriteTarget, after: Item | undefined, factor: number, failed = false): Units {
    const cost: Units = new Map();
    const pk = scalar(t.key[t.info.hash])!;
    if (failed) {
      addUnits(cost, pk, factor * writeUnits(t.old));
      return cost;
    }
    const size = Math.max(t.old ? itemSize(t.old) : 0, after ? itemSize(after) : 0);
    addUnits(cost, pk, factor * Math.max(1, Math.ceil(size / 1024)));
    for (const idx of t.info.indexes) {
      const o = indexEntry(t.old, t.info, idx);
      const n = indexEntry(after, t.info, idx);
      const sameKeys = o && n && scalar(o[idx.hash]) === scalar(n[idx.hash]) && (!idx.range || scalar(o[idx.range]) === scalar(n[idx.range]));
      if (sameKeys) {
        // The entry stays where it is; it is rewritten only if what it projects changed.
        if (idx.projection !== 'KEYS_ONLY' && JSON.stringify(o) !== JSON.stringify(n)) addUnits(cost, indexPartition(idx, n), writeUnits(n));
        continue;
      }
      if (o) addUnits(cost, indexPartition(idx, o), writeUnits(o));
      if (n) addUnits(cost, indexPartition(idx, n), writeUnits(n));
    }
    return cost;
  }

  /**
   * Admits a write: refused (the index of the throttled partition, if it is
   * one) when any partition it would touch is empty, else its expected cost
   * is taken at once (so writes sent together are throttled as they arrive)
   * and returned, to be settled when the outcome is known. `expected` is the
   * item it should leave: a Put's item, nothing for a Delete, and the item as
   * it is for an Update (whose result is known only after).
   */
  admitWrite(t: WriteTarget, expected: Item | undefined, factor: number, at: number): { refused: { index?: string } } | { taken: Units } {
    const cost = this.writeCost(t, expected, factor);
    const refused = this.deps.throughput.refused(cost.keys(), at);
    if (refused !== undefined) return { refused: { index: t.info.indexes.find((i) => refused.startsWith(`${i.name}:`))?.name } };
    for (const [name, units] of cost) this.deps.throughput.charge(name, 0, units, at);
    return { taken: cost };
  }

  /** Settles an admitted write: done (leaving `after`), failed on its condition, or not applied at all (a validation error costs nothing). */
  settleWrite(t: WriteTarget, taken: Units, outcome: 'done' | 'failed' | 'none', after: Item | undefined, factor: number, at: number): void {
    const actual = outcome === 'none' ? new Map<string, number>() : this.writeCost(t, after, factor, outcome === 'failed');
    for (const name of new Set([...taken.keys(), ...actual.keys()])) this.deps.throughput.charge(name, 0, (actual.get(name) ?? 0) - (taken.get(name) ?? 0), at);
  }

  /** The item a write left, read past the meter. */
  after(t: WriteTarget): Promise<Item | undefined> {
    return this.read(t.table, t.key);
  }

  /** A metered call made at `at` (ms): admitted or throttled, sent to dynalite, charged. */
  async serve(op: string, body: Record<string, unknown>, at: number): Promise<Forwarded> {
    switch (op) {
      case 'GetItem':
        return this.getItem(body, at);
      case 'Query':
        return this.query(body, at);
      case 'BatchGetItem':
        return this.batchGet(body, at);
      case 'PutItem':
      case 'UpdateItem':
      case 'DeleteItem':
        return this.write(op, body, at);
      case 'BatchWriteItem':
        return this.batchWrite(body, at);
      default:
        return this.deps.forward(op, body);
    }
  }

  /**
   * A read of one partition: admitted (taking the minimum a read costs), sent
   * asking dynalite for its units (what the items read weigh), settled; the
   * caller gets only what it asked for.
   */
  private async readOne(op: string, body: Record<string, unknown>, name: string, table: string, index: string | undefined, at: number): Promise<Forwarded> {
    const tp = this.deps.throughput;
    if (tp.refused([name], at) !== undefined) return this.throttle('Read', table, index);
    const least = body.ConsistentRead ? 1 : 0.5;
    tp.charge(name, least, 0, at);
    const r = await this.deps.forward(op, { ...body, ReturnConsumedCapacity: 'TOTAL' });
    const units = Number((r.body.ConsumedCapacity as { CapacityUnits?: number } | undefined)?.CapacityUnits ?? 0);
    if (!['TOTAL', 'INDEXES'].includes(String(body.ReturnConsumedCapacity))) delete r.body.ConsumedCapacity;
    tp.charge(name, r.status === 200 ? Math.max(units, least) - least : -least, 0, at);
    return r;
  }

  private async getItem(body: Record<string, unknown>, at: number): Promise<Forwarded> {
    const table = String(body.TableName);
    const info = await this.info(table);
    const pk = info && scalar((body.Key as Item | undefined)?.[info.hash]);
    if (pk === undefined) return this.deps.forward('GetItem', body);
    return this.readOne('GetItem', body, pk, table, undefined, at);
  }

  /** The partition key value a Query's key condition names (KeyConditionExpression, or the older KeyConditions). */
  private queryKey(body: Record<string, unknown>, attr: string): string | undefined {
    const names = (body.ExpressionAttributeNames ?? {}) as Record<string, string>;
    const values = (body.ExpressionAttributeValues ?? {}) as Item;
    const expr = typeof body.KeyConditionExpression === 'string' ? body.KeyConditionExpression : '';
    for (const m of expr.matchAll(/(#?[A-Za-z0-9_.-]+)\s*=\s*(:[A-Za-z0-9_]+)/g)) {
      const name = m[1]!.startsWith('#') ? names[m[1]!] : m[1];
      if (name === attr) return scalar(values[m[2]!]);
    }
    const legacy = (body.KeyConditions as Record<string, { AttributeValueList?: Item[keyof Item][] }> | undefined)?.[attr];
    return scalar(legacy?.AttributeValueList?.[0]);
  }

  private async query(body: Record<string, unknown>, at: number): Promise<Forwarded> {
    const table = String(body.TableName);
    const info = await this.info(table);
    const idx = info?.indexes.find((i) => i.name === body.IndexName);
    const attr = idx ? idx.hash : info?.hash;
    const value = attr && this.queryKey(body, attr);
    if (!info || value === undefined) return this.deps.forward('Query', body);
    return this.readOne('Query', body, idx ? `${idx.name}:${value}` : value, table, idx?.name, at);
  }

  private async batchGet(body: Record<string, unknown>, at: number): Promise<Forwarded> {
    const tp = this.deps.throughput;
    const requests = (body.RequestItems ?? {}) as Record<string, { Keys?: Item[]; ConsistentRead?: boolean } & Record<string, unknown>>;
    const admitted: typeof requests = {};
    const unprocessed: typeof requests = {};
    const shapes = new Map<string, TableInfo>();
    for (const [table, req] of Object.entries(requests)) {
      const info = await this.info(table);
      if (!info) return this.deps.forward('BatchGetItem', body);
      shapes.set(table, info);
      for (const k of req.Keys ?? []) {
        const pk = scalar(k[info.hash])!;
        if (tp.refused([pk], at) !== undefined) (unprocessed[table] ??= { ...req, Keys: [] }).Keys!.push(k);
        else {
          tp.charge(pk, readUnits(undefined, !!req.ConsistentRead), 0, at);
          (admitted[table] ??= { ...req, Keys: [] }).Keys!.push(k);
        }
      }
    }
    if (Object.keys(admitted).length === 0 && Object.keys(unprocessed).length > 0) return this.throttle('Read', Object.keys(unprocessed)[0]!, undefined);
    const r = await this.deps.forward('BatchGetItem', { ...body, RequestItems: admitted });
    const responses = (r.body.Responses ?? {}) as Record<string, Item[]>;
    for (const [table, req] of Object.entries(admitted)) {
      const info = shapes.get(table)!;
      const id = (i: Item) => JSON.stringify([scalar(i[info.hash]), info.range ? scalar(i[info.range]) : '']);
      const found = new Map((responses[table] ?? []).map((i) => [id(i), i]));
      // Each key on its own, rounded up on its own; one not found costs the minimum (taken already).
      const least = readUnits(undefined, !!req.ConsistentRead);
      for (const k of req.Keys ?? []) tp.charge(scalar(k[info.hash])!, r.status === 200 ? readUnits(found.get(id(k)), !!req.ConsistentRead) - least : -least, 0, at);
    }
    if (r.status !== 200) return r;
    const left = (r.body.UnprocessedKeys ?? {}) as typeof requests;
    for (const [table, req] of Object.entries(unprocessed)) (left[table] ??= { ...req, Keys: [] }).Keys!.push(...(req.Keys ?? []));
    r.body.UnprocessedKeys = left;
    return r;
  }

  private async write(op: string, body: Record<string, unknown>, at: number): Promise<Forwarded> {
    const table = String(body.TableName);
    const info = await this.info(table);
    if (!info) return this.deps.forward(op, body);
    const put = op === 'PutItem' ? (body.Item as Item) : undefined;
    const t = await this.target(table, put ? this.keyOf(info, put) : (body.Key as Item));
    if (!t) return this.deps.forward(op, body);
    const admitted = this.admitWrite(t, op === 'DeleteItem' ? undefined : put ?? t.old, 1, at);
    if ('refused' in admitted) return this.throttle('Write', table, admitted.refused.index);
    const r = await this.deps.forward(op, body);
    if (r.status === 200) this.settleWrite(t, admitted.taken, 'done', op === 'DeleteItem' ? undefined : put ?? (await this.after(t)), 1, at);
    else this.settleWrite(t, admitted.taken, String(r.body.__type).endsWith('#ConditionalCheckFailedException') ? 'failed' : 'none', undefined, 1, at);
    return r;
  }

  private async batchWrite(body: Record<string, unknown>, at: number): Promise<Forwarded> {
    type Request = { PutRequest?: { Item: Item }; DeleteRequest?: { Key: Item } };
    const requests = (body.RequestItems ?? {}) as Record<string, Request[]>;
    const admitted: Record<string, Request[]> = {};
    const unprocessed: Record<string, Request[]> = {};
    const taken: { t: WriteTarget; put?: Item; units: Units }[] = [];
    for (const [table, list] of Object.entries(requests)) {
      const info = await this.info(table);
      if (!info) return this.deps.forward('BatchWriteItem', body);
      for (const req of list) {
        const put = req.PutRequest?.Item;
        const t = await this.target(table, put ? this.keyOf(info, put) : req.DeleteRequest!.Key);
        if (!t) return this.deps.forward('BatchWriteItem', body);
        const a = this.admitWrite(t, put, 1, at);
        if ('refused' in a) (unprocessed[table] ??= []).push(req);
        else {
          (admitted[table] ??= []).push(req);
          taken.push({ t, put, units: a.taken });
        }
      }
    }
    if (taken.length === 0 && Object.keys(unprocessed).length > 0) return this.throttle('Write', Object.keys(unprocessed)[0]!, undefined);
    const r = await this.deps.forward('BatchWriteItem', { ...body, RequestItems: admitted });
    for (const { t, put, units } of taken) this.settleWrite(t, units, r.status === 200 ? 'done' : 'none', put, 1, at);
    if (r.status !== 200) return r;
    const left = (r.body.UnprocessedItems ?? {}) as Record<string, Request[]>;
    for (const [table, list] of Object.entries(unprocessed)) (left[table] ??= []).push(...list);
    r.body.UnprocessedItems = left;
    return r;
  }
}
