// The agent against AWS IoT Core's way of connecting, end to end on this
// machine: `twill agent` with the config file the admin API prints (broker,
// authorizer, prefix, node credentials) connects over TLS with ALPN "mqtt"
// or over WebSocket on /mqtt to a stand-in for IoT Core (test/fakes/iot-core.ts)
// that runs the real authorizer handler on its CONNECT and enforces the
// policy it returns; its hello goes through the IoT rule to the real hello
// handler, whose lease comes back through the IoT data plane, and the agent
// writes subnet.env. Nothing else in the agent's setup differs from a broker
// of its own.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { nodeClientId } from '../../core/acl.js';
import { parseNetConf } from '../../core/config.js';
import { addNode } from '../../control/http/admin.js';
import type { FakeIotCore } from '../fakes/iot-core.js';
import { startIotCoreWorld } from '../helpers/iot-core.js';
import { metric, startAgent, subnetOf, type AgentProc } from '../helpers/cluster.js';
import { removeTempDirs, tempDir, waitFor } from '../helpers/procs.js';
import { ADMIN_TOKEN, AUTHORIZER, PREFIX, urlEvent, type ServerlessWorld } from '../helpers/serverless.js';
import { handler as apiHandler } from '../../functions/api.js';

describe('agent on AWS IoT Core (custom authorizer, TLS and WebSocket)', () => {
  let dir: string;
  let iotCore: FakeIotCore;
  let w: ServerlessWorld;
  let world: Awaited<ReturnType<typeof startIotCoreWorld>>;
  const agents: AgentProc[] = [];

  before(async () => {
    dir = tempDir('twill-agent-iot-');
    world = await startIotCoreWorld(dir);
    ({ iot: iotCore, w } = world);
    await w.runtimeOf('Api').controller.applyNetwork('edge', parseNetConf({ Network: '10.90.0.0/16', Backend: { Type: 'alloc' } }, {}));
  });

  after(async () => {
    for (const a of agents) await a.kill();
    await world?.close();
    removeTempDirs();
  });

  async function agentFor(node: string, broker: string, password?: string): Promise<AgentProc> {
    const creds = await addNode(w.store, { name: node, network: 'edge', broker, prefix: PREFIX, authorizer: AUTHORIZER });
    const a = await startAgent(dir, { ...creds, ...(password ? { password } : {}) } as never);
    agents.push(a);
    return a;
  }

  for (const transport of ['wss', 'mqtts'] as const) {
    test(`over ${transport}: connects through the authorizer and gets its lease`, async () => {
      const node = `edge-${transport}`;
      const agent = await agentFor(node, transport === 'wss' ? iotCore.wssUrl : iotCore.mqttsUrl);
      // subnet.env names the subnet by its first address, as flannel's does.
      const envSubnet = await subnetOf(agent);
      const subnet = (await w.store.getLease('edge', node))?.subnet;
      assert.equal(subnet?.replace(/\.0\//, '.1/'), envSubnet);

      const conn = iotCore.connections.find((c) => c.clientId === nodeClientId(PREFIX, 'edge', node) && c.accepted);
      assert.ok(conn, `an accepted connection: ${JSON.stringify(iotCore.connections)}`);
      assert.equal(conn.transport, transport);
      assert.equal(conn.username, `${node}?x-amz-customauthorizer-name=${AUTHORIZER}`);
      assert.equal(conn.authorizer, AUTHORIZER);
      assert.equal(conn.sni, 'localhost', 'the endpoint name goes in SNI, which IoT Core routes on');
      if (transport === 'mqtts') assert.equal(conn.alpn, 'mqtt', 'ALPN mqtt, as IoT Core requires for custom authentication on 443');
      // Its status went through the status rule into the store.
      await waitFor('status in the store', async () => (await w.store.listStatus()).some((s) => s.node === node && s.status.subnet === subnet));
      assert.deepEqual(iotCore.refusals, [], 'the agent stays within its policy');
      assert.deepEqual(iotCore.ruleErrors, []);
    });
  }

  test("each agent receives the other's lease through IoT Core", async () => {
    // (The status reports a change of peers at most once a minute: each agent's own metrics say it at once.)
    const both = agents.filter((a) => a.node === 'edge-wss' || a.node === 'edge-mqtts');
    assert.equal(both.length, 2);
    await waitFor('both agents hold the other', async () => {
      for (const a of both) if ((await metric(a, 'twill_agent_peers')) !== 1 || (await fetch(`${a.metrics}/readyz`)).status !== 200) return false;
      return true;
    });
  });

  test('a wrong password is refused by the authorizer, and the agent gets nothing', async () => {
    const agent = await agentFor('edge-bad', iotCore.wssUrl, 'not-the-password');
    await waitFor('refused connection', () => iotCore.connections.some((c) => c.clientId === nodeClientId(PREFIX, 'edge', 'edge-bad') && !c.accepted && /authorizer refused/.test(c.reason ?? '')));
    assert.equal(await w.store.getLease('edge', 'edge-bad'), undefined);
    assert.ok(!/FLANNEL_SUBNET/.test((() => { try { return readFileSync(agent.subnetFile, 'utf8'); } catch { return ''; } })()));
  });

  test('a node removed through the admin API is disconnected from IoT Core at once, cannot come back, and its lease is gone', async () => {
    const agent = await agentFor('edge-gone', iotCore.mqttsUrl);
    await subnetOf(agent);
    const clientId = nodeClientId(PREFIX, 'edge', 'edge-gone');
    const accepted = () => iotCore.connections.filter((c) => c.clientId === clientId && c.accepted).length;
    assert.equal(accepted(), 1);
    const r = await w.as('Api', apiHandler)(urlEvent('DELETE', '/v1/nodes/edge-gone', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }));
    assert.equal((r as { statusCode: number }).statusCode, 200);
    // DeleteConnection was asked for by the time the API answered, and it closed the live connection.
    assert.deepEqual(w.iot.disconnects.filter((d) => d.clientId === clientId), [{ clientId, cleanSession: true, preventWillMessage: true, closed: true }]);
    assert.equal(await w.store.getLease('edge', 'edge-gone'), undefined);
    // The agent reconnects (it retries a refused login) and the authorizer refuses it: the node is gone.
    await waitFor('reconnect refused', () => iotCore.connections.some((c) => c.clientId === clientId && !c.accepted && /authorizer refused/.test(c.reason ?? '')));
    assert.equal(accepted(), 1, 'no connection of the removed node was accepted after the removal');
    assert.equal(await w.store.getLease('edge', 'edge-gone'), undefined);
    // Its last will was not published: no status of a node that no longer exists.
    assert.ok(!(await w.store.listStatus()).some((s) => s.node === 'edge-gone' && s.status.state === 'offline'));
  });
});
