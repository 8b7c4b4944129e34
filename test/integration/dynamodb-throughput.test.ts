// The DynamoDB stand-in meters and throttles as an on-demand table does
// (test/fakes/dynamodb-throughput.ts): units as DynamoDB counts them, per
// partition key value of the table and of its index, and the answers a
// throttled call gets. The clock is the test's own, so a burst is a burst
// however slow this machine is.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BatchGetItemCommand, BatchWriteItemCommand, DynamoDBClient, GetItemCommand, PutItemCommand, QueryCommand, TransactWriteItemsCommand, UpdateItemCommand,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { createTable } from '../../control/store/dynamo.js';
import { startFakeDynamo, type FakeDynamo } from '../fakes/dynamodb.js';
import { ON_DEMAND_LIMITS, THROTTLE_MESSAGE } from '../fakes/dynamodb-throughput.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

const TABLE = 'twill-throughput';
let clock = 1_900_000_000_000;
let fake: FakeDynamo;
/** One attempt per call: the test sees each refusal itself. */
let client: DynamoDBClient;

before(async () => {
  fake = await startFakeDynamo({ now: () => clock });
  client = new DynamoDBClient({ ...fake.clientConfig, maxAttempts: 1 });
  await createTable(client, TABLE);
});

after(async () => {
  client.destroy();
  await fake.close();
});

let unique = 0;
const fresh = (prefix: string) => `${prefix}-${++unique}`;
const S = (s: string): AttributeValue => ({ S: s });
const item = (pk: string, sk: string, extra: Record<string, AttributeValue> = {}) => ({ pk: S(pk), sk: S(sk), ...extra });
/** An attribute that makes an item weigh about `bytes`. */
const pad = (bytes: number) => ({ pad: S('x'.repeat(bytes)) });
const load = (key: string) => fake.throughput.loads().get(key) ?? { readUnits: 0, writeUnits: 0, throttled: 0 };
const put = (pk: string, sk: string, extra: Record<string, AttributeValue> = {}) => client.send(new PutItemCommand({ TableName: TABLE, Item: item(pk, sk, extra) }));

function isThrottle(e: unknown, reason: string): boolean {
  const err = e as { name?: string; message?: string; throttlingReasons?: { reason?: string; resource?: string }[] };
  assert.equal(err.name, 'ThrottlingException');
  assert.equal(err.message, THROTTLE_MESSAGE);
  assert.equal(err.throttlingReasons?.[0]?.reason, reason);
  assert.match(err.throttlingReasons?.[0]?.resource ?? '', new RegExp(`^arn:aws:dynamodb:[a-z0-9-]+:\\d{12}:table/${TABLE}`));
  return true;
}

describe('the DynamoDB stand-in: throughput as on-demand tables have it', () => {
  test('its rates are on-demand DynamoDB\'s per partition: 1,000 write and 3,000 read units a second', () => {
    assert.deepEqual(ON_DEMAND_LIMITS, { writeUnitsPerKey: 1000, readUnitsPerKey: 3000 });
  });

  test('a burst on one partition key past its write rate is refused with ThrottlingException and writes nothing; other keys are served', async () => {
    // Reads are a thousandth of the second each here.
    fake.throughput.limits = { writeUnitsPerKey: 5, readUnitsPerKey: 1000 };
    try {
      const hot = fresh('hot');
      const results = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => put(hot, `s${i}`)));
      const done = results.flatMap((r, i) => (r.status === 'fulfilled' ? [`s${i}`] : []));
      assert.equal(done.length, 5, 'one second of the key\'s rate: 5 writes of 1 unit');
      for (const r of results) if (r.status === 'rejected') assert.ok(isThrottle(r.reason, 'TableWriteKeyRangeThroughputExceeded'));
      // Other keys have their own partitions.
      await Promise.all(Array.from({ length: 5 }, (_, i) => put(fresh('cool'), `s${i}`)));
      assert.equal(load(hot).throttled, 7);
      assert.equal(load(hot).writeUnits, 5, 'a throttled write consumed nothing');
      // The rate comes back with time: a second later, five more.
      clock += 1000;
      const stored = await client.send(new QueryCommand({ TableName: TABLE, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': S(hot) }, ConsistentRead: true }));
      assert.deepEqual((stored.Items ?? []).map((i) => i.sk?.S).sort(), done.sort(), 'a throttled write changed nothing');
      await Promise.all(Array.from({ length: 5 }, (_, i) => put(hot, `later${i}`)));
      await assert.rejects(put(hot, 'one-more'), (e) => isThrottle(e, 'TableWriteKeyRangeThroughputExceeded'));
    } finally {
      fake.throughput.limits = { ...ON_DEMAND_LIMITS };
      clock += 10_000;
    }
  });

  test('reads and writes share a partition: a key busy with reads has less room for writes', async () => {
    fake.throughput.limits = { writeUnitsPerKey: 10, readUnitsPerKey: 30 };
    try {
      const k = fresh('shared');
      await put(k, 'a');
      // 1 write (a tenth of the second), then 21 consistent reads of a small item (seven tenths).
      for (let i = 0; i < 21; i++) await client.send(new GetItemCommand({ TableName: TABLE, Key: item(k, 'a'), ConsistentRead: true }));
      await put(k, 'b');
      await put(k, 'c');
      await assert.rejects(put(k, 'd'), (e) => isThrottle(e, 'TableWriteKeyRangeThroughputExceeded'));
      await assert.rejects(client.send(new GetItemCommand({ TableName: TABLE, Key: item(k, 'a'), ConsistentRead: true })), (e) => isThrottle(e, 'TableReadKeyRangeThroughputExceeded'));
    } finally {
      fake.throughput.limits = { ...ON_DEMAND_LIMITS };
      clock += 10_000;
    }
  });

  test('a transaction with an item on a throttled key is cancelled with ThrottlingError on that item, and changes nothing', async () => {
    fake.throughput.limits = { writeUnitsPerKey: 2, readUnitsPerKey: 6 };
    try {
      const hot = fresh('hot');
      const cool = fresh('cool');
      await put(hot, 'a');
      await put(hot, 'b');
      await assert.rejects(
        client.send(new TransactWriteItemsCommand({ TransactItems: [{ Put: { TableName: TABLE, Item: item(cool, 'x') } }, { Put: { TableName: TABLE, Item: item(hot, 'x') } }] })),
        (e: unknown) => {
          const err = e as { name?: string; CancellationReasons?: { Code?: string; Message?: string }[] };
          assert.equal(err.name, 'TransactionCanceledException');
          assert.deepEqual(err.CancellationReasons?.map((r) => r.Code), ['None', 'ThrottlingError']);
          assert.equal(err.CancellationReasons?.[1]?.Message, THROTTLE_MESSAGE);
          return true;
        },
      );
      assert.equal((await client.send(new GetItemCommand({ TableName: TABLE, Key: item(cool, 'x'), ConsistentRead: true }))).Item, undefined);
      assert.equal(load(cool).writeUnits, 0, 'nothing consumed on the other item either');
    } finally {
      fake.throughput.limits = { ...ON_DEMAND_LIMITS };
      clock += 10_000;
    }
  });

  test('BatchGetItem and BatchWriteItem hand back the throttled keys as unprocessed, and throw only when none could be served', async () => {
    // Writes are a thousandth of the second each; two reads use up what is left.
    fake.throughput.limits = { writeUnitsPerKey: 1000, readUnitsPerKey: 2 };
    try {
      const hot = fresh('hot');
      const cool = fresh('cool');
      await put(hot, 'a');
      await put(cool, 'a');
      for (let i = 0; i < 2; i++) await client.send(new GetItemCommand({ TableName: TABLE, Key: item(hot, 'a'), ConsistentRead: true }));
      const got = await client.send(new BatchGetItemCommand({ RequestItems: { [TABLE]: { Keys: [item(hot, 'a'), item(cool, 'a')], ConsistentRead: true } } }));
      assert.deepEqual(got.Responses?.[TABLE]?.map((i) => i.pk?.S), [cool]);
      assert.deepEqual(got.UnprocessedKeys?.[TABLE]?.Keys?.map((k) => k.pk?.S), [hot]);
      await assert.rejects(client.send(new BatchGetItemCommand({ RequestItems: { [TABLE]: { Keys: [item(hot, 'a')], ConsistentRead: true } } })), (e) => isThrottle(e, 'TableReadKeyRangeThroughputExceeded'));

      const wrote = await client.send(new BatchWriteItemCommand({ RequestItems: { [TABLE]: [{ PutRequest: { Item: item(hot, 'c') } }, { PutRequest: { Item: item(cool, 'c') } }] } }));
      assert.deepEqual(wrote.UnprocessedItems?.[TABLE]?.map((r) => r.PutRequest?.Item?.pk?.S), [hot]);
      clock += 1000;
      assert.equal((await client.send(new GetItemCommand({ TableName: TABLE, Key: item(hot, 'c'), ConsistentRead: true }))).Item, undefined);
    } finally {
      fake.throughput.limits = { ...ON_DEMAND_LIMITS };
      clock += 10_000;
    }
  });

  test('units are counted as DynamoDB meters them: by size, rounded per call, failed conditions and transactions included', async () => {
    const k = fresh('units');
    await put(k, 'a', pad(1500)); // 1.5 KB: 2 write units
    assert.equal(load(k).writeUnits, 2);
    await assert.rejects(client.send(new PutItemCommand({ TableName: TABLE, Item: item(k, 'a'), ConditionExpression: 'attribute_not_exists(pk)' })), { name: 'ConditionalCheckFailedException' });
    assert.equal(load(k).writeUnits, 4, 'a failed condition consumes the units of the item it found');
    await client.send(new GetItemCommand({ TableName: TABLE, Key: item(k, 'a'), ConsistentRead: true }));
    assert.equal(load(k).readUnits, 1, 'a strongly consistent read of up to 4 KB');
    await client.send(new GetItemCommand({ TableName: TABLE, Key: item(k, 'a') }));
    assert.equal(load(k).readUnits, 1.5, 'eventually consistent: half');
    await client.send(new GetItemCommand({ TableName: TABLE, Key: item(k, 'absent'), ConsistentRead: true }));
    assert.equal(load(k).readUnits, 2.5, 'a read that finds nothing costs the minimum');
    await put(k, 'b', pad(1500));
    await put(k, 'c', pad(1500));
    const before = load(k).readUnits;
    await client.send(new QueryCommand({ TableName: TABLE, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': S(k) }, ConsistentRead: true, ProjectionExpression: 'sk' }));
    assert.equal(load(k).readUnits - before, 2, 'a Query rounds the 4.5 KB it read up once (a projection saves nothing)');
    await client.send(new BatchGetItemCommand({ RequestItems: { [TABLE]: { Keys: [item(k, 'a'), item(k, 'b')], ConsistentRead: true } } }));
    assert.equal(load(k).readUnits - before, 4, 'BatchGetItem rounds each item on its own');
    const t = fresh('tx');
    await client.send(new TransactWriteItemsCommand({ TransactItems: [{ Put: { TableName: TABLE, Item: item(t, 'a', pad(500)) } }] }));
    assert.equal(load(t).writeUnits, 2, 'a transactional write costs twice');
  });

  test('index writes are charged to the index partition: adding and moving an entry cost, rewriting other attributes of a KEYS_ONLY entry does not', async () => {
    const k = fresh('indexed');
    const g = fresh('G');
    const h = fresh('H');
    const idx = (v: string) => load(`gsi1:${v}`).writeUnits;
    await put(k, 'a', { gsi1pk: S(g), gsi1sk: S('1') });
    assert.equal(idx(g), 1, 'the new entry');
    await client.send(new UpdateItemCommand({ TableName: TABLE, Key: item(k, 'a'), UpdateExpression: 'SET #o = :v', ExpressionAttributeNames: { '#o': 'other' }, ExpressionAttributeValues: { ':v': S('x') } }));
    assert.equal(idx(g), 1, 'keys unchanged: no index write');
    await client.send(new UpdateItemCommand({ TableName: TABLE, Key: item(k, 'a'), UpdateExpression: 'SET gsi1sk = :v', ExpressionAttributeValues: { ':v': S('2') } }));
    assert.equal(idx(g), 3, 'a moved sort key: the old entry deleted, the new one put');
    await client.send(new UpdateItemCommand({ TableName: TABLE, Key: item(k, 'a'), UpdateExpression: 'SET gsi1pk = :v', ExpressionAttributeValues: { ':v': S(h) } }));
    assert.deepEqual([idx(g), idx(h)], [4, 1], 'to another index partition: a delete on one, a put on the other');
    await client.send(new QueryCommand({ TableName: TABLE, IndexName: 'gsi1', KeyConditionExpression: 'gsi1pk = :p', ExpressionAttributeValues: { ':p': S(h) } }));
    assert.equal(load(`gsi1:${h}`).readUnits, 0.5, 'an index query is eventually consistent: half a unit at least');
  });

  test('a throttled index partition throttles the table write, with an index reason', async () => {
    fake.throughput.limits = { writeUnitsPerKey: 2, readUnitsPerKey: 6 };
    try {
      const g = fresh('G');
      await put(fresh('a'), 'a', { gsi1pk: S(g), gsi1sk: S('1') });
      await put(fresh('b'), 'a', { gsi1pk: S(g), gsi1sk: S('2') });
      const c = fresh('c');
      await assert.rejects(put(c, 'a', { gsi1pk: S(g), gsi1sk: S('3') }), (e) => isThrottle(e, 'IndexWriteKeyRangeThroughputExceeded'));
      assert.equal((await client.send(new GetItemCommand({ TableName: TABLE, Key: item(c, 'a'), ConsistentRead: true }))).Item, undefined);
    } finally {
      fake.throughput.limits = { ...ON_DEMAND_LIMITS };
      clock += 10_000;
    }
  });
});
