// Two deployments on one broker, as two stages share one IoT Core endpoint
// in an AWS account: Mosquitto, two controllers with their own topic
// prefixes, and in each a network and a node of the same names. With client
// ids that named only the network and the node, each agent's CONNECT took
// the other's session over, again and again (26 takeovers in 12 s, issue
// 20); ids that name the deployment keep each agent on its one session. In
// one deployment, network "a-b" with node "c" and network "a" with node "b-c"
// (one id under the old scheme) keep theirs too.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { nodeClientId } from '../../core/acl.js';
import { metric, startAgent, startController, subnetOf, writeNetConf, type AgentCreds, type AgentProc, type ControllerProc } from '../helpers/cluster.js';
import { startMosquitto } from '../helpers/mosquitto.js';
import { removeTempDirs, runTwill, tempDir, waitFor, type Proc } from '../helpers/procs.js';

describe('two deployments on one broker, with the same network and node names', () => {
  let dir: string;
  let broker: Proc;
  let url: string;
  const controllers: ControllerProc[] = [];
  const agents: AgentProc[] = [];

  before(async () => {
    dir = tempDir('twill-deployments-');
    ({ proc: broker, url } = await startMosquitto());
  });
  after(async () => {
    for (const a of agents) await a.kill();
    for (const c of controllers) await c.kill();
    await broker?.kill();
    removeTempDirs();
  });

  async function deployment(prefix: string, networks: Record<string, string>): Promise<ControllerProc> {
    const files: Record<string, string> = {};
    for (const [name, cidr] of Object.entries(networks)) files[name] = await writeNetConf(dir, `${prefix.replace('/', '-')}-${name}`, { Network: cidr, Backend: { Type: 'alloc' } });
    const c = await startController({ dataDir: join(dir, prefix.replace('/', '-')), networks: files, broker: url, extra: ['--prefix', prefix, '--sync-interval', '300ms'] });
    controllers.push(c);
    return c;
  }
  async function agent(ctl: ControllerProc, prefix: string, network: string, node: string): Promise<AgentProc> {
    const r = await runTwill(['node', 'add', node, '--network', network, '--data-dir', ctl.dataDir, '--broker', url, '--prefix', prefix]);
    assert.equal(r.code, 0, r.stderr);
    // (each deployment's agents keep their files apart: the same node name in both)
    const own = join(dir, `agents-${prefix.replace('/', '-')}`);
    mkdirSync(own, { recursive: true });
    const a = await startAgent(own, JSON.parse(r.stdout) as AgentCreds);
    agents.push(a);
    return a;
  }
  const sessions = (a: AgentProc) => a.output().split('\n').filter((l) => l.includes('connected to broker')).length;

  test('each agent keeps its one session: no takeover, and each follows its own deployment', async () => {
    const a = await deployment('twill/a', { blue: '10.61.0.0/16', 'a-b': '10.62.0.0/16', a: '10.63.0.0/16' });
    const b = await deployment('twill/b', { blue: '10.71.0.0/16' });
    const blueA = await agent(a, 'twill/a', 'blue', 'n1');
    const blueB = await agent(b, 'twill/b', 'blue', 'n1');
    const ambiguous1 = await agent(a, 'twill/a', 'a-b', 'c');
    const ambiguous2 = await agent(a, 'twill/a', 'a', 'b-c');
    assert.match(await subnetOf(blueA), /^10\.61\./);
    assert.match(await subnetOf(blueB), /^10\.71\./);
    assert.match(await subnetOf(ambiguous1), /^10\.62\./);
    assert.match(await subnetOf(ambiguous2), /^10\.63\./);

    // A change in each deployment's blue reaches its agent, and only its own:
    // by then any takeover would have shown (the second CONNECT of an id drops the first at once).
    for (const [ctl, node, ip] of [[a, 'x', '192.0.2.1'], [b, 'y', '192.0.2.2']] as const) {
      const r = await runTwill(['lease', 'reserve', 'blue', '--node', node, '--subnet', ctl === a ? '10.61.200.0/24' : '10.71.200.0/24', '--public-ip', ip, '--data-dir', ctl.dataDir]);
      assert.equal(r.code, 0, r.stderr);
    }
    await waitFor('each blue agent holds its own deployment\'s peer', async () => (await metric(blueA, 'twill_agent_peers')) === 1 && (await metric(blueB, 'twill_agent_peers')) === 1, 30_000);

    for (const x of [blueA, blueB, ambiguous1, ambiguous2]) assert.equal(sessions(x), 1, `${x.node}: one session\n${x.output().slice(-2000)}`);
    assert.doesNotMatch(broker.output(), /already connected, closing old connection/);
    for (const [prefix, network, node] of [['twill/a', 'blue', 'n1'], ['twill/b', 'blue', 'n1'], ['twill/a', 'a-b', 'c'], ['twill/a', 'a', 'b-c']] as const) {
      assert.match(broker.output(), new RegExp(`as ${nodeClientId(prefix, network, node).replace(/[/.]/g, '\\$&')} `), `${prefix} ${network} ${node} connected under its own id`);
    }
  });
});
