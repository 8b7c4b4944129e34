// A hello is what a node says about itself: hostile until parsed. Its public
// address is where every peer will send pods' traffic.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { helloSchema, parseMessage } from '../../core/messages.js';

const hello = (fields: Record<string, unknown>) => JSON.stringify({ v: 2, agentVersion: 'test', ...fields });

test('a hello with a unicast public address is taken, loopback included (single-host labs)', () => {
  for (const publicIP of ['192.0.2.10', '10.1.2.3', '127.0.0.5', '223.255.255.254']) {
    assert.equal(parseMessage(helloSchema, hello({ publicIP }), 'hello').publicIP, publicIP);
  }
  assert.equal(parseMessage(helloSchema, hello({ publicIPv6: '2001:db8::1' }), 'hello').publicIPv6, '2001:db8::1');
});

test('a public address no host can own is refused, naming the field and why', () => {
  for (const publicIP of ['0.0.0.0', '0.1.2.3', '224.0.0.1', '239.255.255.250', '240.0.0.1', '255.255.255.255']) {
    assert.throws(() => parseMessage(helloSchema, hello({ publicIP }), 'hello from n1'), /hello from n1: publicIP must be a unicast address of the host/, publicIP);
  }
  for (const publicIPv6 of ['::', 'ff02::1', 'ff05::1:3']) {
    assert.throws(() => parseMessage(helloSchema, hello({ publicIPv6 }), 'hello from n1'), /hello from n1: publicIPv6 must be a unicast address of the host/, publicIPv6);
  }
  assert.throws(() => parseMessage(helloSchema, hello({ publicIP: '999.1.1.1' }), 'hello'), /publicIP must be an IPv4 address/);
  assert.throws(() => parseMessage(helloSchema, hello({ publicIPv6: 'not-an-address' }), 'hello'), /publicIPv6 must be an IPv6 address/);
});
