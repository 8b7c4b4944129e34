// Fairness between nodes (control/controller/rate-limit.ts, used by the controller for
// every hello, v1 or v2, and every status): one node's flood is refused cheaply and counted,
// every other node is served as usual, and a quiet node gets its burst back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNetConf } from '../../core/config.js';
import { createLogger } from '../../core/log.js';
import { Topics } from '../../core/topics.js';
import { Controller } from '../../control/controller/controller.js';
import { NODE_LIMITS, RateLimiter } from '../../control/controller/rate-limit.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { RecordingPublisher } from '../helpers/recording-publisher.js';

test('a burst, then one message per interval; refusals reported once a minute with their count; other keys untouched', () => {
  const clock = { now: 0 };
  const rl = new RateLimiter({ hello: { burst: 3, everyMs: 1000 } }, () => clock.now);
  const results = Array.from({ length: 6 }, () => rl.take('hello', 'a'));
  assert.deepEqual(results.map((r) => r.ok), [true, true, true, false, false, false]);
  assert.deepEqual(results[3], { ok: false, report: 1 });
  assert.deepEqual(results[4], { ok: false });
  assert.equal(rl.take('hello', 'b').ok, true, 'another node is not held up');
  clock.now = 1000;
  assert.equal(rl.take('hello', 'a').ok, true);
  assert.equal(rl.take('hello', 'a').ok, false);
  clock.now = 61_000;
  for (let i = 0; i < 3; i++) assert.equal(rl.take('hello', 'a').ok, true);
  // every refusal since the last report: two more at 0, one at 1000, this one
  assert.deepEqual(rl.take('hello', 'a'), { ok: false, report: 4 });
  assert.equal(rl.take('other', 'a').ok, true, 'a kind without a limit');
});

interface Rig {
  store: SqliteStore;
  topics: Topics;
  pub: RecordingPublisher;
  controller: Controller;
  /** the controller's log lines */
  logs: string[];
}

/** A controller on a fresh SQLite store with network n (alloc) and the nodes registered; removed afterwards, even on failure. */
async function withController(nodes: string[], now: (() => number) | undefined, run: (rig: Rig) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'twill-rate-'));
  const store = new SqliteStore(join(dir, 'db'));
  try {
    const topics = new Topics();
    const logs: string[] = [];
    const pub = new RecordingPublisher();
    const controller = new Controller(store, pub, { topics, log: createLogger('c', 'debug', (l) => logs.push(l)), now });
    await controller.applyNetwork('n', parseNetConf({ Network: '10.80.0.0/16', Backend: { Type: 'alloc' } }, {}));
    for (const name of nodes) await store.putNode({ name, network: 'n', passwordHash: 'x', createdAt: new Date().toISOString() });
    await run({ store, topics, pub, controller, logs });
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a flood of 10,000 hellos from one node costs the store nothing past its burst, and another node still joins', async () => {
  await withController(['flood', 'calm'], undefined, async ({ store, topics, controller, logs }) => {
    const hello = Buffer.from(JSON.stringify({ v: 2, agentVersion: 't', publicIP: '192.0.2.9' }));
    let reads = 0;
    const getNode = store.getNode.bind(store);
    store.getNode = async (name) => { reads++; return getNode(name); };
    await Promise.all(Array.from({ length: 10_000 }, () => controller.handleMessage(topics.nodeHello('n', 'flood'), hello)));
    assert.equal(reads, 20, 'the burst was served, the rest refused before any store read');
    assert.equal(controller.refusedByRate, 9_980);
    assert.equal(logs.filter((l) => /over its rate limit refused/.test(l)).length, 1, logs.slice(-3).join('\n'));
    await controller.handleMessage(topics.nodeHello('n', 'calm'), hello);
    assert.ok((await store.getLease('n', 'calm'))?.subnet, 'the other node joined');
  });
});

test("a node's v1 hellos meet the same hello limit as its v2 hellos: a burst of 300 gets the burst's notices and log lines, and other nodes are served", async () => {
  // The clock stands still: no bucket refills during the test, so the counts are exact.
  const t0 = Date.now();
  await withController(['old', 'calm'], () => t0, async ({ store, topics, pub, controller, logs }) => {
    const v1Hello = (node: string) => `${topics.legacyRoot}/node/n/${node}/hello`;
    const notices = (node: string) => pub.sent.filter((p) => p.topic === topics.legacyNodeLease('n', node)).length;
    const noticeLines = (node: string) => logs.filter((l) => /older protocol refused/.test(l) && l.includes(`node=${node}`)).length;
    const burst = NODE_LIMITS.hello.burst;

    await Promise.all(Array.from({ length: 300 }, () => controller.handleMessage(v1Hello('old'), Buffer.from('{"v":1}'), 'old')));
    assert.equal(notices('old'), burst, 'one upgrade notice per admitted hello, no more');
    assert.equal(noticeLines('old'), burst, 'one log line per admitted hello, no more');
    assert.equal(controller.refusedByRate, 300 - burst);
    assert.equal(logs.filter((l) => /hello messages of a node over its rate limit refused/.test(l) && l.includes('node=old')).length, 1, 'the refusals in one line');

    // One budget per node whichever protocol it speaks: its v2 hello is over the limit too.
    await controller.handleMessage(topics.nodeHello('n', 'old'), Buffer.from(JSON.stringify({ v: 2, agentVersion: 't', publicIP: '192.0.2.8' })), 'old');
    assert.equal(controller.refusedByRate, 300 - burst + 1);
    assert.equal(await store.getLease('n', 'old'), undefined, 'refused before any store write');

    // Another node, v1 or v2, is not held up.
    await controller.handleMessage(v1Hello('calm'), Buffer.from('{"v":1}'), 'calm');
    assert.equal(notices('calm'), 1);
    assert.equal(noticeLines('calm'), 1);
    await controller.handleMessage(topics.nodeHello('n', 'calm'), Buffer.from(JSON.stringify({ v: 2, agentVersion: 't', publicIP: '192.0.2.9' })), 'calm');
    assert.ok((await store.getLease('n', 'calm'))?.subnet, 'the other node joined');
    assert.equal(controller.refusedByRate, 300 - burst + 1, 'nothing of the calm node refused');
  });
});
