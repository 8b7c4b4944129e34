// The DynamoDB store: the same conformance suite as SQLite, against dynalite
// (with the transaction support of test/fakes/dynamodb.ts), plus what only a
// store shared by separate processes has to prove. TWILL_DYNAMODB_ENDPOINT
// runs it against another local endpoint instead (Amazon's DynamoDB Local, for
// one): loopback only, so no run of this file can touch AWS.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { DescribeTimeToLiveCommand, DynamoDBClient, GetItemCommand, type DynamoDBClientConfig } from '@aws-sdk/client-dynamodb';
import { parseNetConf } from '../../core/config.js';
import { ConflictError } from '../../core/errors.js';
import { leasesHash, type NewLease } from '../../core/lease.js';
import { silentLogger } from '../../core/log.js';
import { Topics } from '../../core/topics.js';
import { Controller } from '../../functions/controller.js';
import { createTable, DynamoStore, leasePk, TTL_ATTRIBUTE } from '../../functions/store/dynamo.js';
import { localClientConfig, startFakeDynamo, type FakeDynamo } from '../fakes/dynamodb.js';
import { storeSuite } from '../helpers/store-suite.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

const TABLE = `twill-test-${process.pid}-${Date.now()}`;
const CONF = parseNetConf({ Network: '10.0.0.0/16' }, {});

let fake: FakeDynamo | undefined;
let clientConfig: DynamoDBClientConfig;

before(async () => {
  const external = process.env.TWILL_DYNAMODB_ENDPOINT;
  if (external) {
    const host = new URL(external).hostname;
    assert.ok(['127.0.0.1', 'localhost', '[::1]'].includes(host), `TWILL_DYNAMODB_ENDPOINT must be on loopback, not ${host}`);
    clientConfig = localClientConfig(external);
  } else {
    fake = await startFakeDynamo();
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
function openStore(opts: { ttlGraceSeconds?: number } = {}): DynamoStore {
  return new DynamoStore({ tableName: TABLE, clientConfig, ...opts });
}

storeSuite('dynamodb', async () => {
  const store = openStore();
  return { store, close: () => store.close() };
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
