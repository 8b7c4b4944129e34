// WireGuard's control plane as an operator and a node meet it: a real
// controller process, the twill CLI, and nodes speaking MQTT with their own
// credentials. A key rotation asked with `twill node rotate-key` (over the
// admin API, and on the data directory a controller serves), the node's new
// key taken from its hello, what `twill status` says of both, and the
// network's PSK (ipsec's and wireguard's) nowhere but on each node's own topic.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { nodeClientId } from '../../core/acl.js';
import { DEFAULT_PREFIX, Topics } from '../../core/topics.js';
import { addNode, startController, withStore, writeNetConf, type AgentCreds, type ControllerProc } from '../helpers/cluster.js';
import { freePort, removeTempDirs, runTwill, tempDir, waitFor } from '../helpers/procs.js';

const topics = new Topics();
/** as `wg genkey | wg pubkey` and `wg genpsk` printed them */
const KEY = ['waZle9QCDVPLl/Z0Nbw2GRr4Gdk3lhYRPoU3Xol9Mmc=', '8oMBUJbuVU+4siNUL1OA/+fYNdfngz//U1Ps4Xv7U2Q=', 'KOWLD5rVk7ocFEXqOp5OqmTuxNGOSaFmjhXaBci47SQ='] as const;
const WG_PSK = 'OIs054scftosjpbAXMvET57nRkfDGVaUNYekykIwE9U=';
const IPSEC_PSK = 'ipsec-psk-of-the-wireguard-control-test-'.padEnd(100, '0123456789');

/** A node as its agent speaks: its own credentials, its own topic, its network's shared topics. */
interface FakeNode {
  c: MqttClient;
  creds: AgentCreds;
  /** the last payload per topic, and every changes message */
  last: Map<string, string>;
  changes: string[];
  hello(backendData: Record<string, unknown>): Promise<void>;
}

async function connectNode(creds: AgentCreds, publicIP: string): Promise<FakeNode> {
  const c = await mqtt.connectAsync(creds.broker, { username: creds.username, password: creds.password, clientId: nodeClientId(DEFAULT_PREFIX, creds.network, creds.node), reconnectPeriod: 0 });
  const last = new Map<string, string>();
  const changes: string[] = [];
  c.on('message', (t, p) => {
    last.set(t, p.toString());
    if (t === topics.netChanges(creds.network)) changes.push(p.toString());
  });
  await c.subscribeAsync([topics.nodeLease(creds.network, creds.node), topics.netConfig(creds.network), topics.netChanges(creds.network)], { qos: 1 });
  const hello = async (backendData: Record<string, unknown>) => {
    await c.publishAsync(topics.nodeHello(creds.network, creds.node), JSON.stringify({ v: 2, agentVersion: 'test', publicIP, backendData }), { qos: 1 });
  };
  return { c, creds, last, changes, hello };
}

const own = (n: FakeNode) => JSON.parse(n.last.get(topics.nodeLease(n.creds.network, n.creds.node)) ?? '{}') as { lease?: { revision: number; rotateKey?: string; backendData: Record<string, unknown> } | null; config?: { Backend: { PSK?: string } }; error?: string };

describe('wireguard in the control plane: key rotation and secrets', () => {
  let dir: string;
  let ctl: ControllerProc;
  let env: NodeJS.ProcessEnv;
  const nodes = new Map<string, FakeNode>();

  before(async () => {
    dir = tempDir('twill-wg-control-');
    const port = await freePort();
    const networks = {
      wg: await writeNetConf(dir, 'wg', { Network: '10.80.0.0/16', Backend: { Type: 'wireguard', PSK: WG_PSK } }),
      sec: await writeNetConf(dir, 'sec', { Network: '10.81.0.0/16', Backend: { Type: 'ipsec', PSK: IPSEC_PSK } }),
      vx: await writeNetConf(dir, 'vx', { Network: '10.82.0.0/16', Backend: { Type: 'vxlan' } }),
    };
    ctl = await startController({ dataDir: join(dir, 'data'), networks, extra: ['--api-listen', `127.0.0.1:${port}`] });
    env = { TWILL_API: `http://127.0.0.1:${port}`, TWILL_API_TOKEN: readFileSync(join(ctl.dataDir, 'admin-token'), 'utf8').trim() };
    const joins: [string, string, Record<string, unknown>][] = [
      ['wa', 'wg', { PublicKey: KEY[0] }], ['wb', 'wg', { PublicKey: KEY[1] }], ['sa', 'sec', {}], ['v1', 'vx', { VtepMAC: '0e:00:00:00:00:01' }],
    ];
    let ip = 60;
    for (const [node, network, data] of joins) {
      const n = await connectNode(await addNode(ctl.dataDir, node, network, ctl.url), `127.0.0.${ip++}`);
      nodes.set(node, n);
      await n.hello(data);
      await waitFor(`${node} leased`, () => own(n).lease);
    }
    await addNode(ctl.dataDir, 'idle', 'wg', ctl.url);
  });
  after(async () => {
    for (const n of nodes.values()) await n.c.endAsync().catch(() => {});
    await ctl?.kill();
    removeTempDirs();
  });

  const node = (name: string) => nodes.get(name) as FakeNode;
  const tokenIn = (stdout: string) => {
    const m = /^key rotation asked of node (\S+) in network (\S+) \(token ([A-Za-z0-9._:-]+), lease revision (\d+)\): its agent makes a new key pair when it next applies its lease, and its peers switch to the new public key as it publishes it\n$/.exec(stdout);
    assert.ok(m, `a line a person reads: ${JSON.stringify(stdout)}`);
    return { node: m[1], network: m[2], token: m[3] as string, revision: Number(m[4]) };
  };

  test('twill node rotate-key over the admin API: the node reads the token on its own topic, each peer sees the lease change, and status shows it pending', async () => {
    const wa = node('wa');
    const wb = node('wb');
    const before = own(wa).lease!;
    const peerSaw = wb.changes.length;
    const r = await runTwill(['node', 'rotate-key', 'wa'], env);
    assert.equal(r.code, 0, r.stderr);
    const asked = tokenIn(r.stdout);
    assert.deepEqual([asked.node, asked.network], ['wa', 'wg']);
    assert.ok(asked.revision > before.revision);
    await waitFor('the token on wa\'s own topic', () => own(wa).lease?.rotateKey === asked.token);
    assert.equal(own(wa).lease?.revision, asked.revision);
    await waitFor('the change at wb', () => wb.changes.slice(peerSaw).some((m) => m.includes(asked.token)));
    assert.equal((await withStore(ctl.dataDir, (s) => s.getLease('wg', 'wa')))?.rotateKey, asked.token);
    const st = await runTwill(['status'], env);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, new RegExp(`\\nwg\\s+wa\\s+waZle9QCDVPLl/Z0Nbw2GRr4Gdk3lhYRPoU3Xol9Mmc=\\s+-\\s+asked \\(token ${asked.token}\\): the agent has not reported it yet\\n`));
    assert.match(st.stdout, /\nwg\s+wb\s+8oMBUJbuVU\+4siNUL1OA\/\+fYNdfngz\/\/U1Ps4Xv7U2Q=\s+-\s+-\n/, 'no rotation asked of wb, nor a device said');
  });

  test('on the data directory a controller serves, rotate-key goes through that controller; the node rotates and reports it, and status says done', async () => {
    const wa = node('wa');
    const r = await runTwill(['node', 'rotate-key', 'wa', '--data-dir', ctl.dataDir], { TWILL_API: '' });
    assert.equal(r.code, 0, r.stderr);
    const asked = tokenIn(r.stdout);
    // logged by the controller process, not by the command: the command asked the controller
    const logged = new RegExp(`key rotation asked network=wg node=wa revision=${asked.revision}\\b`);
    await waitFor('the controller\'s log line', () => logged.test(ctl.output()));
    await waitFor('the new token on wa\'s own topic', () => own(wa).lease?.rotateKey === asked.token);
    // what wa's agent does with it: a new key pair, its public half in a hello, then its status
    const wb = node('wb');
    const peerSaw = wb.changes.length;
    await wa.hello({ PublicKey: KEY[2] });
    await waitFor('wa\'s new key at its peer', () => wb.changes.slice(peerSaw).some((m) => m.includes(KEY[2])));
    assert.equal(own(wa).lease?.rotateKey, asked.token, 'the token stays on the lease');
    await wa.c.publishAsync(topics.nodeStatus('wg', 'wa'), JSON.stringify({ v: 2, state: 'online', keyToken: asked.token, implementation: 'wireguard-go' }), { qos: 1, retain: true });
    const done = new RegExp(`\\nwg\\s+wa\\s+KOWLD5rVk7ocFEXqOp5OqmTuxNGOSaFmjhXaBci47SQ=\\s+wireguard-go\\s+done \\(token ${asked.token}\\)\\n`);
    await waitFor('status says done', async () => done.test((await runTwill(['status', '--data-dir', ctl.dataDir], { TWILL_API: '' })).stdout));
    const json = JSON.parse((await runTwill(['status', '-o', 'json'], env)).stdout) as { leases: { node: string; key?: unknown }[] };
    assert.deepEqual(json.leases.find((l) => l.node === 'wa')?.key, { publicKey: KEY[2], rotation: 'done', token: asked.token, implementation: 'wireguard-go' });
    assert.equal(json.leases.find((l) => l.node === 'v1')?.key, undefined);
  });

  test('refused with a line naming what is wrong, exit 1, nothing changed: an unknown node, a node without a lease, a network without keys', async () => {
    const before = await withStore(ctl.dataDir, async (s) => [await s.listLeases('wg'), await s.listLeases('vx'), await s.getNetwork('wg'), await s.getNetwork('vx')]);
    const cases: [string, RegExp][] = [
      ['ghost', /^twill node: node ghost does not exist: twill node list shows the nodes\n$/],
      ['idle', /^twill node: node idle holds no lease in network wg: it makes its key pair when its agent joins, so there is no key to rotate yet\n$/],
      ['v1', /^twill node: network vx uses the vxlan backend, whose nodes hold no key pair to rotate: only a wireguard network's nodes do\n$/],
    ];
    for (const [name, why] of cases) {
      for (const [where, how] of [['--api', env], ['--data-dir', { TWILL_API: '' }]] as const) {
        const r = await runTwill(['node', 'rotate-key', name, ...(where === '--data-dir' ? ['--data-dir', ctl.dataDir] : [])], how);
        assert.equal(r.code, 1, `${name} ${where}: ${r.stdout}`);
        assert.match(r.stderr, why, `${name} ${where}`);
        assert.equal(r.stdout, '');
      }
    }
    const usage = await runTwill(['node', 'rotate-key'], env);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /^twill node: twill node rotate-key needs the node's NAME\n/);
    const after = await withStore(ctl.dataDir, async (s) => [await s.listLeases('wg'), await s.listLeases('vx'), await s.getNetwork('wg'), await s.getNetwork('vx')]);
    assert.deepEqual(after, before);
  });

  test('a malformed key in a hello is refused with the reason on the node\'s own topic, and the controller serves on', async () => {
    const wb = node('wb');
    const before = own(wb).lease!;
    await wb.hello({ PublicKey: '8oMBUJbuVU+4siNUL1OA/+fYNdfngz//U1Ps4Xv7U2R=' });
    await waitFor('the refusal', () => own(wb).error);
    assert.equal(own(wb).error, 'hello from wb refused: backendData.PublicKey "8oMBUJbuVU+4siNUL1OA/+fYNdfngz//U1Ps4Xv7U2R=" is not a WireGuard key: 32 bytes in base64, 44 characters ending in "=", as wg genkey and wg pubkey print them');
    assert.equal(own(wb).lease?.revision, before.revision);
    assert.deepEqual((await withStore(ctl.dataDir, (s) => s.getLease('wg', 'wb')))?.backendData, { PublicKey: KEY[1] });
    // (the log line follows the answer on the node's topic)
    await waitFor('the refusal in the log', () => /message refused topic=\S+\/wb\/hello .*is not a WireGuard key/.test(ctl.output()));
  });

  for (const [network, type, psk, member] of [['sec', 'ipsec', IPSEC_PSK, 'sa'], ['wg', 'wireguard', WG_PSK, 'wa']] as const) {
    test(`the ${type} PSK is on the node's own topic only: masked on the shared config topic, the node API, the admin API, status, network list and the log`, async () => {
      const n = node(member);
      assert.equal(own(n).config?.Backend.PSK, psk, "the node's own topic has it (the test would see it)");
      const shared = n.last.get(topics.netConfig(network)) ?? '';
      assert.match(shared, new RegExp(`"Type":"${type}"`));
      assert.ok(!shared.includes(psk), 'the shared config topic');
      assert.match(shared, /"PSK":"\*{8}"/, 'masked, so a node can tell it is set');
      for (const c of n.changes) assert.ok(!c.includes(psk), 'the changes topic');

      const basic = `Basic ${Buffer.from(`${n.creds.username}:${n.creds.password}`).toString('base64')}`;
      for (const path of [`/v2/networks/${network}/snapshot`, `/v2/networks/${network}/changes?since=0`]) {
        const r = await fetch(`${ctl.api}${path}`, { headers: { authorization: basic } });
        const body = await r.text();
        assert.ok(r.status === 200 || r.status === 410, `${path}: ${r.status} ${body}`);
        assert.ok(!body.includes(psk), `node API ${path}`);
      }
      for (const path of ['/v1/networks', '/v1/status', '/v1/dashboard']) {
        const r = await fetch(`${env.TWILL_API}${path}`, { headers: { authorization: `Bearer ${env.TWILL_API_TOKEN}` } });
        assert.equal(r.status, 200);
        assert.ok(!(await r.text()).includes(psk), `admin API ${path}`);
      }
      for (const args of [['status'], ['status', '-o', 'json'], ['network', 'list'], ['network', 'list', '-o', 'json'], ['status', '--data-dir', ctl.dataDir]]) {
        const r = await runTwill(args, args.includes('--data-dir') ? { TWILL_API: '' } : env);
        assert.equal(r.code, 0, r.stderr);
        assert.ok(!r.stdout.includes(psk) && !r.stderr.includes(psk), `twill ${args.join(' ')}`);
      }
      const checked = await runTwill(['config', 'check', join(dir, `${network}.json`)]);
      assert.equal(checked.code, 0, checked.stderr);
      assert.ok(!checked.stdout.includes(psk), 'twill config check');
      assert.ok(!ctl.output().includes(psk), "the controller's log (at debug)");
    });
  }
});

describe('twill node rotate-key on a data directory no controller serves', () => {
  test('the store takes the token; the controller started on it later hands it to the node on its own topic', async () => {
    const dir = tempDir('twill-wg-offline-');
    const dataDir = join(dir, 'data');
    const off = { TWILL_API: '' };
    const file = await writeNetConf(dir, 'wg', { Network: '10.83.0.0/16', Backend: { Type: 'wireguard' } });
    let ctl: ControllerProc | undefined;
    let c: FakeNode | undefined;
    try {
      assert.equal((await runTwill(['network', 'set', 'wg', file, '--data-dir', dataDir], off)).code, 0);
      const add = await runTwill(['node', 'add', 'n1', '--network', 'wg', '--data-dir', dataDir, '--broker', 'mqtt://127.0.0.1:1'], off);
      assert.equal(add.code, 0, add.stderr);
      const reserve = await runTwill(['lease', 'reserve', 'wg', '--node', 'n1', '--subnet', '10.83.9.0/24', '--data-dir', dataDir], off);
      assert.equal(reserve.code, 0, reserve.stderr);
      const r = await runTwill(['node', 'rotate-key', 'n1', '--data-dir', dataDir], off);
      assert.equal(r.code, 0, r.stderr);
      const token = /\(token ([A-Za-z0-9._:-]+), lease revision \d+\)/.exec(r.stdout)?.[1];
      assert.ok(token, r.stdout);
      assert.equal((await withStore(dataDir, (s) => s.getLease('wg', 'n1')))?.rotateKey, token);

      ctl = await startController({ dataDir, networks: {} });
      c = await connectNode({ ...(JSON.parse(add.stdout) as AgentCreds), broker: ctl.url }, '127.0.0.90');
      await waitFor("the token on n1's own topic", () => own(c!).lease?.rotateKey === token);
    } finally {
      await c?.c.endAsync().catch(() => {});
      await ctl?.kill();
      removeTempDirs();
    }
  });
});
