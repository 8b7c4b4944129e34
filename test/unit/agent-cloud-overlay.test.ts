// Agents on a cloud network with an overlay, against the real local
// controller (SQLite, the embedded broker) on in-memory kernels: each
// publishes its VtepMAC through its hello (the controller takes it for an
// aws-vpc lease), writes the overlay's MTU in subnet.env, and, its peers
// judged by no route controller yet (nodes added by hand: overlay, as the
// contract says), holds every peer over the overlay.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNetConf } from '../../core/config.js';
import { macAddress } from '../../core/mac.js';
import { createLogger, silentLogger } from '../../core/log.js';
import { Agent } from '../../agent/agent.js';
import { addNode } from '../../control/http/admin.js';
import { startLocalController, type LocalController } from '../../control/local/server.js';
import { FakeHost } from '../fakes/host.js';
import { FakeIptables } from '../fakes/iptables.js';
import { FakeKernel } from '../fakes/kernel.js';
import { waitFor } from '../helpers/procs.js';

const dirs: string[] = [];
const tmp = (p: string) => {
  const d = mkdtempSync(join(tmpdir(), p));
  dirs.push(d);
  return d;
};
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

describe('agents on an aws-vpc network with Backend.Overlay', () => {
  let lc: LocalController;
  const agents: Agent[] = [];

  before(async () => {
    lc = await startLocalController({
      dataDir: tmp('twill-cloud-agent-'), listen: '127.0.0.1:0', syncIntervalMs: 200, log: silentLogger,
      networks: [{ name: 'net', config: parseNetConf({ Network: '10.60.0.0/16', Backend: { Type: 'aws-vpc', Overlay: { Type: 'vxlan' } } }, {}) }],
    });
  });
  after(async () => {
    for (const a of agents) await a.stop();
    await lc?.close();
  });

  test('publish their VtepMAC, write the overlay MTU, and hold each other over the overlay', async () => {
    const hosts = [];
    for (const [i, name] of ['a', 'b'].entries()) {
      const kernel = FakeKernel.host({ cidr: `192.168.1.${i + 1}/24`, gateway: '192.168.1.254' });
      const dir = tmp(`twill-${name}-`);
      const logs: string[] = [];
      const creds = await addNode(lc.store, { name, network: 'net', broker: lc.url });
      const agent = new Agent({
        broker: creds.broker, network: 'net', node: name, username: creds.username, password: creds.password,
        subnetFile: join(dir, 'subnet.env'), stateDir: join(dir, 'state'), metricsAddr: '',
        ipMasq: true, forwardRules: true, resyncIntervalMs: 200, renewMarginMs: 3600_000, helloRetryMs: 2000, pollMs: 3600_000,
        iface: ['eth0'], log: createLogger(name, 'debug', (l) => logs.push(l)), kernel, iptables: new FakeIptables(), host: new FakeHost(kernel),
      });
      agents.push(agent);
      await agent.start();
      hosts.push({ name, kernel, dir, agent, logs });
    }
    const [a, b] = hosts as [(typeof hosts)[0], (typeof hosts)[0]];
    await waitFor('both ready', () => a.agent.isReady() && b.agent.isReady());
    await waitFor('each holds the other over flannel.1', () => a.kernel.routesVia('flannel.1').length === 1 && b.kernel.routesVia('flannel.1').length === 1);
    const lb = await lc.store.getLease('net', 'b');
    assert.equal(lb?.backendType, 'aws-vpc');
    assert.equal(macAddress(lb?.backendData.VtepMAC), undefined, `b's lease carries a VtepMAC: ${JSON.stringify(lb?.backendData)}`);
    assert.equal(a.kernel.fdb[0]?.mac, lb?.backendData.VtepMAC);
    assert.deepEqual(a.kernel.routesVia('flannel.1').map((r) => r.dst), [lb?.subnet]);
    assert.match(readFileSync(join(a.dir, 'subnet.env'), 'utf8'), /^FLANNEL_MTU=1450$/m);
  });
});
