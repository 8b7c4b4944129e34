// What the serverless deployment leaves retained on IoT Core, through the
// real handlers, the IoT data plane and IoT Core's stand-in (which keeps the
// account's retained messages in one place and holds the account to a
// retained-message quota, as IoT Core does): a released or removed node's
// topics are deleted, the scheduled cleanup deletes what the store no longer
// backs and nothing else, and at the quota, where IoT Core throttles every
// retained publish, the cleanup gives the fabric room to publish again.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import mqtt from 'mqtt';
import { parseNetConf } from '../../core/config.js';
import { addNode } from '../../control/http/admin.js';
import { handler as apiHandler } from '../../functions/api.js';
import { handler as scheduleHandler } from '../../functions/schedule.js';
import { startIotCoreWorld, type IotCoreWorld } from '../helpers/iot-core.js';
import { removeTempDirs, tempDir, waitFor } from '../helpers/procs.js';
import { IotPublisher } from '../../control/publish/iot.js';
import { ADMIN_KEYS } from '../fakes/iam.js';
import { ADMIN_TOKEN, PREFIX, REGION, urlEvent } from '../helpers/serverless.js';

const join = (world: IotCoreWorld, node: string, i: number) => world.w.runtimeOf('Api').controller.join('edge', node, { publicIP: `192.0.2.${i}` });
const retainedTopics = (world: IotCoreWorld) => [...world.iot.retained.byTopic.keys()].sort();

describe('retained messages on IoT Core: released and removed nodes, the scheduled cleanup', () => {
  let world: IotCoreWorld;

  before(async () => {
    world = await startIotCoreWorld(tempDir('twill-retained-iot-'));
    await world.w.runtimeOf('Api').controller.applyNetwork('edge', parseNetConf({ Network: '10.91.0.0/16', Backend: { Type: 'alloc' } }, {}));
  });
  after(async () => {
    await world?.close();
    removeTempDirs();
  });

  test('a released node\'s own topic is deleted, and the node hears "no lease" live, not retained', async () => {
    const { w } = world;
    for (const n of ['r1', 'r2']) await addNode(w.store, { name: n, network: 'edge', broker: world.iot.mqttsUrl });
    await join(world, 'r1', 1);
    await join(world, 'r2', 2);
    const own = w.topics.nodeLease('edge', 'r1');
    assert.ok(world.iot.retained.byTopic.has(own));
    // Listening on the node's own topic as its agent does.
    const c = await mqtt.connectAsync(world.iot.internalUrl, { reconnectPeriod: 0, clientId: `watch-${process.pid}` });
    const seen: { payload: string; retain: boolean }[] = [];
    c.on('message', (t, p, packet) => { if (t === own) seen.push({ payload: p.toString(), retain: packet.retain }); });
    await c.subscribeAsync(own, { qos: 1 });
    await waitFor('the retained lease on subscribing', () => seen.length === 1);
    try {
      assert.equal(await world.w.runtimeOf('Api').controller.release('edge', 'r1'), true);
      assert.equal(world.iot.retained.byTopic.has(own), false, 'nothing retained on the released node\'s topic');
      assert.equal(await world.w.runtimeOf('Maintenance').publisher.retained(own), undefined, 'GetRetainedMessage finds none');
      await waitFor('the deletion and the news', () => seen.length === 3);
      assert.equal(seen[1]!.payload, '', 'a zero-byte retained publish deletes it');
      assert.deepEqual({ ...JSON.parse(seen[2]!.payload), api: undefined }, { v: 2, lease: null, api: undefined });
      assert.equal(seen[2]!.retain, false);
    } finally {
      await c.endAsync();
    }
  });

  test('a node removed through the admin API leaves nothing retained: own topic, status, upgrade notice', async () => {
    const { w } = world;
    // its agent's status, and the v1 upgrade notice a start publishes
    await world.w.runtimeOf('Api').publisher.publish(w.topics.nodeStatus('edge', 'r2'), JSON.stringify({ v: 2, state: 'online', errors: [] }), true);
    await world.w.runtimeOf('Api').controller.announceUpgrade('edge', 'r2');
    assert.equal(retainedTopics(world).filter((t) => t.includes('/r2/')).length, 3);
    const r = await world.w.as('Api', apiHandler)(urlEvent('DELETE', '/v1/nodes/r2', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }));
    assert.equal((r as { statusCode: number }).statusCode, 200);
    assert.deepEqual(retainedTopics(world).filter((t) => t.includes('/r2/')), []);
  });

  test('the scheduled cleanup deletes the retained topics under the prefix that the store does not back, and nothing else', async () => {
    const { w } = world;
    const t = w.topics;
    // The test's own publisher (the account's admin): some of these topics are outside any function's grants.
    const admin = new IotPublisher({ clientConfig: { endpoint: w.iot.endpoint, region: REGION, credentials: { accessKeyId: ADMIN_KEYS[0]!, secretAccessKey: 'fake-secret-for-local-tests-only' } } });
    const publish = (topic: string, payload: string) => admin.publish(topic, payload, true);
    await addNode(w.store, { name: 'r4', network: 'edge', broker: world.iot.mqttsUrl });
    await addNode(w.store, { name: 'r5', network: 'edge', broker: world.iot.mqttsUrl });
    await join(world, 'r6', 6);
    const stale = [
      t.nodeLease('edge', 'ghost'), // a node that does not exist
      t.nodeStatus('edge', 'ghost'),
      t.netConfig('gone'), // a network removed
      t.nodeHello('edge', 'r4'), // nothing retains a hello
      `${t.legacyRoot}/node/edge/ghost/lease`, // a v1 upgrade notice for a node that is gone
      t.nodeLease('edge', 'r4'), // a registered node without a lease: "no lease" retained by 0.1
    ];
    for (const topic of stale) await publish(topic, topic.endsWith('/lease') && !topic.includes('ghost') ? '{"v":2,"lease":null}' : '{"v":2}');
    const kept = [
      t.nodeLease('edge', 'r5'), // a registered node told why it has no lease
      t.nodeLease('edge', 'r6'), t.netConfig('edge'), // backed
      `${PREFIX}-b/v2/net/x/config`, // another deployment's, outside the prefix
      `${PREFIX}/v2/v2/net/x/config`, // deployment "<prefix>/v2": under this prefix, not of its shapes
      `${t.root}/net/edge/other`, // not a shape twill writes
    ];
    await publish(t.nodeLease('edge', 'r5'), JSON.stringify({ v: 2, lease: null, error: 'all 256 /24 subnets are leased' }));
    for (const topic of kept.slice(3)) await publish(topic, '{}');

    const r = await world.w.as('Maintenance', scheduleHandler)({ tasks: ['clean'] });
    assert.deepEqual(r.clean?.deleted.sort(), [...stale].sort());
    assert.deepEqual(r.clean?.failed, {});
    assert.equal(r.expired, undefined, 'only the task asked for ran');
    admin.close();
    const left = retainedTopics(world);
    for (const topic of stale) assert.ok(!left.includes(topic), `${topic} deleted`);
    for (const topic of kept) assert.ok(left.includes(topic), `${topic} kept`);
    // A second run finds nothing more to do.
    assert.deepEqual((await world.w.as('Maintenance', scheduleHandler)({ tasks: ['clean'] })).clean?.deleted, []);
  });
});

describe('the account\'s retained-message quota on IoT Core', () => {
  let world: IotCoreWorld;
  // The network's config, four nodes' own topics: a fabric that needs five.
  const QUOTA = 5;

  before(async () => {
    world = await startIotCoreWorld(tempDir('twill-retained-quota-'), undefined, { retainedQuota: QUOTA });
    await world.w.runtimeOf('Api').controller.applyNetwork('edge', parseNetConf({ Network: '10.92.0.0/16', Backend: { Type: 'alloc' } }, {}));
    for (const n of ['q1', 'q2', 'q3', 'q4']) await addNode(world.w.store, { name: n, network: 'edge', broker: world.iot.mqttsUrl });
  });
  after(async () => {
    await world?.close();
    removeTempDirs();
  });

  test('at the quota IoT Core throttles the next lease\'s publish; the cleanup frees what the store does not back, and the fabric publishes again', async () => {
    const t = world.w.topics;
    await join(world, 'q1', 1);
    await join(world, 'q2', 2);
    // What a fabric of an earlier version left behind: two departed nodes' topics.
    for (const gone of ['old-1', 'old-2']) await world.w.runtimeOf('Api').publisher.publish(t.nodeLease('edge', gone), '{"v":2,"lease":null}', true);
    assert.equal(world.iot.retained.byTopic.size, QUOTA);

    // IoT Core throttles every retained publish with a payload: q3's lease is stored but not published.
    await assert.rejects(join(world, 'q3', 3), (e: Error) => e.name === 'ThrottlingException' && /retained publish to .*q3\/lease: the account may hold its quota of retained messages/.test(e.message));
    assert.ok(await world.w.store.getLease('edge', 'q3'));
    assert.equal(world.iot.retained.byTopic.has(t.nodeLease('edge', 'q3')), false);
    assert.ok(world.iot.retained.throttled > 0);

    const r = await world.w.as('Maintenance', scheduleHandler)({ tasks: ['clean'] });
    assert.deepEqual(r.clean?.deleted.sort(), [t.nodeLease('edge', 'old-1'), t.nodeLease('edge', 'old-2')]);
    // q3's agent says hello again (it gets no answer), and q4 joins: the fabric fits.
    await join(world, 'q3', 3);
    await join(world, 'q4', 4);
    for (const n of ['q1', 'q2', 'q3', 'q4']) assert.ok(world.iot.retained.byTopic.has(t.nodeLease('edge', n)), n);
    assert.equal(world.iot.retained.byTopic.size, QUOTA);
    // At the quota a release still goes through: its zero-byte delete is never throttled.
    assert.equal(await world.w.runtimeOf('Api').controller.release('edge', 'q2'), true);
    assert.equal(world.iot.retained.byTopic.size, QUOTA - 1);
  });
});
