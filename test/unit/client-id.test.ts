// Agents' MQTT client ids (core/acl.ts): one broker or IoT Core account is
// shared by several deployments, and a CONNECT with an id in use drops the
// connection that held it. So an id names its deployment, never two nodes
// get one, and it fits IoT Core's 128 characters at the longest names.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_CLIENT_ID_LENGTH, clientIdOf, clientIdPrefix, legacyClientId, nodeClientId, nodeGrants } from '../../core/acl.js';
import { MAX_PREFIX_LENGTH, Topics } from '../../core/topics.js';

describe('client ids', () => {
  test('an id names the deployment, the network and the node, readably', () => {
    assert.equal(nodeClientId('twill/prod', 'blue', 'edge-1'), 'twill/prod:blue:edge-1');
    assert.equal(nodeClientId('twill', 'blue', 'edge-1'), 'twill:blue:edge-1');
    assert.notEqual(nodeClientId('twill/prod', 'blue', 'edge-1'), nodeClientId('twill/dev', 'blue', 'edge-1'), 'two stages, same names');
  });

  test("network a-b with node c and network a with node b-c get distinct ids (0.1's were the same)", () => {
    assert.equal(legacyClientId('a-b', 'c'), legacyClientId('a', 'b-c'));
    assert.notEqual(nodeClientId('twill', 'a-b', 'c'), nodeClientId('twill', 'a', 'b-c'));
  });

  test('a deployment\'s ids all start with its prefix and a separator no other deployment\'s do (what DeleteConnection is granted on)', () => {
    const prefixes = ['twill', 'twill/prod', 'twill/v2', 'twill-prod', 'twill_x/prod'];
    const names = ['blue', 'a', 'b-c', 'a-b', 'x.y', 'p'.repeat(63)];
    for (const p of prefixes) {
      for (const q of prefixes) {
        for (const net of names) {
          for (const node of names) {
            const id = nodeClientId(q, net, node);
            assert.equal(id.startsWith(clientIdPrefix(p)), p === q, `${id} against ${clientIdPrefix(p)}`);
          }
        }
      }
    }
  });

  test('at the longest prefix and names an id keeps its prefix, stays within 128 characters, and is still one per node', () => {
    const prefix = `${'p'.repeat(50)}/${'s'.repeat(MAX_PREFIX_LENGTH - 51)}`;
    assert.equal(prefix.length, MAX_PREFIX_LENGTH);
    const long = 'n'.repeat(63);
    const ids = new Set<string>();
    for (const [net, node] of [[long, long], [long, `${'n'.repeat(62)}m`], [`${'n'.repeat(62)}m`, long], ['a', long], [long, 'a']]) {
      const id = nodeClientId(prefix, net!, node!);
      assert.ok(id.length <= MAX_CLIENT_ID_LENGTH, `${id.length} characters`);
      assert.ok(id.startsWith(clientIdPrefix(prefix)));
      ids.add(id);
    }
    assert.equal(ids.size, 5);
    // The hashed form has one separator where the readable one has two: neither can be the other.
    assert.equal(nodeClientId(prefix, long, long).split(':').length, 2);
    assert.equal(nodeClientId('twill', 'blue', 'edge-1').split(':').length, 3);
  });

  test("the grants name the node's current id, and its 0.1 id as the one let in during an upgrade; nothing else", () => {
    const g = nodeGrants(new Topics('twill/prod'), { name: 'edge-1', network: 'blue' });
    assert.equal(clientIdOf(g, 'twill/prod:blue:edge-1'), 'current');
    assert.equal(clientIdOf(g, 'twill-blue-edge-1'), 'legacy');
    for (const other of ['twill/dev:blue:edge-1', 'twill:blue:edge-1', 'twill/prod:blue:edge-2', 'twill-blue-edge-2', '']) assert.equal(clientIdOf(g, other), undefined, other);
  });
});
