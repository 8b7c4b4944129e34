// The lease-write plan both stores execute: what a write of a network's
// leases or config must change (revision, hash, count, change, claims,
// conditions), or why it is refused, decided from what was read. No store
// here: these are the decisions alone, which the store suites then check
// end to end against SQLite and DynamoDB.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { parseNetConf } from '../../core/config.js';
import { ConflictError, NotFoundError } from '../../core/errors.js';
import { digestHex, leaseDigest, leasesHash, type Lease, type NewLease } from '../../core/lease.js';
import {
  claimsOf, deleted, isRefusal, planLeaseWrite, planNetworkPut, planRenew, refusalError, written,
  type LeaseRequest, type LeaseWritePlan, type Refusal,
} from '../../control/store/lease-write.js';
import type { NetworkRecord } from '../../control/store/store.js';

const CONF = parseNetConf({ Network: '10.0.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:1::/48' }, {});
const NOW = Date.parse('2030-01-02T03:04:05.000Z');
const HOUR = 3_600_000;

function network(over: Partial<NetworkRecord> = {}): NetworkRecord {
  return { name: 'net', config: CONF, revision: 7, leaseCount: 0, leaseHash: digestHex(0n), updatedAt: '2030-01-01T00:00:00.000Z', ...over };
}

function newLease(node: string, over: Partial<NewLease> = {}): NewLease {
  return {
    network: 'net', node, subnet: '10.0.1.0/24', ipv6Subnet: 'fd00:1:0:1::/64', publicIP: '192.0.2.1', publicIPv6: null, backendType: 'vxlan',
    backendData: { VtepMAC: '02:00:00:00:00:01' }, expiresAt: new Date(NOW + HOUR).toISOString(), createdAt: new Date(NOW).toISOString(), ...over,
  };
}

/** A network holding one lease, as a store would have it after writing it at revision `at`. */
function holding(lease: NewLease, at: number): { net: NetworkRecord; lease: Lease } {
  const held: Lease = { ...lease, revision: at };
  return { net: network({ revision: at + 2, leaseCount: 1, leaseHash: digestHex(leaseDigest(held.node, at)) }), lease: held };
}

function plan(p: LeaseWritePlan | Refusal): LeaseWritePlan {
  if (isRefusal(p)) assert.fail(`refused: ${JSON.stringify(p)}`);
  return p;
}

function refusal(p: LeaseWritePlan | Refusal): Refusal {
  if (!isRefusal(p)) assert.fail(`planned, not refused: revision ${p.network.revision}`);
  return p;
}

describe('create', () => {
  test('the next revision, the lease folded into hash and count, its claims taken, one change logged', () => {
    const req = newLease('a');
    const p = plan(planLeaseWrite({ network: network(), lease: undefined }, { kind: 'create', lease: req }, NOW));
    assert.deepEqual(p.network, { name: 'net', readRevision: 7, revision: 8, leaseCount: 1, leaseHash: digestHex(leaseDigest('a', 8)), updatedAt: new Date(NOW).toISOString() });
    assert.deepEqual(p.lease, { ...req, revision: 8 });
    assert.deepEqual(written(p), { ...req, revision: 8 });
    assert.equal(p.deletes, false);
    assert.equal(p.expiresMs, NOW + HOUR, 'the expiry index entry');
    assert.deepEqual(p.leaseCondition, { absent: true });
    assert.deepEqual(p.take, [{ family: 4, ip: 0x0a000100n }, { family: 6, ip: 0xfd000001000000010000000000000000n }]);
    assert.deepEqual(p.release, []);
    assert.deepEqual(p.change, { revision: 8, node: 'a', lease: { ...req, revision: 8 } });
    assert.equal(p.at, NOW);
  });

  test('a reservation (no expiry) has no expiry index entry; an IPv4-only lease claims one subnet', () => {
    const p = plan(planLeaseWrite({ network: network(), lease: undefined }, { kind: 'create', lease: newLease('r', { expiresAt: null, ipv6Subnet: null }) }, NOW));
    assert.equal(p.expiresMs, null);
    assert.deepEqual(p.take, [{ family: 4, ip: 0x0a000100n }]);
  });

  test('refused when the network does not exist, or the node already holds a lease', () => {
    const none = refusal(planLeaseWrite({ network: undefined, lease: undefined }, { kind: 'create', lease: newLease('a') }, NOW));
    assert.deepEqual(none, { refuse: 'no-network', message: 'network net does not exist' });
    const { net, lease } = holding(newLease('a'), 3);
    const taken = refusal(planLeaseWrite({ network: net, lease }, { kind: 'create', lease: newLease('a') }, NOW));
    assert.deepEqual(taken, { refuse: 'conflict', message: 'node a already holds a lease in network net' });
  });

  test('what a condition failing at the write means: the lease exists, the subnet is taken, a released claim is another node\'s', () => {
    const p = plan(planLeaseWrite({ network: network(), lease: undefined }, { kind: 'create', lease: newLease('a') }, NOW));
    assert.deepEqual(p.failed.lease, { refuse: 'conflict', message: 'node a already holds a lease in network net' });
    assert.deepEqual(p.failed.claim, { refuse: 'conflict', message: 'subnet 10.0.1.0/24 or fd00:1:0:1::/64 of network net is already leased' });
    assert.deepEqual(p.failed.release, { refuse: 'inconsistent', message: 'store inconsistent: a subnet claim of node a in network net belongs to another node' });
  });
});

describe('replace', () => {
  test('the old digest out and the new one in, the count unchanged, conditioned on the lease\'s revision', () => {
    const { net, lease } = holding(newLease('a'), 3);
    const req = newLease('a', { publicIP: '192.0.2.9' });
    const p = plan(planLeaseWrite({ network: net, lease }, { kind: 'replace', lease: req, expectedRevision: 3 }, NOW));
    assert.equal(p.network.revision, 6);
    assert.equal(p.network.readRevision, 5);
    assert.equal(p.network.leaseCount, 1);
    assert.equal(p.network.leaseHash, digestHex(leaseDigest('a', 6)), 'the hash of the one lease at its new revision');
    assert.deepEqual(p.leaseCondition, { revision: 3 });
    assert.deepEqual(p.change, { revision: 6, node: 'a', lease: { ...req, revision: 6 } });
  });

  test('an unchanged subnet keeps its claim; a moved one releases the old and takes the new', () => {
    const { net, lease } = holding(newLease('a'), 3);
    const same = plan(planLeaseWrite({ network: net, lease }, { kind: 'replace', lease: newLease('a'), expectedRevision: 3 }, NOW));
    assert.deepEqual([same.take, same.release], [[], []]);
    const moved = plan(planLeaseWrite({ network: net, lease }, { kind: 'replace', lease: newLease('a', { subnet: '10.0.2.0/24' }), expectedRevision: 3 }, NOW));
    assert.deepEqual(moved.release, [{ family: 4, ip: 0x0a000100n }]);
    assert.deepEqual(moved.take, [{ family: 4, ip: 0x0a000200n }]);
    assert.equal(moved.failed.claim.refuse === 'conflict' && moved.failed.claim.message, 'subnet 10.0.2.0/24 or fd00:1:0:1::/64 of network net is already leased');
  });

  test('refused when the lease is gone or at another revision; at the write, a failed lease condition is the same conflict', () => {
    const { net, lease } = holding(newLease('a'), 3);
    const changed = { refuse: 'conflict', message: 'lease of node a in network net changed meanwhile' };
    assert.deepEqual(refusal(planLeaseWrite({ network: net, lease: undefined }, { kind: 'replace', lease: newLease('a'), expectedRevision: 3 }, NOW)), changed);
    assert.deepEqual(refusal(planLeaseWrite({ network: net, lease }, { kind: 'replace', lease: newLease('a'), expectedRevision: 2 }, NOW)), changed);
    const p = plan(planLeaseWrite({ network: net, lease }, { kind: 'replace', lease: newLease('a'), expectedRevision: 3 }, NOW));
    assert.deepEqual(p.failed.lease, changed);
    assert.deepEqual(refusal(planLeaseWrite({ network: undefined, lease }, { kind: 'replace', lease: newLease('a'), expectedRevision: 3 }, NOW)).refuse, 'no-network');
  });

  test('keeping the expiry (a change that is no renewal): the lease as read keeps its expiry, the write is conditioned on it, and a failed condition reads again', () => {
    const renewed = new Date(NOW + 5 * HOUR).toISOString();
    const { net, lease } = holding(newLease('a', { expiresAt: renewed }), 3);
    // the caller's copy is older than the renewal the store read
    const req = newLease('a', { rotateKey: 'tok-1' });
    const p = plan(planLeaseWrite({ network: net, lease }, { kind: 'replace', lease: req, expectedRevision: 3, keepExpiry: true }, NOW));
    assert.deepEqual(p.lease, { ...req, expiresAt: renewed, revision: 6 });
    assert.equal(p.expiresMs, NOW + 5 * HOUR);
    assert.deepEqual(p.leaseCondition, { revision: 3, expiresAt: renewed });
    assert.equal(p.failed.lease, 'read-again');
    const { net: rnet, lease: reservation } = holding(newLease('r', { expiresAt: null }), 3);
    const r = plan(planLeaseWrite({ network: rnet, lease: reservation }, { kind: 'replace', lease: newLease('r'), expectedRevision: 3, keepExpiry: true }, NOW));
    assert.deepEqual([r.lease.expiresAt, r.expiresMs, r.leaseCondition], [null, null, { revision: 3, expiresAt: null }], 'a reservation stays one');
  });
});

describe('delete', () => {
  test('the digest out, the count down, both claims released, a change with no lease', () => {
    const { net, lease } = holding(newLease('a'), 3);
    const p = plan(planLeaseWrite({ network: net, lease }, { kind: 'delete', network: 'net', node: 'a' }, NOW));
    assert.deepEqual(p.network, { name: 'net', readRevision: 5, revision: 6, leaseCount: 0, leaseHash: digestHex(0n), updatedAt: new Date(NOW).toISOString() });
    assert.equal(p.deletes, true);
    assert.deepEqual(deleted(p), { lease, revision: 6 });
    assert.deepEqual(p.release, [{ family: 4, ip: 0x0a000100n }, { family: 6, ip: 0xfd000001000000010000000000000000n }]);
    assert.deepEqual(p.take, []);
    assert.deepEqual(p.change, { revision: 6, node: 'a', lease: null });
    assert.deepEqual(p.leaseCondition, { revision: 3 });
    assert.equal(p.failed.lease, 'read-again', 'a lease that moved at the write is read again: a delete of any revision may still find it');
  });

  test('at expiry: conditioned on the expiry as well, and a lease renewed since (or a reservation) is left alone', () => {
    const { net, lease } = holding(newLease('a'), 3);
    const due = NOW + HOUR;
    const p = plan(planLeaseWrite({ network: net, lease }, { kind: 'delete', network: 'net', node: 'a', expectedRevision: 3, expiredBy: due }, NOW));
    assert.deepEqual(p.leaseCondition, { revision: 3, expiredBy: due });
    assert.deepEqual(refusal(planLeaseWrite({ network: net, lease }, { kind: 'delete', network: 'net', node: 'a', expiredBy: due - 1 }, NOW)), { refuse: 'gone' });
    const reservation = { ...lease, expiresAt: null };
    assert.deepEqual(refusal(planLeaseWrite({ network: net, lease: reservation }, { kind: 'delete', network: 'net', node: 'a', expiredBy: due }, NOW)), { refuse: 'gone' });
  });

  test('gone when the lease is absent or at another revision, asked before the network (which need not be read)', () => {
    const { lease } = holding(newLease('a'), 3);
    assert.deepEqual(refusal(planLeaseWrite({ network: undefined, lease: undefined }, { kind: 'delete', network: 'net', node: 'a' }, NOW)), { refuse: 'gone' });
    assert.deepEqual(refusal(planLeaseWrite({ network: undefined, lease }, { kind: 'delete', network: 'net', node: 'a', expectedRevision: 4 }, NOW)), { refuse: 'gone' });
    assert.deepEqual(refusal(planLeaseWrite({ network: undefined, lease }, { kind: 'delete', network: 'net', node: 'a' }, NOW)).refuse, 'no-network');
  });
});

test('any run of creates, replaces and deletes keeps the hash an agent computes from the leases, the count, and a gapless change log', () => {
  let net = network({ revision: 1 });
  const leases = new Map<string, Lease>();
  const changes: number[] = [];
  // A fixed pseudo-random walk: the same run every time.
  let seed = 42;
  const next = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  for (let i = 0; i < 300; i++) {
    const node = `n${next(12)}`;
    const held = leases.get(node);
    const lease = newLease(node, { subnet: `10.0.${next(250)}.0/24`, ipv6Subnet: null });
    const req: LeaseRequest = !held ? { kind: 'create', lease } : next(2) ? { kind: 'replace', lease, expectedRevision: held.revision } : { kind: 'delete', network: 'net', node };
    const p = plan(planLeaseWrite({ network: net, lease: held }, req, NOW + i));
    assert.equal(p.network.revision, net.revision + 1);
    if (p.deletes) leases.delete(node);
    else leases.set(node, p.lease);
    changes.push(p.change.revision);
    net = { ...net, revision: p.network.revision, leaseCount: p.network.leaseCount, leaseHash: p.network.leaseHash, updatedAt: p.network.updatedAt };
    assert.equal(net.leaseCount, leases.size, `count after write ${i}`);
    assert.equal(net.leaseHash, leasesHash(leases.values()), `hash after write ${i}`);
  }
  assert.deepEqual(changes, Array.from({ length: 300 }, (_, i) => i + 2), 'one change per revision, none missing');
});

describe('renew', () => {
  test('only the expiry moves: same revision, no network write', () => {
    const { lease } = holding(newLease('a'), 3);
    const later = new Date(NOW + 2 * HOUR).toISOString();
    assert.deepEqual(planRenew(lease, 3, later), { lease: { ...lease, expiresAt: later }, expiresMs: NOW + 2 * HOUR, revision: 3 });
  });

  test('gone when the lease is absent, at another revision, or a reservation', () => {
    const { lease } = holding(newLease('a'), 3);
    const later = new Date(NOW + 2 * HOUR).toISOString();
    assert.deepEqual(planRenew(undefined, 3, later), { refuse: 'gone' });
    assert.deepEqual(planRenew(lease, 4, later), { refuse: 'gone' });
    assert.deepEqual(planRenew({ ...lease, expiresAt: null }, 3, later), { refuse: 'gone' });
  });
});

describe('network put', () => {
  test('a new network starts at revision 1 with no lease, and logs a config change', () => {
    const p = planNetworkPut(undefined, 'net', CONF, undefined, NOW);
    assert.ok(!isRefusal(p));
    assert.deepEqual(p.record, { name: 'net', config: JSON.parse(JSON.stringify(CONF)), revision: 1, leaseCount: 0, leaseHash: '0000000000000000', updatedAt: new Date(NOW).toISOString() });
    assert.equal(p.create, true);
    assert.deepEqual(p.change, { revision: 1, config: true });
    assert.deepEqual(p.failed, { refuse: 'conflict', message: 'network net changed meanwhile (expected no network)' });
  });

  test('a new config is the next revision; the leases\' count and hash stay', () => {
    const read = network({ leaseCount: 2, leaseHash: '00000000000000ff' });
    const conf = parseNetConf({ Network: '10.1.0.0/16' }, {});
    const p = planNetworkPut(read, 'net', conf, 7, NOW);
    assert.ok(!isRefusal(p));
    assert.deepEqual(p.record, { ...read, config: JSON.parse(JSON.stringify(conf)), revision: 8, updatedAt: new Date(NOW).toISOString() });
    assert.equal(p.create, false);
    assert.equal(p.expectedRevision, 7);
    assert.deepEqual(p.change, { revision: 8, config: true });
  });

  test('refused unless the network is as expected: absent for a create, at the expected revision otherwise', () => {
    assert.deepEqual(planNetworkPut(network(), 'net', CONF, undefined, NOW), { refuse: 'conflict', message: 'network net changed meanwhile (revision 7, expected none)' });
    assert.deepEqual(planNetworkPut(undefined, 'net', CONF, 7, NOW), { refuse: 'conflict', message: 'network net changed meanwhile (revision none, expected 7)' });
    assert.deepEqual(planNetworkPut(network(), 'net', CONF, 6, NOW), { refuse: 'conflict', message: 'network net changed meanwhile (revision 7, expected 6)' });
  });
});

test('a refusal is the error its caller expects', () => {
  assert.ok(refusalError({ refuse: 'no-network', message: 'm' }) instanceof NotFoundError);
  assert.ok(refusalError({ refuse: 'conflict', message: 'm' }) instanceof ConflictError);
  const inconsistent = refusalError({ refuse: 'inconsistent', message: 'store inconsistent: x' });
  assert.ok(!(inconsistent instanceof ConflictError), 'an inconsistent store is no conflict a retry could settle');
  assert.equal(inconsistent.message, 'store inconsistent: x');
});

test('claims are the subnets\' network addresses; a subnet that is not a network address claims nothing', () => {
  assert.deepEqual(claimsOf({ subnet: '10.0.3.0/24', ipv6Subnet: null }), { v4: 0x0a000300n });
  assert.deepEqual(claimsOf({ subnet: null, ipv6Subnet: 'fd00:1:0:2::/64' }), { v6: 0xfd000001000000020000000000000000n });
  assert.deepEqual(claimsOf({ subnet: '10.0.3.1/24', ipv6Subnet: null }), {});
});
