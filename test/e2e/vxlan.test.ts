import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { overlayScenario } from './scenario.js';

// Three hosts on one underlay; every peer gets a neighbour, an fdb entry and a route.
overlayScenario({
  name: 'vxlan',
  conf: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } },
  hosts: { h1: 0, h2: 0, h3: 0 },
  device: 'flannel.1',
  entries: async () => ({ route: true, neighbour: true, fdb: true }),
  golden: 'rules-10.244.0.0-16.txt',
  extra: (get) => {
    test('flannel.1 is built as flannel builds it, its MAC is kept and published, and subnet.env has its MTU', async () => {
      const c = get();
      const [link] = JSON.parse(await c.ip('h1', ['-j', '-d', 'link', 'show', 'flannel.1'])) as {
        mtu: number; address: string; linkinfo: { info_kind: string; info_data: { id: number; port: number; local: string; learning: boolean; link?: string } };
      }[];
      const [eth0] = JSON.parse(await c.ip('h1', ['-j', 'link', 'show', 'eth0'])) as { mtu: number; ifindex: number }[];
      const lease = await c.lease('h1');
      assert.ok(link && eth0 && lease);
      assert.equal(link.linkinfo.info_kind, 'vxlan');
      assert.equal(link.linkinfo.info_data.id, 1);
      assert.equal(link.linkinfo.info_data.port, 8472);
      assert.equal(link.linkinfo.info_data.local, lease.publicIP);
      assert.equal(link.linkinfo.info_data.learning, false);
      assert.equal(link.mtu, eth0.mtu - 50);
      assert.match(c.subnetEnv('h1') ?? '', new RegExp(`FLANNEL_MTU=${eth0.mtu - 50}\\n`));
      assert.equal(link.address, lease.backendData.VtepMAC);
      assert.equal(readFileSync(join(c.node('h1').stateDir, 'vtep-mac.1'), 'utf8').trim(), link.address);
      const addrs = JSON.parse(await c.ip('h1', ['-j', '-4', 'addr', 'show', 'dev', 'flannel.1'])) as { addr_info: { local: string; prefixlen: number }[] }[];
      assert.deepEqual(addrs[0]?.addr_info.map((a) => `${a.local}/${a.prefixlen}`), [`${(lease.subnet as string).split('/')[0]}/32`]);
    });
  },
});
