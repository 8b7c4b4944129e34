// WireGuard's keys in the control plane: a rotation asked of a node through
// the admin API, a node's new public key taken from its hello at once, a
// malformed one refused with the reason, and what the operator is shown.
// The real controller on a real SQLite file; the publisher records what
// agents would receive.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { parseNetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import { silentLogger } from '../../core/log.js';
import { changesIn, changesMessageSchema, nodeLeaseSchema, parseMessage, statusSchema, type Status } from '../../core/messages.js';
import { Topics } from '../../core/topics.js';
import { Controller } from '../../control/controller/controller.js';
import { keyView, statusReport } from '../../control/http/admin.js';
import { handleApi, type ApiDeps } from '../../control/http/api.js';
import { dashboardView } from '../../control/http/dashboard.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { renderStatus } from '../../cli/status.js';
import { removeTempDirs, tempDir } from '../helpers/procs.js';
import { RecordingPublisher } from '../helpers/recording-publisher.js';

const TOKEN = 'admin-token-for-key-tests-0123456789';
/** as `wg genkey | wg pubkey` printed them */
const KEY = ['waZle9QCDVPLl/Z0Nbw2GRr4Gdk3lhYRPoU3Xol9Mmc=', '8oMBUJbuVU+4siNUL1OA/+fYNdfngz//U1Ps4Xv7U2Q=', 'KOWLD5rVk7ocFEXqOp5OqmTuxNGOSaFmjhXaBci47SQ='] as const;
/** a private key, as `wg genkey` printed it, that an agent must never send */
const PRIVATE = '8NF/pZ7vUCd/ZVVTr5frjAOqJ2KPlSSgsttTDCthKGA=';
const topics = new Topics();

describe('WireGuard keys in the control plane', () => {
  let store: SqliteStore;
  let controller: Controller;
  let deps: ApiDeps;
  const pub = new RecordingPublisher();
  const call = async (method: string, path: string) => {
    const r = await handleApi({ method, path, headers: { authorization: `Bearer ${TOKEN}` } }, deps);
    return { status: r.status, json: JSON.parse(r.body) as Record<string, unknown> & { error?: string } };
  };
  const hello = (node: string, backendData: unknown, extra: Record<string, unknown> = {}) =>
    controller.handleMessage(topics.nodeHello('wg', node), Buffer.from(JSON.stringify({ v: 2, agentVersion: 't', publicIP: '192.0.2.7', backendData, ...extra })));
  /** What the node itself would read on its own topic now, parsed as its agent parses it. */
  const ownTopic = (node: string) => parseMessage(nodeLeaseSchema, pub.retained(topics.nodeLease('wg', node)) ?? '', 'own lease');
  /** The changes every member of the network was sent since mark, parsed as agents parse them. */
  const changesSince = (mark: number) => pub.since(mark).filter((p) => p.topic === topics.netChanges('wg')).flatMap((p) => changesIn(parseMessage(changesMessageSchema, p.payload, 'changes')));

  before(async () => {
    store = new SqliteStore(join(tempDir(), 'twill.db'));
    controller = new Controller(store, pub, { topics, log: silentLogger });
    deps = { store, controller, adminToken: TOKEN, broker: 'mqtt://127.0.0.1:1883', log: silentLogger };
    await controller.applyNetwork('wg', parseNetConf({ Network: '10.90.0.0/16', Backend: { Type: 'wireguard' } }, {}));
    await controller.applyNetwork('vx', parseNetConf({ Network: '10.91.0.0/16', Backend: { Type: 'vxlan' } }, {}));
    const at = new Date().toISOString();
    for (const [name, network] of [['a', 'wg'], ['b', 'wg'], ['idle', 'wg'], ['v', 'vx']]) await store.putNode({ name: name!, network: network!, passwordHash: 'x', createdAt: at });
    await hello('a', { PublicKey: KEY[0] });
    await hello('b', { PublicKey: KEY[1] });
    await controller.join('vx', 'v', { publicIP: '192.0.2.8', backendData: { VtepMAC: '0e:00:00:00:00:08' }, fromAgent: true });
  });
  after(async () => {
    await store.close();
    removeTempDirs();
  });

  test('POST /v1/nodes/NAME/rotate-key puts a fresh token on the lease: the node reads it on its own topic, every peer sees the change', async () => {
    const before = (await store.getLease('wg', 'a')) as Lease;
    const mark = pub.sent.length;
    const r = await call('POST', '/v1/nodes/a/rotate-key');
    assert.equal(r.status, 200, r.json.error);
    const { token, revision } = r.json as { token: string; revision: number };
    assert.deepEqual(r.json, { node: 'a', network: 'wg', token, revision });
    assert.ok(revision > before.revision);
    assert.deepEqual(await store.getLease('wg', 'a'), { ...before, rotateKey: token, revision });
    assert.equal(ownTopic('a').lease?.rotateKey, token, 'on the node\'s own topic');
    assert.deepEqual(changesSince(mark).map((c) => [c.node, c.revision, c.lease?.rotateKey]), [['a', revision, token]], 'one change to every peer');
    const again = await call('POST', '/v1/nodes/a/rotate-key');
    assert.notEqual((again.json as { token: string }).token, token, 'each ask is a new token');
  });

  test('refused with the reason, changing nothing: an unknown node, a node without a lease, a network without keys, a malformed name', async () => {
    const snapshot = async () => [await store.listLeases('wg'), await store.listLeases('vx'), await store.getNetwork('wg'), await store.getNetwork('vx')];
    const before = await snapshot();
    const mark = pub.sent.length;
    const cases: [string, number, RegExp][] = [
      ['/v1/nodes/ghost/rotate-key', 404, /^node ghost does not exist: twill node list shows the nodes$/],
      ['/v1/nodes/idle/rotate-key', 404, /^node idle holds no lease in network wg: it makes its key pair when its agent joins, so there is no key to rotate yet$/],
      ['/v1/nodes/v/rotate-key', 400, /^network vx uses the vxlan backend, whose nodes hold no key pair to rotate: only a wireguard network's nodes do$/],
      ['/v1/nodes/bad%20name/rotate-key', 400, /^node name "bad name" is not valid: use 1 to 63 letters/],
    ];
    for (const [path, status, why] of cases) {
      const r = await call('POST', path);
      assert.equal(r.status, status, `${path}: ${r.json.error}`);
      assert.match(r.json.error ?? '', why, path);
    }
    const get = await handleApi({ method: 'GET', path: '/v1/nodes/a/rotate-key', headers: { authorization: `Bearer ${TOKEN}` } }, deps);
    assert.equal(get.status, 405);
    assert.equal(get.headers.allow, 'POST');
    assert.deepEqual(await snapshot(), before);
    assert.equal(pub.sent.length, mark, 'nothing published');
  });

  test('a hello with a new PublicKey (the node rotated) rewrites its lease at once, token kept; the same key again is a renewal no peer hears of', async () => {
    const asked = (await store.getLease('wg', 'b'))!;
    const token = ((await call('POST', '/v1/nodes/b/rotate-key')).json as { token: string }).token;
    let mark = pub.sent.length;
    await hello('b', { PublicKey: KEY[2] });
    const rotated = (await store.getLease('wg', 'b'))!;
    assert.equal(rotated.backendData.PublicKey, KEY[2]);
    assert.equal(rotated.rotateKey, token);
    assert.deepEqual(changesSince(mark).map((c) => [c.node, c.lease?.backendData.PublicKey]), [['b', KEY[2]]], 'every peer gets the new key in one change');
    assert.equal(ownTopic('b').lease?.backendData.PublicKey, KEY[2]);
    assert.ok(rotated.revision > asked.revision);
    mark = pub.sent.length;
    await hello('b', { PublicKey: KEY[2] });
    assert.equal((await store.getLease('wg', 'b'))?.revision, rotated.revision);
    assert.deepEqual(changesSince(mark), [], 'a renewal tells no peer');
  });

  test('a malformed or foreign key is refused with the reason on the node\'s own topic, and changes nothing', async () => {
    const before = await store.getLease('wg', 'a');
    const cases: [unknown, RegExp, Record<string, unknown>?][] = [
      [{ PublicKey: 'waZle9QCDVPLl/Z0Nbw2GRr4Gdk3lhYRPoU3Xol9Mm==' }, /backendData\.PublicKey "waZle9QCDVPLl\/Z0Nbw2GRr4Gdk3lhYRPoU3Xol9Mm==" is not a WireGuard key: 32 bytes in base64/],
      [{ PublicKey: 'abc' }, /backendData\.PublicKey "abc" is not a WireGuard key/],
      [{ PublicKey: 'c1'.repeat(32) }, /is not a WireGuard key/],
      // the same 32 bytes as KEY[0], with the bits past the key's end set: one key must be one text
      [{ PublicKey: 'waZle9QCDVPLl/Z0Nbw2GRr4Gdk3lhYRPoU3Xol9Mmd=' }, /backendData\.PublicKey "waZle9QCDVPLl\/Z0Nbw2GRr4Gdk3lhYRPoU3Xol9Mmd=" is not a WireGuard key/],
      [{ PublicKey: `${KEY[0]}\n` }, /backendData\.PublicKey "waZle9QCDVPLl\/Z0Nbw2GRr4Gdk3lhYRPoU3Xol9Mmc=\\n" is not a WireGuard key/],
      [{ PublicKey: ` ${KEY[0]}` }, /is not a WireGuard key/],
      [{ PublicKey: '' }, /backendData\.PublicKey "" is not a WireGuard key/],
      [{ PublicKey: 12345 }, /backendData\.PublicKey 12345 is not a string: a WireGuard key is 44 characters of base64/],
      [{ PublicKey: true }, /backendData\.PublicKey true is not a string/],
      [{ PublicKey: KEY[0], PrivateKey: PRIVATE }, /^hello from a refused: backendData\.PrivateKey is not published by wireguard agents \(they publish PublicKey\)$/],
      [{ PublicKey: KEY[0], VtepMAC: '0e:00:00:00:00:01' }, /backendData\.VtepMAC is not published by wireguard agents/],
      // (refused by the hello's schema, before the backend's rule)
      [{ PublicKey: { nested: KEY[0] } }, /^hello from a: backendData\.PublicKey must be a string, a number or a boolean$/],
      [{ PublicKey: 'A'.repeat(600) }, /^hello from a: backendData\.PublicKey Too big: expected string to have <=512 characters$/],
      // a node cannot clear (or pick) the rotation asked of it
      [{ PublicKey: KEY[0] }, /^hello from a: \(message\) Unrecognized key: "rotateKey"$/, { rotateKey: 'mine' }],
    ];
    for (const [data, why, extra] of cases) {
      const mark = pub.sent.length;
      await hello('a', data, extra);
      assert.deepEqual(await store.getLease('wg', 'a'), before, JSON.stringify(data));
      const told = ownTopic('a');
      assert.match(told.error ?? '', /^hello from a( refused)?: /, JSON.stringify(data));
      assert.match(told.error ?? '', why);
      assert.equal(told.lease?.revision, before?.revision, 'beside the lease it still holds');
      assert.ok(pub.since(mark).every((p) => p.topic === topics.nodeLease('wg', 'a')), 'nobody else hears of it');
    }
    // a private key a node sent by mistake is refused without being repeated anywhere
    assert.ok(!pub.sent.some((p) => p.payload.includes(PRIVATE)));
  });

  test("the operator sees each wireguard node's public key, and a rotation pending until its agent reports the token honoured", async () => {
    const token = ((await call('POST', '/v1/nodes/a/rotate-key')).json as { token: string }).token;
    const status = (s: Partial<Status>) => parseMessage(statusSchema, JSON.stringify({ v: 2, state: 'online', ...s }), 'status');
    await store.putStatus({ network: 'wg', node: 'a', status: status({ keyToken: 'an-older-token' }), updatedAt: new Date().toISOString() });
    let report = await statusReport(store);
    const row = (node: string) => report.leases.find((l) => l.node === node);
    assert.deepEqual(row('a')?.key, { publicKey: KEY[0], rotation: 'pending', token });
    assert.equal(row('v')?.key, undefined, 'a vxlan node has no key');
    let text = renderStatus(report);
    assert.match(text, /\nKEYS\nNETWORK\s+NODE\s+PUBLIC KEY\s+DEVICE\s+ROTATION\n/);
    assert.match(text, new RegExp(`\\nwg\\s+a\\s+${KEY[0].replaceAll('+', '\\+').replaceAll('/', '\\/')}\\s+-\\s+asked \\(token ${token}\\): the agent has not reported it yet\\n`));
    assert.match(text, /\nwg\s+b\s+KOWLD5rVk7ocFEXqOp5OqmTuxNGOSaFmjhXaBci47SQ=\s+-\s+asked \(token [\w-]+\)/);
    assert.doesNotMatch(text.slice(text.indexOf('KEYS')), /\nvx\s/, 'no row for a network without keys');

    await store.putStatus({ network: 'wg', node: 'a', status: status({ keyToken: token, implementation: 'wireguard-go' }), updatedAt: new Date().toISOString() });
    report = await statusReport(store);
    assert.deepEqual(row('a')?.key, { publicKey: KEY[0], rotation: 'done', token, implementation: 'wireguard-go' });
    text = renderStatus(report);
    assert.match(text, new RegExp(`\\nwg\\s+a\\s+\\S+\\s+wireguard-go\\s+done \\(token ${token}\\)\\n`));

    const view = await dashboardView(store);
    const node = (name: string) => view.nodes.find((n) => n.name === name);
    assert.deepEqual(node('a')?.key, { publicKey: KEY[0], rotation: 'done', token, implementation: 'wireguard-go' });
    assert.equal(node('v')?.key, null);
    assert.equal(node('idle')?.key, null, 'no lease, no key');
  });

  test('keyView: none asked, pending, done; a lease without a key yet; a backend without keys', () => {
    const lease = { backendType: 'wireguard', backendData: { PublicKey: KEY[0] } } as unknown as Lease;
    const online = { v: 2, state: 'online', errors: [] } as Status;
    assert.deepEqual(keyView(lease, undefined), { publicKey: KEY[0], rotation: 'none' });
    assert.deepEqual(keyView({ ...lease, rotateKey: 't1' }, undefined), { publicKey: KEY[0], rotation: 'pending', token: 't1' });
    assert.deepEqual(keyView({ ...lease, rotateKey: 't1' }, { ...online, keyToken: 't0' }), { publicKey: KEY[0], rotation: 'pending', token: 't1' });
    assert.deepEqual(keyView({ ...lease, rotateKey: 't1' }, { ...online, keyToken: 't1' }), { publicKey: KEY[0], rotation: 'done', token: 't1' });
    assert.deepEqual(keyView(lease, { ...online, implementation: 'kernel' }), { publicKey: KEY[0], rotation: 'none', implementation: 'kernel' });
    assert.deepEqual(keyView({ ...lease, backendData: {} }, undefined), { publicKey: null, rotation: 'none' });
    assert.equal(keyView({ ...lease, backendType: 'ipsec', backendData: {} }, undefined), undefined);
  });

  test("a status's keyToken is bounded like the lease's token, its implementation one of two words: anything else refuses the status", () => {
    const parse = (fields: Record<string, unknown>) => parseMessage(statusSchema, JSON.stringify({ v: 2, state: 'online', ...fields }), 'status of a');
    assert.equal(parse({ keyToken: 'AbC_-9.:x' }).keyToken, 'AbC_-9.:x');
    for (const bad of ['', 'x'.repeat(65), 'has space', 'new\nline', '<b>', 7]) {
      assert.throws(() => parse({ keyToken: bad }), /status of a: keyToken /, JSON.stringify(bad));
    }
    assert.deepEqual(['kernel', 'wireguard-go'].map((implementation) => parse({ implementation }).implementation), ['kernel', 'wireguard-go']);
    for (const bad of ['boringtun', '', 'kernel ', 1]) assert.throws(() => parse({ implementation: bad }), /status of a: implementation /, JSON.stringify(bad));
  });
});
