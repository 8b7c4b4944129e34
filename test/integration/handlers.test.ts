// The Lambda handlers, invoked as Lambda invokes them (the exported handler,
// the documented event shapes, the environment infra sets), against DynamoDB
// (dynalite), the fake EC2, GCE and Alibaba endpoints, SSM, and IoT Core's
// data plane forwarding into a real Mosquitto, where a plain MQTT subscriber
// stands in for the agents: whatever a handler published, it receives.
// Every handler runs as its function, with that function's grants
// (infra/grants.ts) enforced by the stand-ins: a call it is not granted fails here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { nodeClientId } from '../../core/acl.js';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { SignJWT, exportJWK, generateKeyPair, type JWTPayload } from 'jose';
import type { IoTCustomAuthorizerEvent, LambdaFunctionURLEvent, LambdaFunctionURLResult, SQSEvent, SQSRecord, ScheduledEvent } from 'aws-lambda';
import { gunzipSync } from 'node:zlib';
import { parseNetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import type { Status } from '../../core/messages.js';
import { silentLogger } from '../../core/log.js';
import { agentOptions } from '../../agent/config.js';
import { addNode } from '../../control/http/admin.js';
import * as api from '../../functions/api.js';
import * as authorizer from '../../functions/authorizer.js';
import * as events from '../../functions/cloud-events.js';
import * as iot from '../../functions/iot.js';
import * as nodeApi from '../../functions/node-api.js';
import * as push from '../../functions/push.js';
import * as schedule from '../../functions/schedule.js';
import type { ScheduleReport } from '../../functions/schedule.js';
import { FUNCTIONS, GRANTS, type FunctionName } from '../../infra/grants.js';
import { SHARDS } from '../../control/store/dynamo.js';
import { FakeAli } from '../fakes/ali.js';
import { FakeEc2 } from '../fakes/ec2.js';
import { FakeGce } from '../fakes/gce.js';
import { FakePushSubscription } from '../fakes/pubsub-push.js';
import { startFakeServiceQuotas, type FakeServiceQuotas } from '../fakes/service-quotas.js';
import { vpcRoutesQuota } from '../helpers/clouds.js';
import { startSqsEventSource, type EventSource } from '../helpers/sqs-event-source.js';
import { EVENT_FIXTURES, freePort, removeTempDirs, startProc, tempDir, waitFor, type Proc } from '../helpers/procs.js';
import {
  ACCOUNT, ADMIN_TOKEN, ALI_PARAM, ALI_TOKEN, AUTHORIZER, EVENTS_VISIBILITY_SECONDS, PREFIX, REGION, functionUrl, lambdaContext, onLoopback, startServerless, urlEvent, type ServerlessWorld,
} from '../helpers/serverless.js';

const MOSQUITTO = '/usr/sbin/mosquitto';
const FIXTURES = EVENT_FIXTURES;
const fixture = (name: string): Record<string, unknown> => JSON.parse(readFileSync(join(FIXTURES, name), 'utf8'));

const AUDIENCE = 'https://push.twill.example/gce';
const SERVICE_ACCOUNT = 'twill-push@my-project.iam.gserviceaccount.com';
const ALI_KEY = { AccessKeyID: 'AKIDFAKEFAKEFAKE', AccessKeySecret: 'fake-secret-for-tests' };

const b64 = (s: string) => Buffer.from(s).toString('base64');


function structured(r: LambdaFunctionURLResult): { statusCode: number; body: Record<string, unknown>; headers: Record<string, unknown> } {
  assert.equal(typeof r, 'object');
  const s = r as { statusCode?: number; body?: string; headers?: Record<string, unknown> };
  return { statusCode: s.statusCode ?? 0, body: s.body ? (JSON.parse(s.body) as Record<string, unknown>) : {}, headers: s.headers ?? {} };
}

function sqsRecord(id: string, body: string, receives = 1): SQSRecord {
  return {
    messageId: id,
    receiptHandle: `handle-${id}`,
    body,
    attributes: {
      ApproximateReceiveCount: String(receives),
      SentTimestamp: '1795600000000',
      SenderId: 'AIDAIENQZJOLO23YVJ4VO',
      ApproximateFirstReceiveTimestamp: '1795600000001',
    },
    messageAttributes: {},
    md5OfBody: 'x',
    eventSource: 'aws:sqs',
    eventSourceARN: `arn:aws:sqs:${REGION}:${ACCOUNT}:twill-test-InstanceEvents`,
    awsRegion: REGION,
  };
}

const ec2Event = (id: string, state: string) => ({ ...fixture('ec2-state-change-running.json'), id: `ev-${id}-${state}`, detail: { 'instance-id': id, state } });

/** What a function logs while body runs (stderr: functions log there, CloudWatch keeps it). */
async function logged<T>(body: () => Promise<T>): Promise<{ result: T; log: string }> {
  const lines: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  (process.stderr as { write: unknown }).write = (chunk: string | Uint8Array) => {
    lines.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString());
    return true;
  };
  try {
    return { result: await body(), log: lines.join('') };
  } finally {
    (process.stderr as { write: unknown }).write = write;
  }
}

describe('Lambda handlers', () => {
  let dir: string;
  let broker: Proc;
  let brokerUrl: string;
  let w: ServerlessWorld;
  let ec2: FakeEc2;
  let quotas: FakeServiceQuotas;
  let gce: FakeGce;
  let ali: FakeAli;
  let jwks: Server;
  let sub: mqtt.MqttClient;
  /** last payload per topic, as an agent subscribed to everything would hold it */
  const seen = new Map<string, string>();
  let signingKey: CryptoKey;
  let otherKey: CryptoKey;
  let edgePassword: string;
  // Each handler as its function runs it (test/helpers/serverless.ts).
  let apiHandler: typeof api.handler;
  let authorizerHandler: typeof authorizer.handler;
  let eventsHandler: typeof events.handler;
  let iotHandler: typeof iot.handler;
  let nodeApiHandler: typeof nodeApi.handler;
  let pushHandler: typeof push.handler;
  let scheduleHandler: typeof schedule.handler;

  async function token(claims: JWTPayload, opts: { key?: CryptoKey; expiresIn?: string | number; kid?: string } = {}): Promise<string> {
    return new SignJWT({ email: SERVICE_ACCOUNT, email_verified: true, azp: '1234567890', ...claims })
      .setProtectedHeader({ alg: 'RS256', kid: opts.kid ?? 'test-key-1', typ: 'JWT' })
      .setIssuer((claims.iss as string | undefined) ?? 'https://accounts.google.com')
      .setAudience((claims.aud as string | undefined) ?? AUDIENCE)
      .setSubject('1234567890')
      .setIssuedAt()
      .setExpirationTime(opts.expiresIn ?? '1h')
      .sign(opts.key ?? signingKey);
  }

  before(async () => {
    assert.ok(existsSync(MOSQUITTO), `${MOSQUITTO} is missing: apt-get install mosquitto`);
    dir = tempDir('twill-handlers-');
    const port = await freePort();
    writeFileSync(join(dir, 'mosquitto.conf'), `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
    broker = startProc(['-c', join(dir, 'mosquitto.conf')], { cmd: [MOSQUITTO] });
    brokerUrl = `mqtt://127.0.0.1:${port}`;
    await waitFor('mosquitto listening', async () => {
      const c = await mqtt.connectAsync(brokerUrl, { reconnectPeriod: 0 });
      await c.endAsync();
      return true;
    });
    sub = await mqtt.connectAsync(brokerUrl, { reconnectPeriod: 0, clientId: 'test-subscriber' });
    sub.on('message', (topic, payload) => seen.set(topic, payload.toString('utf8')));
    await sub.subscribeAsync(`${PREFIX}/#`, { qos: 1 });

    ec2 = new FakeEc2();
    await ec2.start();
    ec2.addTable({ id: 'rtb-main', vpcId: 'vpc-1', main: true });
    // The account's "Routes per route table", read by the functions that reconcile under their own grants.
    quotas = await startFakeServiceQuotas({ region: REGION, account: ACCOUNT });
    quotas.services.set('vpc', [vpcRoutesQuota(ec2)]);
    gce = new FakeGce('my-project');
    await gce.start();
    ali = new FakeAli();
    await ali.start();
    ali.pendingPolls = 0;
    ali.addTable({ id: 'vtb-sys', vpcId: 'vpc-1', type: 'System' });

    // Google's side of OIDC: an RSA key, its JWKS served on loopback.
    const pair = await generateKeyPair('RS256', { extractable: true });
    signingKey = pair.privateKey;
    otherKey = (await generateKeyPair('RS256')).privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'test-key-1', alg: 'RS256', use: 'sig' };
    jwks = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', () => r()));

    w = await startServerless(brokerUrl, {
      AWS_ENDPOINT_URL_EC2: ec2.url,
      AWS_ENDPOINT_URL_SERVICE_QUOTAS: quotas.endpoint,
      TWILL_GCE_ENDPOINT: gce.url,
      TWILL_GCE_PROJECT: 'my-project',
      GOOGLE_OAUTH_ACCESS_TOKEN: 'test-token',
      TWILL_ALI_ENDPOINT: ali.url,
      TWILL_ALI_REGION: 'cn-hangzhou',
      TWILL_GCE_PUSH_AUDIENCE: AUDIENCE,
      TWILL_GCE_PUSH_SERVICE_ACCOUNT: SERVICE_ACCOUNT,
      TWILL_GCE_JWKS_URL: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/oauth2/v3/certs`,
    });
    ec2.iam = w.iam;
    quotas.iam = w.iam;
    apiHandler = w.as('Api', api.handler);
    authorizerHandler = w.as('Authorizer', authorizer.handler);
    eventsHandler = w.as('InstanceEvents', events.handler);
    iotHandler = w.as('AgentMessages', iot.handler);
    nodeApiHandler = w.as('NodeApi', nodeApi.handler);
    pushHandler = w.as('Push', push.handler);
    scheduleHandler = w.as('Maintenance', schedule.handler);
    // Networks and a node, through the controller of the admin API's function (as `twill network apply --api` would).
    const c = w.runtimeOf('Api').controller;
    await c.applyNetwork('edge', parseNetConf({ Network: '10.60.0.0/16', Backend: { Type: 'vxlan' } }, {}));
    await c.applyNetwork('aws', parseNetConf({ Network: '10.61.0.0/16', Backend: { Type: 'aws-vpc' } }, {}));
    await c.applyNetwork('gce', parseNetConf({ Network: '10.62.0.0/16', Backend: { Type: 'gce' } }, {}));
    await c.applyNetwork('ali', parseNetConf({ Network: '10.63.0.0/16', Backend: { Type: 'ali-vpc', ...ALI_KEY } }, {}));
    edgePassword = (await addNode(w.store, { name: 'edge-1', network: 'edge', broker: 'wss://x/mqtt' })).password;
  });

  after(async () => {
    await sub?.endAsync();
    await w?.close();
    await ec2?.close();
    await quotas?.close();
    await gce?.close();
    await ali?.close();
    if (jwks) {
      jwks.closeAllConnections();
      await new Promise<void>((r) => jwks.close(() => r()));
    }
    await broker?.kill();
    removeTempDirs();
  });

  const payloadOf = <T>(topic: string): T | undefined => {
    const p = seen.get(topic);
    return p ? (JSON.parse(p) as T) : undefined;
  };

  describe('IoT rule (hello and status)', () => {
    const hello = (extra: object = {}) => JSON.stringify({ v: 2, agentVersion: 'test', publicIP: '192.0.2.10', backendData: { VtepMAC: '02:00:00:00:00:10' }, ...extra });

    test('a hello gets a lease, and the agent receives it through IoT Core', async () => {
      await iotHandler({ topic: w.topics.nodeHello('edge', 'edge-1'), clientId: `${PREFIX}:edge:edge-1`, payload: b64(hello()) });
      const lease = await w.store.getLease('edge', 'edge-1');
      assert.ok(lease?.subnet, 'the lease is in DynamoDB');
      await waitFor('own lease on the broker', () => payloadOf<{ lease: Lease }>(w.topics.nodeLease('edge', 'edge-1'))?.lease?.subnet === lease.subnet);
      assert.equal(payloadOf<{ config: { Network: string } }>(w.topics.nodeLease('edge', 'edge-1'))?.config.Network, '10.60.0.0/16');
      assert.equal(payloadOf<{ api: string }>(w.topics.nodeLease('edge', 'edge-1'))?.api, w.nodeApiUrl, 'the agent is told where to list its network');
      await waitFor('the change to every member', () => payloadOf<{ node: string; lease: Lease }>(w.topics.netChanges('edge'))?.node === 'edge-1');
      assert.equal(payloadOf<{ revision: number }>(w.topics.netChanges('edge'))?.revision, lease.revision);
      for (const p of w.iot.published) assert.deepEqual([p.qos, p.retain], [1, p.topic !== w.topics.netChanges(p.topic.split('/')[4] ?? '')], p.topic);

      // The same hello again (IoT Core delivers at least once): the same subnet.
      await iotHandler({ topic: w.topics.nodeHello('edge', 'edge-1'), clientId: `${PREFIX}:edge:edge-1`, payload: b64(hello()) });
      assert.equal((await w.store.getLease('edge', 'edge-1'))?.subnet, lease.subnet);
    });

    test('a status lands in the store, for twill status', async () => {
      const status = { v: 2, state: 'online', agentVersion: 'test', backend: 'vxlan', subnet: null, ipv6Subnet: null, revision: 3, inSync: true, peers: 0, errors: [] };
      await iotHandler({ topic: w.topics.nodeStatus('edge', 'edge-1'), clientId: `${PREFIX}:edge:edge-1`, payload: b64(JSON.stringify(status)) });
      const rec = (await w.store.listStatus()).find((s) => s.node === 'edge-1');
      assert.equal(rec?.status.state, 'online');
      assert.equal(rec?.status.revision, 3);
    });

    test('a hello after its network moved gets a subnet of the new range, and the old subnet is free again', async () => {
      const api = w.runtimeOf('Api').controller;
      await api.applyNetwork('moving', parseNetConf({ Network: '10.64.0.0/16', Backend: { Type: 'vxlan' } }, {}));
      await addNode(w.store, { name: 'mover', network: 'moving', broker: 'wss://x/mqtt' });
      const hi = { topic: w.topics.nodeHello('moving', 'mover'), clientId: 'twill-moving-mover', payload: b64(hello()) };
      await iotHandler(hi);
      assert.match((await w.store.getLease('moving', 'mover'))?.subnet ?? '', /^10\.64\./);
      await api.applyNetwork('moving', parseNetConf({ Network: '10.65.0.0/16', Backend: { Type: 'vxlan' } }, {}));
      await iotHandler(hi);
      assert.match((await w.store.getLease('moving', 'mover'))?.subnet ?? '', /^10\.65\./);
      assert.equal((await w.store.takenSubnets('moving')).v4.length, 1, 'the old claim went with the move');
      await api.removeNetwork('moving', { force: true });
    });

    test('a malformed hello and an unknown node change nothing and are answered on the node topic', async () => {
      const before = await w.store.getNetwork('edge');
      await iotHandler({ topic: w.topics.nodeHello('edge', 'edge-1'), payload: b64('{"v":2,') });
      await waitFor('error on the node topic', () => /hello from edge-1/.test(payloadOf<{ error?: string }>(w.topics.nodeLease('edge', 'edge-1'))?.error ?? ''));
      await iotHandler({ topic: w.topics.nodeHello('edge', 'stranger'), payload: b64(hello()) });
      await waitFor('error for the stranger', () => /not registered in network edge/.test(payloadOf<{ error?: string }>(w.topics.nodeLease('edge', 'stranger'))?.error ?? ''));
      assert.equal(await w.store.getLease('edge', 'stranger'), undefined);
      assert.equal((await w.store.getNetwork('edge'))?.revision, before?.revision);
      // Not what the rule's SELECT makes: logged and dropped, never thrown (IoT Core would retry it).
      await iotHandler({ nope: true } as never);
      await iotHandler('a string payload' as never);
    });

    test("a hello that fails inside the control plane tells the node so, without AWS's words (account, role, table)", async () => {
      await addNode(w.store, { name: 'edge-9', network: 'edge', broker: 'wss://x/mqtt' });
      const seen = w.iam.refusals.length;
      await w.revoking('AgentMessages', ['dynamodb:PutItem', 'dynamodb:UpdateItem'], async () => {
        await iotHandler({ topic: w.topics.nodeHello('edge', 'edge-9'), clientId: 'twill-edge-edge-9', payload: b64(hello()) });
      });
      const refused = w.iam.refusals.splice(seen);
      assert.ok(refused.length > 0, 'the lease write was refused');
      assert.equal(await w.store.getLease('edge', 'edge-9'), undefined);
      await waitFor('an error on the node topic', () => (payloadOf<{ error?: string }>(w.topics.nodeLease('edge', 'edge-9'))?.error ?? '') !== '');
      const error = payloadOf<{ error: string }>(w.topics.nodeLease('edge', 'edge-9'))!.error;
      assert.match(error, /internal error/);
      assert.doesNotMatch(error, new RegExp(`${ACCOUNT}|arn:aws|twill-test|dynamodb`));
    });
  });

  describe('IoT custom authorizer', () => {
    const connect = (username: string, password: string, clientId: string): IoTCustomAuthorizerEvent => ({
      signatureVerified: false,
      protocols: ['tls', 'mqtt'],
      protocolData: { tls: { serverName: 'abc-ats.iot.us-east-1.amazonaws.com' }, mqtt: { username, password: b64(password), clientId } },
      connectionMetadata: { id: 'conn-1' },
    });

    test("a node gets its policy, with the function's own region and account in the ARNs", async () => {
      const r = await authorizerHandler(connect(`edge-1?x-amz-customauthorizer-name=${AUTHORIZER}`, edgePassword, `${PREFIX}:edge:edge-1`), lambdaContext('twill-test-RealtimeAuthorizerHandler'));
      assert.equal(r.isAuthenticated, true);
      const doc = JSON.stringify(r.policyDocuments);
      assert.match(doc, new RegExp(`arn:aws:iot:${REGION}:${ACCOUNT}:topic/${PREFIX}/v2/node/edge/edge-1/hello`));
      assert.match(doc, new RegExp(`arn:aws:iot:${REGION}:${ACCOUNT}:topicfilter/${PREFIX}/v2/net/edge/changes"`));
    });

    test('a wrong password is refused', async () => {
      const r = await authorizerHandler(connect('edge-1', 'not-the-password', `${PREFIX}:edge:edge-1`), lambdaContext());
      assert.equal(r.isAuthenticated, false);
      assert.deepEqual(r.policyDocuments, []);
    });
  });

  describe('EC2 state changes (EventBridge, through SQS)', () => {
    test('the documented event, invoked directly, reconciles the aws-vpc network: a lease, a route, published', async () => {
      ec2.addInstance({ id: 'i-1234567890abcdef0', network: 'aws' });
      await eventsHandler(fixture('ec2-state-change-running.json') as never);
      const lease = await w.store.getLease('aws', 'i-1234567890abcdef0');
      assert.ok(lease?.subnet);
      assert.equal(ec2.routeMap('rtb-main')[lease.subnet], 'eni-1234567890abcdef0');
      await waitFor('the lease published', () => payloadOf<{ lease: Lease }>(w.topics.netChanges('aws'))?.lease?.subnet === lease.subnet);
    });

    test('a batch reconciles each network once; a poison record is dropped without holding up the rest', async () => {
      ec2.addInstance({ id: 'i-0abcdef1234567890', network: 'aws' });
      const before = { ...ec2.calls };
      const r = await eventsHandler({
        Records: [
          sqsRecord('m1', JSON.stringify(ec2Event('i-0abcdef1234567890', 'running'))),
          sqsRecord('m2', '{"source": "aws.ec2", "detail-type": "EC2 Instance State-change Notification"'),
          sqsRecord('m3', JSON.stringify({ ...ec2Event('i-0abcdef1234567890', 'running'), detail: { 'instance-id': 'bogus', state: 'running' } })),
          sqsRecord('m4', JSON.stringify(ec2Event('i-1234567890abcdef0', 'running'))),
        ],
      } satisfies SQSEvent);
      assert.deepEqual(r, { batchItemFailures: [] });
      assert.equal((ec2.calls.DescribeRouteTables ?? 0) - (before.DescribeRouteTables ?? 0), 1, 'one reconcile for two events of the same network');
      const lease = await w.store.getLease('aws', 'i-0abcdef1234567890');
      assert.ok(lease?.subnet);
      assert.equal(ec2.routeMap('rtb-main')[lease.subnet], 'eni-0abcdef1234567890');
    });

    test('a route pointed at another member is put back on its own instance', async () => {
      const subnet = (await w.store.getLease('aws', 'i-1234567890abcdef0'))!.subnet!;
      const route = ec2.routesOf('rtb-main').find((r) => r.destinationCidrBlock === subnet)!;
      route.networkInterfaceId = 'eni-0abcdef1234567890';
      const before = ec2.calls.ReplaceRoute ?? 0;
      await eventsHandler(ec2Event('i-1234567890abcdef0', 'running') as never);
      assert.equal(ec2.routeMap('rtb-main')[subnet], 'eni-1234567890abcdef0');
      assert.equal((ec2.calls.ReplaceRoute ?? 0) - before, 1, 'replaced in place');
    });

    test('a terminated instance: its route is deleted and its lease released', async () => {
      const subnet = (await w.store.getLease('aws', 'i-0abcdef1234567890'))!.subnet!;
      ec2.instances.get('i-0abcdef1234567890')!.state = 'terminated';
      const r = await eventsHandler({ Records: [sqsRecord('t1', JSON.stringify(ec2Event('i-0abcdef1234567890', 'terminated')))] } satisfies SQSEvent);
      assert.deepEqual(r, { batchItemFailures: [] });
      assert.equal(await w.store.getLease('aws', 'i-0abcdef1234567890'), undefined);
      assert.equal(ec2.routeMap('rtb-main')[subnet], undefined);
      assert.ok(!(await w.store.listRouteStatus('aws')).some((s) => s.node === 'i-0abcdef1234567890'), 'its route status went too');
    });

    test('a failed reconcile is reported for that record only, to come back later; invoked directly, it throws', async () => {
      // The function without its EC2 grants, as if infra forgot them: EC2 refuses its every call.
      const routes = { ...ec2.routeMap('rtb-main') };
      const seen = w.iam.refusals.length;
      await w.revoking('InstanceEvents', ['ec2:*'], async () => {
        const r = await eventsHandler({
          Records: [sqsRecord('bad', '[1,2]'), sqsRecord('fails', JSON.stringify(ec2Event('i-1234567890abcdef0', 'stopped')), 2)],
        } satisfies SQSEvent);
        assert.deepEqual(r, { batchItemFailures: [{ itemIdentifier: 'fails' }] });
        await assert.rejects(
          eventsHandler(ec2Event('i-1234567890abcdef0', 'stopped') as never),
          /event not handled, to be retried: .*You are not authorized to perform this operation\. User: arn:aws:sts::123456789012:assumed-role\/twill-test-InstanceEventsRole\/twill-test-InstanceEvents is not authorized to perform: ec2:Describe\w+ on resource: \*/,
        );
      });
      assert.ok(w.iam.refusals.splice(seen).every((x) => x.action?.startsWith('ec2:Describe')), 'refused at the first EC2 call, nothing else');
      assert.deepEqual(ec2.routeMap('rtb-main'), routes, 'no route changed');
    });
  });

  describe('schedule', () => {
    const scheduled: ScheduledEvent = {
      version: '0',
      id: '53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa',
      'detail-type': 'Scheduled Event',
      source: 'aws.events',
      account: ACCOUNT,
      time: '2026-11-25T10:00:00Z',
      region: REGION,
      resources: [`arn:aws:events:${REGION}:${ACCOUNT}:rule/twill-test-Maintenance`],
      detail: {},
    };
    const newLease = (node: string, subnet: string, expiresAt: string | null) => ({
      network: 'edge', node, subnet, ipv6Subnet: null, publicIP: '192.0.2.50', publicIPv6: null, backendType: 'vxlan' as const,
      backendData: {}, expiresAt, createdAt: new Date().toISOString(),
    });

    test('a lease written to the store without its publish reaches agents through the node API', async () => {
      // As if a function wrote the store and died before publishing: the next
      // change shows agents a gap, and the node API has what they missed.
      const before = (await w.store.getNetwork('edge'))!.revision;
      const quiet = await w.store.createLease(newLease('quiet-1', '10.60.200.0/24', null));
      const res = (await nodeApiHandler(urlEvent('GET', '/v2/networks/edge/changes', { query: { since: String(before) }, headers: { authorization: `Basic ${Buffer.from(`edge-1:${edgePassword}`).toString('base64')}` } }) as never)) as { statusCode: number; body: string };
      assert.equal(res.statusCode, 200);
      const body = JSON.parse(Buffer.from(res.body as string, 'base64').toString('utf8')) as { changes: { revision: number; node: string; lease: Lease }[] };
      assert.deepEqual(body.changes.map((c) => [c.revision, c.node, c.lease.subnet]), [[quiet.revision, 'quiet-1', '10.60.200.0/24']]);
      const wrong = (await nodeApiHandler(urlEvent('GET', '/v2/networks/edge/changes', { query: { since: String(before) }, headers: { authorization: `Basic ${Buffer.from('edge-1:wrong').toString('base64')}` } }) as never)) as { statusCode: number; body: string };
      assert.equal(wrong.statusCode, 403);
      await w.store.deleteLease('edge', 'quiet-1');
    });

    test('republish: a retained network config missing from the broker is published again, and only then', async () => {
      w.iot.retained.delete(w.topics.netConfig('edge'));
      const r = await scheduleHandler({ tasks: ['republish'] });
      assert.deepEqual(r.republish?.republished, ['edge']);
      assert.equal(r.expired, undefined, 'only the task asked for ran');
      await waitFor('config published', () => payloadOf<{ config: { Network: string } }>(w.topics.netConfig('edge'))?.config.Network === '10.60.0.0/16');
      const again = await scheduleHandler({ tasks: ['republish'] });
      assert.deepEqual(again.republish?.republished, []);
    });

    test('expire: an expired lease is removed and every member hears of it', async () => {
      await w.store.createLease(newLease('gone-1', '10.60.201.0/24', new Date(Date.now() - 60_000).toISOString()));
      const r = await scheduleHandler({ tasks: ['expire'] });
      assert.equal(r.expired, 1);
      assert.equal(await w.store.getLease('edge', 'gone-1'), undefined);
      await waitFor('removal published', () => { const c = payloadOf<{ node: string; lease: null }>(w.topics.netChanges('edge')); return c?.node === 'gone-1' && c.lease === null; });
    });

    test("EventBridge's Scheduled Event runs everything: an instance no event told of gets its route", async () => {
      ec2.addInstance({ id: 'i-00000000000000077', network: 'aws' });
      const r: ScheduleReport = await scheduleHandler(scheduled);
      assert.equal(r.expired, 0);
      assert.ok(r.reconciled?.includes('aws'));
      assert.deepEqual(r.republish?.republished, []);
      const lease = await w.store.getLease('aws', 'i-00000000000000077');
      assert.ok(lease?.subnet);
      assert.equal(ec2.routeMap('rtb-main')[lease.subnet], 'eni-00000000000000077');
    });

    test('each run emits the fabric as CloudWatch metrics in the embedded metric format', async () => {
      const lines: string[] = [];
      const write = process.stdout.write.bind(process.stdout);
      (process.stdout as { write: unknown }).write = (chunk: string | Uint8Array, ...rest: unknown[]) => {
        const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
        if (text.startsWith('{"_aws"')) lines.push(text);
        else return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
        return true;
      };
      // Agents of edge in each state; the run reports them from the counts kept as statuses were written.
      const put = (node: string, status: Status) => w.store.putStatus({ network: 'edge', node, status, updatedAt: new Date().toISOString() });
      await put('fig-1', { v: 2, state: 'online', inSync: true, errors: [] });
      await put('fig-2', { v: 2, state: 'online', inSync: false, errors: [] });
      await put('fig-3', { v: 2, state: 'offline', errors: [] });
      const edgeStatuses = await w.store.listStatus('edge');
      const statusReads = () => [...w.dynamo.throughput.loads()].filter(([k]) => /^NET#edge#S[0-9a-f]{2}$/.test(k)).reduce((n, [, l]) => n + l.readUnits, 0);
      const readBefore = statusReads();
      // (in Lambda only: the handlers run in tests and benches too)
      process.env.AWS_LAMBDA_FUNCTION_NAME = 'twill-test-Maintenance';
      try {
        await scheduleHandler(scheduled);
      } finally {
        (process.stdout as { write: unknown }).write = write;
        delete process.env.AWS_LAMBDA_FUNCTION_NAME;
      }
      const docs = lines.map((l) => { assert.ok(l.endsWith('\n') && !l.slice(0, -1).includes('\n'), 'one JSON document per line'); return JSON.parse(l) as Record<string, unknown> & { _aws: { Timestamp: number; CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string; Unit: string }[] }[] } }; });
      // The specification's shape: every dimension a string member, every metric a number member, a unit each.
      for (const d of docs) {
        assert.ok(Math.abs(d._aws.Timestamp - Date.now()) < 60_000);
        for (const dir of d._aws.CloudWatchMetrics) {
          assert.equal(dir.Namespace, 'twill');
          for (const set of dir.Dimensions) for (const dim of set) assert.equal(typeof d[dim], 'string', dim);
          assert.ok(dir.Metrics.length >= 1 && dir.Metrics.length <= 100);
          for (const m of dir.Metrics) {
            assert.equal(typeof d[m.Name], 'number', m.Name);
            assert.match(m.Unit, /^(Count|Milliseconds|Seconds|None)$/);
          }
        }
      }
      const of = (network: string) => docs.find((d) => d.Network === network);
      const aws = of('aws');
      assert.ok(aws, `a document for the aws network: ${lines.join('')}`);
      assert.equal(aws.Stage, PREFIX);
      const leases = (await w.store.listLeases('aws')).length;
      assert.equal(aws.Leases, leases);
      assert.equal(aws.RouteLimit, 50, "aws-vpc's route limit");
      // The account's quota, as the function read it under its own grant (Service Quotas, vpc/L-93826ACB).
      assert.deepEqual((await w.store.getRouteTables('aws'))?.tables.map((t) => [t.what, t.limit, (t as { source?: string }).source]), [['route table rtb-main', 50, 'quota']]);
      assert.equal(aws.Routes, Object.keys(ec2.routeMap('rtb-main')).filter((d) => d.startsWith('10.')).length);
      assert.equal(typeof aws.PendingRoutes, 'number');
      // Every route of the table counts against its limit, the local route and other owners' too (not propagated ones).
      assert.equal(aws.RouteTableUse, ec2.routesOf('rtb-main').filter((r) => r.origin !== 'EnableVgwRoutePropagation').length);
      assert.ok((aws.RouteTableUse as number) > (aws.Routes as number), "more than twill's own");
      assert.equal(aws.ReconcileErrors, 0);
      assert.ok(typeof of('edge')?.FreeSubnets === 'number' && (of('edge')?.FreeSubnets as number) > 0);
      assert.equal(of('edge')?.AgentsOnline, edgeStatuses.filter((r) => r.status.state === 'online').length);
      assert.equal(of('edge')?.AgentsOutOfSync, edgeStatuses.filter((r) => r.status.state === 'online' && r.status.inSync === false).length);
      assert.ok((of('edge')?.AgentsOutOfSync as number) >= 1);
      assert.equal(statusReads() - readBefore, SHARDS, "the run read each shard's counts (one unit each) and no status");
      const run = docs.find((d) => d.Network === undefined);
      assert.equal(run?.ScheduledTaskFailures, 0);
    });

    test('two runs at once: one runs, the other exits at once and says who holds the run lock until when', async () => {
      const level = process.env.TWILL_LOG_LEVEL;
      await w.setEnv({ TWILL_LOG_LEVEL: 'warn' });
      try {
        await twoRuns();
      } finally {
        await w.setEnv({ TWILL_LOG_LEVEL: level });
      }
    });

    async function twoRuns(): Promise<void> {
      let inCloud!: () => void;
      const reached = new Promise<void>((r) => (inCloud = r));
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let holding = true;
      // The first run is still reconciling (EC2 is slow to answer) when the next minute's run starts.
      ec2.onAction = async (action) => {
        if (holding && action === 'DescribeInstances') {
          holding = false;
          inCloud();
          await held;
        }
      };
      const ctx = (id: string) => ({ ...lambdaContext('twill-test-Maintenance'), awsRequestId: id });
      let running: Promise<ScheduleReport> | undefined;
      const lines: string[] = [];
      const write = process.stderr.write.bind(process.stderr);
      try {
        running = scheduleHandler({ tasks: ['reconcile'] }, ctx('run-1'));
        await reached;
        (process.stderr as { write: unknown }).write = (chunk: string | Uint8Array) => { lines.push(String(chunk)); return true; };
        let second: ScheduleReport;
        try {
          second = await scheduleHandler({ tasks: ['reconcile'] }, ctx('run-2'));
        } finally {
          (process.stderr as { write: unknown }).write = write;
        }
        assert.match(second.skipped ?? '', /^run run-1 holds the run lock until \d{4}-\d\d-\d\dT/);
        assert.deepEqual(second.failed, {});
        assert.equal(second.reconciled, undefined, 'the second run did nothing');
        assert.ok(lines.some((l) => /warn lambda\/schedule: scheduled run skipped: the previous run is still going holder=run-1 until=/.test(l)), lines.join(''));
      } finally {
        release();
        ec2.onAction = undefined;
      }
      const first = await running;
      assert.ok(first.reconciled?.includes('aws'));
      // Released at the end of the run: the next one runs.
      assert.equal((await scheduleHandler({ tasks: ['expire'] }, ctx('run-3'))).skipped, undefined);
    }

    test('a run that died holds the run lock only until its timeout: the next run takes it over', async () => {
      const now = Date.now();
      // Taken five minutes ago for five minutes: the holder timed out just now.
      assert.equal((await w.store.tryLock(schedule.RUN_LOCK, 'died-mid-run', 300_000, now - 300_000)).acquired, true);
      const r = await scheduleHandler({ tasks: ['expire'] }, { ...lambdaContext('twill-test-Maintenance'), awsRequestId: 'run-4' });
      assert.equal(r.skipped, undefined);
      assert.equal(typeof r.expired, 'number');
      assert.equal(await w.store.unlock(schedule.RUN_LOCK, 'died-mid-run'), false, 'no longer its lock');
    });

    test('a failing network fails the run (for the error metric) after the other tasks ran', async () => {
      // EC2 refuses the schedule's every call (its EC2 grants taken away).
      const seen = w.iam.refusals.length;
      await w.revoking('Maintenance', ['ec2:*'], async () => {
        await w.store.createLease(newLease('gone-2', '10.60.202.0/24', new Date(Date.now() - 60_000).toISOString()));
        await assert.rejects(scheduleHandler(scheduled), /scheduled run failed for aws/);
        assert.equal(await w.store.getLease('edge', 'gone-2'), undefined, 'expiry ran regardless');
      });
      assert.ok(w.iam.refusals.splice(seen).every((x) => x.action?.startsWith('ec2:')));
    });

    test('with no event at all, the schedule deletes the route of an instance that left and puts a misdirected one right', async () => {
      const gone = (await w.store.getLease('aws', 'i-00000000000000077'))!.subnet!;
      const kept = (await w.store.getLease('aws', 'i-1234567890abcdef0'))!.subnet!;
      ec2.instances.get('i-00000000000000077')!.state = 'terminated';
      ec2.routesOf('rtb-main').find((r) => r.destinationCidrBlock === kept)!.networkInterfaceId = 'eni-00000000000000077';
      const r = await scheduleHandler({ tasks: ['reconcile'] });
      assert.deepEqual(r.failed, {});
      assert.equal(ec2.routeMap('rtb-main')[gone], undefined);
      assert.equal(await w.store.getLease('aws', 'i-00000000000000077'), undefined);
      assert.equal(ec2.routeMap('rtb-main')[kept], 'eni-1234567890abcdef0');
    });
  });

  // Bounded for a hang only: each wait inside is for something the product promises.
  describe('GCE and Alibaba events: acknowledged once queued, reconciled from the queue', { timeout: 240_000 }, () => {
    let events: EventSource;
    let pushUrl: { url: string; close(): Promise<void> };
    let pubsub: FakePushSubscription;
    const SUBSCRIPTION = 'projects/my-project/subscriptions/twill';
    const queued = () => w.sqs.calls.SendMessage ?? 0;

    before(async () => {
      // The push function behind its function URL, Pub/Sub pushing to it as
      // a subscription with authentication, a dead-letter policy and the
      // default 10 s ack deadline does, and the events function on the queue
      // through Lambda's event source mapping.
      pushUrl = await functionUrl(pushHandler);
      pubsub = new FakePushSubscription({
        endpoint: `${pushUrl.url}/gce`, subscription: SUBSCRIPTION, token: () => token({}),
        deadLetterPolicy: { deadLetterTopic: 'projects/my-project/topics/twill-dead', maxDeliveryAttempts: 5 },
      });
      events = await startSqsEventSource({
        clientConfig: w.sqs.clientConfig, queueUrl: w.eventsQueue.url, queueArn: w.eventsQueue.arn,
        handler: eventsHandler, timeoutSeconds: EVENTS_VISIBILITY_SECONDS, batchingWindowSeconds: 1,
      });
    });
    after(async () => {
      pubsub?.close();
      await events?.stop();
      await pushUrl?.close();
    });

    const auditEntry = (name: string) => {
      const e = fixture('gce-audit-instances-delete.json') as { protoPayload: { resourceName: string }; resource: { labels: Record<string, string> } };
      return JSON.stringify({ ...e, protoPayload: { ...e.protoPayload, resourceName: `projects/my-project/zones/us-east1-b/instances/${name}` }, resource: { ...e.resource, labels: { ...e.resource.labels, instance_id: undefined } } });
    };
    const leaseOfGce = async (name: string) => {
      const id = [...gce.instances.values()].find((i) => i.name === name)!.id;
      return w.store.getLease('gce', id);
    };

    test('a GCE push is acknowledged on its first delivery while GCE is slow; the queued event then reconciles the network', async () => {
      gce.addInstance({ name: 'node-8', twill: 'gce' });
      let inGce!: () => void;
      const reachedGce = new Promise<void>((r) => (inGce = r));
      let release!: () => void;
      const slowGce = new Promise<void>((r) => (release = r));
      // GCE's operations take their time: the route's operation is not done until the test says so.
      gce.onAction = async (action) => {
        if (action === 'globalOperations.wait') {
          inGce();
          await slowGce;
        }
      };
      try {
        const id = pubsub.publish(auditEntry('node-8'));
        assert.equal(await pubsub.settled(id), 'acked');
        await reachedGce;
        // The reconcile is under way, stuck in GCE, and Pub/Sub has had its answer: no second delivery.
        assert.deepEqual(pubsub.deliveriesOf(id).map((d) => [d.attempt, d.result]), [[1, 200]]);
      } finally {
        release();
        gce.onAction = undefined;
      }
      await waitFor('the route from the queued event', async () => {
        const lease = await leaseOfGce('node-8');
        return !!lease?.subnet && gce.routeMap()[lease.subnet] === 'node-8';
      });
      assert.equal(pubsub.deadLettered.length, 0);
    });

    test('a push whose reconcile fails is acknowledged all the same and retried from the queue, not by Pub/Sub', async () => {
      gce.addInstance({ name: 'node-9', twill: 'gce' });
      gce.deny['instances.aggregatedList'] = 1;
      const mark = events.invocations.length;
      const id = pubsub.publish(auditEntry('node-9'));
      assert.equal(await pubsub.settled(id), 'acked');
      const failed = await events.next((i) => i.records.some((r) => r.body.includes(id)), mark);
      assert.equal(failed.outcome, 'partial', JSON.stringify(failed));
      const retried = await events.next((i) => i.outcome === 'ok' && i.records.some((r) => r.body.includes(id) && r.receiveCount === 2), mark);
      assert.ok(retried);
      const lease = await leaseOfGce('node-9');
      assert.equal(gce.routeMap()[lease?.subnet ?? ''], 'node-9');
      assert.deepEqual(pubsub.deliveriesOf(id).map((d) => d.attempt), [1], 'Pub/Sub delivered it once');
    });

    test('the instance gone from GCE: the queued event releases its lease and deletes its route', async () => {
      const inst = [...gce.instances.entries()].find(([, i]) => i.name === 'node-8')!;
      const subnet = (await w.store.getLease('gce', inst[1].id))!.subnet!;
      gce.instances.delete(inst[0]);
      const id = pubsub.publish(auditEntry('node-8'));
      assert.equal(await pubsub.settled(id), 'acked');
      await waitFor('the lease released and the route deleted', async () => (await w.store.getLease('gce', inst[1].id)) === undefined && gce.routeMap()[subnet] === undefined);
    });

    test('missing, malformed, wrong audience, wrong service account, unverified, expired, wrong issuer and badly signed tokens are refused, and nothing is queued', async () => {
      const post = (authorization: string | undefined) =>
        pushHandler(urlEvent('POST', '/gce', { headers: authorization ? { authorization } : {}, body: JSON.stringify({ message: { data: b64(auditEntry('node-8')), messageId: '1' }, subscription: SUBSCRIPTION }) })).then(structured);
      const cases: [string, string | undefined, number, RegExp][] = [
        ['missing', undefined, 401, /missing bearer token/],
        ['not a bearer', 'Basic dXNlcjpwYXNz', 401, /missing bearer token/],
        ['malformed', 'Bearer not.a.jwt', 403, /malformed token/],
        ['wrong audience', `Bearer ${await token({ aud: 'https://someone-else.example/push' })}`, 403, /claim aud/],
        ['wrong service account', `Bearer ${await token({ email: 'intruder@evil-project.iam.gserviceaccount.com' })}`, 403, /not the configured service account/],
        ['unverified email', `Bearer ${await token({ email_verified: false })}`, 403, /not verified/],
        ['expired', `Bearer ${await token({}, { expiresIn: Math.floor(Date.now() / 1000) - 600 })}`, 403, /expired/],
        ['wrong issuer', `Bearer ${await token({ iss: 'https://evil.example' })}`, 403, /claim iss/],
        ['bad signature', `Bearer ${await token({}, { key: otherKey })}`, 403, /bad signature/],
        ['unknown key', `Bearer ${await token({}, { key: otherKey, kid: 'not-googles' })}`, 403, /key Google does not publish/],
      ];
      const before = queued();
      for (const [what, auth, status, reason] of cases) {
        const r = await post(auth);
        assert.equal(r.statusCode, status, `${what}: ${JSON.stringify(r.body)}`);
        assert.match(String(r.body.error), reason, what);
      }
      assert.equal(queued(), before, 'a refused request reaches no queue');
    });

    test('an authenticated poison or unfinished-operation event is acknowledged and not queued; other methods and paths are refused', async () => {
      const auth = `Bearer ${await token({})}`;
      const post = (body: string) => pushHandler(urlEvent('POST', '/gce', { headers: { authorization: auth }, body })).then(structured);
      const before = queued();
      const bad = await post('{"message": {"data": "!!!"}}');
      assert.equal(bad.statusCode, 200);
      assert.match(String(bad.body.dropped), /not base64/);
      const wrongCloud = await post(JSON.stringify(fixture('ali-ecs-state-change.json')));
      assert.equal(wrongCloud.statusCode, 200);
      assert.match(String(wrongCloud.body.dropped), /a ali event was sent to the gce entry point/);
      const unfinished = JSON.parse(auditEntry('node-8')) as { operation: object };
      const first = await post(JSON.stringify({ message: { data: b64(JSON.stringify({ ...unfinished, operation: { id: 'op-1', first: true } })) } }));
      assert.equal(first.statusCode, 200);
      assert.match(String(first.body.ignored), /not finished: waiting for the entry with operation.last/);
      assert.equal(queued(), before, 'nothing to reconcile was queued');
      assert.equal(structured(await pushHandler(urlEvent('GET', '/gce'))).statusCode, 405);
      assert.equal(structured(await pushHandler(urlEvent('POST', '/elsewhere', { body: '{}' }))).statusCode, 404);
    });

    test('when the queue does not take the event the answer is 503, so the pusher sends it again; one SQS can never carry is dropped', async () => {
      const auth = `Bearer ${await token({})}`;
      const body = JSON.stringify({ message: { data: b64(auditEntry('node-8')), messageId: '7' }, subscription: SUBSCRIPTION });
      // The queue gone for a moment (deleted by hand; its grant still names it).
      const queue = [...w.sqs.queues.entries()].find(([, q]) => q.url === w.eventsQueue.url)!;
      try {
        w.sqs.queues.delete(queue[0]);
        const r = structured(await pushHandler(urlEvent('POST', '/gce', { headers: { authorization: auth }, body })));
        assert.equal(r.statusCode, 503);
        assert.match(String(r.body.error), /not queued, send again: The specified queue does not exist/);
      } finally {
        w.sqs.queues.set(queue[0], queue[1]);
      }
      // Valid JSON, a valid event, but a character SQS refuses in a body: no retry could ever queue it.
      const odd = JSON.stringify({ ...fixture('ali-ecs-state-change.json'), id: 'event-\uffff' });
      const r = structured(await pushHandler(urlEvent('POST', '/ali', { headers: { authorization: `Bearer ${ALI_TOKEN}` }, body: odd })));
      assert.equal(r.statusCode, 200);
      assert.match(String(r.body.dropped), /the queue refused it: Invalid binary character '#xFFFF'/);
    });

    test('without a configured audience and service account, every GCE push is refused', async () => {
      try {
        await w.setEnv({ TWILL_GCE_PUSH_AUDIENCE: undefined });
        const r = structured(await pushHandler(urlEvent('POST', '/gce', { headers: { authorization: `Bearer ${await token({})}` }, body: '{}' })));
        assert.equal(r.statusCode, 503);
      } finally {
        await w.setEnv({ TWILL_GCE_PUSH_AUDIENCE: AUDIENCE });
      }
    });

    describe('Alibaba Cloud EventBridge', () => {
      const body = JSON.stringify(fixture('ali-ecs-state-change.json'));
      const post = (opts: { headers?: Record<string, string>; query?: Record<string, string> }) => pushHandler(urlEvent('POST', '/ali', { ...opts, body })).then(structured);
      /** EventBridge's HTTPS target: a POST to the function URL. */
      const deliver = (headers: Record<string, string>) => fetch(`${pushUrl.url}/ali`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });

      test('the shared token, in a header or the query string: the event is queued at once and reconciles the ali-vpc network from the queue', async () => {
        ali.addInstance({ id: 'i-bp1ecr0000000go2go', network: 'ali' });
        const res = await deliver({ authorization: `Bearer ${ALI_TOKEN}` });
        assert.equal(res.status, 200);
        const answer = (await res.json()) as { queued?: string; instance?: string; state?: string };
        assert.ok(answer.queued, JSON.stringify(answer));
        assert.deepEqual([answer.instance, answer.state], ['i-bp1ecr0000000go2go', 'stopping']);
        await waitFor('the route from the queued event', async () => {
          const lease = await w.store.getLease('ali', 'i-bp1ecr0000000go2go');
          return !!lease?.subnet && ali.routeMap('vtb-sys')[lease.subnet] === 'i-bp1ecr0000000go2go';
        });
        assert.equal((await post({ headers: { 'x-twill-token': ALI_TOKEN } })).statusCode, 200);
        assert.equal((await post({ query: { token: ALI_TOKEN } })).statusCode, 200);
      });

      test('a delivery whose reconcile fails is acknowledged and retried from the queue', async () => {
        ali.addInstance({ id: 'i-bp1ecr0000000go3go', network: 'ali' });
        ali.forbid.DescribeInstances = 1;
        const mark = events.invocations.length;
        const res = await deliver({ 'x-twill-token': ALI_TOKEN });
        assert.equal(res.status, 200);
        const { queued: messageId } = (await res.json()) as { queued: string };
        const failed = await events.next((i) => i.records.some((r) => r.messageId === messageId), mark);
        // (Events of the same network batched with it fail with it: they share its one reconcile.)
        assert.equal(failed.outcome, 'partial');
        assert.ok(failed.retried.includes(messageId), JSON.stringify(failed));
        await events.next((i) => i.outcome === 'ok' && i.records.some((r) => r.messageId === messageId && r.receiveCount === 2), mark);
        const lease = await w.store.getLease('ali', 'i-bp1ecr0000000go3go');
        assert.equal(ali.routeMap('vtb-sys')[lease?.subnet ?? ''], 'i-bp1ecr0000000go3go');
      });

      test('a missing or wrong token is refused; an unset token refuses everything', async () => {
        assert.equal((await post({})).statusCode, 401);
        const wrong = await post({ headers: { authorization: `Bearer ${ALI_TOKEN}x` } });
        assert.equal(wrong.statusCode, 403);
        assert.equal(wrong.body.error, 'wrong token');
        assert.equal((await post({ query: { token: 'nope' } })).statusCode, 403);
        const saved = w.ssm.parameters.get(ALI_PARAM)!;
        try {
          w.ssm.parameters.set(ALI_PARAM, { value: 'none', type: 'SecureString' });
          await w.setEnv({});
          assert.equal((await post({ headers: { authorization: `Bearer ${ALI_TOKEN}` } })).statusCode, 503);
        } finally {
          w.ssm.parameters.set(ALI_PARAM, saved);
          await w.setEnv({});
        }
      });
    });
  });

  describe('function URL: admin API', () => {
    test('the admin token from SSM guards every call', async () => {
      assert.equal(structured(await apiHandler(urlEvent('GET', '/v1/status'))).statusCode, 401);
      assert.equal(structured(await apiHandler(urlEvent('GET', '/v1/status', { headers: { authorization: 'Bearer wrong' } }))).statusCode, 403);
      const ok = structured(await apiHandler(urlEvent('GET', '/v1/status', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })));
      assert.equal(ok.statusCode, 200);
      const names = (ok.body.networks as { name: string }[]).map((n) => n.name).sort();
      assert.deepEqual(names, ['ali', 'aws', 'edge', 'gce']);
      assert.ok((ok.body.agents as { node: string }[]).some((a) => a.node === 'edge-1'), 'statuses from the IoT rule show');
    });

    test('node add prints a config that connects to IoT Core through the authorizer, as is', async () => {
      const r = structured(await apiHandler(urlEvent('POST', '/v1/nodes', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, body: JSON.stringify({ name: 'edge-2', network: 'edge' }) })));
      assert.equal(r.statusCode, 201, JSON.stringify(r.body));
      const host = new URL(process.env.TWILL_IOT_ENDPOINT!).host;
      assert.deepEqual({ ...r.body, password: '*' }, {
        broker: `wss://${host}/mqtt`, network: 'edge', node: 'edge-2', username: 'edge-2', password: '*', prefix: PREFIX, authorizer: AUTHORIZER,
      });
      // The agent takes it unchanged.
      const opts = agentOptions(r.body as never, {}, silentLogger);
      assert.equal(opts.authorizer, AUTHORIZER);
    });

    test('node remove: its credentials go and IoT Core is asked to cut its session (DeleteConnection)', async () => {
      const r = structured(await apiHandler(urlEvent('DELETE', '/v1/nodes/edge-2', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })));
      assert.equal(r.statusCode, 200, JSON.stringify(r.body));
      assert.equal(await w.store.getNode('edge-2'), undefined);
      // Not connected here: IoT Core answers ResourceNotFoundException, which is no failure.
      assert.deepEqual(w.iot.disconnects.at(-1), { clientId: nodeClientId(PREFIX, 'edge', 'edge-2'), cleanSession: true, preventWillMessage: true, closed: false });
    });

    test('the dashboard: its page without a token, the view with one, gzipped for a browser, and no secret in it', async () => {
      const page = (await apiHandler(urlEvent('GET', '/dashboard/'))) as { statusCode: number; headers: Record<string, string>; body: string };
      assert.equal(page.statusCode, 200);
      assert.match(page.body, /<title>twill fabric<\/title>/);
      assert.match(page.headers['content-security-policy'] ?? '', /default-src 'none'/);
      assert.equal(structured(await apiHandler(urlEvent('GET', '/v1/dashboard'))).statusCode, 401);
      const r = (await apiHandler(urlEvent('GET', '/v1/dashboard', { headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'accept-encoding': 'gzip, deflate, br' } }))) as LambdaFunctionURLResult & { body: string; isBase64Encoded?: boolean; headers: Record<string, string> };
      assert.equal(r.isBase64Encoded, true);
      assert.equal(r.headers['content-encoding'], 'gzip');
      const text = gunzipSync(Buffer.from(r.body, 'base64')).toString();
      const view = JSON.parse(text) as { networks: { name: string; cloud?: unknown }[]; nodes: { name: string }[] };
      assert.deepEqual(view.networks.map((n) => n.name).sort(), ['ali', 'aws', 'edge', 'gce']);
      assert.ok(view.networks.find((n) => n.name === 'aws')?.cloud, 'a cloud network says its route tables');
      assert.ok(!text.includes(ALI_KEY.AccessKeySecret) && !text.includes('passwordHash'), 'no cloud key and no password hash');
    });

    test("node rotate-key: the deployed Api function writes the token with the grants it has, and the node's own topic on IoT Core carries it", async () => {
      const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
      const conf = JSON.stringify({ Network: '10.78.0.0/16', Backend: { Type: 'wireguard', PSK: 'OIs054scftosjpbAXMvET57nRkfDGVaUNYekykIwE9U=' } });
      assert.equal(structured(await apiHandler(urlEvent('PUT', '/v1/networks/wgd', { headers: auth, body: conf }))).statusCode, 200);
      try {
        assert.equal(structured(await apiHandler(urlEvent('POST', '/v1/nodes', { headers: auth, body: JSON.stringify({ name: 'wg-1', network: 'wgd' }) }))).statusCode, 201);
        const none = structured(await apiHandler(urlEvent('POST', '/v1/nodes/wg-1/rotate-key', { headers: auth })));
        assert.equal(none.statusCode, 404);
        assert.match(String(none.body.error), /node wg-1 holds no lease in network wgd/);
        assert.equal(structured(await apiHandler(urlEvent('PUT', '/v1/leases/wgd/wg-1', { headers: auth, body: JSON.stringify({ subnet: '10.78.5.0/24' }) }))).statusCode, 200);
        const r = structured(await apiHandler(urlEvent('POST', '/v1/nodes/wg-1/rotate-key', { headers: auth })));
        assert.equal(r.statusCode, 200, JSON.stringify(r.body));
        const { token, revision } = r.body as { token: string; revision: number };
        assert.deepEqual(r.body, { node: 'wg-1', network: 'wgd', token, revision });
        const lease = await w.store.getLease('wgd', 'wg-1');
        assert.deepEqual([lease?.rotateKey, lease?.revision], [token, revision]);
        const own = JSON.parse(w.iot.retained.get(w.topics.nodeLease('wgd', 'wg-1'))?.payload.toString() ?? '{}') as { lease?: { rotateKey?: string } };
        assert.equal(own.lease?.rotateKey, token);
      } finally {
        await apiHandler(urlEvent('DELETE', '/v1/networks/wgd', { headers: auth, query: { force: 'true' } }));
      }
    });

    test('network remove: refused with leases, forced it clears the retained config on IoT Core', async () => {
      const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
      const conf = JSON.stringify({ Network: '10.77.0.0/16', Backend: { Type: 'alloc' } });
      assert.equal(structured(await apiHandler(urlEvent('PUT', '/v1/networks/gone', { headers: auth, body: conf }))).statusCode, 200);
      assert.equal(structured(await apiHandler(urlEvent('PUT', '/v1/leases/gone/g-1', { headers: auth, body: JSON.stringify({ subnet: '10.77.5.0/24' }) }))).statusCode, 200);
      assert.ok(w.iot.retained.has(w.topics.netConfig('gone')));
      const refused = structured(await apiHandler(urlEvent('DELETE', '/v1/networks/gone', { headers: auth })));
      assert.equal(refused.statusCode, 409);
      assert.match(String(refused.body.error), /still has 1 lease\(s\) and 0 node\(s\)/);
      assert.ok(await w.store.getNetwork('gone'));
      const forced = structured(await apiHandler(urlEvent('DELETE', '/v1/networks/gone', { headers: auth, query: { force: 'true' } })));
      assert.equal(forced.statusCode, 200, JSON.stringify(forced.body));
      assert.deepEqual(forced.body, { removed: 'gone', released: 1, nodes: [] });
      assert.equal(await w.store.getNetwork('gone'), undefined);
      assert.ok(!w.iot.retained.has(w.topics.netConfig('gone')), 'the empty retained publish deleted the config');
      assert.ok(!w.iot.retained.has(w.topics.nodeLease('gone', 'g-1')));
    });

    test('network remove --force takes dynamodb:BatchWriteItem, granted to the Api function: without it DynamoDB refuses, and the log names the action', async () => {
      const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
      const conf = JSON.stringify({ Network: '10.78.0.0/16', Backend: { Type: 'alloc' } });
      const put = async () => assert.equal(structured(await apiHandler(urlEvent('PUT', '/v1/networks/grantless', { headers: auth, body: conf }))).statusCode, 200);
      const remove = () => apiHandler(urlEvent('DELETE', '/v1/networks/grantless', { headers: auth, query: { force: 'true' } })).then(structured);
      await put();
      await w.store.putStatus({ network: 'grantless', node: 'n-1', status: { v: 2, state: 'online', agentVersion: 'test', backend: 'alloc', subnet: null, ipv6Subnet: null, revision: 1, inSync: true, peers: 0, errors: [] }, updatedAt: new Date().toISOString() });
      assert.ok((await w.store.listStatus()).some((s) => s.network === 'grantless'), 'the status is stored');

      const seen = w.iam.refusals.length;
      const { result, log } = await logged(() => w.revoking('Api', ['dynamodb:BatchWriteItem'], remove));
      assert.equal(result.statusCode, 500, JSON.stringify(result.body));
      const table = `arn:aws:dynamodb:${REGION}:${ACCOUNT}:table/twill-test`;
      const refused = w.iam.refusals.splice(seen);
      assert.deepEqual(refused.map((x) => [x.principal, x.action, x.resource]), [[`arn:aws:sts::${ACCOUNT}:assumed-role/twill-test-ApiRole/twill-test-Api`, 'dynamodb:BatchWriteItem', table]]);
      // The operator reads why in the function's log: the action and the resource, in DynamoDB's words.
      assert.match(log, /api call failed/);
      assert.ok(log.includes(`is not authorized to perform: dynamodb:BatchWriteItem on resource: ${table} because no identity-based policy allows the dynamodb:BatchWriteItem action`), log);
      // What the issue saw on AWS: the network item gone, the rest of what it kept left behind.
      assert.equal(await w.store.getNetwork('grantless'), undefined);

      // With the grant as infra gives it, the same removal clears the partition.
      await put();
      const r = await remove();
      assert.equal(r.statusCode, 200, JSON.stringify(r.body));
      assert.ok(!(await w.store.listStatus()).some((s) => s.network === 'grantless'));
    });

    test('a base64 body (function URLs encode non-text content types) is read the same', async () => {
      const ev = { ...urlEvent('PUT', '/v1/leases/edge/edge-9', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }), body: b64(JSON.stringify({ subnet: '10.60.250.0/24' })), isBase64Encoded: true };
      const r = structured(await apiHandler(ev));
      assert.equal(r.statusCode, 200, JSON.stringify(r.body));
      assert.equal((await w.store.getLease('edge', 'edge-9'))?.subnet, '10.60.250.0/24');
    });
  });

  test('every call the handlers above made was within their functions\' grants', () => {
    // (the tests that took a grant away took their refusals out)
    assert.deepEqual(w.iam.refusals, []);
  });

  test('and each function used every action it is granted: none is granted more than its code paths call', () => {
    // Granted ahead of the code: the scheduled republish's cleanup of retained
    // topics the store no longer backs lists them (issue 20).
    const ahead: Partial<Record<FunctionName, string[]>> = { Maintenance: ['iot:ListRetainedMessages'] };
    const unused = Object.fromEntries(FUNCTIONS.map((fn) => {
      const used = w.iam.allowed.get(`arn:aws:sts::${ACCOUNT}:assumed-role/twill-test-${fn}Role/twill-test-${fn}`) ?? new Set<string>();
      return [fn, [...new Set(GRANTS[fn].flatMap((g) => g.actions))].filter((a) => !used.has(a) && !ahead[fn]?.includes(a))];
    }));
    // Api's DeleteConnection is used here only when a node is removed (below), and on a live connection in agent.iot.test.ts.
    assert.deepEqual(unused, Object.fromEntries(FUNCTIONS.map((fn) => [fn, []])));
  });
});
