// The IoT Core stand-in (test/fakes/iot-core.ts) keeps IoT Core's own rules,
// the ones twill's protocol was once broken by: each is tried here with a
// plain MQTT client, so a test elsewhere cannot pass because the stand-in is
// kinder than IoT Core. Protocol v1's way of reading a network (retained
// messages through a wildcard) gets nothing here, as it got nothing on IoT Core.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import type { IoTCustomAuthorizerResult } from 'aws-lambda';
import { IoTDataPlaneClient, ListRetainedMessagesCommand } from '@aws-sdk/client-iot-data-plane';
import { IotPublisher } from '../../control/publish/iot.js';
import { startFakeIotCore, type FakeIotCore, type FakeIotCoreOptions } from '../fakes/iot-core.js';
import { startFakeIotData, type FakeIotData } from '../fakes/iot-data.js';
import { removeTempDirs, tempDir, waitFor } from '../helpers/procs.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

const REGION = 'us-east-1';
const ACCOUNT = '123456789012';
const arn = (rest: string) => `arn:aws:iot:${REGION}:${ACCOUNT}:${rest}`;

/** A policy allowing everything under t/, with or without the LastWill connect attribute. */
function policy(lastWill: boolean, seconds: { refresh?: number; disconnect?: number } = {}): IoTCustomAuthorizerResult {
  return {
    isAuthenticated: true, principalId: 'p', disconnectAfterInSeconds: seconds.disconnect ?? 3600, refreshAfterInSeconds: seconds.refresh ?? 3600,
    policyDocuments: [{
      Version: '2012-10-17',
      Statement: [
        { Effect: 'Allow', Action: 'iot:Connect', Resource: arn('client/*'), ...(lastWill && { Condition: { 'ForAllValues:StringEquals': { 'iot:ConnectAttributes': ['LastWill'] } } }) },
        { Effect: 'Allow', Action: ['iot:Publish', 'iot:RetainPublish', 'iot:Receive'], Resource: arn('topic/t/*') },
        { Effect: 'Allow', Action: 'iot:Subscribe', Resource: arn('topicfilter/t/*') },
      ],
    }],
  };
}

/** A certificate for localhost, made once for every stand-in here. */
function certificate(): { cert: string; key: string } {
  const dir = tempDir('twill-iot-cert-');
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost'], { stdio: 'ignore' });
  return { cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') };
}
let tls: { cert: string; key: string } | undefined;

/**
 * IoT Core's stand-in, and plain MQTT clients of it, each with a client id
 * of its own (IoT Core takes one CONNECT a second per id). A connection
 * closed with no CONNACK rejects (allowRetries false) rather than waiting.
 */
async function standIn(name: string, opts: Pick<FakeIotCoreOptions, 'authorize'> & Partial<FakeIotCoreOptions>) {
  tls ??= certificate();
  const iot = await startFakeIotCore({ ...tls, authorizerName: 'auth', region: REGION, accountId: ACCOUNT, ...opts });
  const clients: mqtt.MqttClient[] = [];
  let ids = 0;
  return {
    iot,
    async connect(o: mqtt.IClientOptions = {}) {
      const c = await mqtt.connectAsync(iot.mqttsUrl, { username: 'u?x-amz-customauthorizer-name=auth', password: 'p', ca: tls!.cert, ALPNProtocols: ['mqtt'], reconnectPeriod: 0, clientId: `${name}${ids++}`, ...o }, false);
      clients.push(c);
      return c;
    },
    async close() {
      for (const c of clients) c.end(true);
      await iot.close();
    },
  };
}
type StandIn = Awaited<ReturnType<typeof standIn>>;

describe('IoT Core stand-in: the rules IoT Core keeps', () => {
  let world: StandIn;
  let iot: FakeIotCore;
  let answer = policy(true);
  /** while set, the authorizer never answers */
  let hang = false;

  before(async () => {
    world = await standIn('c', { authorize: () => (hang ? new Promise(() => {}) : Promise.resolve(answer)) });
    iot = world.iot;
  });
  after(async () => {
    await world?.close();
    removeTempDirs();
  });
  const connect = (o?: mqtt.IClientOptions) => world.connect(o);
  const messages = (c: mqtt.MqttClient) => {
    const seen: { topic: string; retain: boolean }[] = [];
    c.on('message', (topic, _p, packet) => seen.push({ topic, retain: packet.retain }));
    return seen;
  };

  test('a retained message reaches an exact subscription, never a wildcard one (v1 agents read their network this way)', async () => {
    const pub = await connect();
    await pub.publishAsync('t/net/blue/config', '{"v":1}', { qos: 1, retain: true });
    const wild = await connect();
    const seenWild = messages(wild);
    await wild.subscribeAsync(['t/net/blue/#', 't/net/+/config'], { qos: 1 });
    const exact = await connect();
    const seenExact = messages(exact);
    await exact.subscribeAsync('t/net/blue/config', { qos: 1 });
    await waitFor('the exact subscription gets it', () => seenExact.some((m) => m.topic === 't/net/blue/config' && m.retain));
    const withheld = iot.withheldRetained;
    // a live message, published after the subscriptions, reaches both
    await pub.publishAsync('t/net/blue/config', '{"v":2}', { qos: 1 });
    await waitFor('live message on the wildcard', () => seenWild.some((m) => m.topic === 't/net/blue/config' && !m.retain));
    assert.equal(seenWild.some((m) => m.retain), false, 'no retained message through a wildcard');
    assert.ok(withheld >= 1);
  });

  test('more than 8 filters in one SUBSCRIBE closes the connection', async () => {
    const c = await connect();
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    c.subscribe(Array.from({ length: 9 }, (_, i) => `t/x/${i}`), { qos: 1 });
    await closed;
    assert.ok(iot.refusals.some((r) => /9 filters in one SUBSCRIBE/.test(r)));
  });

  test('more than 50 subscriptions on a connection closes it', async () => {
    const c = await connect();
    for (let i = 0; i < 6; i++) await c.subscribeAsync(Array.from({ length: 8 }, (_, j) => `t/y/${i}/${j}`), { qos: 1 });
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    c.subscribe(['t/y/6/0', 't/y/6/1', 't/y/6/2'], { qos: 1 });
    await closed;
    assert.ok(iot.refusals.some((r) => /more than 50 subscriptions/.test(r)));
  });

  test('a publish over 128 KB is refused', async () => {
    const c = await connect();
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    c.publish('t/big', Buffer.alloc(128 * 1024 + 1), { qos: 1 });
    await closed;
    assert.ok(iot.refusals.some((r) => /131073 bytes \(at most 131072\)/.test(r)));
  });

  test('a last will needs the LastWill connect attribute in the policy', async () => {
    answer = policy(false);
    await assert.rejects(connect({ will: { topic: 't/status', payload: Buffer.from('offline'), qos: 1, retain: true } }));
    assert.ok(iot.connections.some((c) => /does not grant iot:ConnectAttributes LastWill/.test(c.reason ?? '')));
    await connect(); // without a will the same policy is fine
    answer = policy(true);
    await connect({ will: { topic: 't/status', payload: Buffer.from('offline'), qos: 1, retain: true } });
  });

  test('a policy document over 2,048 characters refuses the connection', async () => {
    const big = policy(true);
    (big.policyDocuments[0]!.Statement[1] as { Resource: string[] }).Resource = Array.from({ length: 40 }, (_, i) => arn(`topic/t/${'x'.repeat(40)}${i}`));
    answer = big;
    await assert.rejects(connect());
    assert.ok(iot.connections.some((c) => /a policy document of \d+ characters \(at most 2048\)/.test(c.reason ?? '')));
    answer = policy(true);
  });

  test('at most 100 publishes a second reach one connection; the rest are dropped', async () => {
    const sub = await connect();
    const arrivals: number[] = [];
    sub.on('message', (topic) => { if (topic === 't/flood') arrivals.push(Date.now()); });
    await sub.subscribeAsync('t/flood', { qos: 0 });
    const pub = await connect();
    const before = iot.throttled;
    const t0 = Date.now();
    await Promise.all(Array.from({ length: 300 }, (_, i) => pub.publishAsync('t/flood', String(i), { qos: 0 })));
    // every message is either delivered or dropped
    await waitFor('all accounted for', () => arrivals.length + (iot.throttled - before) === 300);
    const seconds = Math.floor((Date.now() - t0) / 1000) + 2; // the wall-clock seconds the burst can touch
    assert.ok(arrivals.length <= 100 * seconds, `${arrivals.length} delivered within ${seconds} seconds`);
    if (seconds <= 3) assert.ok(iot.throttled - before > 0, 'a burst of 300 within three seconds loses some');
  });

  test('a second CONNECT of a client id within a second is throttled: closed with no CONNACK, taking nothing over; a second later it is taken', async () => {
    const first = await connect({ clientId: 'once-a-second' });
    const before = iot.connectThrottled;
    await assert.rejects(connect({ clientId: 'once-a-second' }));
    assert.equal(iot.connectThrottled, before + 1);
    assert.ok(iot.connections.some((c) => c.clientId === 'once-a-second' && /throttled/.test(c.reason ?? '')));
    assert.ok(first.connected, 'the throttled CONNECT did not take the session over');
    // IoT Core's window: one CONNECT a second per client id.
    await new Promise((r) => setTimeout(r, 1000));
    const again = await connect({ clientId: 'once-a-second' });
    assert.ok(again.connected);
  });

  test('an authorizer that does not answer within 5 seconds refuses the CONNECT', async () => {
    hang = true;
    try {
      await assert.rejects(connect());
    } finally {
      hang = false;
    }
    assert.ok(iot.connections.some((c) => /did not answer within 5 s/.test(c.reason ?? '')));
  });

  test('an authorizer answer outside IoT Core\'s bounds refuses the connection', async () => {
    for (const [bad, why] of [
      [{ ...policy(true), refreshAfterInSeconds: 60 }, /refreshAfterInSeconds 60 is not a whole number from 300 to 86400/],
      [{ ...policy(true), disconnectAfterInSeconds: 90_000 }, /disconnectAfterInSeconds 90000/],
      [{ ...policy(true), principalId: 'node-1' }, /principalId "node-1"/],
    ] as const) {
      answer = bad;
      await assert.rejects(connect());
      assert.ok(iot.connections.some((c) => why.test(c.reason ?? '')), `${why}`);
    }
    answer = policy(true);
  });
});

describe('IoT Core stand-in: custom authentication\'s clock (time scale 1/1000: 300 s last 0.3 s)', () => {
  let world: StandIn;
  let iot: FakeIotCore;
  let answer = policy(true);

  before(async () => {
    world = await standIn('k', { authorize: async () => answer, timeScale: 0.001 });
    iot = world.iot;
  });
  after(async () => {
    await world?.close();
    removeTempDirs();
  });
  const connect = (o?: mqtt.IClientOptions) => world.connect(o);
  const closed = (c: mqtt.MqttClient) => new Promise<void>((r) => (c.connected ? c.once('close', () => r()) : r()));

  test('the authorizer is called again every refreshAfterInSeconds; once it refuses, the connection is closed', async () => {
    answer = policy(true, { refresh: 300, disconnect: 86_400 });
    const c = await connect();
    const id = c.options.clientId as string;
    await waitFor('two refreshes accepted', () => iot.refreshes.filter((r) => r.clientId === id && r.accepted).length >= 2);
    assert.ok(c.connected, 'an accepted refresh keeps the connection');
    const end = closed(c);
    answer = { ...policy(true, { refresh: 300, disconnect: 86_400 }), isAuthenticated: false };
    await end;
    assert.deepEqual(iot.ended.filter((e) => e.clientId === id), [{ clientId: id, reason: 'refresh refused', detail: 'the authorizer refused the connection' }]);
    answer = policy(true);
  });

  test('a refreshed policy replaces the old one on the live connection', async () => {
    const all = policy(true, { refresh: 300, disconnect: 86_400 });
    answer = all;
    const c = await connect();
    const id = c.options.clientId as string;
    await c.publishAsync('t/x', 'allowed', { qos: 1 });
    // the next answer allows publishing nowhere
    answer = { ...all, policyDocuments: [{ Version: '2012-10-17', Statement: [all.policyDocuments[0]!.Statement[0]!] }] };
    const seen = iot.refreshes.filter((r) => r.clientId === id).length;
    await waitFor('a refresh with the new answer', () => iot.refreshes.filter((r) => r.clientId === id).length > seen);
    const end = closed(c);
    c.publish('t/x', 'no longer allowed', { qos: 1 });
    await end;
    assert.ok(iot.refusals.includes(`publish ${id} t/x`));
    answer = policy(true);
  });

  test('a connection is closed at disconnectAfterInSeconds, and its last will goes out', async () => {
    answer = policy(true, { refresh: 86_400, disconnect: 600 });
    const watcher = await connect();
    const wills: string[] = [];
    watcher.on('message', (_t, p) => wills.push(p.toString()));
    answer = policy(true, { refresh: 86_400, disconnect: 300 });
    const c = await connect({ will: { topic: 't/will', payload: Buffer.from('gone'), qos: 1, retain: false } });
    await watcher.subscribeAsync('t/will', { qos: 1 });
    const id = c.options.clientId as string;
    await closed(c);
    assert.deepEqual(iot.ended.filter((e) => e.clientId === id), [{ clientId: id, reason: 'disconnectAfterInSeconds' }]);
    await waitFor('the will', () => wills.includes('gone'));
    answer = policy(true);
  });
});

describe('IoT Core stand-in: the account\'s retained-message quota, and ListRetainedMessages', () => {
  let world: StandIn;
  let iot: FakeIotCore;
  let data: FakeIotData;
  let publisher: IotPublisher;
  const credentials = { accessKeyId: 'AKIAFAKEFAKEFAKEFAKE', secretAccessKey: 'fake-secret-for-local-tests-only' };

  before(async () => {
    world = await standIn('r', { authorize: async () => policy(true), retainedQuota: 3 });
    iot = world.iot;
    data = await startFakeIotData(iot.internalUrl, iot);
    publisher = new IotPublisher({ clientConfig: { endpoint: data.endpoint, region: REGION, credentials, maxAttempts: 1 } });
  });
  after(async () => {
    publisher?.close();
    await data?.close();
    await world?.close();
    removeTempDirs();
  });
  const connect = () => world.connect();

  test('at the quota, every retained publish with a payload is throttled, from a device or the data plane, until one is deleted; a zero-byte one still deletes', async () => {
    const dev = await connect();
    await dev.publishAsync('t/r/1', 'one', { qos: 1, retain: true });
    await publisher.publish('t/r/2', 'two', true);
    await publisher.publish('t/r/3', 'three', true);
    assert.deepEqual([...iot.retained.byTopic.keys()].sort(), ['t/r/1', 't/r/2', 't/r/3'], 'one account: the device\'s and the data plane\'s');
    // The data plane: ThrottlingException, for a new topic and for one already retained alike.
    await assert.rejects(publisher.publish('t/r/4', 'four', true), (e: Error) => e.name === 'ThrottlingException');
    await assert.rejects(publisher.publish('t/r/2', 'two again', true), (e: Error) => e.name === 'ThrottlingException');
    // not retained, it goes through
    await publisher.publish('t/r/4', 'live', false);
    // A device: its retained publish is refused and its connection closed.
    const end = new Promise<void>((r) => dev.once('close', () => r()));
    dev.publish('t/r/5', 'five', { qos: 1, retain: true });
    await end;
    assert.ok(iot.refusals.some((r) => /t\/r\/5 \(retained\): the account is at its 3 retained messages/.test(r)));
    assert.equal(iot.retained.throttled, 3);
    assert.equal(iot.retained.byTopic.get('t/r/2')?.payload.toString(), 'two');
    // A zero-byte retained publish deletes, at the quota too; then there is room again.
    await publisher.publish('t/r/1', '', true);
    assert.equal(iot.retained.byTopic.has('t/r/1'), false);
    await publisher.publish('t/r/4', 'four', true);
    assert.equal(await publisher.retained('t/r/4'), 'four');
  });

  test('ListRetainedMessages pages at most 200 at a time with nextToken, and refuses a page size or token it does not know', async () => {
    const big = await standIn('b', { authorize: async () => policy(true) });
    const bigData = await startFakeIotData(big.iot.internalUrl, big.iot);
    const client = new IoTDataPlaneClient({ endpoint: bigData.endpoint, region: REGION, credentials, maxAttempts: 1 });
    const pub = new IotPublisher({ client });
    try {
      for (let i = 0; i < 450; i++) await big.iot.publish(`p/${String(i).padStart(3, '0')}`, Buffer.from('x'), 1, true);
      await big.iot.publish('other/1', Buffer.from('y'), 1, true);
      const pages: number[] = [];
      const seen: string[] = [];
      let nextToken: string | undefined;
      do {
        const r = await client.send(new ListRetainedMessagesCommand({ maxResults: 200, nextToken }));
        pages.push(r.retainedTopics?.length ?? 0);
        seen.push(...(r.retainedTopics ?? []).map((t) => t.topic as string));
        nextToken = r.nextToken;
      } while (nextToken);
      assert.deepEqual(pages, [200, 200, 51]);
      assert.equal(new Set(seen).size, 451);
      assert.deepEqual((await pub.listRetained('p/')).length, 450, 'the publisher follows every page and keeps its prefix');
      for (const maxResults of [0, 201]) {
        await assert.rejects(client.send(new ListRetainedMessagesCommand({ maxResults })), (e: Error) => e.name === 'InvalidRequestException');
      }
      await assert.rejects(client.send(new ListRetainedMessagesCommand({ nextToken: 'not-a-token' })), (e: Error) => e.name === 'InvalidRequestException');
    } finally {
      client.destroy();
      await bigData.close();
      await big.close();
    }
  });
});
