// The agent's view of its network (agent/watch/view.ts) on its own, with no broker
// and no node API: what the watch hands it (changes from the broker, pages of
// a snapshot and of the change log) and what it answers. The view an agent
// programs its kernel from must never miss a peer, never go back to an older
// lease, and never apply a change twice or out of order.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Lease } from '../../core/lease.js';
import type { ChangeMessage } from '../../core/messages.js';
import { NetworkView } from '../../agent/watch/view.js';

const NET = 'net';
const SELF = 'me';

/** A peer's lease at a revision, as the wire carries it: node i's subnet is 10.244.i.0/24. */
function lease(node: string, revision: number, network = NET): NonNullable<ChangeMessage['lease']> & Lease {
  const i = node.charCodeAt(0) % 200;
  return {
    network, node, subnet: `10.244.${i}.0/24`, ipv6Subnet: null, publicIP: `192.168.1.${i}`, publicIPv6: null,
    backendType: 'vxlan', backendData: { VtepMAC: '0e:00:00:00:00:01' }, expiresAt: '2030-01-01T00:00:00.000Z',
    createdAt: '2025-01-01T00:00:00.000Z', revision,
  };
}
/** A peer joins (or renews) at revision r. */
const join = (node: string, r: number): ChangeMessage => ({ v: 2, revision: r, node, lease: lease(node, r) });
/** A peer leaves at revision r. */
const leave = (node: string, r: number): ChangeMessage => ({ v: 2, revision: r, node, lease: null });
const peersOf = (v: NetworkView) => Object.fromEntries([...v.snapshot().peers].map(([n, l]) => [n, l.revision]));
const sorted = (s: ReadonlySet<string>) => [...s].sort();

/** A view listed at revision r with these peers' leases, synced and in sync, as the watch leaves it after its first list. */
function listedView(r: number, peers: Lease[]): NetworkView {
  const v = new NetworkView(NET, SELF);
  assert.equal(v.requestSync(), true);
  v.beginList();
  v.listed([{ revision: r, leases: peers }]);
  assert.equal(v.endSync(true), true);
  return v;
}

describe('changes from the broker', () => {
  test('before the first list nothing is applied: every change is held for the list', () => {
    const v = new NetworkView(NET, SELF);
    assert.deepEqual(v.offer(join('a', 1)), { changed: new Set(), gap: false });
    assert.equal(v.complete, false);
    assert.equal(v.state, 'listing');
    assert.deepEqual(peersOf(v), {});
  });

  test('changes that follow the view are applied in revision order, and say which peers they touched', () => {
    const v = listedView(5, [lease('a', 2), lease('b', 5)]);
    const r1 = v.offer(join('c', 6));
    assert.deepEqual(sorted(r1.changed), ['c']);
    assert.equal(r1.gap, false);
    const r2 = v.offer(leave('a', 7));
    assert.deepEqual(sorted(r2.changed), ['a']);
    assert.deepEqual(peersOf(v), { b: 5, c: 6 });
    assert.equal(v.revision, 7);
    assert.equal(v.state, 'in-sync');
  });

  test('a change that skips a revision is held and reported as a gap; the missing one brings both, in order', () => {
    const v = listedView(5, [lease('a', 5)]);
    const early = v.offer(leave('a', 7));
    assert.equal(early.gap, true);
    assert.deepEqual(sorted(early.changed), []);
    assert.equal(v.state, 'catching-up');
    assert.deepEqual(peersOf(v), { a: 5 }, 'nothing applied past the gap');
    assert.equal(v.revision, 5);
    // 6 arrives late (out of order from the broker): 6 then 7, a joins b and then leaves
    const late = v.offer(join('b', 6));
    assert.equal(late.gap, false);
    assert.deepEqual(sorted(late.changed), ['a', 'b']);
    assert.deepEqual(peersOf(v), { b: 6 });
    assert.equal(v.revision, 7);
  });

  test('a change at or below the view\'s revision is stale and dropped; so is a peer lease older than the one held', () => {
    const v = listedView(5, [lease('a', 5)]);
    assert.deepEqual(v.offer(leave('a', 5)), { changed: new Set(), gap: false });
    assert.deepEqual(v.offer(leave('a', 3)), { changed: new Set(), gap: false });
    assert.deepEqual(peersOf(v), { a: 5 });
    // revision 6 carries a copy of a's lease from revision 4: the view keeps the newer one
    const older: ChangeMessage = { v: 2, revision: 6, node: 'a', lease: lease('a', 4) };
    assert.deepEqual(sorted(v.offer(older).changed), []);
    assert.equal(v.revision, 6, 'the revision is taken all the same');
    assert.equal(v.snapshot().peers.get('a')?.revision, 5);
  });

  test('the node\'s own change and a config change move the revision and touch no peer', () => {
    const v = listedView(5, []);
    assert.deepEqual(sorted(v.offer(join(SELF, 6)).changed), []);
    assert.deepEqual(sorted(v.offer({ v: 2, revision: 7, config: true }).changed), []);
    assert.equal(v.revision, 7);
    assert.deepEqual(peersOf(v), {});
  });
});

describe('syncs: a list, then the change log', () => {
  test('changes that arrive during a list are held, then applied after the snapshot without loss or repeat', () => {
    const v = new NetworkView(NET, SELF);
    assert.equal(v.requestSync(), true);
    v.beginList();
    // the broker brings 5..8 while the pages are read
    for (const c of [join('c', 5), join('d', 6), leave('a', 7), join('e', 8)]) assert.deepEqual(sorted(v.offer(c).changed), []);
    // two pages, the second from a newer cache: complete at the older one's revision
    v.listed([
      { revision: 4, leases: [lease('a', 1), lease('b', 3)] },
      { revision: 6, leases: [lease('c', 5), lease('d', 6)] },
    ]);
    assert.equal(v.revision, 4);
    // the change log since 4 redoes what the newer page already had (5, 6) and brings 7
    assert.deepEqual(sorted(v.catchUp([join('c', 5), join('d', 6), leave('a', 7)])), ['a', 'c', 'd']);
    assert.equal(v.revision, 7);
    // the held changes past it (8) follow; those already applied are dropped
    assert.deepEqual(sorted(v.drain()), ['e']);
    assert.equal(v.goAgain(), false);
    assert.equal(v.endSync(true), true);
    assert.equal(v.state, 'in-sync');
    assert.deepEqual(peersOf(v), { b: 3, c: 5, d: 6, e: 8 });
    assert.equal(v.revision, 8);
  });

  test('a list keeps only this network\'s leases, and never the node itself as a peer', () => {
    const v = new NetworkView(NET, SELF);
    v.requestSync();
    v.listed([{ revision: 9, leases: [lease('a', 1), lease(SELF, 2), lease('x', 3, 'other')] }]);
    assert.deepEqual(peersOf(v), { a: 1 });
  });

  test('a page of the change log is applied only from the revision after the view, and only without a gap', () => {
    const v = listedView(5, []);
    v.requestSync();
    assert.deepEqual(sorted(v.catchUp([join('a', 4), join('b', 6), join('c', 8)])), ['b']);
    assert.equal(v.revision, 6, '8 does not follow 6: it waits for the next page');
  });

  test('one sync at a time: a request while one runs makes it go round once more', () => {
    const v = listedView(5, []);
    assert.equal(v.requestSync(), true);
    assert.equal(v.requestSync(), false);
    assert.equal(v.requestSync(), false);
    assert.equal(v.goAgain(), true);
    assert.equal(v.goAgain(), false, 'one more round answers every request made before it');
    assert.equal(v.endSync(true), true);
    assert.equal(v.requestSync(), true, 'once it ended, a request starts one');
  });

  test('while a sync runs, what the broker brings waits for it; a gap found meanwhile is the sync\'s to fill', () => {
    const v = listedView(5, []);
    v.offer(join('a', 7));
    assert.equal(v.state, 'catching-up');
    v.requestSync();
    assert.deepEqual(v.offer(join('b', 8)), { changed: new Set(), gap: false }, 'held during the sync');
    assert.deepEqual(sorted(v.catchUp([join('x', 6)])), ['x']);
    assert.deepEqual(sorted(v.drain()), ['a', 'b']);
    assert.equal(v.endSync(true), true);
    assert.equal(v.state, 'in-sync');
    assert.deepEqual(Object.keys(peersOf(v)).sort(), ['a', 'b', 'x']);
  });

  test('a sync that failed leaves the view as it was, not in sync, with what it holds', () => {
    const v = listedView(5, [lease('a', 5)]);
    v.offer(join('b', 7));
    v.requestSync();
    assert.equal(v.endSync(false), false);
    assert.equal(v.state, 'catching-up');
    // the next sync, or the missing change, still completes it
    assert.deepEqual(sorted(v.offer(join('c', 6)).changed), ['b', 'c']);
  });

  test('a sync that failed after the change log took the view past held changes: those are dropped, not taken for a gap', () => {
    const v = listedView(5, []);
    v.offer(join('a', 7));
    v.requestSync();
    assert.deepEqual(sorted(v.catchUp([join('x', 6), join('a', 7)])), ['a', 'x']);
    v.endSync(false);
    assert.deepEqual(v.offer(join('b', 8)), { changed: new Set(['b']), gap: false });
    assert.equal(v.revision, 8);
  });

  test('a change log that no longer reaches back means listing again: the view is incomplete until the new list', () => {
    const v = listedView(5, [lease('a', 5)]);
    v.requestSync();
    v.forget();
    assert.equal(v.complete, false);
    assert.equal(v.endSync(true), false, 'no complete view: not in sync');
    assert.deepEqual(v.offer(join('b', 9)), { changed: new Set(), gap: false }, 'held for the list');
    v.requestSync();
    v.beginList();
    assert.equal(v.state, 'listing');
    v.listed([{ revision: 8, leases: [lease('c', 8)] }]);
    assert.deepEqual(sorted(v.drain()), ['b']);
    assert.equal(v.endSync(true), true);
    assert.deepEqual(peersOf(v), { b: 9, c: 8 }, 'a, gone from the new snapshot, is gone from the view');
  });

  test('too many changes held (a flood, or a list that never ends): the view starts over from a list', () => {
    const v = new NetworkView(NET, SELF, 3);
    v.requestSync();
    v.listed([{ revision: 5, leases: [] }]);
    // the sync is still running: 7, 8, 9 are held
    for (const r of [7, 8, 9]) v.offer(join(`p${r}`, r));
    assert.equal(v.complete, true);
    v.offer(join('p10', 10));
    assert.equal(v.complete, false, 'the fourth held change drops the view');
    assert.equal(v.endSync(true), false);
  });
});

describe('the node\'s own lease', () => {
  test('an older copy than the lease held is stale; a lease of another node or network is not the node\'s', () => {
    const v = new NetworkView(NET, SELF);
    assert.equal(v.isStale(lease(SELF, 3)), false, 'nothing held yet');
    v.setLease(lease(SELF, 5));
    assert.equal(v.isStale(lease(SELF, 4)), true);
    assert.equal(v.isStale(lease(SELF, 5)), false);
    assert.equal(v.isStale(null), false, 'a removal is never stale');
    assert.equal(v.isOwn(lease(SELF, 6)), true);
    assert.equal(v.isOwn(lease('a', 6)), false);
    assert.equal(v.isOwn(lease(SELF, 6, 'other')), false);
    assert.equal(v.snapshot().lease?.revision, 5);
  });
});
