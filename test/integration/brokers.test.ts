// The control-plane scenario on each broker an agent meets, with the same
// assertions: the embedded broker, Mosquitto (Debian's package, defaults),
// and the stand-in for AWS IoT Core (test/fakes/iot-core.ts: no retained
// message through a wildcard, its SUBSCRIBE and payload limits, the real
// authorizer, the IoT rules into the real Lambda handlers, DynamoDB). Real
// `twill agent` processes: join, a peer leaving, removal by a host that was
// down when it left, a controller restart, and an agent killed with -9.
// Protocol v1's agent could not pass the first step on IoT Core: it waited
// for retained leases through a wildcard subscription, which IoT Core (and
// its stand-in, test/integration/iot-core-rules.test.ts) never serves; and a
// v1 agent meeting a v2 control plane is told to upgrade (test/unit/agent.test.ts).
// The same flows with real pods and pings in network namespaces, on the
// same three brokers, are test/e2e/vxlan.test.ts and test/e2e/brokers.test.ts.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseNetConf } from '../../core/config.js';
import { addNode as addNodeTo } from '../../control/http/admin.js';
import { startIotCoreWorld } from '../helpers/iot-core.js';
import { addNode, metric, startAgent, startController, writeNetConf, type AgentCreds, type AgentProc, type ControllerProc } from '../helpers/cluster.js';
import { startMosquitto } from '../helpers/mosquitto.js';
import { freePort, removeTempDirs, runTwill, tempDir, waitFor, type Proc } from '../helpers/procs.js';
import { AUTHORIZER, PREFIX } from '../helpers/serverless.js';

const NET = 'matrix';
const CONF = { Network: '10.95.0.0/16', Backend: { Type: 'alloc' } };

/** What the scenario needs of a control plane, whichever broker is behind it. */
interface Plane {
  creds(node: string): Promise<AgentCreds>;
  /** removes the node's lease (an operator's `twill lease release`) */
  release(node: string): Promise<void>;
  restartController(): Promise<void>;
  subnet(node: string): Promise<string | null | undefined>;
  close(): Promise<void>;
}

async function localPlane(dir: string, broker?: 'mosquitto'): Promise<Plane> {
  let mosquitto: Proc | undefined;
  let url: string | undefined;
  if (broker === 'mosquitto') ({ proc: mosquitto, url } = await startMosquitto());
  const net = await writeNetConf(dir, NET, CONF);
  const dataDir = join(dir, 'data');
  const port = await freePort();
  const start = () => startController({ dataDir, networks: { [NET]: net }, broker: url, port, extra: ['--sync-interval', '300ms'] });
  let ctl: ControllerProc = await start();
  return {
    creds: (node) => addNode(dataDir, node, NET, ctl.url),
    async release(node) {
      const r = await runTwill(['lease', 'release', NET, '--node', node, '--data-dir', dataDir]);
      assert.equal(r.code, 0, r.stderr);
    },
    async restartController() {
      await ctl.stop();
      ctl = await start();
    },
    async subnet(node) {
      const r = await runTwill(['status', '--data-dir', dataDir, '--json']);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as { leases: { node: string; subnet: string | null }[] }).leases.find((l) => l.node === node)?.subnet;
    },
    async close() {
      await ctl?.kill();
      await mosquitto?.kill();
    },
  };
}

async function iotPlane(dir: string): Promise<Plane> {
  const world = await startIotCoreWorld(dir);
  const { iot, w } = world;
  await w.runtimeOf('Api').controller.applyNetwork(NET, parseNetConf(CONF, {}));
  return {
    creds: async (node) => ({ ...(await addNodeTo(w.store, { name: node, network: NET, broker: iot.mqttsUrl, prefix: PREFIX, authorizer: AUTHORIZER })), node }) as AgentCreds,
    async release(node) {
      assert.equal(await w.runtimeOf('Api').controller.release(NET, node), true);
    },
    // Lambda has no controller to restart: every container is new (a cold
    // start after a deployment), and it publishes what a start publishes.
    async restartController() {
      await w.setEnv({});
      await w.runtimeOf('Maintenance').controller.publishOnStart();
    },
    subnet: async (node) => (await w.store.getLease(NET, node))?.subnet,
    async close() {
      assert.deepEqual(iot.refusals, [], 'the agents stayed within their IoT policy and IoT Core\'s limits');
      assert.deepEqual(iot.ruleErrors, []);
      await world.close();
    },
  };
}

const PLANES: [string, (dir: string) => Promise<Plane>][] = [
  ['the embedded broker', (d) => localPlane(d)],
  ['Mosquitto', (d) => localPlane(d, 'mosquitto')],
  ['AWS IoT Core (stand-in)', (d) => iotPlane(d)],
];

for (const [name, make] of PLANES) {
  describe(`control-plane scenario on ${name}`, () => {
    let dir: string;
    let plane: Plane;
    const agents = new Map<string, AgentProc>();
    const creds = new Map<string, AgentCreds>();

    before(async () => {
      dir = tempDir('twill-brokers-');
      plane = await make(dir);
    });
    after(async () => {
      for (const a of agents.values()) await a.kill();
      await plane?.close();
      removeTempDirs();
    });

    const start = async (node: string) => {
      if (!creds.has(node)) creds.set(node, await plane.creds(node));
      const a = await startAgent(dir, creds.get(node)!, [], agents.get(node));
      agents.set(node, a);
      return a;
    };
    const ready = async (a: AgentProc) => (await fetch(`${a.metrics}/readyz`).catch(() => undefined))?.status === 200;
    /** every named agent is ready and holds exactly the others of `members` */
    const converged = (nodes: string[], members: string[]) =>
      waitFor(`${nodes.join(', ')} hold ${members.length - 1} peers`, async () => {
        for (const n of nodes) {
          const a = agents.get(n)!;
          if (!(await ready(a)) || (await metric(a, 'twill_agent_peers').catch(() => undefined)) !== members.length - 1) return false;
        }
        return true;
      }, 60_000, 200).catch((e: Error) => {
        throw new Error(`${e.message}\n${nodes.map((n) => `--- ${n}\n${agents.get(n)?.output().slice(-1500)}`).join('\n')}`);
      });
    const envOf = (n: string) => readFileSync(agents.get(n)!.subnetFile, 'utf8');

    test('agents join and each holds every peer', async () => {
      for (const n of ['a', 'b', 'c']) await start(n);
      await converged(['a', 'b', 'c'], ['a', 'b', 'c']);
      const subnets = await Promise.all(['a', 'b', 'c'].map((n) => plane.subnet(n)));
      assert.equal(new Set(subnets).size, 3, `three distinct subnets: ${subnets}`);
    });

    test('a peer that leaves is dropped by every agent', async () => {
      await agents.get('c')!.stop();
      await plane.release('c');
      await converged(['a', 'b'], ['a', 'b']);
    });

    test('a peer that left while a host was down is gone once that host is ready again', async () => {
      await start('d');
      await converged(['a', 'b', 'd'], ['a', 'b', 'd']);
      await agents.get('b')!.kill();
      await agents.get('d')!.stop();
      await plane.release('d');
      await converged(['a'], ['a', 'b']);
      await start('b');
      await converged(['b'], ['a', 'b']);
    });

    test('after a controller restart every agent keeps its subnet and still follows the network', async () => {
      const before = { a: await plane.subnet('a'), b: await plane.subnet('b'), envA: envOf('a') };
      await plane.restartController();
      await start('e');
      await converged(['a', 'b', 'e'], ['a', 'b', 'e']);
      assert.deepEqual({ a: await plane.subnet('a'), b: await plane.subnet('b'), envA: envOf('a') }, before);
    });

    test('an agent killed with -9 comes back on the same subnet, with every peer', async () => {
      const env = envOf('a');
      await agents.get('a')!.kill();
      await start('a');
      await converged(['a', 'b', 'e'], ['a', 'b', 'e']);
      assert.equal(envOf('a'), env);
    });
  });
}
