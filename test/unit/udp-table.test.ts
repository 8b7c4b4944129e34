// The udp backend's forwarding table, as its worker threads use it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ForwardingTable, maskOf } from '../../agent/udp/worker.mjs';

const ip = (s: string) => s.split('.').reduce((a, b) => a * 256 + Number(b), 0);

test('a destination maps to the peer whose subnet holds it; other addresses to nobody', () => {
  const t = new ForwardingTable({
    own: { base: ip('10.5.1.0'), prefix: 24 },
    port: 8285,
    peers: [
      { base: ip('10.5.2.0'), prefix: 24, ip: ip('192.168.1.12') },
      { base: ip('10.5.3.0'), prefix: 24, ip: ip('192.168.1.13') },
    ],
  });
  assert.equal(t.lookup(ip('10.5.2.77'))?.ip, ip('192.168.1.12'));
  assert.equal(t.lookup(ip('10.5.3.1'))?.ip, ip('192.168.1.13'));
  assert.equal(t.lookup(ip('10.5.4.1')), undefined);
  assert.equal(t.lookup(ip('10.5.1.9')), undefined);
  assert.ok(t.isOwn(ip('10.5.1.9')));
  assert.ok(!t.isOwn(ip('10.5.2.9')));
  assert.ok(t.bySource.has(ip('192.168.1.13')));
  assert.ok(!t.bySource.has(ip('192.168.1.99')));
  // sockaddr_in: family 2, port 8285 big-endian, the address
  assert.deepEqual([...(t.lookup(ip('10.5.2.1'))?.addr ?? [])].slice(0, 8), [2, 0, 0x20, 0x5d, 192, 168, 1, 12]);
});

test('a table without an own subnet claims nothing as its own; masks are unsigned', () => {
  const t = new ForwardingTable({ port: 8285, peers: [] });
  assert.ok(!t.isOwn(0));
  assert.ok(!t.isOwn(ip('10.0.0.1')));
  assert.equal(maskOf(24), 0xffffff00);
  assert.equal(maskOf(0), 0);
  assert.equal(maskOf(32), 0xffffffff);
});
