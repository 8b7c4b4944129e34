// wireguard end to end, on wireguard-go (this kernel has no WireGuard):
// hosts as namespaces, each with its own /run/wireguard as a real host has,
// CNI pods, the scenario every backend passes, and what only this one
// promises.
import assert from 'node:assert/strict';
import type { Cluster } from './cluster.js';
import { overlayScenario } from './scenario.js';
import { parseDump, type WgDump } from '../../agent/wireguard/wg.js';

const RUN_WIREGUARD = '/run/wireguard';
const NETWORK = '10.246.0.0/16';

async function dump(c: Cluster, on: string, device: string): Promise<WgDump | undefined> {
  const r = await c.lab.exec(c.node(on).host, ['wg', 'show', device, 'dump'], { okCodes: [0, 1] });
  return r.code === 0 ? parseDump(r.stdout) : undefined;
}

/** host `on` has peer on device: its key, its endpoint, its subnets as allowed IPs, and the route into the device */
async function hasPeer(c: Cluster, on: string, peer: string, device: string, family: 4 | 6 = 4): Promise<boolean> {
  const lease = await c.lease(peer);
  const d = await dump(c, on, device);
  const key = lease?.backendData.PublicKey;
  const p = d?.peers.find((x) => x.publicKey === key);
  const subnet = family === 4 ? lease?.subnet : lease?.ipv6Subnet;
  if (!p || !subnet || !p.allowedIps.includes(subnet)) return false;
  const routes = JSON.parse((await c.ip(on, [`-${family}`, '-j', 'route', 'show', 'dev', device])) || '[]') as { dst: string }[];
  return routes.length > 0;
}

overlayScenario({
  name: 'wireguard',
  conf: { Network: NETWORK, Backend: { Type: 'wireguard' } },
  hosts: { h1: 0, h2: 0, h3: 0 },
  device: 'flannel-wg',
  privateDirs: [RUN_WIREGUARD],
  present: (c, on, peer) => hasPeer(c, on, peer, 'flannel-wg'),
  absent: async (c, on, subnet) => !(await dump(c, on, 'flannel-wg'))?.peers.some((p) => p.allowedIps.includes(subnet)),
  drift: async (c, on, peer) => {
    const key = (await c.lease(peer))?.backendData.PublicKey as string;
    await c.lab.exec(c.node(on).host, ['wg', 'set', 'flannel-wg', 'peer', key, 'remove']);
    await c.ip(on, ['route', 'del', NETWORK, 'dev', 'flannel-wg']);
  },
  extra: () => {
    assert.ok(true);
  },
});
