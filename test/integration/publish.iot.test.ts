// The IoT data-plane publisher, end to end: the controller publishes through
// the real SDK (PublishCommand, SigV4, REST) to a fake IoT data endpoint that
// forwards into Mosquitto, and plain MQTT subscribers there see the retained
// state an agent needs, whenever they subscribe.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { parseNetConf } from '../../core/config.js';
import { silentLogger } from '../../core/log.js';
import { Topics } from '../../core/topics.js';
import { Controller } from '../../control/controller/controller.js';
import { IotPublisher } from '../../control/publish/iot.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { startFakeIotData, type FakeIotData } from '../fakes/iot-data.js';
import { startMosquitto } from '../helpers/mosquitto.js';
import { removeTempDirs, tempDir, waitFor, type Proc } from '../helpers/procs.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

// IoT Core is shared by the account: topics carry the app and stage.
const topics = new Topics('twill/test');

/** Subscribes, then collects retained and live messages by topic (the last one wins). */
async function subscriber(url: string, filter: string) {
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, clientId: `sub-${Math.random().toString(36).slice(2)}` });
  const seen = new Map<string, { payload: string; retain: boolean }>();
  c.on('message', (topic, payload, packet) => seen.set(topic, { payload: payload.toString(), retain: packet.retain }));
  await c.subscribeAsync(filter, { qos: 1 });
  return { seen, end: () => c.endAsync() };
}

describe('IoT data-plane publisher', () => {
  let dir: string;
  let broker: Proc;
  let brokerUrl: string;
  let iot: FakeIotData;
  let store: SqliteStore;
  let publisher: IotPublisher;
  let controller: Controller;

  before(async () => {
    dir = tempDir();
    ({ proc: broker, url: brokerUrl } = await startMosquitto());
    iot = await startFakeIotData(brokerUrl);
    publisher = new IotPublisher({
      clientConfig: {
        endpoint: iot.endpoint,
        region: 'eu-west-1',
        credentials: { accessKeyId: 'AKIAFAKEFAKEFAKEFAKE', secretAccessKey: 'fake-secret-for-local-tests-only' },
        maxAttempts: 1,
      },
    });
    store = new SqliteStore(join(dir, 'store.db'));
    controller = new Controller(store, publisher, { topics, log: silentLogger });
  });

  after(async () => {
    publisher?.close();
    await store?.close();
    await iot?.close();
    await broker?.kill();
    removeTempDirs();
  });

  test('a join publishes the change to every member (not retained), the node\'s own lease and the config (retained), through IoT Core', async () => {
    const early = await subscriber(brokerUrl, `${topics.root}/#`);
    await controller.applyNetwork('blue', parseNetConf({ Network: '10.50.0.0/16', Backend: { Type: 'vxlan' } }, {}));
    const lease = await controller.join('blue', 'n1', { publicIP: '192.0.2.10', backendData: { VtepMAC: '02:00:00:00:00:10' } });

    // Every publish went out as QoS 1; only the changes are not retained.
    for (const p of iot.published) assert.deepEqual([p.qos, p.retain], [1, p.topic !== topics.netChanges('blue')], p.topic);
    await waitFor('the change', () => early.seen.get(topics.netChanges('blue'))?.payload.includes('"n1"'));
    assert.deepEqual(JSON.parse(early.seen.get(topics.netChanges('blue'))!.payload), { v: 2, revision: lease.revision, node: 'n1', lease });
    await early.end();

    // A subscriber arriving later, on exact topics as an agent subscribes, gets the retained ones, and no change.
    const late = await subscriber(brokerUrl, topics.netConfig('blue'));
    const own = await subscriber(brokerUrl, topics.nodeLease('blue', 'n1'));
    const changes = await subscriber(brokerUrl, topics.netChanges('blue'));
    try {
      await waitFor('retained messages', () => late.seen.has(topics.netConfig('blue')) && own.seen.has(topics.nodeLease('blue', 'n1')));
      const mine = JSON.parse(own.seen.get(topics.nodeLease('blue', 'n1'))!.payload);
      assert.deepEqual(mine.lease, lease);
      assert.equal(mine.config.Network, '10.50.0.0/16');
      assert.equal(JSON.parse(late.seen.get(topics.netConfig('blue'))!.payload).config.Network, '10.50.0.0/16');
      assert.equal(changes.seen.size, 0, 'a change is news once, never retained');
    } finally {
      await late.end();
      await own.end();
      await changes.end();
    }
  });

  test('a release: every member hears the removal, the node hears it has no lease, and nothing stays retained on its topic', async () => {
    const members = await subscriber(brokerUrl, topics.netChanges('blue'));
    await controller.join('blue', 'n2', { publicIP: '192.0.2.11' });
    // the node's agent, listening on its own topic
    const c = await mqtt.connectAsync(brokerUrl, { reconnectPeriod: 0, clientId: `own-${process.pid}` });
    const own: { payload: string; retain: boolean }[] = [];
    c.on('message', (_t, p, packet) => own.push({ payload: p.toString(), retain: packet.retain }));
    await c.subscribeAsync(topics.nodeLease('blue', 'n2'), { qos: 1 });
    try {
      await waitFor('its lease', () => own.length === 1);
      assert.equal(await controller.release('blue', 'n2'), true);
      await waitFor('removal', () => members.seen.get(topics.netChanges('blue'))?.payload.includes('"lease":null'));
      assert.equal(JSON.parse(members.seen.get(topics.netChanges('blue'))!.payload).node, 'n2');
      await waitFor('the news on its own topic', () => own.length === 3);
      assert.equal(own[1]!.payload, '', 'the retained lease deleted');
      assert.deepEqual([JSON.parse(own[2]!.payload).lease, own[2]!.retain], [null, false], '"no lease", live');
      assert.equal(iot.retained.has(topics.nodeLease('blue', 'n2')), false);
      assert.equal(await publisher.retained(topics.nodeLease('blue', 'n2')), undefined);
    } finally {
      await members.end();
      await c.endAsync();
    }
  });

  test('what IoT Core refuses is an error for the caller, not a silent drop', async () => {
    await assert.rejects(publisher.publish(`${topics.root}/net/+/config`, '{}', true), (e: unknown) => {
      assert.equal((e as Error).name, 'InvalidRequestException');
      return true;
    });
    await assert.rejects(publisher.publish(`${topics.root}/a/b/c/d/e/f`, '{}', true), /more than 7 forward slashes/);
  });
});
