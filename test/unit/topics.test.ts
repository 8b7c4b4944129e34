// Topic names are a contract with every agent and with AWS IoT Core's limits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Topics, checkName } from '../../core/topics.js';
import { MAX_PAYLOAD_BYTES, MessageError, helloSchema, parseMessage } from '../../core/messages.js';

const longest = 'n'.repeat(63);

test('every topic stays within IoT Core limits (at most 7 slashes, 256 bytes) with the longest names and a two-segment prefix', () => {
  const t = new Topics(`${'a'.repeat(50)}/${'b'.repeat(49)}`);
  assert.throws(() => new Topics(`${'a'.repeat(64)}/${'b'.repeat(64)}`), /at most 100 characters/);
  const all = [
    t.netConfig(longest), t.netChanges(longest),
    t.nodeHello(longest, longest), t.nodeLease(longest, longest), t.nodeStatus(longest, longest),
    t.legacyNodeLease(longest, longest),
  ];
  for (const topic of all) {
    assert.ok(topic.split('/').length - 1 <= 7, `${topic}: too many slashes`);
    assert.ok(Buffer.byteLength(topic) <= 256, `${topic}: ${Buffer.byteLength(topic)} bytes`);
  }
});

test('topics are versioned and parse back to what they name; anything else is not ours', () => {
  const t = new Topics();
  assert.equal(t.netChanges('blue'), 'twill/v2/net/blue/changes');
  assert.deepEqual(t.parse(t.nodeHello('blue', 'h1')), { kind: 'nodeHello', network: 'blue', node: 'h1' });
  assert.deepEqual(t.parse(t.netChanges('blue')), { kind: 'netChanges', network: 'blue' });
  assert.deepEqual(t.parse('twill/v1/node/blue/h1/hello'), { kind: 'legacyHello', network: 'blue', node: 'h1' }, 'a v1 agent is recognised, to be told to upgrade');
  for (const bad of ['twill/v3/net/blue/config', 'twill/v2/net/blue/lease/h1', 'twill/v2/node/blue/h1/secret', 'other/v2/net/blue/config', 'twill/v2/net/bl+ue/config', 'twill/v1/net/blue/config', 'twill/v1/node/blue/h1/status']) {
    assert.equal(t.parse(bad), undefined, bad);
  }
});

test('an agent needs three exact topics, no wildcard, in one SUBSCRIBE (IoT Core: at most 8 filters each, 50 per connection)', () => {
  const t = new Topics();
  const subs = t.agentTopics('blue', 'h1');
  assert.deepEqual(subs, ['twill/v2/net/blue/config', 'twill/v2/net/blue/changes', 'twill/v2/node/blue/h1/lease']);
  assert.ok(subs.every((f) => !f.includes('+') && !f.includes('#')));
});

test('names and prefixes that would break topics are refused with the rule', () => {
  for (const bad of ['', 'a/b', 'a+b', '#', '-lead', 'trail-', 'x'.repeat(64)]) {
    assert.throws(() => checkName('node', bad), /node name .* is not valid: use 1 to 63 letters, digits/);
  }
  assert.throws(() => new Topics('a/b/c'), /topic prefix "a\/b\/c" is not valid/);
  assert.doesNotThrow(() => new Topics('twill-prod/eu1'));
});

test('messages are parsed with a schema at the edge: errors name the field; oversize is refused before parsing', () => {
  const ok = parseMessage(helloSchema, JSON.stringify({ v: 2, agentVersion: '0.1.0', publicIP: '192.0.2.1' }), 'hello');
  assert.deepEqual(ok.backendData, {});
  assert.throws(() => parseMessage(helloSchema, JSON.stringify({ v: 2, agentVersion: 'x', publicIP: '192.0.2.300' }), 'hello'), /hello: publicIP must be an IPv4 address/);
  assert.throws(() => parseMessage(helloSchema, JSON.stringify({ v: 2, agentVersion: 'x', surprise: 1 }), 'hello'), MessageError);
  assert.throws(() => parseMessage(helloSchema, '{', 'hello'), /hello: not valid JSON/);
  assert.throws(() => parseMessage(helloSchema, 'x'.repeat(MAX_PAYLOAD_BYTES + 1), 'hello'), /too large/);
});
