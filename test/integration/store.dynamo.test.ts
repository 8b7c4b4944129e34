// The DynamoDB store: the same conformance suite as SQLite, against dynalite
// (with the transaction support of test/fakes/dynamodb.ts), plus what only a
// store shared by separate processes has to prove. TWILL_DYNAMODB_ENDPOINT
// runs it against another local endpoint instead (Amazon's DynamoDB Local, for
// one): loopback only, so no run of this file can touch AWS.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { CreateTableCommand, DescribeTableCommand, DescribeTimeToLiveCommand, DynamoDBClient, GetItemCommand, PutItemCommand, type AttributeValue, type DynamoDBClientConfig } from '@aws-sdk/client-dynamodb';
import { parseNetConf } from '../../core/config.js';
import { ConflictError } from '../../core/errors.js';
import { agentState } from '../../core/fabric.js';
import { leasesHash, type Lease, type NewLease } from '../../core/lease.js';
import { silentLogger } from '../../core/log.js';
import { Topics } from '../../core/topics.js';
import { Controller } from '../../control/controller/controller.js';
import { createTable, DynamoStore, LAYOUT_KEY, leasePk, SHARDS, tableDefinition, TTL_ATTRIBUTE } from '../../control/store/dynamo.js';
import { migrateTable } from '../../control/store/dynamo-migrate.js';
import { localClientConfig, startFakeDynamo, type FakeDynamo } from '../fakes/dynamodb.js';
import { storeSuite } from '../helpers/store-suite.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

const TABLE = `twill-test-${process.pid}-${Date.now()}`;
const CONF = parseNetConf({ Network: '10.0.0.0/16' }, {});

let fake: FakeDynamo | undefined;
let clientConfig: DynamoDBClientConfig;
/**
 * The stand-in's clock while a test runs on simulated time (the wall clock
 * otherwise): rates per second are then a property of the calls made, not
 * of how fast this machine happens to make them.
 */
let simulatedNow: number | undefined;

before(async () => {
  const external = process.env.TWILL_DYNAMODB_ENDPOINT;
  if (external) {
    const host = new URL(external).hostname;
    assert.ok(['127.0.0.1', 'localhost', '[::1]'].includes(host), `TWILL_DYNAMODB_ENDPOINT must be on loopback, not ${host}`);
    clientConfig = localClientConfig(external);
  } else {
    fake = await startFakeDynamo({ now: () => simulatedNow ?? Date.now() });
    clientConfig = fake.clientConfig;
  }
  const admin = new DynamoDBClient(clientConfig);
  try {
    await createTable(admin, TABLE);
  } finally {
    admin.destroy();
  }
});

after(async () => {
  await fake?.close();
});

/** A store with its own client, as each Lambda invocation environment has. */
function openStore(opts: { ttlGraceSeconds?: number; tableName?: string; sleep?: (ms: number) => Promise<void> } = {}): DynamoStore {
  return new DynamoStore({ tableName: TABLE, clientConfig, ...opts });
}

storeSuite('dynamodb', async () => {
  const store = openStore();
  const others: DynamoStore[] = [];
  return {
    store,
    // Its own client on the same table, as another function instance has.
    another: async () => { const o = openStore(); others.push(o); return o; },
    close: async () => { for (const o of others) await o.close(); await store.close(); },
  };
});

let unique = 0;
const fresh = (prefix: string) => `${prefix}-${process.pid}-${++unique}`;

function newLease(network: string, node: string, over: Partial<NewLease> = {}): NewLease {
  return {
    network, node, subnet: null, ipv6Subnet: null, publicIP: '192.0.2.1', publicIPv6: null, backendType: 'vxlan',
    backendData: {}, expiresAt: new Date(Date.now() + 3_600_000).toISOString(), createdAt: new Date().toISOString(), ...over,
  };
}

describe('dynamodb: what separate invocations need', () => {
  test('a replace that keeps the expiry, crossed by a renewal between its read and its transaction, plans again and keeps the renewal', async () => {
    const n = fresh('net');
    // The writer's own client, with a step that lets another invocation renew the lease just before each transaction is sent.
    const client = new DynamoDBClient(clientConfig);
    const store = new DynamoStore({ tableName: TABLE, client });
    const other = openStore();
    try {
      await other.putNetwork(n, CONF, undefined);
      const a = await other.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24' }));
      const later = new Date(Date.parse(a.expiresAt!) + 3_600_000).toISOString();
      let transactions = 0;
      client.middlewareStack.add((next, context) => async (args) => {
        if (context.commandName === 'TransactWriteItemsCommand' && transactions++ === 0) assert.ok(await other.renewLease(n, 'a', a.revision, later));
        return next(args);
      }, { step: 'initialize', name: 'renewalCrossesTheWrite' });
      const { revision: _, ...read } = a;
      const kept = await store.replaceLease({ ...read, rotateKey: 'tok-1' }, a.revision, { keepExpiry: true });
      assert.equal(transactions, 2, 'the first transaction was refused on the expiry, and the write planned again from a fresh read');
      assert.equal(kept.expiresAt, later);
      assert.deepEqual(await other.getLease(n, 'a'), kept);
      assert.deepEqual((await other.listExpired(Date.parse(a.expiresAt!) + 1)).filter((l) => l.network === n), []);
    } finally {
      await store.close();
      await other.close();
      client.destroy();
    }
  });

  test('64 concurrent joins from 64 separate stores (separate clients, as separate Lambdas) get 64 distinct subnets', async () => {
    const n = fresh('net');
    const admin = openStore();
    const stores = Array.from({ length: 64 }, () => openStore());
    try {
      await new Controller(admin, { publish: async () => {} }, { topics: new Topics(), log: silentLogger }).applyNetwork(n, CONF);
      const leases = await Promise.all(
        stores.map((store, i) =>
          // Flannel's own pick (random among the first free subnets): 64 at once
          // still collide on subnets, and every write races on the network item.
          // The suite above runs the narrow-window case on one shared client.
          new Controller(store, { publish: async () => {} }, { topics: new Topics(), log: silentLogger }).join(n, `node-${i}`, { publicIP: '192.0.2.1' }),
        ),
      );
      const subnets = leases.map((l) => l.subnet);
      assert.equal(new Set(subnets).size, 64, 'no subnet was handed out twice');
      const net = await admin.getNetwork(n);
      const stored = await admin.listLeases(n);
      assert.equal(stored.length, 64);
      assert.equal(net?.leaseCount, 64);
      assert.equal(net?.leaseHash, leasesHash(stored), 'the O(1) hash stayed exact through every lost race');
      assert.deepEqual(stored.map((l) => l.subnet).sort(), [...subnets].sort());
      assert.equal((await admin.takenSubnets(n)).v4.length, 64, 'one claim per lease, none left behind by a cancelled transaction');
    } finally {
      await Promise.all([admin, ...stores].map((s) => s.close()));
    }
  });

  test('transactions cancelled by TransactionConflict are retried and leave the manifest exact', { skip: !!process.env.TWILL_DYNAMODB_ENDPOINT && 'needs the fake' }, async () => {
    const n = fresh('net');
    const stores = Array.from({ length: 16 }, () => openStore());
    try {
      await stores[0]!.putNetwork(n, CONF, undefined);
      fake!.setTransactionConflictRate(0.3);
      const before = fake!.stats.injectedConflicts;
      const controllers = stores.map((s) => new Controller(s, { publish: async () => {} }, { topics: new Topics(), log: silentLogger }));
      const leases = await Promise.all(controllers.map((c, i) => c.join(n, `node-${i}`, { publicIP: '192.0.2.1' })));
      // Renew and release some under the same faults.
      await Promise.all(controllers.slice(0, 8).map((c, i) => c.join(n, `node-${i}`, { publicIP: '192.0.2.2' })));
      await Promise.all(controllers.slice(8, 12).map((c, i) => c.release(n, `node-${i + 8}`)));
      fake!.setTransactionConflictRate(0);
      assert.ok(fake!.stats.injectedConflicts > before, 'some transactions were cancelled');
      assert.equal(new Set(leases.map((l) => l.subnet)).size, 16);
      const stored = await stores[0]!.listLeases(n);
      const net = await stores[0]!.getNetwork(n);
      assert.equal(stored.length, 12);
      assert.equal(net?.leaseCount, 12);
      assert.equal(net?.leaseHash, leasesHash(stored));
      assert.equal((await stores[0]!.takenSubnets(n)).v4.length, 12);
    } finally {
      fake?.setTransactionConflictRate(0);
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  test('status writes cancelled by TransactionConflict are retried and the agent counts stay exact', { skip: !!process.env.TWILL_DYNAMODB_ENDPOINT && 'needs the fake' }, async () => {
    const n = fresh('net');
    const stores = Array.from({ length: 8 }, () => openStore());
    try {
      await stores[0]!.putNetwork(n, CONF, undefined);
      fake!.setTransactionConflictRate(0.4);
      const before = fake!.stats.injectedConflicts;
      const states = [{ v: 2, state: 'online', inSync: false, errors: [] }, { v: 2, state: 'online', inSync: true, errors: [] }, { v: 2, state: 'offline', errors: [] }] as const;
      // Each node changes state three times, from separate stores at once.
      for (const round of [0, 1, 2]) {
        await Promise.all(stores.flatMap((s, k) => Array.from({ length: 4 }, (_, j) =>
          s.putStatus({ network: n, node: `node-${k}-${j}`, status: { ...states[(round + j) % 3]!, errors: [] }, updatedAt: new Date().toISOString() }))));
      }
      fake!.setTransactionConflictRate(0);
      assert.ok(fake!.stats.injectedConflicts > before, 'some status transactions were cancelled');
      const listed = (await stores[0]!.listStatus(n)).map((r) => agentState(r.status));
      assert.equal(listed.length, 32);
      assert.deepEqual(await stores[0]!.agentCounts(n), { online: listed.filter((x) => x === 'online').length, outOfSync: listed.filter((x) => x === 'outOfSync').length, offline: listed.filter((x) => x === 'offline').length });
    } finally {
      fake?.setTransactionConflictRate(0);
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  test('a renewal writes the lease alone, no index entry; the expiry sweep moves a renewed lease\'s index key once its old expiry comes', { skip: !!process.env.TWILL_DYNAMODB_ENDPOINT && 'needs the fake' }, async () => {
    const n = fresh('net');
    const store = openStore();
    const indexWrites = () => [...fake!.throughput.loads()].filter(([k]) => k.startsWith(`gsi1:EXPIRY#${n}#`)).reduce((x, [, l]) => x + l.writeUnits, 0);
    try {
      await store.putNetwork(n, CONF, undefined);
      const t0 = Date.parse('2030-01-01T00:00:00.000Z');
      const lease = await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24', expiresAt: new Date(t0).toISOString() }));
      assert.equal(indexWrites(), 1, 'a new lease: its index entry');
      await store.renewLease(n, 'a', lease.revision, new Date(t0 + 3_600_000).toISOString());
      await store.renewLease(n, 'a', lease.revision, new Date(t0 + 7_200_000).toISOString());
      assert.equal(indexWrites(), 1, 'renewals wrote no index entry');
      const expired = async (at: number) => (await store.listExpired(at)).filter((l) => l.network === n).map((l) => l.node);
      assert.deepEqual(await expired(t0 - 1), [], 'not due');
      assert.deepEqual(await expired(t0 + 1), [], 'due by the index, but renewed: not expired');
      assert.equal(indexWrites(), 3, 'the sweep moved its key (a delete and a put)');
      assert.deepEqual(await expired(t0 + 2), [], 'the moved key is not due again');
      assert.equal(indexWrites(), 3, 'and is not moved again');
      assert.deepEqual(await expired(t0 + 7_200_000), ['a'], 'due at its real expiry');
    } finally {
      await store.close();
    }
  });

  test('a lease that expires carries ttl at its expiry plus the grace period; a reservation carries none', async () => {
    const n = fresh('net');
    const store = openStore({ ttlGraceSeconds: 3600 });
    const raw = new DynamoDBClient(clientConfig);
    try {
      await store.putNetwork(n, CONF, undefined);
      const expiresAt = '2030-06-01T00:00:00.500Z';
      await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24', expiresAt }));
      await store.createLease(newLease(n, 'r', { subnet: '10.0.2.0/24', expiresAt: null }));
      const item = async (node: string) =>
        (await raw.send(new GetItemCommand({ TableName: TABLE, Key: { pk: { S: leasePk(n, node) }, sk: { S: `LEASE#${node}` } }, ConsistentRead: true }))).Item;
      assert.equal((await item('a'))?.[TTL_ATTRIBUTE]?.N, String(Math.ceil(Date.parse(expiresAt) / 1000) + 3600));
      assert.equal((await item('r'))?.[TTL_ATTRIBUTE], undefined);
      // A reservation made from a lease loses its ttl (and its place in the expiry index).
      const a = await store.getLease(n, 'a');
      await store.replaceLease(newLease(n, 'a', { subnet: '10.0.1.0/24', expiresAt: null }), a!.revision);
      assert.equal((await item('a'))?.[TTL_ATTRIBUTE], undefined);
      assert.deepEqual((await store.listExpired(Date.parse('2100-01-01T00:00:00Z'))).filter((l) => l.network === n), []);
      if (fake) {
        const ttl = await raw.send(new DescribeTimeToLiveCommand({ TableName: TABLE }));
        assert.equal(ttl.TimeToLiveDescription?.AttributeName, TTL_ATTRIBUTE, 'createTable turned TTL on');
      }
    } finally {
      raw.destroy();
      await store.close();
    }
  });

  test('a burst past a partition key\'s rate is throttled, sent again with backoff, and every lease and count ends right', { skip: !!process.env.TWILL_DYNAMODB_ENDPOINT && 'needs the fake' }, async () => {
    const n = fresh('net');
    // Simulated time: the clock moves only as the stores back off, so the
    // twelve writers arrive within one second however slow this machine is.
    simulatedNow = Date.now();
    const sleep = async (ms: number) => {
      simulatedNow! += ms;
      await new Promise((r) => setImmediate(r));
    };
    const stores = Array.from({ length: 12 }, () => openStore({ sleep }));
    const throttledBefore = fake!.throughput.throttled;
    try {
      await stores[0]!.putNetwork(n, CONF, undefined);
      // The network item takes 2 write units a commit (a transaction): 4 commits
      // a second, where 12 writers arrive at once, every one retrying.
      fake!.throughput.limits = { writeUnitsPerKey: 8, readUnitsPerKey: 24 };
      const controllers = stores.map((s) => new Controller(s, { publish: async () => {} }, { topics: new Topics(), log: silentLogger }));
      const leases = await Promise.all(controllers.map((c, i) => c.join(n, `node-${i}`, { publicIP: '192.0.2.1' })));
      await Promise.all(stores.flatMap((s, i) => [
        s.putStatus({ network: n, node: `node-${i}`, status: { v: 2, state: 'online', inSync: false, errors: [] }, updatedAt: new Date().toISOString() }),
      ]));
      fake!.throughput.limits = { writeUnitsPerKey: 1000, readUnitsPerKey: 3000 };
      assert.ok(fake!.throughput.throttled > throttledBefore, 'the burst was throttled');
      assert.ok(stores.reduce((k, s) => k + s.throttledCalls, 0) > 0, 'and the store sent throttled calls again');
      assert.equal(new Set(leases.map((l) => l.subnet)).size, 12);
      const stored = await stores[0]!.listLeases(n);
      const net = await stores[0]!.getNetwork(n);
      assert.equal(stored.length, 12);
      assert.equal(net?.leaseCount, 12);
      assert.equal(net?.leaseHash, leasesHash(stored));
      assert.equal((await stores[0]!.takenSubnets(n)).v4.length, 12);
      const since = await stores[0]!.changesSince(n, 0, 100);
      assert.deepEqual(since?.changes.map((c) => c.revision), Array.from({ length: 13 }, (_, i) => i + 1), 'one change per revision, none lost to a throttle');
      assert.deepEqual(await stores[0]!.agentCounts(n), { online: 0, outOfSync: 12, offline: 0 });
    } finally {
      fake?.throughput.limits && (fake.throughput.limits = { writeUnitsPerKey: 1000, readUnitsPerKey: 3000 });
      simulatedNow = undefined;
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  test('a network\'s leases, claims and statuses are spread over its shards, and its agent counts cost the same read units at any size', { skip: !!process.env.TWILL_DYNAMODB_ENDPOINT && 'needs the fake' }, async () => {
    const store = openStore();
    try {
      const costOfCounts = async (network: string) => {
        const before = fake!.throughput.loads();
        await store.agentCounts(network);
        let units = 0;
        for (const [k, l] of fake!.throughput.loads()) if (k.startsWith(`NET#${network}#`)) units += l.readUnits - (before.get(k)?.readUnits ?? 0);
        return units;
      };
      // Statuses as large as an agent may send (32 errors of 1 KB): reading them all would cost 8 units each.
      const errors = Array.from({ length: 32 }, (_, i) => `${i} ${'e'.repeat(1000)}`);
      const costs: number[] = [];
      for (const size of [4, 48]) {
        const n = fresh('net');
        await store.putNetwork(n, CONF, undefined);
        for (let i = 0; i < size; i++) {
          await store.createLease(newLease(n, `node-${i}`, { subnet: `10.0.${i + 1}.0/24` }));
          await store.putStatus({ network: n, node: `node-${i}`, status: { v: 2, state: 'online', inSync: i % 3 !== 0, errors }, updatedAt: new Date().toISOString() });
        }
        costs.push(await costOfCounts(n));
        if (size === 48) {
          const keys = [...fake!.throughput.loads().keys()].filter((k) => k.startsWith(`NET#${n}#`));
          for (const kind of ['L', 'C', 'S']) {
            const used = keys.filter((k) => new RegExp(`^NET#${n}#${kind}[0-9a-f]{2}$`).test(k)).length;
            assert.ok(used >= SHARDS / 2, `48 nodes use many of the ${SHARDS} ${kind} shards (${used})`);
          }
          assert.deepEqual(await store.agentCounts(n), { online: 32, outOfSync: 16, offline: 0 });
        }
      }
      assert.deepEqual(costs, [SHARDS, SHARDS], 'one read unit per shard\'s count item, whatever the number of statuses');
    } finally {
      await store.close();
    }
  });

  test('a table in the layout of an earlier twill is refused until migrated; the migration moves everything, counts the statuses, and runs again harmlessly', async () => {
    const table = `${TABLE}-v1`;
    const raw = new DynamoDBClient(clientConfig);
    await raw.send(new CreateTableCommand(tableDefinition(table)));
    for (let i = 0; (await raw.send(new DescribeTableCommand({ TableName: table }))).Table?.TableStatus !== 'ACTIVE'; i++) await new Promise((r) => setTimeout(r, 50));
    const store = openStore({ tableName: table });
    try {
      // Layout 1, as the twill before it wrote it: all of network n under NET#n.
      const n = 'old';
      const S = (v: string): AttributeValue => ({ S: v });
      const N = (v: number): AttributeValue => ({ N: String(v) });
      const expires = Date.parse('2031-01-01T00:00:00.000Z');
      const leases: Lease[] = ['a', 'b'].map((node, i) => ({ ...newLease(n, node, { subnet: `10.0.${i + 1}.0/24`, expiresAt: new Date(expires + i).toISOString() }), revision: i + 2 }));
      const put = (item: Record<string, AttributeValue>) => raw.send(new PutItemCommand({ TableName: table, Item: item }));
      await put({ pk: S(`NET#${n}`), sk: S('NETWORK'), gsi1pk: S('NETWORKS'), gsi1sk: S(n), name: S(n), config: S(JSON.stringify(CONF)), revision: N(3), leaseCount: N(2), leaseHash: S(leasesHash(leases)), updatedAt: S('2030-01-01T00:00:00.000Z') });
      for (const l of leases) {
        const ms = Date.parse(l.expiresAt!);
        await put({ pk: S(`NET#${n}`), sk: S(`LEASE#${l.node}`), gsi1pk: S(`EXPIRY#${n}`), gsi1sk: S(`${String(ms).padStart(16, '0')}#${l.node}`), node: S(l.node), revision: N(l.revision), lease: S(JSON.stringify(l)), expiresMs: N(ms), ttl: N(Math.ceil(ms / 1000)) });
        await put({ pk: S(`NET#${n}`), sk: S(`CLAIM#4#0a000${l.revision - 1}00`), node: S(l.node) });
        await put({ pk: S(`NET#${n}`), sk: S(`STATUS#${l.node}`), gsi1pk: S('STATUS'), gsi1sk: S(`${n}#${l.node}`), network: S(n), node: S(l.node), status: S(JSON.stringify({ v: 2, state: 'online', inSync: l.node === 'a', errors: [] })), updatedAt: S('2030-01-01T00:00:00.000Z') });
      }
      for (const [rev, change] of [[1, { revision: 1, config: true }], ...leases.map((l) => [l.revision, { revision: l.revision, node: l.node, lease: l }] as const)] as const) {
        await put({ pk: S(`NET#${n}`), sk: S(`CHG#${String(rev).padStart(15, '0')}`), change: S(JSON.stringify(change)), ttl: N(Math.ceil(Date.now() / 1000) + 86400) });
      }

      await assert.rejects(store.getNetwork(n), /item layout of an earlier twill .*migrate it once with `node --import tsx cli\/migrate-table.ts --table /);
      await assert.rejects(store.listLeases(n), /a table from an earlier twill/);
      assert.equal((await store.getNode('nobody')), undefined, 'node records (the authorizer\'s) have one layout: still served');

      const report = await migrateTable(raw, table);
      assert.deepEqual(report, { current: false, moved: { leases: 2, claims: 2, changes: 3, statuses: 2 } });
      assert.deepEqual((await store.listLeases(n)).map((l) => [l.node, l.subnet, l.revision]), [['a', '10.0.1.0/24', 2], ['b', '10.0.2.0/24', 3]]);
      assert.deepEqual((await store.takenSubnets(n)).v4.map(String), [String(0x0a000100), String(0x0a000200)]);
      assert.deepEqual(await store.agentCounts(n), { online: 1, outOfSync: 1, offline: 0 });
      assert.deepEqual((await store.listStatus(n)).map((r) => r.node), ['a', 'b']);
      assert.deepEqual((await store.changesSince(n, 0, 10))?.changes.map((c) => c.revision), [1, 2, 3]);
      assert.deepEqual((await store.listExpired(expires + 10)).map((l) => l.node), ['a', 'b'], 'the expiry index moved with the leases');
      const oldLease = await raw.send(new GetItemCommand({ TableName: table, Key: { pk: S(`NET#${n}`), sk: S('LEASE#a') }, ConsistentRead: true }));
      assert.equal(oldLease.Item, undefined, 'nothing left under the old keys');
      const joined = await new Controller(store, { publish: async () => {} }, { topics: new Topics(), log: silentLogger }).join(n, 'c', { publicIP: '192.0.2.3' });
      assert.ok(joined.subnet && !['10.0.1.0/24', '10.0.2.0/24'].includes(joined.subnet), 'a new node is kept off the migrated leases\' subnets');
      assert.deepEqual(await migrateTable(raw, table), { current: true, moved: { leases: 0, claims: 0, changes: 0, statuses: 0 } });
    } finally {
      await store.close();
      raw.destroy();
    }
  });

  test('a new table without the layout item (as infra makes it) is served, and marked', async () => {
    const table = `${TABLE}-new`;
    const raw = new DynamoDBClient(clientConfig);
    await raw.send(new CreateTableCommand(tableDefinition(table)));
    for (let i = 0; (await raw.send(new DescribeTableCommand({ TableName: table }))).Table?.TableStatus !== 'ACTIVE'; i++) await new Promise((r) => setTimeout(r, 50));
    const store = openStore({ tableName: table });
    try {
      assert.deepEqual(await store.listNetworks(), []);
      await store.putNetwork('fresh', CONF, undefined);
      const mark = await raw.send(new GetItemCommand({ TableName: table, Key: LAYOUT_KEY, ConsistentRead: true }));
      assert.equal(mark.Item?.version?.N, '2');
    } finally {
      await store.close();
      raw.destroy();
    }
  });

  test('errors that are not a lost race propagate as they are', async () => {
    const store = new DynamoStore({ tableName: `${TABLE}-missing`, clientConfig: { ...clientConfig, maxAttempts: 1 } });
    try {
      await assert.rejects(store.putNetwork('n', CONF, undefined), (e: unknown) => {
        assert.ok(!(e instanceof ConflictError), 'a missing table is no conflict');
        assert.equal((e as Error).name, 'ResourceNotFoundException');
        return true;
      });
    } finally {
      await store.close();
    }
  });
});
