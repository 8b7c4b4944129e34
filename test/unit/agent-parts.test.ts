// The agent's rules that need no broker, kernel or clock: when it is ready
// (agent/readiness.ts), when a session's ends suggest another process with
// this node's identity, and how long it waits to reconnect (agent/watch/session.ts).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import { familyGaps, readiness, type Progress } from '../../agent/readiness.js';
import { reconnectDelay, ShortSessions } from '../../agent/watch/session.js';
import type { View } from '../../agent/watch/view.js';

const lease: Lease = {
  network: 'net', node: 'me', subnet: '10.244.3.0/24', ipv6Subnet: null, publicIP: '192.168.1.3', publicIPv6: null,
  backendType: 'vxlan', backendData: {}, expiresAt: null, createdAt: '2025-01-01T00:00:00.000Z', revision: 4,
};
const view = (over: Partial<View> = {}): View => ({ lease, peers: new Map(), revision: 9, state: 'in-sync', ...over });
const progress = (over: Partial<Progress> = {}): Progress => ({ view: view(), applied: 9, gaps: [], ...over });

describe('readiness: the first step not reached, or ready', () => {
  test('in order: started, a lease, a complete view, applied, every family carried', () => {
    assert.equal(readiness(progress({ view: undefined })), 'starting');
    assert.equal(readiness(progress({ view: view({ lease: undefined }) })), 'no lease yet');
    assert.equal(readiness(progress({ view: view({ revision: 0, state: 'listing' }) })), 'listing the network');
    assert.equal(readiness(progress({ applied: 0 })), 'applying');
    assert.equal(readiness(progress({ gaps: ['IPv6 not carried: the lease has no IPv6 subnet'] })), 'IPv6 not carried: the lease has no IPv6 subnet');
    assert.equal(readiness(progress()), 'ready');
  });

  test('a login the broker refuses is never ready; a broker merely away leaves a ready agent ready', () => {
    const refused = 'broker: Connection refused: Bad username or password';
    assert.equal(readiness(progress({ sessionDown: refused })), `login refused: ${refused} (retrying)`);
    assert.equal(readiness(progress({ sessionDown: 'broker: Connection refused: Not authorized' })), 'login refused: broker: Connection refused: Not authorized (retrying)');
    assert.equal(readiness(progress({ sessionDown: 'broker: connect ECONNREFUSED 127.0.0.1:1883' })), 'ready');
    assert.equal(readiness(progress({ sessionDown: 'broker: connect ECONNREFUSED 127.0.0.1:1883', view: view({ lease: undefined }) })), 'no lease yet: broker: connect ECONNREFUSED 127.0.0.1:1883 (retrying)');
  });

  test('a family the network enables is carried only with a subnet of it and, on a kernel backend, a public address of it', () => {
    const dual = parseNetConf({ EnableIPv6: true, Network: '10.244.0.0/16', IPv6Network: 'fd00:10::/56', Backend: { Type: 'vxlan' } }, {});
    assert.deepEqual(familyGaps(dual, lease, 'eth0'), [
      'IPv6 not carried: the lease has no IPv6 subnet',
      'IPv6 not carried: no public IPv6 address (on eth0, or --public-ipv6)',
    ]);
    assert.deepEqual(familyGaps(dual, { ...lease, ipv6Subnet: 'fd00:10:0:3::/64', publicIPv6: 'fd00::3' }, 'eth0'), []);
    const v4 = parseNetConf({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }, {});
    assert.deepEqual(familyGaps(v4, { ...lease, publicIP: null }), ['IPv4 not carried: no public IPv4 address (on the interface, or --public-ip)']);
    assert.deepEqual(familyGaps(undefined, lease), [], 'no config yet: nothing to say');
  });
});

describe('a session the broker ends soon after it began, again and again', () => {
  const MIN = 60_000;
  test('three short sessions within a minute suggest another process with this identity, logged once a minute', () => {
    const s = new ShortSessions('n1');
    const end = (began: number, ended: number) => {
      s.began(began);
      return s.ended(ended);
    };
    assert.equal(end(0, 1000), undefined);
    assert.equal(end(2000, 3000), undefined);
    const third = end(4000, 5000);
    assert.match(third?.problem ?? '', /^the broker ended this node's session 3 times within a minute, each soon after it began: another process may be using node n1's config$/);
    assert.equal(third?.log, true);
    assert.equal(end(6000, 7000)?.log, false, 'said in the log at most once a minute');
    assert.equal(end(30_000, 30_500)?.log, false);
    const nextMinute = end(MIN + 5000, MIN + 5100);
    assert.match(nextMinute?.problem ?? '', /session 3 times within a minute/, 'those within the last minute: 7000, 30500 and this one');
    assert.equal(nextMinute?.log, true);
  });

  test('a long session is not short; an end counted once is not counted again; old ends fall out of the window', () => {
    const s = new ShortSessions('n1');
    for (const t of [0, 1000]) {
      s.began(t);
      s.ended(t + 500);
    }
    s.began(2000);
    assert.equal(s.ended(2000 + 10_001), undefined, 'lived more than 10 s');
    assert.equal(s.ended(30_000), undefined, 'no session had begun');
    s.began(MIN + 1500);
    assert.equal(s.ended(MIN + 1600), undefined, 'the two short ones are more than a minute old');
  });

  test('a session that outlives a window ends the suspicion, if it is still the current one', () => {
    const s = new ShortSessions('n1');
    for (const t of [0, 1000, 2000]) {
      s.began(t);
      s.ended(t + 100);
    }
    s.began(3000);
    assert.equal(s.outlived(2500), false, 'another session than the current one');
    assert.equal(s.outlived(3000), true);
    assert.equal(s.outlived(3000), false, 'said once');
  });
});

test('reconnects wait at least a second (IoT Core takes one CONNECT a second per client id), then back off to 30 s, jittered', () => {
  for (let i = 0; i < 50; i++) {
    const first = reconnectDelay(0);
    assert.ok(first >= 1000 + 250 && first <= 1000 + 500, String(first));
    const later = reconnectDelay(3);
    assert.ok(later >= 1000 + 2000 && later <= 1000 + 4000, String(later));
    const capped = reconnectDelay(40);
    assert.ok(capped >= 1000 + 15_000 && capped <= 1000 + 30_000, String(capped));
  }
});
