// A node's credentials in an attacker's hands, over real MQTT, against the
// controller's own rules: on the embedded broker and on Mosquitto (where the
// controller is one client among the nodes and only its checks stand
// between a node and its network). Each attack must fail with a reason
// naming what was wrong, change nothing, and leave the controller serving
// every other node.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { nodeClientId } from '../../core/acl.js';
import { DEFAULT_PREFIX, Topics } from '../../core/topics.js';
import { addNode, startController, withStore, writeNetConf, type ControllerProc } from '../helpers/cluster.js';
import { startMosquitto } from '../helpers/mosquitto.js';
import { removeTempDirs, runTwill, tempDir, waitFor, type Proc } from '../helpers/procs.js';

const topics = new Topics();
const NET = 'v';
const MAC = '0a:58:0a:f4:00:01';

const hello = (extra: Record<string, unknown> = {}) => JSON.stringify({ v: 2, agentVersion: 'attacker', publicIP: '127.0.0.9', backendData: { VtepMAC: MAC }, ...extra });

for (const kind of ['embedded', 'mosquitto'] as const) {
  describe(`hostile nodes on the ${kind} broker`, () => {
    let dir: string;
    let ctl: ControllerProc;
    let mosquitto: Proc | undefined;
    let brokerUrl: string | undefined;
    const clients: mqtt.MqttClient[] = [];

    const start = async () => {
      const net = await writeNetConf(dir, 'net', { Network: '10.60.0.0/16', Backend: { Type: 'vxlan' } });

      ctl = await startController({ dataDir: join(dir, 'data'), networks: { [NET]: net }, broker: brokerUrl, extra: ['--sync-interval', '300ms'] });
    };

    before(async () => {
      dir = tempDir();
      if (kind === 'mosquitto') ({ proc: mosquitto, url: brokerUrl } = await startMosquitto());
      await start();
    });
    after(async () => {
      for (const c of clients) await c.endAsync(true).catch(() => {});
      await ctl?.kill();
      await mosquitto?.kill();
      removeTempDirs();
    });

    /** A node's MQTT session with its own credentials (Mosquitto here is anonymous: the topic is the identity). */
    async function asNode(node: string) {
      const creds = await addNode(ctl.dataDir, node, NET, ctl.url);
      const c = await mqtt.connectAsync(ctl.url, {
        clientId: nodeClientId(DEFAULT_PREFIX, NET, node), reconnectPeriod: 0,
        ...(kind === 'embedded' ? { username: creds.username, password: creds.password } : {}),
      });
      clients.push(c);
      const answers: { lease: { backendData: Record<string, unknown>; publicIP: string } | null; error?: string }[] = [];
      c.on('message', (t, p) => { if (t === topics.nodeLease(NET, node) && p.length) answers.push(JSON.parse(p.toString())); });
      await c.subscribeAsync(topics.nodeLease(NET, node), { qos: 1 });
      /** Sends a hello and waits for the controller's answer to it. */
      const say = async (payload: string) => {
        const seen = answers.length;
        // (Not waiting for the PUBACK: a connection the broker closes never gives one.)
        c.publish(topics.nodeHello(NET, node), payload, { qos: 1 });
        await waitFor(`an answer to the hello of ${node}`, () => answers.length > seen);
        return answers[answers.length - 1]!;
      };
      return { c, say, answers };
    }

    const leaseOf = (node: string) => withStore(ctl.dataDir, (s) => s.getLease(NET, node));

    test('hellos with bad backend data or unusable public IPs are refused naming the field, and store nothing', async () => {
      const n = await asNode('mallory');
      const bad: [Record<string, unknown>, RegExp][] = [
        [{ backendData: Object.fromEntries(Array.from({ length: 48 }, (_, i) => [`k${i}`, 'x'.repeat(200)])) }, /backendData must have at most 16 fields/],
        [{ backendData: { VtepMAC: MAC, Evil: 'x' } }, /Evil/],
        [{ backendData: { VtepMAC: 'aa:bb:cc:dd:ee:ff\n$(reboot)' } }, /VtepMAC/],
        [{ backendData: { VtepMAC: '01:00:5e:00:00:01' } }, /VtepMAC/],
        [{ publicIP: '0.0.0.0' }, /publicIP must be a unicast address/],
        [{ publicIP: '255.255.255.255' }, /publicIP must be a unicast address/],
        [{ publicIP: '224.0.0.1' }, /publicIP must be a unicast address/],
        [{ publicIPv6: 'ff02::1' }, /publicIPv6 must be a unicast address/],
      ];
      for (const [extra, why] of bad) {
        const a = await n.say(hello(extra));
        assert.equal(a.lease, null, JSON.stringify(extra));
        assert.match(a.error ?? '', why);
      }
      assert.equal(await leaseOf('mallory'), undefined, 'no lease for any of them');
      // The node's own good hello still works, and hellos replace its data, never pile it up.
      for (const mac of ['0a:58:0a:f4:00:02', '0a:58:0a:f4:00:03', '0a:58:0a:f4:00:04']) {
        const a = await n.say(hello({ backendData: { VtepMAC: mac } }));
        assert.deepEqual(a.lease?.backendData, { VtepMAC: mac });
      }
      assert.deepEqual((await leaseOf('mallory'))?.backendData, { VtepMAC: '0a:58:0a:f4:00:04' });
      await runTwill(['lease', 'release', NET, '--node', 'mallory', '--data-dir', ctl.dataDir]);
    });

    test('a flood of hellos from one node is refused past its rate, counted in one log line, and another node still joins', async () => {
      const flood = await asNode('flood');
      const calm = await asNode('calm');
      for (let i = 0; i < 3_000; i++) await flood.c.publishAsync(topics.nodeHello(NET, 'flood'), hello(), { qos: 0 });
      const a = await calm.say(hello({ publicIP: '127.0.0.10' }));
      assert.ok(a.lease, `the calm node joined: ${a.error}`);
      await waitFor('the refusals logged with their count', () => /hello messages of a node over its rate limit refused .*node=flood/.test(ctl.output()));
      assert.equal((ctl.output().match(/over its rate limit refused .*node=flood/g) ?? []).length, 1, 'one log line, not one per message');
      // The flood changed nothing past its first hellos: one lease, the same one.
      assert.ok(await leaseOf('flood'));
      await waitFor('the flood answered at most its burst', () => flood.answers.length > 0);
      assert.ok(flood.answers.length <= 25, `${flood.answers.length} answers to 3,000 hellos`);
    });

    test("a flood of the previous protocol's hellos meets the same rate limit: at most the burst of upgrade notices and log lines", async () => {
      const old = await asNode('old');
      const calm = await asNode('calm-v1');
      const v1Hello = (node: string) => `${topics.legacyRoot}/node/${NET}/${node}/hello`;
      const noticeLines = (node: string) => (ctl.output().match(new RegExp(`older protocol refused: .* node=${node}( |$)`, 'gm')) ?? []).length;
      for (let i = 0; i < 300; i++) await old.c.publishAsync(v1Hello('old'), '{"v":1}', { qos: 0 });
      // The calm node's own v1 hello is answered: the flood held no one else up.
      await calm.c.publishAsync(v1Hello('calm-v1'), '{"v":1}', { qos: 1 });
      await waitFor("the calm node's notice logged", () => noticeLines('calm-v1') === 1);
      await waitFor('the refusals logged with their count', () => /hello messages of a node over its rate limit refused .*node=old( |$)/m.test(ctl.output()));
      assert.equal((ctl.output().match(/over its rate limit refused .*node=old( |$)/gm) ?? []).length, 1, 'one log line, not one per message');
      // The burst (20) and what refills while the test runs (one every 3 s); not one per hello.
      assert.ok(noticeLines('old') <= 25, `${noticeLines('old')} notices logged for 300 hellos`);
    });

    test('escape codes and newlines in a status reach neither twill status nor the log raw', async () => {
      const n = await asNode('inky');
      await n.c.publishAsync(topics.nodeStatus(NET, 'inky'), JSON.stringify({ v: 2, state: 'online', errors: ['\u001b[2J\u001b[31mFAKE\nv      forged   10.60.99.0/24'] }), { qos: 1, retain: true });
      await waitFor('status stored', async () => (await withStore(ctl.dataDir, (s) => s.listStatus())).some((s) => s.node === 'inky'));
      const st = await runTwill(['status', '--data-dir', ctl.dataDir]);
      assert.equal(st.code, 0, st.stderr);
      assert.ok(!st.stdout.includes('\u001b'), 'no escape character in twill status');
      assert.match(st.stdout, /\\u001b\[2J\\u001b\[31mFAKE\\u000av {6}forged/);
      assert.ok(!st.stdout.split('\n').some((l) => l.startsWith('v      forged')), 'no forged row');
      assert.ok(!ctl.output().includes('\u001b'), 'no escape character in the controller log');
    });

    test('a retained hello is never handled again when the controller restarts', async () => {
      const n = await asNode('ghost');
      if (kind === 'embedded') {
        // Refused by the broker itself: nodes may retain only their status.
        n.c.publish(topics.nodeHello(NET, 'ghost'), hello(), { qos: 1, retain: true });
        await waitFor('refusal logged', () => /publish refused .*only its status is retained/.test(ctl.output()));
        assert.equal(await leaseOf('ghost'), undefined);
        return;
      }
      // Mosquitto keeps it; the controller handles it live (the node did say hello)...
      await n.c.publishAsync(topics.nodeHello(NET, 'ghost'), hello({ publicIP: '127.0.0.11' }), { qos: 1, retain: true });
      await waitFor('lease', async () => (await leaseOf('ghost')) !== undefined);
      await n.c.endAsync();
      // ...but once released, a controller restart must not bring the node back from the broker's copy.
      assert.equal((await runTwill(['lease', 'release', NET, '--node', 'ghost', '--data-dir', ctl.dataDir])).code, 0);
      await ctl.kill();
      await start();
      // (the start's retained cleanup deletes it before the controller subscribes: nothing retains a hello)
      await waitFor('the retained hello cleared', () => /retained topics the store no longer backs deleted|retained hello cleared, not handled/.test(ctl.output()));
      assert.equal(await leaseOf('ghost'), undefined, 'the released node did not come back');
      const probe = await mqtt.connectAsync(brokerUrl as string, { reconnectPeriod: 0 });
      clients.push(probe);
      const retained: string[] = [];
      let marker = false;
      probe.on('message', (t, p, pk) => {
        if (t === 'probe/marker') marker = true;
        else if (pk.retain && p.length) retained.push(t);
      });
      await probe.subscribeAsync([topics.nodeHello(NET, 'ghost'), 'probe/marker'], { qos: 1 });
      // The broker sends retained messages right after the SUBACK, before anything published later.
      await probe.publishAsync('probe/marker', 'x', { qos: 1 });
      await waitFor('marker', () => marker);
      assert.deepEqual(retained, [], 'the broker holds no retained hello any more');
    });
  });
}

describe('the local controller\'s own limits', () => {
  after(() => removeTempDirs());

  test('a 64 MB packet is cut off at its header, before anyone logs in, without the controller holding it', async () => {
    const dir = tempDir();
    const net = await writeNetConf(dir, 'net', { Network: '10.61.0.0/16', Backend: { Type: 'alloc' } });
    const ctl = await startController({ dataDir: join(dir, 'data'), networks: { a: net } });
    try {
      const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${ctl.child.pid}/status`, 'utf8'))?.[1]) * 1024;
      const before = rss();
      const sock = connect(ctl.port, '127.0.0.1');
      sock.on('error', () => {});
      const closed = new Promise<void>((r) => sock.on('close', () => r()));
      let open = true;
      void closed.then(() => { open = false; });
      await new Promise<void>((r) => sock.once('connect', () => r()));
      // A CONNECT announcing 64 MiB (remaining length 0x80 0x80 0x80 0x20), then its body as fast as it is taken.
      sock.write(Buffer.from([0x10, 0x80, 0x80, 0x80, 0x20]));
      const chunk = Buffer.alloc(64 * 1024);
      let sent = 0;
      while (open && sent < 64 * 1024 * 1024) {
        if (!sock.write(chunk)) await Promise.race([new Promise((r) => sock.once('drain', r)), closed]);
        sent += chunk.length;
        await new Promise((r) => setImmediate(r));
      }
      await closed;
      assert.ok(sent < 16 * 1024 * 1024, `cut off long before 64 MB (${sent} bytes sent)`);
      await waitFor('the close logged', () => /connection closed before reading a packet .*packet of 67108864 bytes is larger than/.test(ctl.output()));
      assert.ok(rss() - before < 32 * 1024 * 1024, `the controller did not hold the packet (RSS ${before} -> ${rss()})`);
      // and it still serves: a node logs in
      const creds = await addNode(ctl.dataDir, 'after', 'a', ctl.url);
      const c = await mqtt.connectAsync(ctl.url, { username: creds.username, password: creds.password, clientId: nodeClientId(DEFAULT_PREFIX, 'a', 'after'), reconnectPeriod: 0 });
      await c.endAsync();
    } finally {
      await ctl.kill();
    }
  });

  test('a data directory readable by others is made private at start, and each exposed file is named', async () => {
    const dir = tempDir();
    const net = await writeNetConf(dir, 'net', { Network: '10.62.0.0/16', Backend: { Type: 'alloc' } });
    const dataDir = join(dir, 'data');
    const first = await startController({ dataDir, networks: { a: net } });
    await first.kill();
    // as a cp -r or a tar x with umask 022 would leave it
    chmodSync(dataDir, 0o755);
    for (const f of ['twill.db', 'admin-token', 'endpoints.json']) chmodSync(join(dataDir, f), 0o644);
    const ctl = await startController({ dataDir, networks: { a: net } });
    try {
      const mode = (p: string) => statSync(p).mode & 0o777;
      assert.equal(mode(dataDir), 0o700);
      for (const f of readdirSync(dataDir)) assert.equal(mode(join(dataDir, f)), 0o600, f);
      for (const f of ['twill.db', 'admin-token']) {
        assert.match(ctl.output(), new RegExp(`data directory entry was readable by others: made private .*path=${join(dataDir, f).replaceAll('/', '\\/')} was=0644`));
      }
      assert.match(ctl.output(), /path=\S+\/data was=0755/);
    } finally {
      await ctl.kill();
    }
  });
});
