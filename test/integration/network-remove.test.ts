// twill network remove, as an operator runs it beside a running controller:
// refused while the network has leases or nodes (saying how to go on),
// forced it releases and removes them, clears what the broker keeps for the
// network, leaves other networks alone, and the name can start afresh.
// Mosquitto is the broker so that its retained messages can be read by a
// plain client (the embedded broker lets only a network's nodes read them).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { Topics } from '../../core/topics.js';
import { addNode, metric, startAgent, startController, subnetOf, withStore, writeNetConf, type AgentProc, type ControllerProc } from '../helpers/cluster.js';
import { startMosquitto } from '../helpers/mosquitto.js';
import { removeTempDirs, runTwill, tempDir, waitFor, type Proc } from '../helpers/procs.js';

/** What Mosquitto holds retained on these exact topics (an exact subscription gets them at once). */
async function retained(url: string, topics: string[]): Promise<Map<string, string>> {
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0 });
  const got = new Map<string, string>();
  try {
    c.on('message', (t, p, packet) => { if (packet.retain && p.length) got.set(t, p.toString()); });
    await c.subscribeAsync(topics, { qos: 1 });
    // Mosquitto sends retained messages before the SUBACK's turn is over; a round trip more makes sure.
    await c.publishAsync(`probe/${process.pid}`, 'x', { qos: 1 });
  } finally {
    await c.endAsync();
  }
  return got;
}

describe('twill network remove', () => {
  let dir: string;
  let broker: Proc;
  let url: string;
  let ctl: ControllerProc;
  const agents: AgentProc[] = [];
  const topics = new Topics();
  const twill = (...args: string[]) => runTwill([...args, '--data-dir', ctl.dataDir]);

  before(async () => {
    dir = tempDir('twill-netrm-');
    ({ proc: broker, url } = await startMosquitto());
    const green = await writeNetConf(dir, 'green', { Network: '10.41.0.0/16', Backend: { Type: 'alloc' } });
    const blue = await writeNetConf(dir, 'blue', { Network: '10.42.0.0/16', Backend: { Type: 'alloc' } });
    ctl = await startController({ dataDir: join(dir, 'data'), networks: { green, blue }, broker: url, extra: ['--sync-interval', '300ms'] });
    for (const [node, network] of [['g1', 'green'], ['g2', 'green'], ['b1', 'blue']] as const) {
      const a = await startAgent(dir, await addNode(ctl.dataDir, node, network, url));
      agents.push(a);
      await subnetOf(a);
    }
  });

  after(async () => {
    for (const a of agents) await a.kill();
    await ctl?.kill();
    await broker?.kill();
    removeTempDirs();
  });

  test('a network with leases or nodes is refused, saying how to go on, and nothing changes', async () => {
    const before = await withStore(ctl.dataDir, async (s) => ({ net: await s.getNetwork('green'), leases: await s.listLeases('green'), nodes: await s.listNodes() }));
    const r = await twill('network', 'remove', 'green');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /network green still has 2 lease\(s\) and 2 node\(s\): .*twill network remove green --force/);
    const now = await withStore(ctl.dataDir, async (s) => ({ net: await s.getNetwork('green'), leases: await s.listLeases('green'), nodes: await s.listNodes() }));
    assert.deepEqual(now, before);
  });

  test('an unknown network is named in the error', async () => {
    const r = await twill('network', 'remove', 'nosuch');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /network nosuch does not exist/);
  });

  test('--force releases every lease, removes every node, clears the broker, and leaves other networks alone', async () => {
    const blueBefore = await withStore(ctl.dataDir, (s) => s.getLease('blue', 'b1'));
    assert.equal((await retained(url, [topics.netConfig('green')])).size, 1, 'the config is retained before');
    const r = await twill('network', 'remove', 'green', '--force');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'network green removed (released 2 lease(s), removed 2 node(s))\n');
    const list = await twill('network', 'list', '-o', 'json');
    assert.deepEqual((JSON.parse(list.stdout) as { name: string }[]).map((n) => n.name), ['blue']);
    const nodes = await twill('node', 'list', '-o', 'json');
    assert.deepEqual((JSON.parse(nodes.stdout) as { name: string }[]).map((n) => n.name), ['b1']);
    assert.equal((await retained(url, [topics.netConfig('green')])).size, 0, 'no retained config of a network that is gone');
    // Any own-lease message g1 still finds says why it has no lease; none carries a lease.
    for (const [, payload] of await retained(url, [topics.nodeLease('green', 'g1'), topics.nodeLease('green', 'g2')])) {
      assert.equal((JSON.parse(payload) as { lease: unknown }).lease, null, payload);
    }
    assert.deepEqual(await withStore(ctl.dataDir, (s) => s.getLease('blue', 'b1')), blueBefore, 'blue is untouched');
    assert.equal((await fetch(`${agents[2]!.metrics}/readyz`)).status, 200, "blue's agent stays ready");
  });

  test('the same name set again is a new network: a node joins it from revision 1 on', async () => {
    const conf = await writeNetConf(dir, 'green2', { Network: '10.43.0.0/16', Backend: { Type: 'alloc' } });
    const set = await twill('network', 'set', 'green', conf);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /network green stored \(revision 1\)/);
    const a = await startAgent(dir, await addNode(ctl.dataDir, 'g3', 'green', url));
    agents.push(a);
    assert.match(await subnetOf(a), /^10\.43\./);
    await waitFor('g3 ready', async () => (await fetch(`${a.metrics}/readyz`)).status === 200, 30_000);
    assert.equal(await metric(a, 'twill_agent_peers'), 0);
  });
});
