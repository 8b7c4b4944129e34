// IoT Core's custom authorizer: a node gets exactly the topics the embedded
// broker allows it, under the deployment's prefix, and nothing else; every
// refusal is logged with a reason and never with the password.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { IoTCustomAuthorizerEvent } from 'aws-lambda';
import { nodeAcl } from '../../core/acl.js';
import { createLogger } from '../../core/log.js';
import { Topics } from '../../core/topics.js';
import { MAX_POLICY_CHARS, authorize, nodePolicy, principalIdOf, splitPolicy, type AuthorizerOptions } from '../../control/auth/authorizer.js';
import { generatePassword, hashPassword } from '../../control/auth/credentials.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { removeTempDirs, tempDir } from '../helpers/procs.js';

const REGION = 'eu-west-1';
const ACCOUNT = '123456789012';
const topics = new Topics('twill/prod');
const arn = (rest: string) => `arn:aws:iot:${REGION}:${ACCOUNT}:${rest}`;

/** The event IoT Core sends for an MQTT CONNECT with username and password. */
function connectEvent(mqtt: { username?: string; password?: string | Buffer; clientId?: string }): IoTCustomAuthorizerEvent {
  const password = mqtt.password === undefined ? undefined : Buffer.from(mqtt.password).toString('base64');
  return {
    signatureVerified: false,
    protocols: ['tls', 'mqtt'],
    protocolData: {
      tls: { serverName: 'xxxxxxxx-ats.iot.eu-west-1.amazonaws.com' },
      mqtt: { username: mqtt.username, password, clientId: mqtt.clientId as string },
    },
    connectionMetadata: { id: 'e56f08c3-c559-490f-aa9f-7e8427d0f57b' },
  };
}

describe('IoT custom authorizer', () => {
  let store: SqliteStore;
  let lines: string[];
  let opts: AuthorizerOptions;
  const pw: Record<string, string> = {};

  before(async () => {
    store = new SqliteStore(join(tempDir(), 'store.db'));
    for (const [name, network] of [['edge-1', 'blue'], ['edge-2', 'green']] as const) {
      pw[name] = generatePassword();
      await store.putNode({ name, network, passwordHash: await hashPassword(pw[name]!), createdAt: new Date().toISOString() });
    }
    lines = [];
    opts = { store, topics, log: createLogger('authorizer', 'debug', (l) => lines.push(l)), region: REGION, accountId: ACCOUNT };
  });

  after(async () => {
    await store?.close();
    removeTempDirs();
  });

  test('a valid node gets exactly its own topics, under the app/stage prefix', async () => {
    const r = await authorize(connectEvent({ username: 'edge-1', password: pw['edge-1'], clientId: 'twill/prod:blue:edge-1' }), opts);
    assert.equal(r.isAuthenticated, true);
    assert.equal(r.principalId, 'edgex2d1');
    assert.match(r.principalId, /^[a-zA-Z0-9]{1,128}$/);
    assert.ok(r.refreshAfterInSeconds >= 300 && r.refreshAfterInSeconds <= 86_400);
    assert.ok(r.disconnectAfterInSeconds >= 300 && r.disconnectAfterInSeconds <= 86_400);
    assert.deepEqual(r.policyDocuments, [
      {
        Version: '2012-10-17',
        Statement: [
          {
            Effect: 'Allow',
            Action: 'iot:Connect',
            Resource: arn('client/twill/prod:blue:edge-1'),
            Condition: { 'ForAllValues:StringEquals': { 'iot:ConnectAttributes': ['LastWill'] } },
          },
          {
            Effect: 'Allow',
            Action: 'iot:Publish',
            Resource: [arn('topic/twill/prod/v2/node/blue/edge-1/hello'), arn('topic/twill/prod/v2/node/blue/edge-1/status')],
          },
          { Effect: 'Allow', Action: 'iot:RetainPublish', Resource: [arn('topic/twill/prod/v2/node/blue/edge-1/status')] },
          {
            Effect: 'Allow',
            Action: 'iot:Subscribe',
            Resource: [arn('topicfilter/twill/prod/v2/net/blue/config'), arn('topicfilter/twill/prod/v2/net/blue/changes'), arn('topicfilter/twill/prod/v2/node/blue/edge-1/lease')],
          },
          {
            Effect: 'Allow',
            Action: 'iot:Receive',
            Resource: [arn('topic/twill/prod/v2/net/blue/config'), arn('topic/twill/prod/v2/net/blue/changes'), arn('topic/twill/prod/v2/node/blue/edge-1/lease')],
          },
        ],
      },
    ]);
    // The authorizer name an agent appends to its username is not part of the name.
    const named = await authorize(connectEvent({ username: 'edge-1?x-amz-customauthorizer-name=twill-prod', password: pw['edge-1'] }), opts);
    assert.equal(named.isAuthenticated, true);
  });

  test('at the longest names and prefix twill allows, every policy document is within IoT Core\'s 2,048 characters, and they are at most 10', () => {
    const longTopics = new Topics(`${'p'.repeat(50)}/${'s'.repeat(49)}`);
    const node = { name: 'n'.repeat(63), network: 'w'.repeat(63) };
    const policy = nodePolicy(longTopics, node, 'ap-southeast-2', '123456789012');
    assert.ok(JSON.stringify(policy).length > MAX_POLICY_CHARS, 'one document would be too long here');
    const docs = splitPolicy(policy);
    assert.ok(docs.length <= 10);
    for (const d of docs) assert.ok(JSON.stringify(d).length <= MAX_POLICY_CHARS, `${JSON.stringify(d).length} characters`);
    assert.deepEqual(docs.flatMap((d) => d.Statement), policy.Statement, 'nothing lost or added');
  });

  test('the policy and the embedded broker agree on every topic an agent or an intruder might try', async () => {
    const r = await authorize(connectEvent({ username: 'edge-1', password: pw['edge-1'] }), opts);
    const statements = r.policyDocuments[0]!.Statement as { Action: string; Resource: string | string[] }[];
    // IoT policy matching: '*' matches any run of characters, everything else is literal.
    const allows = (action: string, resource: string) =>
      statements
        .filter((s) => s.Action === action)
        .flatMap((s) => [s.Resource].flat())
        .some((pattern) => new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\/]/g, '\\$&')).join('.*')}$`).test(resource));
    const acl = nodeAcl(topics, { name: 'edge-1', network: 'blue' });
    const tried = [
      topics.nodeHello('blue', 'edge-1'), topics.nodeStatus('blue', 'edge-1'), topics.nodeLease('blue', 'edge-1'),
      topics.nodeHello('blue', 'edge-9'), topics.nodeStatus('green', 'edge-2'), topics.nodeLease('green', 'edge-2'),
      topics.netChanges('blue'), topics.netConfig('blue'), `${topics.root}/net/blue/#`, `${topics.root}/net/blue/+`,
      topics.netConfig('green'), topics.netChanges('green'),
      `${topics.root}/net/+/config`, `${topics.root}/#`, `${topics.root}/node/blue/+/lease`,
      `${topics.root}/node/blue/edge-1/#`, `${topics.root}/net/blue-2/config`, 'twill/v1/net/blue/config', 'twill/dev/v1/net/blue/config',
    ];
    for (const t of tried) {
      assert.equal(allows('iot:Publish', arn(`topic/${t}`)), acl.canPublish(t), `publish ${t}`);
      assert.equal(allows('iot:Subscribe', arn(`topicfilter/${t}`)), acl.canSubscribe(t), `subscribe ${t}`);
      if (!/[+#]/.test(t)) assert.equal(allows('iot:Receive', arn(`topic/${t}`)), acl.canSubscribe(t), `receive ${t}`);
    }
  });

  test('a node of another network gets none of that network\'s topics, and may not pose as one of its clients', async () => {
    const r = await authorize(connectEvent({ username: 'edge-2', password: pw['edge-2'] }), opts);
    assert.equal(r.isAuthenticated, true);
    const resources = JSON.stringify(r.policyDocuments);
    assert.ok(resources.includes('/net/green/'));
    assert.ok(!resources.includes('/blue/'), 'nothing of network blue');
    assert.ok(!resources.includes('edge-1'), 'nothing of node edge-1');
    // Its own password with blue's client id is refused outright.
    const posing = await authorize(connectEvent({ username: 'edge-2', password: pw['edge-2'], clientId: 'twill-blue-edge-1' }), opts);
    assert.equal(posing.isAuthenticated, false);
    assert.deepEqual(posing.policyDocuments, []);
    assert.match(lines.at(-1)!, /refused.*client id/);
  });

  test('a wrong password, an unknown node and malformed credentials are refused, each with a logged reason and never the password', async () => {
    const wrong = 'not-the-password-' + generatePassword();
    const cases: [string, IoTCustomAuthorizerEvent, RegExp][] = [
      ['wrong password', connectEvent({ username: 'edge-1', password: wrong }), /wrong password/],
      ['password of another node', connectEvent({ username: 'edge-1', password: pw['edge-2'] }), /wrong password/],
      ['unknown node', connectEvent({ username: 'edge-9', password: wrong }), /unknown node/],
      ['no username', connectEvent({ password: wrong }), /no username/],
      ['username that is no node name', connectEvent({ username: 'edge 1/../#', password: wrong }), /not a node name/],
      ['no password', connectEvent({ username: 'edge-1' }), /no password/],
      ['empty password', connectEvent({ username: 'edge-1', password: '' }), /no password/],
      ['password not base64', { ...connectEvent({ username: 'edge-1' }), protocolData: { mqtt: { username: 'edge-1', password: `%%${wrong}%%`, clientId: 'c' } } }, /not base64/],
      ['password not text', connectEvent({ username: 'edge-1', password: Buffer.from([0xff, 0xfe, 0x00, 0x80]) }), /not a twill node password/],
      ['no MQTT data at all', { ...connectEvent({}), protocolData: { tls: { serverName: 'x' } } }, /no MQTT credentials/],
      ['not an event', {} as IoTCustomAuthorizerEvent, /no MQTT credentials/],
    ];
    for (const [what, event, reason] of cases) {
      lines.length = 0;
      const r = await authorize(event, opts);
      assert.equal(r.isAuthenticated, false, what);
      assert.deepEqual(r.policyDocuments.flatMap((d) => d.Statement), [], what);
      assert.match(r.principalId, /^[a-zA-Z0-9]{1,128}$/, what);
      assert.equal(lines.length, 1, `${what}: one log line`);
      assert.match(lines[0]!, reason, what);
      for (const secret of [wrong, pw['edge-1']!, pw['edge-2']!, Buffer.from(wrong).toString('base64')]) {
        assert.ok(!lines[0]!.includes(secret), `${what}: the log line carries no password`);
      }
    }
  });

  test("a twill 0.1 agent's client id is let in during an upgrade, bound to exactly that id and logged as needing an upgrade", async () => {
    lines.length = 0;
    const r = await authorize(connectEvent({ username: 'edge-1', password: pw['edge-1'], clientId: 'twill-blue-edge-1' }), opts);
    assert.equal(r.isAuthenticated, true);
    const connect = r.policyDocuments.flatMap((d) => d.Statement).find((st) => (st as { Action: string }).Action === 'iot:Connect') as { Resource: string };
    assert.equal(connect.Resource, arn('client/twill-blue-edge-1'), 'the 0.1 id alone: not the current one as well');
    assert.ok(lines.some((l) => /client id of twill 0\.1 agents: upgrade it/.test(l) && l.includes('twill/prod:blue:edge-1')), lines.join('\n'));
    // Another node's 0.1 id is no more its own than the current one.
    const posing = await authorize(connectEvent({ username: 'edge-2', password: pw['edge-2'], clientId: 'twill-green-edge-1' }), opts);
    assert.equal(posing.isAuthenticated, false);
  });

  test('principal ids are alphanumeric and distinct for distinct names', () => {
    const names = ['a-b', 'ax2db', 'a.b', 'a_b', 'ab', 'x', 'x78', 'A', 'a'.repeat(63), 'a-'.repeat(31) + 'a'];
    const ids = names.map(principalIdOf);
    for (const id of ids) assert.match(id, /^[a-zA-Z0-9]{1,128}$/);
    assert.equal(new Set(ids).size, names.length);
  });
});
