import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { TWILL, waitFor } from '../helpers/procs.js';
import { Cluster } from './cluster.js';
import { overlayScenario, peerState, skipKernel } from './scenario.js';

// Three hosts on one L2 underlay: each peer is one route via its public IP.
overlayScenario({
  name: 'host-gw',
  conf: { Network: '10.245.0.0/16', Backend: { Type: 'host-gw' } },
  hosts: { h1: 0, h2: 0, h3: 0 },
  entries: async () => ({ route: true }),
  extra: (get) => {
    test('each peer is routed via its public IP on the underlay interface', async () => {
      const c = get();
      const s = await peerState(c, 'h1', 'h2');
      assert.equal(s.routes[0]?.gateway, s.publicIP);
      assert.equal(s.routes[0]?.dev, 'eth0');
    });
  },
});

describe('host-gw: peers it cannot reach and a public IP that is not ours', { skip: skipKernel }, () => {
  let c: Cluster;
  before(async () => {
    c = await Cluster.create({
      underlays: ['192.168.110.0/24', '192.168.111.0/24'],
      hosts: { a1: 0, a2: 0, b1: 1 },
      conf: { Network: '10.246.0.0/16', Backend: { Type: 'host-gw' } },
    });
  });
  after(async () => {
    await c?.cleanup();
  });

  test('a peer that is not on-link is reported in status and logs, with the reason', async () => {
    await c.startAll();
    const st = await waitFor('a1 reports b1', () =>
      c.withStore(async (s) => (await s.listStatus()).find((r) => r.node === 'a1' && r.status.errors.some((e) => e.includes('b1')))),
    );
    assert.match(st.status.errors.find((e) => e.includes('b1')) as string, /peer b1 \(192\.168\.111\.\d+\) is not on-link from eth0: host-gw needs every node on one L2 network/);
    assert.match(c.node('a1').agent?.output() ?? '', /peer b1 .* is not on-link/);
    // the on-link peer still gets its route
    assert.equal((await peerState(c, 'a1', 'a2')).routes.length, 1);
    assert.equal((await peerState(c, 'a1', 'b1')).routes.length, 0);
  });

  test('an agent whose public IP is not an address of the host refuses to start, saying why', async () => {
    const n = c.node('a2');
    await n.agent?.stop();
    const p = c.lab.spawn(n.host, [process.execPath, TWILL, 'agent', '--config', n.configFile, '--iface', 'eth0', '--public-ip', '203.0.113.7',
      '--subnet-file', n.subnetFile, '--state-dir', n.stateDir, '--metrics-addr', '127.0.0.1:9465']);
    const code = await p.exited;
    assert.equal(code, 1);
    assert.match(p.output(), /public IP 203\.0\.113\.7 is not an address of this host \(behind NAT\?\)/);
  });
});
