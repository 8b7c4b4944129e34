// The same controller and agent against Mosquitto (Debian's package) instead
// of the embedded broker: the controller is then a client like the agents.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { Topics } from '../../core/topics.js';
import { readSubnetEnv } from '../../agent/subnet-env.js';
import { addNode, metric, startAgent, startController, subnetOf, writeNetConf, type AgentProc, type ControllerProc } from '../helpers/cluster.js';
import { startMosquitto } from '../helpers/mosquitto.js';
import { removeTempDirs, runTwill, tempDir, waitFor, type Proc } from '../helpers/procs.js';

const topics = new Topics();

describe('against Mosquitto', () => {
  let dir: string;
  let broker: Proc;
  let url: string;
  let ctl: ControllerProc;
  const agents: AgentProc[] = [];

  before(async () => {
    dir = tempDir();
    ({ proc: broker, url } = await startMosquitto());
    const net = await writeNetConf(dir, 'net', { Network: '10.40.0.0/16', Backend: { Type: 'alloc' } });
    ctl = await startController({ dataDir: join(dir, 'data'), networks: { green: net }, broker: url, extra: ['--sync-interval', '300ms'] });
  });

  after(async () => {
    for (const a of agents) await a.kill();
    await ctl?.kill();
    await broker?.kill();
    removeTempDirs();
  });

  test('agents join and see each other through Mosquitto', async () => {
    const a = await startAgent(dir, await addNode(ctl.dataDir, 'm1', 'green', url));
    const b = await startAgent(dir, await addNode(ctl.dataDir, 'm2', 'green', url));
    agents.push(a, b);
    const sa = await subnetOf(a);
    const sb = await subnetOf(b);
    assert.notEqual(sa, sb);
    assert.match(sa, /^10\.40\./);
    // Generous waits: agents start through tsx, slow on a loaded 2-core machine.
    await waitFor('peers', async () => (await metric(a, 'twill_agent_peers')) === 1 && (await metric(b, 'twill_agent_peers')) === 1, 30_000);
    await waitFor('ready', async () => (await fetch(`${a.metrics}/readyz`)).status === 200, 30_000);
  });

  test('a lease released while the controller was down is cleared from the broker when it returns', async () => {
    const b = agents[1] as AgentProc;
    const a = agents[0] as AgentProc;
    await b.kill();
    await ctl.kill();
    const r = await runTwill(['lease', 'release', 'green', '--node', 'm2', '--data-dir', ctl.dataDir]);
    assert.equal(r.code, 0, r.stderr);
    ctl = await startController({ dataDir: ctl.dataDir, networks: {}, broker: url, extra: ['--sync-interval', '300ms'] });
    assert.match(ctl.output(), /retained topics the store no longer backs deleted count=1/);
    // Mosquitto no longer holds m2's own lease, and the surviving agent, told
    // the network's revision by the republished config, caught up and dropped it.
    const c = await mqtt.connectAsync(url, { reconnectPeriod: 0 });
    const seen = new Map<string, string>();
    c.on('message', (t, p) => seen.set(t, p.toString()));
    await c.subscribeAsync([topics.nodeLease('green', 'm2'), topics.netConfig('green')], { qos: 1 });
    await waitFor('config', () => seen.has(topics.netConfig('green')));
    assert.equal(seen.has(topics.nodeLease('green', 'm2')), false, 'nothing retained on m2\'s own topic');
    await c.endAsync();
    await waitFor('m1 drops m2', async () => (await metric(a, 'twill_agent_peers')) === 0);
    assert.ok(readSubnetEnv(a.subnetFile).FLANNEL_SUBNET);
  });
});
