// flannel's allocation rules, through the controller with the real SQLite
// store. The publisher records every message: it is the controller's output,
// what agents would receive over MQTT.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CANDIDATES } from '../../core/allocator.js';
import { parseCidr, subnetStep } from '../../core/cidr.js';
import { parseNetConf, SECRET_MASK, subnetRanges } from '../../core/config.js';
import { OutOfSubnetsError, TwillError } from '../../core/errors.js';
import { leasesHash } from '../../core/lease.js';
import { silentLogger } from '../../core/log.js';
import type { NodeLeaseMessage } from '../../core/messages.js';
import { Topics } from '../../core/topics.js';
import { Controller, type ControllerOptions } from '../../control/controller/controller.js';
import { RecordingPublisher } from '../helpers/recording-publisher.js';
import { SqliteStore } from '../../control/store/sqlite.js';


const topics = new Topics();
const IP = { publicIP: '192.0.2.10' };
const PSK = 'a1b2c3d4'.repeat(12);

let dir = '';
let dbs = 0;
const opened: SqliteStore[] = [];
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'twill-alloc-'));
});
after(async () => {
  for (const s of opened.splice(0)) await s.close().catch(() => {});
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Setup {
  store: SqliteStore;
  pub: RecordingPublisher;
  controller: Controller;
  clock: { now: number };
}

/** A controller on its own SQLite file, with a clock the test moves. */
function setup(opts: Partial<ControllerOptions> = {}): Setup {
  const store = new SqliteStore(join(dir, `alloc-${++dbs}.db`));
  opened.push(store);
  const pub = new RecordingPublisher();
  const clock = { now: Date.parse('2030-01-01T00:00:00.000Z') };
  const controller = new Controller(store, pub, { topics, log: silentLogger, now: () => clock.now, ...opts });
  return { store, pub, controller, clock };
}

const conf = (o: Record<string, unknown>) => parseNetConf(o, {});
const ipOf = (cidr: string | null): bigint => (parseCidr(cidr ?? '', true) as { ip: bigint }).ip;

/** A random source that plays the given values in turn. */
function sequence(...values: number[]): () => number {
  let i = 0;
  return () => values[i++ % values.length]!;
}

async function storeState(store: SqliteStore, network: string): Promise<unknown> {
  return { net: await store.getNetwork(network), leases: await store.listLeases(network) };
}

describe('a node keeps what it has', () => {
  test('a node that joins again keeps its subnet, with a later expiry and a new revision', async () => {
    const { controller, store, clock } = setup({ leaseTtlMs: 60_000 });
    await controller.applyNetwork('n', conf({ Network: '10.1.0.0/16' }));
    const first = await controller.join('n', 'a', IP);
    clock.now += 30_000;
    const again = await controller.join('n', 'a', { publicIP: '192.0.2.11' });
    assert.equal(again.subnet, first.subnet);
    assert.equal(again.createdAt, first.createdAt, 'the subnet is held since the first join');
    assert.ok(Date.parse(again.expiresAt!) > Date.parse(first.expiresAt!), 'the expiry moved forward');
    assert.equal(Date.parse(again.expiresAt!), clock.now + 60_000);
    assert.ok(again.revision > first.revision);
    assert.equal(again.publicIP, '192.0.2.11', 'the new public IP is what peers see');
    assert.deepEqual(await store.getLease('n', 'a'), again);
  });

  test('a released node rejoining with previousSubnet gets it back when it is free', async () => {
    const { controller } = setup();
    await controller.applyNetwork('n', conf({ Network: '10.1.0.0/16' }));
    const first = await controller.join('n', 'a', IP);
    await controller.join('n', 'b', IP);
    assert.equal(await controller.release('n', 'a'), true);
    const back = await controller.join('n', 'a', { ...IP, previousSubnet: first.subnet! });
    assert.equal(back.subnet, first.subnet);
  });

  test('previousSubnet taken by another node gives a different free subnet', async () => {
    const { controller, store } = setup();
    await controller.applyNetwork('n', conf({ Network: '10.1.0.0/16' }));
    const a = await controller.join('n', 'a', IP);
    await controller.release('n', 'a');
    const b = await controller.join('n', 'b', { ...IP, previousSubnet: a.subnet! });
    assert.equal(b.subnet, a.subnet, 'b took the subnet while a was away');
    const a2 = await controller.join('n', 'a', { ...IP, previousSubnet: a.subnet! });
    assert.notEqual(a2.subnet, a.subnet);
    assert.equal((await store.getLease('n', 'b'))?.subnet, a.subnet, "b keeps its subnet");
  });

  test('previousSubnet outside the range, misaligned or of another length is ignored', async () => {
    // random 0 picks the first free subnet, SubnetMin: any other answer means previousSubnet was used.
    const { controller } = setup({ random: () => 0 });
    await controller.applyNetwork('n', conf({ Network: '10.1.0.0/16', SubnetMin: '10.1.10.0', SubnetMax: '10.1.20.0' }));
    const ignored = ['192.168.5.0/24', '10.1.0.0/24', '10.1.9.0/24', '10.1.21.0/24', '10.1.12.0/25', '10.1.12.0/23', '10.1.12.128/24'];
    for (const [i, previousSubnet] of ignored.entries()) {
      const lease = await controller.join('n', `n${i}`, { ...IP, previousSubnet });
      await controller.release('n', `n${i}`);
      assert.equal(lease.subnet, '10.1.10.0/24', `previousSubnet ${previousSubnet} should be ignored`);
    }
    const honoured = await controller.join('n', 'ok', { ...IP, previousSubnet: '10.1.15.0/24' });
    assert.equal(honoured.subnet, '10.1.15.0/24', 'a valid previousSubnet is used');
  });
});

describe('renewal', () => {
  test('a renewal moves the expiry and publishes the node\'s own topic only: no revision moves, peers hear nothing', async () => {
    const { controller, store, pub, clock } = setup({ leaseTtlMs: 60_000 });
    await controller.applyNetwork('n', conf({ Network: '10.1.0.0/16', Backend: { Type: 'vxlan' } }));
    await controller.join('n', 'peer', { ...IP, backendData: { VtepMAC: '02:00:00:00:00:02' } });
    const first = await controller.join('n', 'a', { ...IP, backendData: { VtepMAC: '02:00:00:00:00:01' } });
    const net = await store.getNetwork('n');
    const mark = pub.sent.length;
    clock.now += 30_000;
    const renewed = await controller.join('n', 'a', { ...IP, backendData: { VtepMAC: '02:00:00:00:00:01' } });
    assert.equal(renewed.revision, first.revision);
    assert.equal(Date.parse(renewed.expiresAt!), clock.now + 60_000);
    assert.deepEqual(await store.getNetwork('n'), { ...net, updatedAt: (await store.getNetwork('n'))!.updatedAt }, 'the network revision, count and hash are unchanged');
    assert.deepEqual(pub.since(mark).map((p) => p.topic), [topics.nodeLease('n', 'a')]);
    const own = JSON.parse(pub.since(mark)[0]!.payload) as NodeLeaseMessage;
    assert.equal(own.lease?.expiresAt, renewed.expiresAt);
    assert.deepEqual(await store.getLease('n', 'a'), renewed);
    // a changed public IP is a change peers use: a new revision, published to the network
    const moved = await controller.join('n', 'a', { publicIP: '192.0.2.99', backendData: { VtepMAC: '02:00:00:00:00:01' } });
    assert.ok(moved.revision > first.revision);
    assert.deepEqual(pub.changes(topics.netChanges('n'), mark).map((c) => [c.revision, c.node]), [[moved.revision, 'a']]);
  });

  test('a lease renewed after the expiry scan read it is not expired', async () => {
    const { controller, store, clock } = setup({ leaseTtlMs: 60_000 });
    await controller.applyNetwork('n', conf({ Network: '10.1.0.0/16' }));
    const a = await controller.join('n', 'a', IP);
    clock.now += 61_000;
    const stale = await store.listExpired(clock.now);
    assert.deepEqual(stale.map((l) => l.node), ['a']);
    await controller.join('n', 'a', IP); // renewed between the scan and the delete
    assert.equal(await controller.release('n', 'a', a.revision, clock.now), false);
    assert.ok(await store.getLease('n', 'a'));
    assert.equal(await controller.expire(), 0);
  });
});

describe('picking a new subnet', () => {
  test('every pick lies within SubnetMin..SubnetMax and among the first 100 free subnets', async () => {
    const { controller, store } = setup();
    await controller.applyNetwork('n', conf({ Network: '10.2.0.0/16', SubnetMin: '10.2.20.0', SubnetMax: '10.2.219.0' }));
    const range = subnetRanges((await store.getNetwork('n'))!.config).v4!;
    const step = subnetStep(4, 24);
    const taken = new Set<bigint>();
    let spread = 0;
    for (let i = 0; i < 150; i++) {
      const free: bigint[] = [];
      for (let ip = range.min; ip <= range.max; ip += step) if (!taken.has(ip)) free.push(ip);
      const lease = await controller.join('n', `node-${i}`, IP);
      const ip = ipOf(lease.subnet);
      assert.ok(ip >= ipOf('10.2.20.0/24') && ip <= ipOf('10.2.219.0/24'), `${lease.subnet} is outside SubnetMin..SubnetMax`);
      const index = free.indexOf(ip);
      assert.ok(index >= 0 && index < CANDIDATES, `${lease.subnet} is free subnet number ${index}, not among the first ${CANDIDATES}`);
      spread = Math.max(spread, index);
      taken.add(ip);
    }
    assert.ok(spread > 10, 'picks are spread over the candidates, not always the first');
  });

  test('a seeded random source decides which of the free subnets is picked', async () => {
    const { controller } = setup({ random: sequence(0, 0.999, 0.5, 0.5) });
    await controller.applyNetwork('n', conf({ Network: '10.2.0.0/16', SubnetMin: '10.2.20.0', SubnetMax: '10.2.219.0' }));
    const got = [];
    for (let i = 0; i < 4; i++) got.push((await controller.join('n', `node-${i}`, IP)).subnet);
    // Index 0 of the free list is SubnetMin. With 10.2.20.0 taken the free list
    // starts at 10.2.21.0, so index 99 is 10.2.120.0 and index 50 is 10.2.71.0;
    // index 50 again is one further on, as 10.2.71.0 is now taken.
    assert.deepEqual(got, ['10.2.20.0/24', '10.2.120.0/24', '10.2.71.0/24', '10.2.72.0/24']);
  });

  test('a /22 with SubnetLen 24 has 3 subnets; the 4th node gets a clear OutOfSubnetsError and nothing changes', async () => {
    const { controller, store, pub } = setup();
    await controller.applyNetwork('small', conf({ Network: '10.9.0.0/22', SubnetLen: 24 }));
    const leases = [];
    for (const node of ['a', 'b', 'c']) leases.push(await controller.join('small', node, IP));
    assert.deepEqual(leases.map((l) => l.subnet).sort(), ['10.9.1.0/24', '10.9.2.0/24', '10.9.3.0/24'], 'SubnetMin is the second subnet');
    const before = await storeState(store, 'small');
    const mark = pub.sent.length;
    await assert.rejects(controller.join('small', 'd', IP), (e: unknown) => {
      assert.ok(e instanceof OutOfSubnetsError, `expected OutOfSubnetsError, got ${String(e)}`);
      assert.match(e.message, /network small/);
      assert.match(e.message, /3 \/24 subnets from 10\.9\.1\.0 to 10\.9\.3\.0/);
      assert.match(e.message, /widen the network or remove nodes/);
      return true;
    });
    assert.deepEqual(await storeState(store, 'small'), before);
    assert.equal(await store.getLease('small', 'd'), undefined);
    assert.deepEqual(pub.since(mark), [], 'nothing was published about a lease that was not granted');
    // Once a node leaves, its subnet is free again.
    await controller.release('small', 'b');
    assert.equal((await controller.join('small', 'd', IP)).subnet, leases[1]!.subnet);
  });

  test('64 nodes joining at once get 64 distinct subnets, each told its own', async () => {
    const { controller, store, pub } = setup();
    await controller.applyNetwork('n', conf({ Network: '10.3.0.0/16' }));
    const leases = await Promise.all(Array.from({ length: 64 }, (_, i) => controller.join('n', `node-${i}`, IP)));
    assert.equal(new Set(leases.map((l) => l.subnet)).size, 64);
    const stored = await store.listLeases('n');
    assert.equal(stored.length, 64);
    const net = await store.getNetwork('n');
    assert.equal(net?.leaseHash, leasesHash(stored));
    for (const l of stored) {
      const own = JSON.parse(pub.retained(topics.nodeLease('n', l.node))!) as NodeLeaseMessage;
      assert.deepEqual(own.lease, l, `${l.node} was told its lease as stored`);
    }
    const told = new Map(pub.changes(topics.netChanges('n')).filter((c) => c.node).map((c) => [c.node, c.lease]));
    for (const l of stored) assert.deepEqual(told.get(l.node), l, `peers were told ${l.node}'s lease`);
  });

  test('changes written while one is being published leave together, in revision order, each member told each change once', async () => {
    const { controller, pub } = setup();
    await controller.applyNetwork('n', conf({ Network: '10.4.0.0/16' }));
    // A broker that takes its time: every join lands while a publish is in flight.
    const publish = pub.publish.bind(pub);
    pub.publish = async (t, p, r) => { await new Promise((res) => setTimeout(res, 5)); return publish(t, p, r); };
    const mark = pub.sent.length;
    await Promise.all(Array.from({ length: 40 }, (_, i) => controller.join('n', `node-${i}`, IP)));
    const messages = pub.since(mark).filter((p) => p.topic === topics.netChanges('n'));
    assert.ok(messages.length < 40 / 4, `40 joins went out in ${messages.length} messages`);
    const revs = pub.changes(topics.netChanges('n'), mark).map((c) => c.revision);
    assert.equal(revs.length, 40, 'every join is in one message, once');
    for (const m of messages) {
      const body = JSON.parse(m.payload) as { changes?: { revision: number }[] };
      const inside = body.changes?.map((c) => c.revision) ?? [];
      assert.deepEqual(inside, [...inside].sort((a, b) => a - b), 'a batch is in revision order');
    }
    assert.equal(new Set(revs).size, 40);
  });
});

describe('reservations', () => {
  test('a reserved subnet never expires, is never given to another node and goes to its node', async () => {
    const { controller, store, clock } = setup({ leaseTtlMs: 1000 });
    await controller.applyNetwork('small', conf({ Network: '10.9.0.0/22', SubnetLen: 24 }));
    const r = await controller.reserve('small', 'r', '10.9.2.0/24', '192.0.2.50');
    assert.equal(r.expiresAt, null);
    assert.equal(r.subnet, '10.9.2.0/24');
    const a = await controller.join('small', 'a', IP);
    const b = await controller.join('small', 'b', IP);
    assert.deepEqual([a.subnet, b.subnet].sort(), ['10.9.1.0/24', '10.9.3.0/24']);
    await assert.rejects(controller.join('small', 'c', IP), OutOfSubnetsError, 'the reserved subnet is not free, even when it is the only one left');
    clock.now += 10 * 365 * 86_400_000;
    assert.equal(await controller.expire(), 2, 'only the two ordinary leases expired');
    assert.deepEqual((await store.listLeases('small')).map((l) => l.node), ['r']);
    const c = await controller.join('small', 'c', IP);
    assert.notEqual(c.subnet, '10.9.2.0/24', 'a free subnet is found, the reserved one is still held');
    const joined = await controller.join('small', 'r', { publicIP: '192.0.2.51' });
    assert.equal(joined.subnet, '10.9.2.0/24');
    assert.equal(joined.expiresAt, null, 'joining does not turn a reservation into an expiring lease');
    assert.equal(joined.publicIP, '192.0.2.51');
    clock.now += 10 * 365 * 86_400_000;
    await controller.expire();
    assert.equal((await store.getLease('small', 'r'))?.expiresAt, null);
  });

  test('a reservation outside the range is refused', async () => {
    const { controller, store } = setup();
    await controller.applyNetwork('n', conf({ Network: '10.9.0.0/22', SubnetLen: 24 }));
    for (const subnet of ['10.9.0.0/24', '10.10.1.0/24', '10.9.1.0/25']) {
      await assert.rejects(controller.reserve('n', 'r', subnet), (e: unknown) => e instanceof TwillError && e.code === 'InvalidReservation');
    }
    assert.deepEqual(await store.listLeases('n'), []);
  });
});

describe('expiry', () => {
  test('an expired lease is removed and agents see its retained topics cleared and a new manifest', async () => {
    const { controller, store, pub, clock } = setup({ leaseTtlMs: 1000 });
    await controller.applyNetwork('n', conf({ Network: '10.4.0.0/16' }));
    const a = await controller.join('n', 'a', IP);
    await controller.join('n', 'b', IP);
    assert.equal(a.expiresAt, new Date(clock.now + 1000).toISOString());
    clock.now += 500;
    await controller.join('n', 'b', IP); // b renews, a does not
    clock.now += 499;
    assert.equal(await controller.expire(), 0, 'nothing expires before its time');
    clock.now += 1;
    const mark = pub.sent.length;
    assert.equal(await controller.expire(), 1);
    assert.equal(await store.getLease('n', 'a'), undefined);
    assert.ok(await store.getLease('n', 'b'), 'the renewed lease stays');

    const sent = pub.since(mark);
    const onTopic = (t: string) => sent.filter((p) => p.topic === t);
    const net = await store.getNetwork('n');
    assert.deepEqual(pub.changes(topics.netChanges('n'), mark), [{ v: 2, revision: net!.revision, node: 'a', lease: null }], 'every member hears of the removal once, with its revision');
    assert.equal(onTopic(topics.netChanges('n'))[0]!.retain, false, 'changes are not retained: agents list the network, then follow');
    // Its own topic: the retained lease deleted (a zero-byte retained publish), then "no lease" live.
    const own = onTopic(topics.nodeLease('n', 'a'));
    assert.deepEqual(own.map((p) => [p.payload, p.retain]), [['', true], [JSON.stringify({ v: 2, lease: null }), false]]);
    assert.equal(await controller.expire(), 0, 'an expired lease goes once');
  });
});

describe('IPv6', () => {
  test('a dual-stack network gives each node an IPv4 and an IPv6 subnet', async () => {
    const { controller, store } = setup();
    await controller.applyNetwork('dual', conf({ Network: '10.5.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:5::/56' }));
    const ranges = subnetRanges((await store.getNetwork('dual'))!.config);
    const leases = [];
    for (let i = 0; i < 10; i++) leases.push(await controller.join('dual', `n${i}`, { publicIP: `192.0.2.${i + 1}`, publicIPv6: `2001:db8::${i + 1}` }));
    for (const [i, l] of leases.entries()) {
      const v4 = parseCidr(l.subnet!, true)!;
      const v6 = parseCidr(l.ipv6Subnet!, true)!;
      assert.equal(v4.prefix, 24);
      assert.equal(v6.prefix, 64);
      assert.ok(v4.ip >= ranges.v4!.min && v4.ip <= ranges.v4!.max, `${l.subnet} in range`);
      assert.ok(v6.ip >= ranges.v6!.min && v6.ip <= ranges.v6!.max, `${l.ipv6Subnet} in range`);
      assert.equal(l.publicIPv6, `2001:db8::${i + 1}`);
    }
    assert.equal(new Set(leases.map((l) => l.subnet)).size, 10);
    assert.equal(new Set(leases.map((l) => l.ipv6Subnet)).size, 10);
  });

  test('an IPv6-only network gives IPv6 subnets and no IPv4 subnet, and needs a public IPv6 address', async () => {
    const { controller } = setup({ random: () => 0 });
    await controller.applyNetwork('v6', conf({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:6::/56' }));
    const a = await controller.join('v6', 'a', { publicIPv6: '2001:db8::1' });
    const b = await controller.join('v6', 'b', { publicIPv6: '2001:db8::2' });
    assert.equal(a.subnet, null);
    assert.equal(b.subnet, null);
    assert.equal(a.ipv6Subnet, 'fd00:6:0:1::/64', 'the first IPv6 subnet is skipped as in IPv4');
    assert.equal(b.ipv6Subnet, 'fd00:6:0:2::/64');
    await assert.rejects(controller.join('v6', 'c', IP), /sent no publicIPv6/);
  });
});

describe('config changes', () => {
  test('the backend type cannot change once the network has leases; it can while it has none', async () => {
    const { controller, store } = setup();
    await controller.applyNetwork('n', conf({ Network: '10.6.0.0/16' }));
    const changed = await controller.applyNetwork('n', conf({ Network: '10.6.0.0/16', Backend: { Type: 'host-gw' } }));
    assert.equal(changed.config.Backend.Type, 'host-gw', 'no leases yet: the type may change');
    await controller.join('n', 'a', IP);
    const before = await storeState(store, 'n');
    await assert.rejects(controller.applyNetwork('n', conf({ Network: '10.6.0.0/16', Backend: { Type: 'vxlan' } })), (e: unknown) => {
      assert.ok(e instanceof TwillError);
      assert.match(e.message, /host-gw/);
      assert.match(e.message, /vxlan/);
      assert.match(e.message, /network n/);
      return true;
    });
    assert.deepEqual(await storeState(store, 'n'), before);
    await controller.release('n', 'a');
    const again = await controller.applyNetwork('n', conf({ Network: '10.6.0.0/16', Backend: { Type: 'vxlan' } }));
    assert.equal(again.config.Backend.Type, 'vxlan');
  });

  test('a range that shrinks moves a node to a subnet that fits on its next join', async () => {
    const { controller, pub } = setup({ random: () => 0.999 });
    await controller.applyNetwork('n', conf({ Network: '10.7.0.0/16' }));
    const first = await controller.join('n', 'a', IP);
    assert.equal(first.subnet, '10.7.100.0/24');
    const kept = await controller.join('n', 'k', { ...IP, previousSubnet: '10.7.5.0/24' });
    await controller.applyNetwork('n', conf({ Network: '10.7.0.0/16', SubnetMax: '10.7.50.0' }));
    const own = JSON.parse(pub.retained(topics.nodeLease('n', 'a'))!) as NodeLeaseMessage;
    assert.equal(own.config?.SubnetMax, '10.7.50.0', 'the node is told the new config');
    const moved = await controller.join('n', 'a', IP);
    assert.notEqual(moved.subnet, first.subnet);
    const ip = ipOf(moved.subnet);
    assert.ok(ip >= ipOf('10.7.1.0/24') && ip <= ipOf('10.7.50.0/24'), `${moved.subnet} fits the new range`);
    assert.notEqual(moved.subnet, kept.subnet);
    assert.equal((await controller.join('n', 'k', IP)).subnet, kept.subnet, 'a lease that still fits stays');
  });

  // Each backend whose PSK is a network secret, with a PSK its rule takes (wireguard's: a key as wg genpsk prints it).
  const secured: [string, string, Record<string, string>][] = [
    ['ipsec', PSK, {}],
    ['wireguard', 'MyaBuklmlP3GEXabi6mjVJSlpd/jtB/TveVPrna2SKY=', { PublicKey: 'KOWLD5rVk7ocFEXqOp5OqmTuxNGOSaFmjhXaBci47SQ=' }],
  ];
  for (const [type, psk, backendData] of secured) {
    test(`the shared config topic never carries the ${type} PSK; the node's own topic does, through joins, a config change and a rotation`, async () => {
      const { controller, pub } = setup();
      await controller.applyNetwork('sec', conf({ Network: '10.8.0.0/16', Backend: { Type: type, PSK: psk } }));
      await controller.join('sec', 'a', { ...IP, backendData });
      await controller.join('sec', 'b', { ...IP, backendData });
      await controller.applyNetwork('sec', conf({ Network: '10.8.0.0/16', SubnetMax: '10.8.200.0', Backend: { Type: type, PSK: psk } }));
      if (type === 'wireguard') await controller.rotateKey('sec', 'a');
      await controller.release('sec', 'b');
      await controller.join('sec', 'b', { ...IP, backendData });
      await controller.republishNetwork('sec');

      const shared = pub.sent.filter((p) => p.topic.startsWith(`${topics.root}/net/`));
      assert.ok(shared.some((p) => p.topic === topics.netConfig('sec')));
      assert.ok(shared.some((p) => p.topic === topics.netChanges('sec')));
      for (const p of shared) assert.ok(!p.payload.includes(psk), `${p.topic} carries the PSK`);
      const cfg = JSON.parse(pub.retained(topics.netConfig('sec'))!) as { config: { Backend: { Type: string; PSK: string } } };
      assert.equal(cfg.config.Backend.Type, type);
      assert.equal(cfg.config.Backend.PSK, SECRET_MASK);

      for (const node of ['a', 'b']) {
        const own = JSON.parse(pub.retained(topics.nodeLease('sec', node))!) as NodeLeaseMessage;
        assert.equal((own.config?.Backend as { PSK?: string }).PSK, psk, `${node}'s own topic has the PSK`);
        assert.ok(!JSON.stringify(own.lease).includes(psk), 'never in a lease');
      }
      // nothing but a node's own topic ever carried it
      for (const p of pub.sent) if (p.payload.includes(psk)) assert.ok([topics.nodeLease('sec', 'a'), topics.nodeLease('sec', 'b')].includes(p.topic), p.topic);
    });
  }

  test("an ali-vpc network's access key secret is on no topic, the nodes' own included", async () => {
    const { controller, pub } = setup();
    const SECRET = 'ali-access-key-secret-never-on-a-topic';
    const ali = conf({ Network: '10.9.0.0/16', Backend: { Type: 'ali-vpc', AccessKeyID: 'LTAIexample', AccessKeySecret: SECRET } });
    await controller.applyNetwork('ali', ali);
    await controller.join('ali', 'i-1', IP);
    await controller.join('ali', 'i-2', IP);
    await controller.applyNetwork('ali', conf({ Network: '10.9.0.0/16', SubnetMax: '10.9.200.0', Backend: { Type: 'ali-vpc', AccessKeyID: 'LTAIexample', AccessKeySecret: SECRET } }));
    await controller.republishNetwork('ali');
    await controller.release('ali', 'i-2');
    assert.ok(pub.sent.some((p) => p.topic === topics.nodeLease('ali', 'i-1')), 'the node got its own topic');
    for (const p of pub.sent) assert.ok(!p.payload.includes(SECRET), `${p.topic} carries the access key secret`);
    const own = JSON.parse(pub.retained(topics.nodeLease('ali', 'i-1'))!) as NodeLeaseMessage;
    assert.equal((own.config?.Backend as { AccessKeySecret?: string }).AccessKeySecret, SECRET_MASK);
  });
});

/** Records like RecordingPublisher, but holds the next publish to a topic until the test lets it go. */
class GatedPublisher extends RecordingPublisher {
  private gates = new Map<string, { reached: () => void; go: Promise<void> }>();
  /** Holds the next publish to `topic`; resolves `reached` when it arrives, and it goes on when `release` is called. */
  hold(topic: string): { reached: Promise<void>; release: () => void } {
    let release!: () => void;
    let reached!: () => void;
    const go = new Promise<void>((r) => (release = r));
    const arrived = new Promise<void>((r) => (reached = r));
    this.gates.set(topic, { reached, go });
    return { reached: arrived, release };
  }
  override async publish(topic: string, payload: string, retain: boolean): Promise<void> {
    const gate = this.gates.get(topic);
    if (gate) {
      this.gates.delete(topic);
      gate.reached();
      await gate.go;
    }
    await super.publish(topic, payload, retain);
  }
}

describe('publishing races', () => {
  function gated() {
    const store = new SqliteStore(join(dir, `alloc-${++dbs}.db`));
    opened.push(store);
    const pub = new GatedPublisher();
    const controller = new Controller(store, pub, { topics, log: silentLogger });
    return { store, pub, controller };
  }
  const retainedLease = (pub: RecordingPublisher, node: string) => (JSON.parse(pub.retained(topics.nodeLease('n', node)) || 'null') as { lease: { revision: number } | null } | null)?.lease ?? null;

  test('a republish overtaken by a new public IP of the same node does not leave the older lease retained', async () => {
    const { store, pub, controller } = gated();
    await controller.applyNetwork('n', conf({ Network: '10.1.0.0/16' }));
    await controller.join('n', 'a', IP);
    await controller.join('n', 'b', IP);
    // the republish has read b's lease and is about to publish it when b moves
    const gate = pub.hold(topics.nodeLease('n', 'b'));
    const republish = controller.republishNetwork('n');
    await gate.reached;
    await controller.join('n', 'b', { publicIP: '192.0.2.12' });
    gate.release();
    await republish;
    assert.equal(retainedLease(pub, 'b')?.revision, (await store.getLease('n', 'b'))?.revision, 'the broker ends with the store\'s lease');
  });

  test('two joins of one node whose publishes cross end with the newer lease retained', async () => {
    const { store, pub, controller } = gated();
    await controller.applyNetwork('n', conf({ Network: '10.1.0.0/16' }));
    const gate = pub.hold(topics.nodeLease('n', 'a'));
    const first = controller.join('n', 'a', IP);
    await gate.reached;
    const second = await controller.join('n', 'a', { publicIP: '192.0.2.11' });
    gate.release();
    await first;
    assert.equal(retainedLease(pub, 'a')?.revision, second.revision);
    assert.deepEqual(retainedLease(pub, 'a'), await store.getLease('n', 'a'));
  });

  test('a join published after a concurrent release does not bring the removed lease back', async () => {
    const { store, pub, controller } = gated();
    await controller.applyNetwork('n', conf({ Network: '10.1.0.0/16' }));
    await controller.join('n', 'other', IP);
    const gate = pub.hold(topics.nodeLease('n', 'a'));
    const joined = controller.join('n', 'a', IP);
    await gate.reached;
    await controller.release('n', 'a');
    gate.release();
    await joined;
    assert.equal(await store.getLease('n', 'a'), undefined);
    assert.equal(retainedLease(pub, 'a'), null, 'the own topic ends with no lease');
  });
});

describe("a node's backend data", () => {
  const hello = (backendData: Record<string, unknown>) => Buffer.from(JSON.stringify({ v: 2, agentVersion: 't', publicIP: '192.0.2.7', backendData }));
  test('only the keys its backend publishes, each by its rule; anything else refuses the hello and changes nothing; hellos never grow the lease', async () => {
    const { store, pub, controller } = setup();
    await controller.applyNetwork('vx', conf({ Network: '10.70.0.0/16', Backend: { Type: 'vxlan' } }));
    await store.putNode({ name: 'n1', network: 'vx', passwordHash: 'x', createdAt: new Date().toISOString() });
    await controller.handleMessage(topics.nodeHello('vx', 'n1'), hello({ VtepMAC: '0e:00:00:00:00:01' }));
    const first = await store.getLease('vx', 'n1');
    assert.deepEqual(first?.backendData, { VtepMAC: '0e:00:00:00:00:01' });
    // a new MAC replaces the old one, key by key
    await controller.handleMessage(topics.nodeHello('vx', 'n1'), hello({ VtepMAC: '0e:00:00:00:00:02', VtepMACv6: '0e:00:00:00:06:02' }));
    assert.deepEqual((await store.getLease('vx', 'n1'))?.backendData, { VtepMAC: '0e:00:00:00:00:02', VtepMACv6: '0e:00:00:00:06:02' });
    const before = await store.getLease('vx', 'n1');
    for (const bad of [{ Extra: 'x'.repeat(500) }, { VtepMAC: '0e:00:00:00:00:02\n$(reboot)' }, { VtepMAC: '01:00:5e:00:00:01' }]) {
      pub.sent.length = 0;
      await controller.handleMessage(topics.nodeHello('vx', 'n1'), hello(bad));
      assert.deepEqual(await store.getLease('vx', 'n1'), before, JSON.stringify(bad));
      const own = pub.sent.find((m) => m.topic === topics.nodeLease('vx', 'n1'));
      assert.match((JSON.parse(own?.payload ?? '{}') as NodeLeaseMessage).error ?? '', /^hello from n1 refused: backendData\./);
    }
    const said = (JSON.parse(pub.sent.find((m) => m.topic === topics.nodeLease('vx', 'n1'))?.payload ?? '{}') as NodeLeaseMessage).error ?? '';
    assert.equal(said, 'hello from n1 refused: backendData.VtepMAC "01:00:5e:00:00:01" must be a unicast MAC address (the first octet even)');
  });
  test('a backend whose agents publish nothing takes none, and says which keys it would take', async () => {
    const { store, pub, controller } = setup();
    await controller.applyNetwork('al', conf({ Network: '10.71.0.0/16', Backend: { Type: 'alloc' } }));
    await store.putNode({ name: 'n1', network: 'al', passwordHash: 'x', createdAt: new Date().toISOString() });
    await controller.handleMessage(topics.nodeHello('al', 'n1'), hello({ VtepMAC: '0e:00:00:00:00:01' }));
    assert.equal(await store.getLease('al', 'n1'), undefined);
    const own = pub.sent.find((m) => m.topic === topics.nodeLease('al', 'n1'));
    assert.equal((JSON.parse(own?.payload ?? '{}') as NodeLeaseMessage).error, 'hello from n1 refused: backendData.VtepMAC is not published by alloc agents (they publish none)');
  });
});
