// An agent through custom authentication's clock on IoT Core's stand-in:
// the authorizer called again every refreshAfterInSeconds (an hour) keeps
// the connection, and the connection IoT Core ends at
// disconnectAfterInSeconds (a day) comes back with nothing lost: the agent
// reconnects, within IoT Core's one CONNECT a second per client id, and
// holds every lease change made while it was away. The stand-in runs the
// authorizer's own numbers on a clock 10,000 times faster (a day in 8.6 s).
// While the agent is away the authorizer turns it down, so the changes
// surely land before it is back.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { nodeClientId } from '../../core/acl.js';
import { parseNetConf } from '../../core/config.js';
import { addNode } from '../../control/http/admin.js';
import { startIotCoreWorld, type IotCoreWorld } from '../helpers/iot-core.js';
import { metric, startAgent, subnetOf, type AgentProc } from '../helpers/cluster.js';
import { removeTempDirs, tempDir, waitFor } from '../helpers/procs.js';
import { AUTHORIZER, PREFIX } from '../helpers/serverless.js';

const NODE = 'clock-1';
const CLIENT_ID = nodeClientId(PREFIX, 'edge', NODE);

describe('agent on IoT Core through the hourly refresh and the daily disconnect', () => {
  let dir: string;
  let world: IotCoreWorld;
  let agent: AgentProc | undefined;
  /** while set, the authorizer turns the node down: it is away */
  let away = false;

  before(async () => {
    dir = tempDir('twill-agent-clock-');
    world = await startIotCoreWorld(dir, undefined, {
      timeScale: 1e-4,
      onEnded: (e) => { if (e.clientId === CLIENT_ID && e.reason === 'disconnectAfterInSeconds') away = true; },
      authorize: async (event, real) => {
        const r = await real(event);
        return away ? { ...r, isAuthenticated: false, policyDocuments: [] } : r;
      },
    });
    await world.w.runtimeOf('Api').controller.applyNetwork('edge', parseNetConf({ Network: '10.93.0.0/16', Backend: { Type: 'alloc' } }, {}));
  });
  after(async () => {
    await agent?.kill();
    await world?.close();
    removeTempDirs();
  });

  const peer = (n: number) => world.w.runtimeOf('Api').controller.join('edge', `peer-${n}`, { publicIP: `192.0.2.${n}` });
  /** the agent's view is the store's: complete at the network's revision, with these many peers */
  const inStep = async (a: AgentProc, peers: number) => {
    const revision = (await world.w.store.getNetwork('edge'))!.revision;
    return (await metric(a, 'twill_agent_applied_revision')) === revision && (await metric(a, 'twill_agent_peers')) === peers;
  };

  test('keeps its connection through refreshes, and after the daily disconnect comes back with every change made while it was away', async () => {
    const { iot, w } = world;
    await peer(1);
    const creds = await addNode(w.store, { name: NODE, network: 'edge', broker: iot.mqttsUrl, prefix: PREFIX, authorizer: AUTHORIZER });
    agent = await startAgent(dir, creds as never);
    const a = agent;
    const subnet = await subnetOf(a);
    await waitFor('the agent holds peer-1', () => inStep(a, 1), 30_000);

    // The hourly refresh: the authorizer says yes again and the connection stays.
    const accepted = () => iot.connections.filter((c) => c.clientId === CLIENT_ID && c.accepted).length;
    await waitFor('refreshes', () => iot.refreshes.filter((r) => r.clientId === CLIENT_ID && r.accepted).length >= 3, 30_000);
    assert.equal(accepted(), 1, 'one connection through every refresh');
    await peer(2);
    await waitFor('peer-2 while connected', () => inStep(a, 2), 30_000);

    // The daily disconnect. Away, the agent is turned down; meanwhile the network changes.
    await waitFor('the daily disconnect', () => away, 60_000);
    assert.deepEqual(iot.ended.filter((e) => e.clientId === CLIENT_ID), [{ clientId: CLIENT_ID, reason: 'disconnectAfterInSeconds' }]);
    await peer(3);
    assert.equal(await world.w.runtimeOf('Api').controller.release('edge', 'peer-1'), true);
    await peer(4);
    // Turned down twice: a reconnect after a refusal is where an agent would send its next CONNECT too soon.
    const tries = () => iot.connections.filter((c) => c.clientId === CLIENT_ID && !c.accepted).length;
    await waitFor('two reconnects turned down', () => tries() >= 2, 60_000);
    away = false;

    // Back: a second connection, and the view the store has.
    await waitFor('reconnected', () => accepted() === 2, 60_000);
    await waitFor('every change made while away', () => inStep(a, 3), 30_000);
    assert.equal(await subnetOf(a), subnet, 'its own lease never changed');
    assert.equal(iot.connectThrottled, 0, 'the agent never sent two CONNECTs within a second');
    assert.deepEqual(iot.refusals, [], 'the agent stays within its policy');
  });
});
