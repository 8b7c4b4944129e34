// Store conformance suite: what the controller relies on from any store. It
// speaks only the Store interface, so the same tests run against the embedded
// SQLite store and against DynamoDB. open() must give a store that is usable
// on its own (a fresh one per call is simplest); each test also keeps to its
// own network and node names, so a shared backing table does no harm.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseCidr } from '../../core/cidr.js';
import { parseNetConf, type NetConf } from '../../core/config.js';
import { ConflictError } from '../../core/errors.js';
import { agentState } from '../../core/fabric.js';
import { leasesHash, type Lease, type NewLease } from '../../core/lease.js';
import { silentLogger } from '../../core/log.js';
import type { Status } from '../../core/messages.js';
import { Topics } from '../../core/topics.js';
import { Controller } from '../../control/controller/controller.js';
import type { Store } from '../../control/store/store.js';

export interface OpenedStore {
  store: Store;
  /** Another store on the same backing (file, table), as a second process or function instance has; closed with this one. */
  another(): Promise<Store>;
  close(): Promise<void>;
}

const V4_CONF: NetConf = parseNetConf({ Network: '10.0.0.0/16' }, {});
const DUAL_CONF: NetConf = parseNetConf({ Network: '10.0.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:1::/48' }, {});
const HIGH_CONF: NetConf = parseNetConf({ Network: '172.16.0.0/12' }, {});

let unique = 0;
/** A name no other test (or earlier run on a shared table) uses. */
/** A controller on this store with a clock the test moves. */
function controllerOn(store: Store) {
  const clock = { now: Date.parse('2030-06-01T00:00:00.000Z') };
  return { clock, controller: new Controller(store, { publish: async () => {} }, { topics: new Topics(), log: silentLogger, now: () => clock.now, leaseTtlMs: 3_600_000 }) };
}

function fresh(prefix: string): string {
  unique++;
  return `${prefix}-${process.pid}-${unique}-${Math.random().toString(36).slice(2, 8)}`;
}

function newLease(network: string, node: string, over: Partial<NewLease> = {}): NewLease {
  return {
    network,
    node,
    subnet: null,
    ipv6Subnet: null,
    publicIP: '192.0.2.1',
    publicIPv6: null,
    backendType: 'vxlan',
    backendData: { VtepMAC: '02:00:00:00:00:01' },
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    createdAt: new Date().toISOString(),
    ...over,
  };
}

/** Leases, count, hash and revision of a network: what must not move when a write is refused. */
async function snapshot(store: Store, network: string): Promise<unknown> {
  const net = await store.getNetwork(network);
  return { net, leases: await store.listLeases(network) };
}

/** The manifest a store keeps must be the one an agent computes from the leases it received. */
async function assertManifest(store: Store, network: string): Promise<Lease[]> {
  const net = await store.getNetwork(network);
  assert.ok(net, `network ${network} exists`);
  const leases = await store.listLeases(network);
  assert.equal(net.leaseCount, leases.length, 'leaseCount equals the number of leases');
  assert.equal(net.leaseHash, leasesHash(leases), 'leaseHash equals leasesHash(listLeases)');
  for (const l of leases) assert.ok(l.revision <= net.revision, `lease ${l.node} revision ${l.revision} is at most the network's ${net.revision}`);
  return leases;
}

async function rejectsConflict(p: Promise<unknown>, what: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof ConflictError, `${what}: expected ConflictError, got ${String(e)}`);
    return true;
  });
}

const ip = (cidr: string): bigint => (parseCidr(cidr, true) as { ip: bigint }).ip;

export function storeSuite(name: string, open: () => Promise<OpenedStore>): void {
  /** Runs body on a store opened for this test alone, closed even when the test fails. */
  const withStore = async (body: (store: Store, opened: OpenedStore) => Promise<void>): Promise<void> => {
    const opened = await open();
    try {
      await body(opened.store, opened);
    } finally {
      await opened.close();
    }
  };

  describe(`${name}: store conformance`, () => {
    describe('networks', () => {
      test('putNetwork creates a network with no leases and an empty hash', () =>
        withStore(async (store) => {
          const n = fresh('net');
          assert.equal(await store.getNetwork(n), undefined);
          const rec = await store.putNetwork(n, V4_CONF, undefined);
          assert.equal(rec.name, n);
          assert.deepEqual(rec.config, V4_CONF);
          assert.equal(rec.leaseCount, 0);
          assert.equal(rec.leaseHash, leasesHash([]));
          assert.ok(Number.isInteger(rec.revision) && rec.revision >= 1, `revision ${rec.revision}`);
          assert.deepEqual(await store.getNetwork(n), rec);
          assert.ok((await store.listNetworks()).some((r) => r.name === n));
        }));

      test('creating a network that exists already is a conflict and changes nothing', () =>
        withStore(async (store) => {
          const n = fresh('net');
          const first = await store.putNetwork(n, V4_CONF, undefined);
          await rejectsConflict(store.putNetwork(n, DUAL_CONF, undefined), 'create over an existing network');
          assert.deepEqual(await store.getNetwork(n), first);
        }));

      test('replacing at the current revision stores the new config, bumps the revision and keeps the leases', () =>
        withStore(async (store) => {
          const n = fresh('net');
          const first = await store.putNetwork(n, V4_CONF, undefined);
          await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24' }));
          const before = await store.getNetwork(n);
          assert.ok(before);
          const second = await store.putNetwork(n, DUAL_CONF, before.revision);
          assert.deepEqual(second.config, DUAL_CONF);
          assert.ok(second.revision > before.revision && before.revision > first.revision);
          assert.equal(second.leaseCount, 1);
          assert.equal(second.leaseHash, before.leaseHash);
          assert.deepEqual(await store.getNetwork(n), second);
          await assertManifest(store, n);
        }));

      test('replacing with a stale revision is a conflict and changes nothing', () =>
        withStore(async (store) => {
          const n = fresh('net');
          const first = await store.putNetwork(n, V4_CONF, undefined);
          const second = await store.putNetwork(n, HIGH_CONF, first.revision);
          await rejectsConflict(store.putNetwork(n, DUAL_CONF, first.revision), 'replace with a stale revision');
          assert.deepEqual(await store.getNetwork(n), second);
          await rejectsConflict(store.putNetwork(fresh('absent'), V4_CONF, 1), 'replace of a network that does not exist');
        }));
    });

    describe('leases', () => {
      test('createLease assigns increasing revisions and keeps leaseCount and leaseHash equal to the leases', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          let last = (await store.getNetwork(n))!.revision;
          for (let i = 1; i <= 5; i++) {
            const input = newLease(n, `node-${i}`, { subnet: `10.0.${i}.0/24` });
            const lease = await store.createLease(input);
            assert.deepEqual(lease, { ...input, revision: lease.revision }, 'the lease comes back as written, plus its revision');
            assert.ok(lease.revision > last, `revision ${lease.revision} after ${last}`);
            last = lease.revision;
            assert.equal((await store.getNetwork(n))!.revision, lease.revision, "the lease's revision is the network's revision");
            assert.deepEqual(await store.getLease(n, `node-${i}`), lease);
            assert.equal((await assertManifest(store, n)).length, i);
          }
          assert.equal(await store.getLease(n, 'node-99'), undefined);
        }));

      test('replaceLease and deleteLease keep leaseCount and leaseHash equal to the leases', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          const a = await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24' }));
          const b = await store.createLease(newLease(n, 'b', { subnet: '10.0.2.0/24' }));
          const a2 = await store.replaceLease(newLease(n, 'a', { subnet: '10.0.1.0/24', publicIP: '192.0.2.9' }), a.revision);
          assert.ok(a2.revision > b.revision);
          assert.equal(a2.publicIP, '192.0.2.9');
          await assertManifest(store, n);
          // Moving to another subnet frees the old one.
          const a3 = await store.replaceLease(newLease(n, 'a', { subnet: '10.0.3.0/24' }), a2.revision);
          assert.equal(a3.subnet, '10.0.3.0/24');
          assert.deepEqual((await store.takenSubnets(n)).v4, [ip('10.0.2.0/24'), ip('10.0.3.0/24')]);
          await store.createLease(newLease(n, 'c', { subnet: '10.0.1.0/24' }));
          await assertManifest(store, n);
          const removed = await store.deleteLease(n, 'b');
          assert.ok(removed);
          assert.deepEqual(removed.lease, b);
          const net = await store.getNetwork(n);
          assert.equal(removed.revision, net!.revision, 'deleteLease returns the network revision after the delete');
          assert.ok(removed.revision > a3.revision);
          assert.equal(await store.getLease(n, 'b'), undefined);
          const leases = await assertManifest(store, n);
          assert.deepEqual(leases.map((l) => l.node).sort(), ['a', 'c']);
          assert.equal(await store.deleteLease(n, 'b'), undefined, 'deleting an absent lease returns undefined');
          // A deleted node may lease again, even its old subnet.
          await store.createLease(newLease(n, 'b', { subnet: '10.0.2.0/24' }));
          await assertManifest(store, n);
        }));

      test('a second lease for the same node is refused and the store is unchanged', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24' }));
          const before = await snapshot(store, n);
          await rejectsConflict(store.createLease(newLease(n, 'a', { subnet: '10.0.2.0/24' })), 'second lease for node a');
          assert.deepEqual(await snapshot(store, n), before);
          assert.deepEqual((await store.takenSubnets(n)).v4, [ip('10.0.1.0/24')], 'the refused subnet stays free');
        }));

      test('a subnet already leased is refused for another node and the store is unchanged', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24' }));
          const before = await snapshot(store, n);
          await rejectsConflict(store.createLease(newLease(n, 'b', { subnet: '10.0.1.0/24' })), 'subnet of node a for node b');
          assert.deepEqual(await snapshot(store, n), before);
          assert.equal(await store.getLease(n, 'b'), undefined);
        }));

      test('the same subnet in another network is no conflict', () =>
        withStore(async (store) => {
          const n1 = fresh('net');
          const n2 = fresh('net');
          await store.putNetwork(n1, V4_CONF, undefined);
          await store.putNetwork(n2, V4_CONF, undefined);
          await store.createLease(newLease(n1, 'a', { subnet: '10.0.1.0/24' }));
          const other = await store.createLease(newLease(n2, 'a', { subnet: '10.0.1.0/24' }));
          assert.equal(other.subnet, '10.0.1.0/24');
          await assertManifest(store, n1);
          await assertManifest(store, n2);
        }));

      test('an IPv6 subnet already leased is refused and the store is unchanged', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, DUAL_CONF, undefined);
          await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24', ipv6Subnet: 'fd00:1:0:1::/64', publicIPv6: '2001:db8::1' }));
          const before = await snapshot(store, n);
          await rejectsConflict(
            store.createLease(newLease(n, 'b', { subnet: '10.0.2.0/24', ipv6Subnet: 'fd00:1:0:1::/64', publicIPv6: '2001:db8::2' })),
            'IPv6 subnet of node a for node b',
          );
          assert.deepEqual(await snapshot(store, n), before);
          assert.deepEqual(await store.takenSubnets(n), { v4: [ip('10.0.1.0/24')], v6: [ip('fd00:1:0:1::/64')] });
          // Replacing into a taken IPv6 subnet is refused as well.
          const b = await store.createLease(newLease(n, 'b', { subnet: '10.0.2.0/24', ipv6Subnet: 'fd00:1:0:2::/64' }));
          const mid = await snapshot(store, n);
          await rejectsConflict(store.replaceLease(newLease(n, 'b', { subnet: '10.0.2.0/24', ipv6Subnet: 'fd00:1:0:1::/64' }), b.revision), 'replace into a taken IPv6 subnet');
          assert.deepEqual(await snapshot(store, n), mid);
        }));

      test('IPv6-only leases (no IPv4 subnet) do not conflict with each other', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, DUAL_CONF, undefined);
          await store.createLease(newLease(n, 'a', { ipv6Subnet: 'fd00:1:0:1::/64', publicIP: null, publicIPv6: '2001:db8::1' }));
          await store.createLease(newLease(n, 'b', { ipv6Subnet: 'fd00:1:0:2::/64', publicIP: null, publicIPv6: '2001:db8::2' }));
          assert.deepEqual(await store.takenSubnets(n), { v4: [], v6: [ip('fd00:1:0:1::/64'), ip('fd00:1:0:2::/64')] });
          await assertManifest(store, n);
        }));

      test('replaceLease with a stale revision, for a missing lease, or into a taken subnet is refused', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          const a = await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24' }));
          await store.createLease(newLease(n, 'b', { subnet: '10.0.2.0/24' }));
          const a2 = await store.replaceLease(newLease(n, 'a', { subnet: '10.0.1.0/24' }), a.revision);
          const before = await snapshot(store, n);
          await rejectsConflict(store.replaceLease(newLease(n, 'a', { subnet: '10.0.5.0/24' }), a.revision), 'replace at a stale revision');
          await rejectsConflict(store.replaceLease(newLease(n, 'a', { subnet: '10.0.2.0/24' }), a2.revision), "replace into b's subnet");
          await rejectsConflict(store.replaceLease(newLease(n, 'zz', { subnet: '10.0.7.0/24' }), a2.revision), 'replace of a missing lease');
          assert.deepEqual(await snapshot(store, n), before);
        }));

      test('deleteLease with a stale expectedRevision does nothing', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          const a = await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24' }));
          const a2 = await store.replaceLease(newLease(n, 'a', { subnet: '10.0.1.0/24' }), a.revision);
          const before = await snapshot(store, n);
          assert.equal(await store.deleteLease(n, 'a', a.revision), undefined);
          assert.deepEqual(await snapshot(store, n), before);
          const removed = await store.deleteLease(n, 'a', a2.revision);
          assert.deepEqual(removed?.lease, a2);
          assert.equal(await store.getLease(n, 'a'), undefined);
          await assertManifest(store, n);
        }));

      test('renewLease moves the expiry only: the revision, count and hash stay, listExpired follows it', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          const now = Date.parse('2030-06-01T00:00:00.000Z');
          const a = await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24', expiresAt: new Date(now - 1000).toISOString() }));
          const net = await store.getNetwork(n);
          const later = new Date(now + 3_600_000).toISOString();
          const renewed = await store.renewLease(n, 'a', a.revision, later);
          assert.deepEqual(renewed, { ...a, expiresAt: later });
          assert.deepEqual(await store.getLease(n, 'a'), renewed);
          const after = await store.getNetwork(n);
          assert.deepEqual([after?.revision, after?.leaseCount, after?.leaseHash], [net?.revision, net?.leaseCount, net?.leaseHash]);
          assert.deepEqual((await store.listExpired(now)).filter((l) => l.network === n), []);
          await assertManifest(store, n);
          // at a stale revision, for a missing lease, or for a reservation: nothing
          await store.replaceLease(newLease(n, 'a', { subnet: '10.0.1.0/24', publicIP: '192.0.2.9' }), a.revision);
          const before = await snapshot(store, n);
          assert.equal(await store.renewLease(n, 'a', a.revision, later), undefined);
          assert.equal(await store.renewLease(n, 'nobody', 1, later), undefined);
          const r = await store.createLease(newLease(n, 'r', { subnet: '10.0.2.0/24', expiresAt: null }));
          assert.equal(await store.renewLease(n, 'r', r.revision, later), undefined);
          assert.deepEqual((await store.getLease(n, 'r'))?.expiresAt, null);
          assert.deepEqual((await snapshot(store, n) as { leases: Lease[] }).leases.find((l) => l.node === 'a'), (before as { leases: Lease[] }).leases.find((l) => l.node === 'a'));
        }));

      test('deleteLease at expiry keeps a lease renewed after the expiry was read', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          const now = Date.parse('2030-06-01T00:00:00.000Z');
          const a = await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24', expiresAt: new Date(now - 1000).toISOString() }));
          const b = await store.createLease(newLease(n, 'b', { subnet: '10.0.2.0/24', expiresAt: new Date(now - 1000).toISOString() }));
          await store.renewLease(n, 'a', a.revision, new Date(now + 60_000).toISOString());
          const before = await snapshot(store, n);
          assert.equal(await store.deleteLease(n, 'a', a.revision, now), undefined);
          assert.deepEqual(await snapshot(store, n), before);
          const gone = await store.deleteLease(n, 'b', b.revision, now);
          assert.equal(gone?.lease.node, 'b');
          await assertManifest(store, n);
        }));

      test('a replace that keeps the expiry writes the one the lease has at the write: a renewal after the caller read stays', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          const a = await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24' }));
          const later = new Date(Date.parse(a.expiresAt!) + 3_600_000).toISOString();
          await store.renewLease(n, 'a', a.revision, later);
          const { revision: _, ...read } = a;
          const kept = await store.replaceLease({ ...read, rotateKey: 'tok-1' }, a.revision, { keepExpiry: true });
          assert.deepEqual(kept, { ...a, rotateKey: 'tok-1', expiresAt: later, revision: kept.revision });
          assert.deepEqual(await store.getLease(n, 'a'), kept);
          assert.deepEqual((await store.listExpired(Date.parse(a.expiresAt!) + 1)).filter((l) => l.network === n), [], 'not expired at the old expiry');
          const r = await store.createLease(newLease(n, 'r', { subnet: '10.0.2.0/24', expiresAt: null }));
          const { revision: __, ...rread } = r;
          assert.equal((await store.replaceLease({ ...rread, expiresAt: later }, r.revision, { keepExpiry: true })).expiresAt, null, 'a reservation stays one');
          await assertManifest(store, n);
        }));

      test('every write that moves the revision leaves one change, in order; a renewal leaves none', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          const a = await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24' }));
          const b = await store.createLease(newLease(n, 'b', { subnet: '10.0.2.0/24' }));
          const a2 = await store.replaceLease(newLease(n, 'a', { subnet: '10.0.1.0/24', publicIP: '192.0.2.7' }), a.revision);
          await store.renewLease(n, 'b', b.revision, new Date(Date.now() + 7_200_000).toISOString());
          const gone = await store.deleteLease(n, 'b');
          const net = await store.putNetwork(n, V4_CONF, gone!.revision);
          const all = await store.changesSince(n, 0, 100);
          assert.deepEqual(all, {
            revision: net.revision,
            more: false,
            changes: [
              { revision: 1, config: true },
              { revision: a.revision, node: 'a', lease: a },
              { revision: b.revision, node: 'b', lease: b },
              { revision: a2.revision, node: 'a', lease: a2 },
              { revision: gone!.revision, node: 'b', lease: null },
              { revision: net.revision, config: true },
            ],
          });
          assert.deepEqual(await store.changesSince(n, net.revision, 100), { revision: net.revision, changes: [], more: false });
          const page = await store.changesSince(n, 1, 2);
          assert.deepEqual(page?.changes.map((c) => c.revision), [a.revision, b.revision]);
          assert.equal(page?.more, true);
          assert.deepEqual((await store.changesSince(n, b.revision, 2))?.changes.map((c) => c.revision), [a2.revision, gone!.revision]);
          assert.equal(await store.changesSince(n, net.revision + 1, 100), undefined, 'a revision ahead of the network cannot be answered');
          assert.equal(await store.changesSince(fresh('none'), 0, 100), undefined);
        }));

      test('listLeasesPage walks the leases by node name, a page at a time', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          for (const [i, node] of ['b', 'a-1', 'a', 'c.x', 'a1'].entries()) await store.createLease(newLease(n, node, { subnet: `10.0.${i + 1}.0/24` }));
          const all = await store.listLeases(n);
          const walked: string[] = [];
          let after: string | undefined;
          for (;;) {
            const page = await store.listLeasesPage(n, after, 2);
            walked.push(...page.map((l) => l.node));
            if (page.length < 2) break;
            after = page[page.length - 1]!.node;
          }
          assert.deepEqual(walked, all.map((l) => l.node));
          assert.deepEqual(walked, ['a', 'a-1', 'a1', 'b', 'c.x']);
          assert.deepEqual(await store.listLeasesPage(n, 'c.x', 2), []);
          assert.deepEqual(await store.listLeasesPage(n, undefined, 10), all);
        }));

      test('listExpired returns leases whose expiry has passed, never reservations', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          const now = Date.parse('2030-06-01T00:00:00.000Z');
          const at = (ms: number) => new Date(now + ms).toISOString();
          await store.createLease(newLease(n, 'past', { subnet: '10.0.1.0/24', expiresAt: at(-60_000) }));
          await store.createLease(newLease(n, 'exactly', { subnet: '10.0.2.0/24', expiresAt: at(0) }));
          await store.createLease(newLease(n, 'future', { subnet: '10.0.3.0/24', expiresAt: at(1) }));
          await store.createLease(newLease(n, 'reserved', { subnet: '10.0.4.0/24', expiresAt: null }));
          const expired = (await store.listExpired(now)).filter((l) => l.network === n);
          assert.deepEqual(expired.map((l) => l.node).sort(), ['exactly', 'past']);
          assert.deepEqual(expired.find((l) => l.node === 'past'), await store.getLease(n, 'past'));
          const later = (await store.listExpired(now + 10 * 365 * 86_400_000)).filter((l) => l.network === n);
          assert.deepEqual(later.map((l) => l.node).sort(), ['exactly', 'future', 'past'], 'a reservation never expires');
          // A renewal moves the lease out of the expired set.
          const past = await store.getLease(n, 'past');
          await store.replaceLease(newLease(n, 'past', { subnet: '10.0.1.0/24', expiresAt: at(60_000) }), past!.revision);
          assert.deepEqual((await store.listExpired(now)).filter((l) => l.network === n).map((l) => l.node), ['exactly']);
        }));

      test('takenSubnets lists both families in ascending numeric order', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, DUAL_CONF, undefined);
          // Written out of order, with values whose text order differs from their numeric order.
          const v4 = ['10.0.100.0/24', '10.0.9.0/24', '10.0.10.0/24', '10.0.255.0/24', '10.0.1.0/24'];
          const v6 = ['fd00:1:0:a::/64', 'fd00:1:0:10::/64', 'fd00:1:0:9::/64', 'fd00:1:0:ff00::/64', 'fd00:1::/64'];
          for (let i = 0; i < v4.length; i++) {
            await store.createLease(newLease(n, `n${i}`, { subnet: v4[i]!, ipv6Subnet: v6[i]! }));
          }
          const taken = await store.takenSubnets(n);
          assert.deepEqual(taken.v4, v4.map(ip).sort((a, b) => (a < b ? -1 : 1)));
          assert.deepEqual(taken.v6, v6.map(ip).sort((a, b) => (a < b ? -1 : 1)));
          assert.deepEqual(taken.v4.map(String), ['10.0.1.0/24', '10.0.9.0/24', '10.0.10.0/24', '10.0.100.0/24', '10.0.255.0/24'].map((s) => String(ip(s))));
          assert.deepEqual(await store.takenSubnets(fresh('empty')), { v4: [], v6: [] });
        }));

      test('takenSubnets returns IPv4 addresses above 2^31 as they are', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, HIGH_CONF, undefined);
          await store.createLease(newLease(n, 'hi', { subnet: '172.31.255.0/24' }));
          await store.createLease(newLease(n, 'lo', { subnet: '172.16.1.0/24' }));
          assert.deepEqual((await store.takenSubnets(n)).v4, [ip('172.16.1.0/24'), ip('172.31.255.0/24')]);
          await rejectsConflict(store.createLease(newLease(n, 'x', { subnet: '172.31.255.0/24' })), 'high subnet taken');
        }));

      test('64 nodes joining at once over a handful of candidate subnets end with 64 distinct subnets', () =>
        withStore(async (store) => {
          const n = fresh('net');
          const controller = new Controller(store, { publish: async () => {} }, {
            topics: new Topics(),
            log: silentLogger,
            // Every pick lands among the first 8 free subnets, so most first attempts collide.
            random: () => (Math.random() * 8) / 100,
          });
          await controller.applyNetwork(n, V4_CONF);
          const nodes = Array.from({ length: 64 }, (_, i) => `node-${i}`);
          const leases = await Promise.all(nodes.map((node) => controller.join(n, node, { publicIP: '192.0.2.1' })));
          const subnets = leases.map((l) => l.subnet);
          assert.equal(new Set(subnets).size, 64, 'no subnet was handed out twice');
          const stored = await assertManifest(store, n);
          assert.equal(stored.length, 64);
          assert.deepEqual(stored.map((l) => l.subnet).sort(), [...subnets].sort());
          assert.equal((await store.takenSubnets(n)).v4.length, 64);
        }));
    });

    describe('a key rotation asked of a node (wireguard)', () => {
      const KEY = ['waZle9QCDVPLl/Z0Nbw2GRr4Gdk3lhYRPoU3Xol9Mmc=', '8oMBUJbuVU+4siNUL1OA/+fYNdfngz//U1Ps4Xv7U2Q='] as const;
      const wg = (o: Record<string, unknown> = {}) => parseNetConf({ Network: '10.0.0.0/16', Backend: { Type: 'wireguard' }, ...o }, {});

      test('the token is a lease change at the next revision, logged for peers, and stays through every later write of the lease until another replaces it', () =>
        withStore(async (store) => {
          const n = fresh('net');
          const { clock, controller } = controllerOn(store);
          await controller.applyNetwork(n, wg());
          const hello = (key: string, publicIP = '192.0.2.1') => controller.join(n, 'a', { publicIP, backendData: { PublicKey: key }, fromAgent: true });
          const joined = await hello(KEY[0]);
          assert.equal(joined.rotateKey, undefined);
          const asked = await controller.rotateKey(n, 'a');
          const token = asked.rotateKey as string;
          assert.match(token, /^[A-Za-z0-9._:-]{1,64}$/);
          assert.ok(asked.revision > joined.revision, 'the revision moves');
          assert.deepEqual(asked, { ...joined, rotateKey: token, revision: asked.revision });
          const logged = await store.changesSince(n, joined.revision, 10);
          assert.deepEqual(logged?.changes.map((c) => [c.revision, c.lease?.rotateKey]), [[asked.revision, token]]);
          await assertManifest(store, n);

          const kept = async (what: string) => {
            const now = await store.getLease(n, 'a');
            assert.equal(now?.rotateKey, token, `${what}: the token stays`);
            assert.equal((await store.listLeases(n)).find((l) => l.node === 'a')?.rotateKey, token, `${what}: listed with it`);
            await assertManifest(store, n);
            return now as Lease;
          };
          // a renewal: the same hello later, nothing a peer uses changed
          clock.now += 60_000;
          const renewed = await hello(KEY[0]);
          assert.equal(renewed.revision, asked.revision);
          assert.notEqual(renewed.expiresAt, asked.expiresAt);
          await kept('a renewal');
          // the node's new key: a change at once, the token still there (the node reports which token it honoured, not the lease)
          const rotated = await hello(KEY[1]);
          assert.ok(rotated.revision > asked.revision);
          assert.equal(rotated.backendData.PublicKey, KEY[1]);
          await kept('a hello with a new PublicKey');
          await hello(KEY[1], '192.0.2.2');
          await kept('a new public address');
          // the expiry path: the scan finds it expired, a renewal lands before the delete, the delete stands down
          clock.now = Date.parse((await store.getLease(n, 'a'))!.expiresAt!) + 1;
          const expired = (await store.listExpired(clock.now)).find((l) => l.network === n && l.node === 'a');
          assert.ok(expired, 'the scan sees it expired');
          await hello(KEY[1], '192.0.2.2');
          assert.equal(await controller.release(n, 'a', expired.revision, clock.now), false);
          await kept('an expiry overtaken by a renewal');
          // a config that moves the node to another subnet
          const before = await store.getLease(n, 'a');
          await controller.applyNetwork(n, wg({ SubnetMin: '10.0.200.0' }));
          const moved = await hello(KEY[1], '192.0.2.2');
          assert.notEqual(moved.subnet, before?.subnet);
          await kept('a new subnet');
          await controller.reserve(n, 'a', '10.0.250.0/24');
          const reserved = await kept('a reservation');
          assert.equal(reserved.expiresAt, null);
          // a new ask replaces the token
          const again = await controller.rotateKey(n, 'a');
          assert.ok(again.rotateKey && again.rotateKey !== token, 'each ask is a new token');
          assert.equal((await hello(KEY[0], '192.0.2.2')).rotateKey, again.rotateKey);
        }));

      test('refused for a node without a lease and on a network whose backend has no keys; nothing is written', () =>
        withStore(async (store) => {
          const n = fresh('net');
          const vx = fresh('net');
          const { controller } = controllerOn(store);
          await controller.applyNetwork(n, wg());
          await controller.applyNetwork(vx, V4_CONF);
          await controller.join(vx, 'b', { publicIP: '192.0.2.1' });
          const before = [await snapshot(store, n), await snapshot(store, vx)];
          await assert.rejects(controller.rotateKey(n, 'a'), new RegExp(`node a holds no lease in network ${n}: it makes its key pair when its agent joins`));
          await assert.rejects(controller.rotateKey(vx, 'b'), new RegExp(`network ${vx} uses the vxlan backend, whose nodes hold no key pair to rotate: only a wireguard network's nodes do`));
          await assert.rejects(controller.rotateKey(fresh('none'), 'b'), /does not exist/);
          assert.deepEqual([await snapshot(store, n), await snapshot(store, vx)], before);
        }));
    });

    describe('how a node is reached (Lease.reach, a cloud network with an overlay)', () => {
      const cloud = (o: Record<string, unknown> = {}): NetConf => {
        const c = parseNetConf({ Network: '10.0.0.0/16', Backend: { Type: 'aws-vpc', RouteLimit: 2 }, ...o }, {});
        return { ...c, Backend: { ...c.Backend, Overlay: { Type: 'vxlan' } } } as NetConf;
      };

      test("the route controller's reach write is a change at the next revision, logged for peers, and stays through renewals and rewrites while the subnet stays", () =>
        withStore(async (store) => {
          const n = fresh('net');
          const { clock, controller } = controllerOn(store);
          await controller.applyNetwork(n, cloud());
          const join = (publicIP = '172.31.0.10', backendData: Record<string, string> = { RouteTarget: 'i-1' }) => controller.join(n, 'i-1', { publicIP, backendData });
          const joined = await join();
          assert.equal(joined.reach, undefined, 'a new lease is judged by no one yet');
          const why = 'route table full (2 of 2)';
          const over = await controller.setReach(n, 'i-1', { via: 'overlay', why }, joined.revision);
          assert.ok(over && over.revision > joined.revision, 'the revision moves');
          assert.deepEqual(over, { ...joined, reach: { via: 'overlay', why }, revision: over.revision });
          const logged = await store.changesSince(n, joined.revision, 10);
          assert.deepEqual(logged?.changes.map((c) => [c.revision, c.lease?.reach]), [[over.revision, { via: 'overlay', why }]]);
          await assertManifest(store, n);
          // decided on a lease that moved since: nothing written
          assert.equal(await controller.setReach(n, 'i-1', { via: 'route' }, joined.revision), undefined);
          assert.deepEqual(await store.getLease(n, 'i-1'), over);
          const routed = await controller.setReach(n, 'i-1', { via: 'route' }, over.revision);
          assert.deepEqual(routed?.reach, { via: 'route' });

          const kept = async (what: string) => {
            const now = await store.getLease(n, 'i-1');
            assert.deepEqual(now?.reach, { via: 'route' }, `${what}: the reach stays`);
            assert.deepEqual((await store.listLeases(n)).find((l) => l.node === 'i-1')?.reach, { via: 'route' }, `${what}: listed with it`);
            return now as Lease;
          };
          clock.now += 60_000;
          await join();
          await kept('a renewal');
          // the node's agent publishes its overlay's VtepMAC beside the route target: merged, and the reach stays
          const withMac = await join('172.31.0.10', { VtepMAC: '0a:00:00:00:00:01' });
          assert.deepEqual(withMac.backendData, { RouteTarget: 'i-1', VtepMAC: '0a:00:00:00:00:01' });
          await kept("the agent's own backend data");
          await join('172.31.0.11');
          await kept('a new address');
          // another subnet: the route confirmed was for the old one, so the lease is judged again
          await controller.applyNetwork(n, cloud({ SubnetMin: '10.0.200.0' }));
          const moved = await join('172.31.0.11');
          assert.notEqual(moved.subnet, routed?.subnet);
          assert.equal(moved.reach, undefined);
          assert.equal((await store.getLease(n, 'i-1'))?.reach, undefined);
        }));

      test('a hello that carries a reach is refused and changes nothing: only the route controller writes it', () =>
        withStore(async (store) => {
          const n = fresh('net');
          const node = fresh('node');
          const topics = new Topics();
          const { controller } = controllerOn(store);
          await controller.applyNetwork(n, cloud());
          await store.putNode({ name: node, network: n, passwordHash: 'scrypt$aa$bb', createdAt: '2030-01-01T00:00:00.000Z' });
          const joined = await controller.join(n, node, { publicIP: '192.0.2.1' });
          const over = await controller.setReach(n, node, { via: 'overlay', why: 'outside the cloud' }, joined.revision);
          const before = await snapshot(store, n);
          const hello = { v: 2, agentVersion: 'test', publicIP: '192.0.2.1', reach: { via: 'route' } };
          await controller.handleMessage(topics.nodeHello(n, node), Buffer.from(JSON.stringify(hello)), 'test', true);
          assert.deepEqual(await snapshot(store, n), before);
          assert.deepEqual((await store.getLease(n, node))?.reach, over?.reach);
          // Nor through the controller's join as a node's own: refused before anything is read.
          await assert.rejects(controller.join(n, node, { publicIP: '192.0.2.1', fromAgent: true, reach: { via: 'route' } }), /route controller's to say/);
          assert.deepEqual(await snapshot(store, n), before);
        }));

      test("the route tables keep where each limit came from and why a default was used", () =>
        withStore(async (store) => {
          const n = fresh('net');
          const { controller } = controllerOn(store);
          await controller.applyNetwork(n, cloud());
          const tables = [
            { what: 'route table rtb-1', used: 2, limit: 2, source: 'RouteLimit' as const },
            { what: 'route table rtb-2', used: 1, limit: 50, source: 'default' as const, why: 'no permission to read the quota' },
          ];
          await store.putRouteTables({ network: n, tables, updatedAt: '2030-01-01T00:00:00.000Z' });
          assert.deepEqual((await store.getRouteTables(n))?.tables, tables);
        }));
    });

    describe('nodes and status', () => {
      test('node records round-trip, are replaced by name and can be deleted', () =>
        withStore(async (store) => {
          const a = fresh('node');
          const b = fresh('node');
          const rec = { name: a, network: 'n1', passwordHash: 'scrypt$aa$bb', createdAt: '2030-01-01T00:00:00.000Z' };
          await store.putNode(rec);
          await store.putNode({ name: b, network: 'n2', passwordHash: 'scrypt$cc$dd', createdAt: '2030-01-02T00:00:00.000Z' });
          assert.deepEqual(await store.getNode(a), rec);
          const mine = (await store.listNodes()).filter((r) => r.name === a || r.name === b);
          assert.deepEqual(mine.map((r) => r.name).sort(), [a, b].sort());
          await store.putNode({ ...rec, passwordHash: 'scrypt$ee$ff' });
          assert.equal((await store.getNode(a))?.passwordHash, 'scrypt$ee$ff');
          assert.equal((await store.listNodes()).filter((r) => r.name === a).length, 1);
          assert.equal(await store.deleteNode(a), true);
          assert.equal(await store.getNode(a), undefined);
          assert.equal(await store.deleteNode(a), false);
          assert.ok(await store.getNode(b));
        }));

      test('status records round-trip and the latest one per node wins', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          await store.putStatus({ network: n, node: 'a', status: { v: 2, state: 'online', subnet: '10.0.1.0/24', revision: 7, inSync: true, peers: 3, errors: [] }, updatedAt: '2030-01-01T00:00:00.000Z' });
          await store.putStatus({ network: n, node: 'b', status: { v: 2, state: 'online', errors: ['route 10.0.2.0/24: File exists'] }, updatedAt: '2030-01-01T00:00:01.000Z' });
          await store.putStatus({ network: n, node: 'a', status: { v: 2, state: 'offline', errors: [] }, updatedAt: '2030-01-01T00:00:02.000Z' });
          const mine = (await store.listStatus()).filter((r) => r.network === n).sort((x, y) => x.node.localeCompare(y.node));
          const expected = [
            { network: n, node: 'a', status: { v: 2, state: 'offline', errors: [] }, updatedAt: '2030-01-01T00:00:02.000Z' },
            { network: n, node: 'b', status: { v: 2, state: 'online', errors: ['route 10.0.2.0/24: File exists'] }, updatedAt: '2030-01-01T00:00:01.000Z' },
          ];
          assert.deepEqual(mine, expected);
          assert.deepEqual(await store.listStatus(n), expected, 'one network asked for: the same, in node order');
          const other = fresh('net');
          await store.putStatus({ network: other, node: 'a', status: { v: 2, state: 'online', errors: [] }, updatedAt: '2030-01-01T00:00:00.000Z' });
          assert.deepEqual(await store.listStatus(other), [], 'statuses of a network that does not exist are not listed');
          assert.ok(!(await store.listStatus()).some((r) => r.network === other));
        }));

      test('agent counts follow every status: each node in the state its latest status says, online, out of sync or offline', () =>
        withStore(async (store) => {
          const n = fresh('net');
          const other = fresh('net');
          assert.deepEqual(await store.agentCounts(n), { online: 0, outOfSync: 0, offline: 0 }, 'no status yet');
          const put = (network: string, node: string, status: Status) => store.putStatus({ network, node, status, updatedAt: new Date().toISOString() });
          await put(n, 'a', { v: 2, state: 'online', inSync: false, errors: [] });
          await put(n, 'b', { v: 2, state: 'online', inSync: false, errors: [] });
          await put(n, 'c', { v: 2, state: 'online', errors: [] }); // an agent that does not say: online, not out of sync
          await put(other, 'a', { v: 2, state: 'offline', errors: [] });
          assert.deepEqual(await store.agentCounts(n), { online: 1, outOfSync: 2, offline: 0 });
          await put(n, 'a', { v: 2, state: 'online', inSync: true, revision: 9, errors: [] });
          await put(n, 'a', { v: 2, state: 'online', inSync: true, revision: 10, errors: ['a new error, same state'] });
          await put(n, 'b', { v: 2, state: 'offline', errors: [] });
          await put(n, 'c', { v: 2, state: 'offline', errors: [] });
          await put(n, 'c', { v: 2, state: 'online', inSync: false, errors: [] });
          assert.deepEqual(await store.agentCounts(n), { online: 1, outOfSync: 1, offline: 1 });
          assert.deepEqual(await store.agentCounts(other), { online: 0, outOfSync: 0, offline: 1 }, "another network's agents apart");
          // The counts are what reading every status would say.
          await store.putNetwork(n, V4_CONF, undefined);
          const states = (await store.listStatus(n)).map((r) => agentState(r.status));
          assert.deepEqual(await store.agentCounts(n), { online: states.filter((s) => s === 'online').length, outOfSync: states.filter((s) => s === 'outOfSync').length, offline: states.filter((s) => s === 'offline').length });
        }));

      test('agent counts stay exact when statuses of the same nodes race each other', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          const states: Status[] = [
            { v: 2, state: 'online', inSync: true, errors: [] },
            { v: 2, state: 'online', inSync: false, errors: [] },
            { v: 2, state: 'offline', errors: [] },
          ];
          // 8 nodes, 6 statuses each sent at once, in every order of state.
          await Promise.all(Array.from({ length: 48 }, (_, i) =>
            store.putStatus({ network: n, node: `r${i % 8}`, status: states[(i * 7 + Math.floor(i / 8)) % 3]!, updatedAt: new Date().toISOString() })));
          const counts = await store.agentCounts(n);
          const listed = (await store.listStatus(n)).map((r) => agentState(r.status));
          assert.equal(listed.length, 8);
          assert.deepEqual(counts, { online: listed.filter((s) => s === 'online').length, outOfSync: listed.filter((s) => s === 'outOfSync').length, offline: listed.filter((s) => s === 'offline').length });
        }));

      test('route status records round-trip per network, the latest wins, and delete removes one', () =>
        withStore(async (store) => {
          const n = fresh('net');
          const m = fresh('net');
          await store.putRouteStatus({ network: n, node: 'i-1', state: 'pending', reason: 'route pending: route table full (50 of 50)', updatedAt: '2030-01-01T00:00:00.000Z' });
          await store.putRouteStatus({ network: n, node: 'i-2', state: 'ok', reason: '', updatedAt: '2030-01-01T00:00:00.000Z' });
          await store.putRouteStatus({ network: m, node: 'i-3', state: 'error', reason: 'instance has no canIpForward', updatedAt: '2030-01-01T00:00:00.000Z' });
          await store.putRouteStatus({ network: n, node: 'i-1', state: 'ok', reason: '', updatedAt: '2030-01-01T00:00:05.000Z' });
          const mine = (await store.listRouteStatus(n)).sort((x, y) => x.node.localeCompare(y.node));
          assert.deepEqual(mine.map((r) => [r.node, r.state, r.reason, r.updatedAt]), [
            ['i-1', 'ok', '', '2030-01-01T00:00:05.000Z'],
            ['i-2', 'ok', '', '2030-01-01T00:00:00.000Z'],
          ]);
          assert.equal((await store.listRouteStatus()).filter((r) => r.network === m).length, 1);
          await store.deleteRouteStatus(n, 'i-2');
          await store.deleteRouteStatus(n, 'absent');
          assert.deepEqual((await store.listRouteStatus(n)).map((r) => r.node), ['i-1']);
        }));

      test("a network's route tables round-trip and the latest wins; another network's are apart", () =>
        withStore(async (store) => {
          const n = fresh('net');
          const m = fresh('net');
          assert.equal(await store.getRouteTables(n), undefined);
          await store.putRouteTables({ network: n, tables: [{ what: 'route table rtb-1', used: 50, limit: 50 }], updatedAt: '2030-01-01T00:00:00.000Z' });
          await store.putRouteTables({ network: m, tables: [{ what: 'route quota of project p', used: 3, limit: 250 }], updatedAt: '2030-01-01T00:00:00.000Z' });
          const two = [{ what: 'route table rtb-1', used: 49, limit: 50 }, { what: 'route table rtb-2', used: 12, limit: 50 }];
          await store.putRouteTables({ network: n, tables: two, updatedAt: '2030-01-01T00:00:05.000Z' });
          assert.deepEqual(await store.getRouteTables(n), { network: n, tables: two, updatedAt: '2030-01-01T00:00:05.000Z' });
          assert.equal((await store.getRouteTables(m))?.tables[0]?.limit, 250);
        }));
    });

    describe('locks', () => {
      const T = Date.parse('2030-01-01T00:00:00.000Z');

      test('a free lock is taken; another owner is refused and told who holds it until when; nothing else moves', () =>
        withStore(async (store) => {
          const name = fresh('lock');
          assert.deepEqual(await store.tryLock(name, 'run-a', 60_000, T), { acquired: true, expiresAt: T + 60_000 });
          assert.deepEqual(await store.tryLock(name, 'run-b', 60_000, T + 1_000), { acquired: false, owner: 'run-a', expiresAt: T + 60_000 });
          // The refusal left the holder's expiry as it was.
          assert.deepEqual(await store.tryLock(name, 'run-b', 60_000, T + 59_999), { acquired: false, owner: 'run-a', expiresAt: T + 60_000 });
          // Its owner takes it again and moves the expiry.
          assert.deepEqual(await store.tryLock(name, 'run-a', 60_000, T + 30_000), { acquired: true, expiresAt: T + 90_000 });
          // Another name is another lock.
          assert.equal((await store.tryLock(fresh('lock'), 'run-b', 60_000, T)).acquired, true);
        }));

      test('an expired lock is taken over, and its old owner can no longer release it', () =>
        withStore(async (store) => {
          const name = fresh('lock');
          await store.tryLock(name, 'crashed', 60_000, T);
          assert.deepEqual(await store.tryLock(name, 'next', 60_000, T + 60_000), { acquired: true, expiresAt: T + 120_000 });
          assert.equal(await store.unlock(name, 'crashed'), false, 'the lost lock is not the old owner\'s to release');
          assert.deepEqual(await store.tryLock(name, 'third', 1_000, T + 61_000), { acquired: false, owner: 'next', expiresAt: T + 120_000 });
        }));

      test('unlock frees the lock at once, for its owner only', () =>
        withStore(async (store) => {
          const name = fresh('lock');
          await store.tryLock(name, 'a', 600_000, T);
          assert.equal(await store.unlock(name, 'b'), false);
          assert.equal((await store.tryLock(name, 'b', 1_000, T + 1)).acquired, false, 'a refused unlock changed nothing');
          assert.equal(await store.unlock(name, 'a'), true);
          assert.equal(await store.unlock(name, 'a'), false, 'released already');
          assert.deepEqual(await store.tryLock(name, 'b', 1_000, T + 2), { acquired: true, expiresAt: T + 1_002 });
        }));

      test('owners racing on two stores of one backing: exactly one wins', () =>
        withStore(async (store, opened) => {
          const other = await opened.another();
          const name = fresh('lock');
          const now = Date.now();
          const tries = Array.from({ length: 12 }, (_, i) => (i % 2 ? other : store).tryLock(name, `owner-${i}`, 60_000, now));
          const results = await Promise.all(tries);
          const winners = results.map((r, i) => (r.acquired ? `owner-${i}` : undefined)).filter((x) => x !== undefined);
          assert.equal(winners.length, 1, JSON.stringify(results));
          for (const r of results) if (!r.acquired) assert.equal(r.owner, winners[0], 'every loser is told the winner');
          assert.equal(await other.unlock(name, winners[0]!), true, 'released through the other store');
          assert.equal((await store.tryLock(name, 'after', 60_000, now)).acquired, true);
        }));

      test('a bad name, owner or ttl is refused with what was wrong, and takes nothing', () =>
        withStore(async (store) => {
          const name = fresh('lock');
          await assert.rejects(store.tryLock('', 'a', 1000), /lock name "" must be 1 to 200 printable ASCII/);
          await assert.rejects(store.tryLock('has space', 'a', 1000), /lock name "has space"/);
          await assert.rejects(store.tryLock(name, 'x'.repeat(201), 1000), /lock owner .* must be 1 to 200/);
          await assert.rejects(store.tryLock(name, 'a', 0), /lock ttl 0 must be a whole number of milliseconds above 0/);
          await assert.rejects(store.tryLock(name, 'a', Number.NaN), /lock ttl NaN/);
          await assert.rejects(store.unlock(name, ''), /lock owner ""/);
          assert.equal((await store.tryLock(name, 'b', 1000)).acquired, true, 'the refused calls took nothing');
        }));
    });

    describe('deleting a network', () => {
      test('is refused while it holds a lease, and changes nothing', () =>
        withStore(async (store) => {
          const n = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24' }));
          const before = await snapshot(store, n);
          await rejectsConflict(store.deleteNetwork(n), 'a network with a lease');
          assert.deepEqual(await snapshot(store, n), before);
        }));

      test('takes everything kept for it, leaves other networks alone, and the name can start afresh', () =>
        withStore(async (store) => {
          const n = fresh('net');
          const other = fresh('net');
          await store.putNetwork(n, V4_CONF, undefined);
          await store.putNetwork(other, V4_CONF, undefined);
          const a = await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24' }));
          await store.createLease(newLease(other, 'a', { subnet: '10.0.1.0/24' }));
          await store.deleteLease(n, 'a', a.revision);
          const at = '2030-01-01T00:00:00.000Z';
          await store.putStatus({ network: n, node: 'a', status: { v: 2, state: 'offline', errors: [] }, updatedAt: at });
          await store.putRouteStatus({ network: n, node: 'a', state: 'ok', reason: '', updatedAt: at });
          await store.putRouteTables({ network: n, tables: [{ what: 'route table rtb-1', used: 1, limit: 50 }], updatedAt: at });
          assert.equal(await store.deleteNetwork(n), true);
          assert.equal(await store.getNetwork(n), undefined);
          assert.ok(!(await store.listNetworks()).some((r) => r.name === n));
          assert.deepEqual(await store.listLeases(n), []);
          assert.ok(!(await store.listStatus()).some((r) => r.network === n));
          assert.deepEqual(await store.listRouteStatus(n), []);
          assert.equal(await store.getRouteTables(n), undefined);
          assert.equal(await store.deleteNetwork(n), false, 'a network that is not there');
          assert.equal((await store.listLeases(other)).length, 1, "another network's lease stays");
          // The same name again is a new network: its change log starts with it.
          const again = await store.putNetwork(n, V4_CONF, undefined);
          assert.equal(again.leaseCount, 0);
          const since = await store.changesSince(n, 0, 100);
          assert.deepEqual(since?.changes.map((c) => c.revision), [again.revision]);
          const l = await store.createLease(newLease(n, 'a', { subnet: '10.0.1.0/24' }));
          assert.ok(l.revision > again.revision);
        }));
    });
  });
}
