// The Lambda handlers, invoked as Lambda invokes them (the exported handler,
// the documented event shapes, the environment infra sets), against DynamoDB
// (dynalite), the fake EC2, GCE and Alibaba endpoints, SSM, and IoT Core's
// data plane forwarding into a real Mosquitto, where a plain MQTT subscriber
// stands in for the agents: whatever a handler published, it receives.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
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
import { addNode } from '../../functions/admin.js';
import { handler as apiHandler } from '../../functions/handlers/api.js';
import { handler as authorizerHandler } from '../../functions/handlers/authorizer.js';
import { handler as eventsHandler } from '../../functions/handlers/cloud-events.js';
import { handler as iotHandler } from '../../functions/handlers/iot.js';
import { handler as nodeApiHandler } from '../../functions/handlers/node-api.js';
import { handler as pushHandler } from '../../functions/handlers/push.js';
import { runtime } from '../../functions/handlers/runtime.js';
import { handler as scheduleHandler, type ScheduleReport } from '../../functions/handlers/schedule.js';
import { SHARDS } from '../../functions/store/dynamo.js';
import { FakeAli } from '../fakes/ali.js';
import { FakeEc2 } from '../fakes/ec2.js';
import { FakeGce } from '../fakes/gce.js';
import { EVENT_FIXTURES, freePort, removeTempDirs, startProc, tempDir, waitFor, type Proc } from '../helpers/procs.js';
import {
  ACCOUNT, ADMIN_TOKEN, ALI_PARAM, ALI_TOKEN, AUTHORIZER, PREFIX, REGION, lambdaContext, onLoopback, startServerless, urlEvent, type ServerlessWorld,
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

/** A local EC2 endpoint that refuses everything, as EC2 does for a role without the permissions. */
async function deniedEc2(): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((_req, res) => {
    res.writeHead(403, { 'content-type': 'text/xml' });
    res.end('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation.</Message></Error></Errors><RequestID>r-1</RequestID></Response>');
  });
  return onLoopback(server);
}

describe('Lambda handlers', () => {
  let dir: string;
  let broker: Proc;
  let brokerUrl: string;
  let w: ServerlessWorld;
  let ec2: FakeEc2;
  let gce: FakeGce;
  let ali: FakeAli;
  let jwks: Server;
  let sub: mqtt.MqttClient;
  /** last payload per topic, as an agent subscribed to everything would hold it */
  const seen = new Map<string, string>();
  let signingKey: CryptoKey;
  let otherKey: CryptoKey;
  let edgePassword: string;

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
      TWILL_GCE_ENDPOINT: gce.url,
      TWILL_GCE_PROJECT: 'my-project',
      GOOGLE_OAUTH_ACCESS_TOKEN: 'test-token',
      TWILL_ALI_ENDPOINT: ali.url,
      TWILL_ALI_REGION: 'cn-hangzhou',
      TWILL_GCE_PUSH_AUDIENCE: AUDIENCE,
      TWILL_GCE_PUSH_SERVICE_ACCOUNT: SERVICE_ACCOUNT,
      TWILL_GCE_JWKS_URL: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/oauth2/v3/certs`,
    });
    // Networks and a node, through the same controller the handlers use.
    const c = runtime().controller;
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
      await iotHandler({ topic: w.topics.nodeHello('edge', 'edge-1'), clientId: 'twill-edge-edge-1', payload: b64(hello()) });
      const lease = await w.store.getLease('edge', 'edge-1');
      assert.ok(lease?.subnet, 'the lease is in DynamoDB');
      await waitFor('own lease on the broker', () => payloadOf<{ lease: Lease }>(w.topics.nodeLease('edge', 'edge-1'))?.lease?.subnet === lease.subnet);
      assert.equal(payloadOf<{ config: { Network: string } }>(w.topics.nodeLease('edge', 'edge-1'))?.config.Network, '10.60.0.0/16');
      assert.equal(payloadOf<{ api: string }>(w.topics.nodeLease('edge', 'edge-1'))?.api, w.nodeApiUrl, 'the agent is told where to list its network');
      await waitFor('the change to every member', () => payloadOf<{ node: string; lease: Lease }>(w.topics.netChanges('edge'))?.node === 'edge-1');
      assert.equal(payloadOf<{ revision: number }>(w.topics.netChanges('edge'))?.revision, lease.revision);
      for (const p of w.iot.published) assert.deepEqual([p.qos, p.retain], [1, p.topic !== w.topics.netChanges(p.topic.split('/')[4] ?? '')], p.topic);

      // The same hello again (IoT Core delivers at least once): the same subnet.
      await iotHandler({ topic: w.topics.nodeHello('edge', 'edge-1'), clientId: 'twill-edge-edge-1', payload: b64(hello()) });
      assert.equal((await w.store.getLease('edge', 'edge-1'))?.subnet, lease.subnet);
    });

    test('a status lands in the store, for twill status', async () => {
      const status = { v: 2, state: 'online', agentVersion: 'test', backend: 'vxlan', subnet: null, ipv6Subnet: null, revision: 3, inSync: true, peers: 0, errors: [] };
      await iotHandler({ topic: w.topics.nodeStatus('edge', 'edge-1'), clientId: 'twill-edge-edge-1', payload: b64(JSON.stringify(status)) });
      const rec = (await w.store.listStatus()).find((s) => s.node === 'edge-1');
      assert.equal(rec?.status.state, 'online');
      assert.equal(rec?.status.revision, 3);
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
  });

  describe('IoT custom authorizer', () => {
    const connect = (username: string, password: string, clientId: string): IoTCustomAuthorizerEvent => ({
      signatureVerified: false,
      protocols: ['tls', 'mqtt'],
      protocolData: { tls: { serverName: 'abc-ats.iot.us-east-1.amazonaws.com' }, mqtt: { username, password: b64(password), clientId } },
      connectionMetadata: { id: 'conn-1' },
    });

    test("a node gets its policy, with the function's own region and account in the ARNs", async () => {
      const r = await authorizerHandler(connect(`edge-1?x-amz-customauthorizer-name=${AUTHORIZER}`, edgePassword, 'twill-edge-edge-1'), lambdaContext('twill-test-RealtimeAuthorizerHandler'));
      assert.equal(r.isAuthenticated, true);
      const doc = JSON.stringify(r.policyDocuments);
      assert.match(doc, new RegExp(`arn:aws:iot:${REGION}:${ACCOUNT}:topic/${PREFIX}/v2/node/edge/edge-1/hello`));
      assert.match(doc, new RegExp(`arn:aws:iot:${REGION}:${ACCOUNT}:topicfilter/${PREFIX}/v2/net/edge/changes"`));
    });

    test('a wrong password is refused', async () => {
      const r = await authorizerHandler(connect('edge-1', 'not-the-password', 'twill-edge-edge-1'), lambdaContext());
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

    test('a failed reconcile is reported for that record only, to come back later; invoked directly, it throws', async () => {
      const denied = await deniedEc2();
      try {
        await w.setEnv({ AWS_ENDPOINT_URL_EC2: denied.url });
        const r = await eventsHandler({
          Records: [sqsRecord('bad', '[1,2]'), sqsRecord('fails', JSON.stringify(ec2Event('i-1234567890abcdef0', 'stopped')), 2)],
        } satisfies SQSEvent);
        assert.deepEqual(r, { batchItemFailures: [{ itemIdentifier: 'fails' }] });
        await assert.rejects(eventsHandler(ec2Event('i-1234567890abcdef0', 'stopped') as never), /event not handled, to be retried: .*not authorized to perform this operation/);
      } finally {
        await w.setEnv({ AWS_ENDPOINT_URL_EC2: ec2.url });
        await denied.close();
      }
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

    test('a failing network fails the run (for the error metric) after the other tasks ran', async () => {
      const denied = await deniedEc2();
      try {
        await w.setEnv({ AWS_ENDPOINT_URL_EC2: denied.url });
        await w.store.createLease(newLease('gone-2', '10.60.202.0/24', new Date(Date.now() - 60_000).toISOString()));
        await assert.rejects(scheduleHandler(scheduled), /scheduled run failed for aws/);
        assert.equal(await w.store.getLease('edge', 'gone-2'), undefined, 'expiry ran regardless');
      } finally {
        await w.setEnv({ AWS_ENDPOINT_URL_EC2: ec2.url });
        await denied.close();
      }
    });
  });

  describe('function URL: GCE Pub/Sub push', () => {
    const pushBody = (entry: unknown) => JSON.stringify({ message: { data: b64(JSON.stringify(entry)), messageId: '1', publishTime: '2026-11-20T10:00:01Z' }, subscription: 'projects/my-project/subscriptions/twill' });
    const post = (authorization: string | undefined, body = pushBody(fixture('gce-audit-instances-delete.json'))) =>
      pushHandler(urlEvent('POST', '/gce', { headers: authorization ? { authorization } : {}, body })).then(structured);

    test('a valid Google token: the event reconciles the gce network', async () => {
      gce.addInstance({ name: 'node-8', twill: 'gce' });
      const r = await post(`Bearer ${await token({})}`);
      assert.equal(r.statusCode, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body.networks, ['gce']);
      assert.equal(r.body.state, 'terminated');
      const id = [...gce.instances.values()].find((i) => i.name === 'node-8')!.id;
      const lease = await w.store.getLease('gce', id);
      assert.ok(lease?.subnet);
      assert.equal(gce.routeMap()[lease.subnet], 'node-8');
    });

    test('missing, malformed, wrong audience, wrong service account, unverified, expired, wrong issuer and badly signed tokens are refused', async () => {
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
      const before = { ...gce.calls };
      for (const [what, auth, status, reason] of cases) {
        const r = await post(auth);
        assert.equal(r.statusCode, status, `${what}: ${JSON.stringify(r.body)}`);
        assert.match(String(r.body.error), reason, what);
      }
      assert.deepEqual(gce.calls, before, 'a refused request reaches no cloud');
    });

    test('an authenticated poison event is acknowledged and dropped; other methods and paths are refused', async () => {
      const auth = `Bearer ${await token({})}`;
      const bad = await post(auth, '{"message": {"data": "!!!"}}');
      assert.equal(bad.statusCode, 200);
      assert.match(String(bad.body.dropped), /not base64/);
      const wrongCloud = await post(auth, JSON.stringify(fixture('ali-ecs-state-change.json')));
      assert.equal(wrongCloud.statusCode, 200);
      assert.match(String(wrongCloud.body.dropped), /a ali event was sent to the gce entry point/);
      assert.equal(structured(await pushHandler(urlEvent('GET', '/gce'))).statusCode, 405);
      assert.equal(structured(await pushHandler(urlEvent('POST', '/elsewhere', { body: '{}' }))).statusCode, 404);
    });

    test('without a configured audience and service account, every push is refused', async () => {
      try {
        await w.setEnv({ TWILL_GCE_PUSH_AUDIENCE: undefined });
        const r = await post(`Bearer ${await token({})}`);
        assert.equal(r.statusCode, 503);
      } finally {
        await w.setEnv({ TWILL_GCE_PUSH_AUDIENCE: AUDIENCE });
      }
    });
  });

  describe('function URL: Alibaba Cloud EventBridge', () => {
    const body = JSON.stringify(fixture('ali-ecs-state-change.json'));
    const post = (opts: { headers?: Record<string, string>; query?: Record<string, string> }) => pushHandler(urlEvent('POST', '/ali', { ...opts, body })).then(structured);

    test('the shared token, in a header or the query string, lets the event reconcile the ali-vpc network', async () => {
      ali.addInstance({ id: 'i-bp1ecr0000000go2go', network: 'ali' });
      const r = await post({ headers: { authorization: `Bearer ${ALI_TOKEN}` } });
      assert.equal(r.statusCode, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body.networks, ['ali']);
      const lease = await w.store.getLease('ali', 'i-bp1ecr0000000go2go');
      assert.ok(lease?.subnet);
      assert.equal(ali.routeMap('vtb-sys')[lease.subnet], 'i-bp1ecr0000000go2go');
      assert.equal((await post({ headers: { 'x-twill-token': ALI_TOKEN } })).statusCode, 200);
      assert.equal((await post({ query: { token: ALI_TOKEN } })).statusCode, 200);
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

    test('a base64 body (function URLs encode non-text content types) is read the same', async () => {
      const ev = { ...urlEvent('PUT', '/v1/leases/edge/edge-9', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }), body: b64(JSON.stringify({ subnet: '10.60.250.0/24' })), isBase64Encoded: true };
      const r = structured(await apiHandler(ev));
      assert.equal(r.statusCode, 200, JSON.stringify(r.body));
      assert.equal((await w.store.getLease('edge', 'edge-9'))?.subnet, '10.60.250.0/24');
    });
  });
});
