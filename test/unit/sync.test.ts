// The controller's sync loop (control/tasks/sync.ts), as the plane composes it
// (control/plane.ts: the controller tells the loop's memory what it published):
// it republishes exactly the writes it did not publish itself, with the real
// SQLite store and a second handle on the same file standing for the CLI.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNetConf } from '../../core/config.js';
import { silentLogger } from '../../core/log.js';
import { Topics } from '../../core/topics.js';
import { Controller } from '../../control/controller/controller.js';
import { createControlPlane } from '../../control/plane.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { PublishedWatermark } from '../../control/tasks/sync.js';
import { RecordingPublisher } from '../helpers/recording-publisher.js';

const topics = new Topics();
const IP = { publicIP: '192.0.2.10' };
let dir = '';
const opened: SqliteStore[] = [];
before(async () => { dir = await mkdtemp(join(tmpdir(), 'twill-sync-')); });
after(async () => {
  for (const s of opened.splice(0)) await s.close().catch(() => {});
  await rm(dir, { recursive: true, force: true });
});

let dbs = 0;
async function setup() {
  const file = join(dir, `sync-${++dbs}.db`);
  const store = new SqliteStore(file);
  const cli = new SqliteStore(file);
  opened.push(store, cli);
  const pub = new RecordingPublisher();
  const plane = createControlPlane({ store, publisher: pub, topics, log: silentLogger, remembersPublished: true });
  const controller = plane.controller;
  const sync = { run: () => plane.tasks.sync() };
  await controller.applyNetwork('n', parseNetConf({ Network: '10.1.0.0/16' }, {}));
  return { store, cli, pub, controller, sync };
}

describe('sync loop', () => {
  test('a release written by the CLI is published even when the controller writes after it', async () => {
    const { cli, pub, controller, sync } = await setup();
    await controller.join('n', 'a', IP);
    await controller.join('n', 'b', IP);
    const released = await cli.deleteLease('n', 'b');
    await controller.join('n', 'a', { publicIP: '192.0.2.99' }); // a write of the controller lands before the next pass
    const mark = pub.sent.length;
    assert.deepEqual(await sync.run(), ['n']);
    assert.deepEqual(pub.changes(topics.netChanges('n'), mark), [{ v: 2, revision: released!.revision, node: 'b', lease: null }], 'the removal, once, with its revision');
    assert.equal(pub.retained(topics.nodeLease('n', 'b')), '', 'b\'s retained lease is deleted');
    const own = pub.since(mark).filter((p) => p.topic === topics.nodeLease('n', 'b'));
    assert.deepEqual(own.map((p) => [JSON.parse(p.payload || 'null')?.lease, p.retain]), [[undefined, true], [null, false]], 'and b is told it has none, live');
    assert.deepEqual(await sync.run(), [], 'once published, the next pass has nothing to do');
  });

  test('own writes, also concurrent ones, never make a pass republish the network', async () => {
    const { pub, controller, sync } = await setup();
    await Promise.all(Array.from({ length: 40 }, (_, i) => controller.join('n', `node${i}`, IP)));
    await Promise.all(Array.from({ length: 40 }, (_, i) => controller.join('n', `node${i}`, IP)));
    await controller.release('n', 'node3');
    const before = pub.sent.length;
    assert.deepEqual(await sync.run(), []);
    assert.equal(pub.sent.length, before);
  });

  test('a reservation written by the CLI reaches the broker on the next pass', async () => {
    const { store, cli, pub, sync } = await setup();
    const cliController = new Controller(cli, new RecordingPublisher(), { topics, log: silentLogger });
    await cliController.reserve('n', 'r', '10.1.7.0/24', '192.0.2.7');
    assert.equal(pub.retained(topics.nodeLease('n', 'r')), undefined);
    await sync.run();
    const lease = await store.getLease('n', 'r');
    assert.deepEqual(JSON.parse(pub.retained(topics.nodeLease('n', 'r')) ?? 'null').lease, lease);
    assert.deepEqual(pub.changes(topics.netChanges('n')).at(-1), { v: 2, revision: lease!.revision, node: 'r', lease });
  });
});

describe('published watermark', () => {
  test('covers a revision only when every revision up to it was published', () => {
    const w = new PublishedWatermark();
    w.note('n', 1);
    w.note('n', 3);
    assert.equal(w.covers('n', 1), true);
    assert.equal(w.covers('n', 3), false, 'revision 2 is a hole');
    w.note('n', 2);
    assert.equal(w.covers('n', 3), true);
    w.note('n', 9, true);
    assert.equal(w.covers('n', 9), true);
    assert.equal(w.covers('n', 10), false);
    assert.equal(w.covers('other', 1), false);
  });
});
