// What stays retained on the broker (control/tasks/republish.ts cleanRetained,
// and the controller's release and removal): only what the store backs. The
// rule first, as a table; then the local controller on its embedded broker,
// which deletes a released or removed node's topics at once and, on its
// cleanup timer, what a node removed behind its back left.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { nodeClientId } from '../../core/acl.js';
import { parseNetConf } from '../../core/config.js';
import { silentLogger } from '../../core/log.js';
import { DEFAULT_PREFIX, Topics } from '../../core/topics.js';
import { addNode, removeNode } from '../../control/http/admin.js';
import { startLocalController } from '../../control/local/server.js';
import { isBacked, retainedShape, type Backing } from '../../control/tasks/republish.js';
import { waitFor } from '../helpers/procs.js';

const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

describe('which retained topics the store backs', () => {
  const t = new Topics('app/prod');
  const backing: Backing = {
    networks: new Set(['blue']),
    nodes: new Map([['n1', 'blue'], ['n2', 'blue'], ['m1', 'green']]),
    leases: new Set(['blue/n1', 'blue/cloud-i-1']),
  };
  const cases: [string, boolean | 'payload' | 'not ours'][] = [
    [t.netConfig('blue'), true],
    [t.netConfig('green'), false], // no such network
    [t.nodeLease('blue', 'n1'), true], // a lease
    [t.nodeLease('blue', 'cloud-i-1'), true], // a cloud instance's lease: no node record
    [t.nodeLease('blue', 'n2'), 'payload'], // a node without a lease: an error it was told, or nothing
    [t.nodeLease('blue', 'm1'), false], // a node of another network
    [t.nodeLease('blue', 'gone'), false],
    [t.nodeStatus('blue', 'n2'), true],
    [t.nodeStatus('blue', 'gone'), false],
    [t.nodeStatus('blue', 'm1'), false],
    [t.nodeHello('blue', 'n1'), false], // nothing retains a hello
    [t.netChanges('blue'), false], // nor a change
    [t.legacyNodeLease('blue', 'n1'), true], // the v1 upgrade notice of a registered node
    [t.legacyNodeLease('blue', 'gone'), false],
    [`${t.legacyRoot}/node/blue/n1/status`, false],
    // not twill's shapes, or another deployment's: left alone
    ['app/prod/v2/v2/net/blue/config', 'not ours'], // deployment "app/prod/v2"
    ['app/prod/v3/net/blue/config', 'not ours'],
    [`${t.root}/net/blue/other`, 'not ours'],
    [`${t.root}/node/blue/n1/lease/x`, 'not ours'],
    [`${t.root}/net/bad name/config`, 'not ours'],
    [`${t.legacyRoot}/net/blue/config`, 'not ours'],
  ];
  for (const [topic, want] of cases) {
    test(`${topic}: ${want === 'not ours' ? 'left alone' : want === 'payload' ? 'backed by what it holds' : want ? 'backed' : 'deleted'}`, () => {
      const shape = retainedShape(t, topic);
      if (want === 'not ours') return assert.equal(shape, undefined);
      assert.ok(shape, 'one of twill\'s shapes');
      assert.equal(isBacked(shape, backing), want);
    });
  }
});

describe('the local controller on its embedded broker', () => {
  test('a released or removed node leaves nothing retained; what a node removed behind the controller\'s back left goes on the cleanup timer', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'twill-retained-'));
    dirs.push(dir);
    const lc = await startLocalController({
      dataDir: dir, listen: '127.0.0.1:0', syncIntervalMs: 100, cleanIntervalMs: 100, log: silentLogger,
      networks: [{ name: 'net', config: parseNetConf({ Network: '10.244.0.0/16', Backend: { Type: 'alloc' } }, {}) }],
    });
    const topics = new Topics(DEFAULT_PREFIX);
    const retained = async () => (await lc.retained.listRetained(`${DEFAULT_PREFIX}/`)).map((r) => r.topic).sort();
    const ofNode = async (node: string) => (await retained()).filter((topic) => topic.includes(`/${node}/`));
    let c: mqtt.MqttClient | undefined;
    try {
      const creds = new Map<string, { username: string; password: string }>();
      for (const n of ['a', 'b', 'c']) creds.set(n, await addNode(lc.store, { name: n, network: 'net', broker: lc.url }));
      await lc.controller.join('net', 'a', { publicIP: '192.0.2.1' });
      await lc.controller.join('net', 'b', { publicIP: '192.0.2.2' });
      assert.deepEqual(await ofNode('b'), [topics.nodeLease('net', 'b')]);

      assert.equal(await lc.controller.release('net', 'b'), true);
      assert.deepEqual(await ofNode('b'), [], 'the released node\'s own topic is deleted');

      // c's agent retains its status, then c is removed straight from the
      // store (as `twill node remove --data-dir` does beside a running controller).
      const cc = creds.get('c')!;
      c = await mqtt.connectAsync(lc.url, { username: cc.username, password: cc.password, clientId: nodeClientId(DEFAULT_PREFIX, 'net', 'c'), reconnectPeriod: 0 });
      await c.publishAsync(topics.nodeStatus('net', 'c'), JSON.stringify({ v: 2, state: 'online', errors: [] }), { qos: 1, retain: true });
      await waitFor('c\'s status retained', async () => (await ofNode('c')).includes(topics.nodeStatus('net', 'c')));
      assert.equal(await lc.store.deleteNode('c'), true);
      await waitFor('c\'s status deleted by the cleanup', async () => (await ofNode('c')).length === 0);

      // a, through the controller: its own topic goes at once.
      await removeNode(lc.store, 'a', lc.controller);
      assert.deepEqual(await ofNode('a'), []);
      assert.deepEqual(await retained(), [topics.netConfig('net')], 'only what the store backs');
    } finally {
      c?.end(true);
      await lc.close();
    }
  });
});
