import { test } from 'node:test';
import assert from 'node:assert/strict';
import { overlayScenario, peerState } from './scenario.js';

// Two underlay subnets joined by a router: h1 and h2 share L2 and route to
// each other directly; h3 is one hop away and is reached over vxlan.
const sameL2 = (a: string, b: string) => (a === 'h3') === (b === 'h3');

overlayScenario({
  name: 'vxlan with DirectRouting',
  conf: { Network: '10.247.0.0/16', Backend: { Type: 'vxlan', DirectRouting: true } },
  underlays: ['192.168.120.0/24', '192.168.121.0/24'],
  hosts: { h1: 0, h2: 0, h3: 1 },
  device: 'flannel.1',
  entries: async (_c, on, peer) => (sameL2(on, peer) ? { route: true, neighbour: false, fdb: false } : { route: true, neighbour: true, fdb: true }),
  extra: (get) => {
    test('on-link peers get a direct route via their public IP, the others go through flannel.1', async () => {
      const c = get();
      const direct = await peerState(c, 'h1', 'h2', 'flannel.1');
      assert.equal(direct.routes[0]?.gateway, direct.publicIP);
      assert.equal(direct.routes[0]?.dev, 'eth0');
      const tunneled = await peerState(c, 'h1', 'h3', 'flannel.1');
      assert.equal(tunneled.routes[0]?.dev, 'flannel.1');
      assert.equal(tunneled.routes[0]?.gateway, tunneled.subnet.split('/')[0]);
    });
  },
});
