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
import { startFakeIotCore, type FakeIotCore } from '../fakes/iot-core.js';
import { removeTempDirs, tempDir, waitFor } from '../helpers/procs.js';

const REGION = 'us-east-1';
const ACCOUNT = '123456789012';
const arn = (rest: string) => `arn:aws:iot:${REGION}:${ACCOUNT}:${rest}`;

/** A policy allowing everything under t/, with or without the LastWill connect attribute. */
function policy(lastWill: boolean): IoTCustomAuthorizerResult {
  return {
    isAuthenticated: true, principalId: 'p', disconnectAfterInSeconds: 3600, refreshAfterInSeconds: 3600,
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

describe('IoT Core stand-in: the rules IoT Core keeps', () => {
  let dir: string;
  let iot: FakeIotCore;
  let answer = policy(true);
  const clients: mqtt.MqttClient[] = [];

  before(async () => {
    dir = tempDir('twill-iot-rules-');
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost'], { stdio: 'ignore' });
    iot = await startFakeIotCore({
      cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8'), authorizerName: 'auth', region: REGION, accountId: ACCOUNT,
      authorize: async () => answer,
    });
  });
  after(async () => {
    for (const c of clients) c.end(true);
    await iot?.close();
    removeTempDirs();
  });

  const connect = async (opts: mqtt.IClientOptions = {}) => {
    const c = await mqtt.connectAsync(iot.mqttsUrl, { username: 'u?x-amz-customauthorizer-name=auth', password: 'p', ca: readFileSync(join(dir, 'cert.pem')), ALPNProtocols: ['mqtt'], reconnectPeriod: 0, clientId: `c${clients.length}`, ...opts });
    clients.push(c);
    return c;
  };
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
});
