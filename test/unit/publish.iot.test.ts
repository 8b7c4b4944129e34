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
import type { Lease } from '../../core/lease.js';
import { Topics } from '../../core/topics.js';
import { Controller } from '../../functions/controller.js';
import { IotPublisher } from '../../functions/publish/iot.js';
import { SqliteStore } from '../../functions/store/sqlite.js';
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

  test('a join publishes the lease, the node topic and the manifest, retained, through IoT Core', async () => {
    const early = await subscriber(brokerUrl, `${topics.root}/#`);
    await controller.applyNetwork('blue', parseNetConf({ Network: '10.50.0.0/16', Backend: { Type: 'vxlan' } }, {}));
    const lease = await controller.join('blue', 'n1', { publicIP: '192.0.2.10', backendData: { VtepMAC: '02:00:00:00:00:10' } });
    const net = await store.getNetwork('blue');

    // Every publish went out as QoS 1, retained.
    assert.ok(iot.published.length >= 4);
    for (const p of iot.published) assert.deepEqual([p.qos, p.retain], [1, true], p.topic);

    const expectOn = (seen: Map<string, { payload: string; retain: boolean }>) => {
      const netLease = seen.get(topics.netLease('blue', 'n1'));
      assert.ok(netLease, 'the network lease topic arrived');
      assert.deepEqual(JSON.parse(netLease.payload) as Lease, lease);
      const own = seen.get(topics.nodeLease('blue', 'n1'));
      assert.ok(own, "the node's own topic arrived");
      assert.deepEqual(JSON.parse(own.payload).lease, lease);
      assert.equal(JSON.parse(own.payload).config.Network, '10.50.0.0/16');
      const manifest = seen.get(topics.netManifest('blue'));
      assert.ok(manifest, 'the manifest arrived');
      assert.deepEqual(JSON.parse(manifest.payload), { v: 1, revision: net!.revision, count: 1, hash: net!.leaseHash });
      assert.ok(seen.get(topics.netConfig('blue')), 'the config arrived');
    };
    await waitFor('live messages', () => early.seen.has(topics.netManifest('blue')) && early.seen.get(topics.netManifest('blue'))!.payload.includes('"count":1'));
    expectOn(early.seen);
    await early.end();

    // A subscriber arriving later gets the same state from the broker's retained messages.
    const late = await subscriber(brokerUrl, topics.netAll('blue'));
    const lateOwn = await subscriber(brokerUrl, `${topics.nodeBase('blue', 'n1')}/#`);
    try {
      await waitFor('retained messages', () => late.seen.has(topics.netManifest('blue')) && lateOwn.seen.has(topics.nodeLease('blue', 'n1')));
      const merged = new Map([...late.seen, ...lateOwn.seen]);
      expectOn(merged);
      for (const [topic, m] of merged) assert.equal(m.retain, true, `${topic} was delivered as retained`);
    } finally {
      await late.end();
      await lateOwn.end();
    }
  });

  test('a release clears the retained lease: a late subscriber no longer gets it', async () => {
    await controller.join('blue', 'n2', { publicIP: '192.0.2.11' });
    assert.equal(await controller.release('blue', 'n2'), true);
    const late = await subscriber(brokerUrl, topics.netAll('blue'));
    try {
      await waitFor('manifest', () => late.seen.get(topics.netManifest('blue'))?.payload.includes('"count":1'));
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(late.seen.has(topics.netLease('blue', 'n2')), false, 'the empty retained payload removed the lease topic');
      assert.ok(late.seen.has(topics.netLease('blue', 'n1')));
    } finally {
      await late.end();
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
