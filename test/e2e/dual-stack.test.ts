// Dual stack and IPv6-only, as flannel builds them, on hosts with dual-stack
// underlays and pods the CNI bridge plugin makes with host-local ranges for
// both families (test/e2e/scenario.ts: every pod pings every pod on another
// host at each of its addresses, both ways; drift of the IPv6 entries back
// within one resync; kill -9 of an agent with a ping of each family running,
// no packet lost; a controller restart; removal, also by a host that was
// down). vxlan builds flannel-v6.1 beside flannel.1, over the hosts' IPv6
// addresses, with its own VTEP MAC; host-gw routes each peer's IPv6 subnet
// via its public IPv6 address.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../helpers/procs.js';
import { overlayScenario } from './scenario.js';

const DUAL = { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd76:cac2:6150::/56' };
// a real user's IPv6-only file, flannel's unknown IPv6Subnet and all
const V6_ONLY = { EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd76:cac2:6150::/56', IPv6Subnet: 'fd76:cac2:6150::1/64', EnableNFTables: false };
const HOSTS = { h1: 0, h2: 0, h3: 0 };
/** what a peer costs on a host, per family: vxlan a route, a neighbour and an fdb entry on its device; host-gw a route */
const BACKENDS = {
  vxlan: { device: 'flannel.1', device6: 'flannel-v6.1', entries: async () => ({ route: true, neighbour: true, fdb: true }) },
  'host-gw': { entries: async () => ({ route: true }) },
} as const;

function scenario(type: keyof typeof BACKENDS, ipv6: 'dual' | 'only', o: { nftables?: boolean; extra?: Parameters<typeof overlayScenario>[0]['extra'] } = {}): void {
  const b = BACKENDS[type];
  overlayScenario({
    name: `${type} ${ipv6 === 'dual' ? 'dual stack' : 'IPv6-only'}${o.nftables ? ' with EnableNFTables' : ''}`,
    conf: { ...(ipv6 === 'dual' ? DUAL : V6_ONLY), ...(o.nftables && { EnableNFTables: true }), Backend: { Type: type } },
    hosts: HOSTS,
    ipv6,
    ...b,
    extra: o.extra,
  });
}

scenario('vxlan', 'dual', {
  extra: (get) => {
    test('flannel-v6.1 runs over the IPv6 underlay with its own kept, published VTEP MAC; pods get the smaller MTU; ip6tables masquerades', async () => {
      const c = get();
      const [v6] = JSON.parse(await c.ip('h1', ['-j', '-d', 'link', 'show', 'flannel-v6.1'])) as { mtu: number; address: string; linkinfo: { info_data: { id: number; local?: string; local6?: string; learning: boolean } } }[];
      const [v4] = JSON.parse(await c.ip('h1', ['-j', 'link', 'show', 'flannel.1'])) as { mtu: number; address: string }[];
      const lease = await c.lease('h1');
      assert.ok(v6 && v4 && lease);
      assert.equal(v6.linkinfo.info_data.id, 1);
      assert.equal(v6.linkinfo.info_data.local6 ?? v6.linkinfo.info_data.local, lease.publicIPv6);
      assert.equal(v6.address, lease.backendData.VtepMACv6);
      assert.equal(v4.address, lease.backendData.VtepMAC);
      assert.notEqual(v6.address, v4.address);
      assert.equal(readFileSync(join(c.node('h1').stateDir, 'vtep-mac6.1'), 'utf8').trim(), v6.address);
      // an IPv6 outer header is 20 bytes more than an IPv4 one
      assert.equal(v6.mtu, 1500 - 70);
      assert.equal(v4.mtu, 1500 - 50);
      assert.match(c.subnetEnv('h1') ?? '', /^FLANNEL_MTU=1430$/m);
      assert.match(c.subnetEnv('h1') ?? '', /^FLANNEL_IPV6_SUBNET=fd76:cac2:6150:[0-9a-f]+::1\/64$/m);
      const addrs = JSON.parse(await c.ip('h1', ['-j', '-6', 'addr', 'show', 'dev', 'flannel-v6.1', 'scope', 'global'])) as { addr_info: { local: string; prefixlen: number }[] }[];
      assert.deepEqual(addrs[0]?.addr_info.filter((a) => a.local).map((a) => `${a.local}/${a.prefixlen}`), [`${(lease.ipv6Subnet as string).split("/")[0]}/128`]);
      const rules = (await c.lab.exec(c.node('h1').host, ['ip6tables-save'])).stdout;
      assert.match(rules, /-A TWILL-POSTRTG -s fd76:cac2:6150::\/56 .*-j MASQUERADE/);
      assert.match(rules, /-A TWILL-FWD -s fd76:cac2:6150::\/56 .*-j ACCEPT/);
    });
  },
});
scenario('vxlan', 'only');
scenario('host-gw', 'dual');
scenario('host-gw', 'only');
// flannel's EnableNFTables: the same network with its rules in twill's own
// nftables table and no iptables chain of twill's.
scenario('vxlan', 'dual', {
  nftables: true,
  extra: (get) => {
    test("the rules live in nftables, not iptables; a pod reaches the router, which has no route back to pods, through the masquerade; a table deleted by hand comes back", async () => {
      const c = get();
      const host = c.node('h1').host;
      const table = async () => (await c.lab.exec(host, ['nft', 'list', 'table', 'inet', 'twill'], { okCodes: [0, 1] })).stdout;
      assert.match(await table(), /masquerade fully-random comment "twill masq"/);
      for (const save of ['iptables-save', 'ip6tables-save']) assert.ok(!(await c.lab.exec(host, [save])).stdout.includes('TWILL-'), save);
      const pod = c.node('h1').pods[0]!;
      const r = await c.lab.ping(pod, host.underlay.gateway, { count: 2, interval: 0.2, deadline: 8 });
      assert.equal(r.received, 2, r.output);
      await c.lab.exec(host, ['nft', 'delete', 'table', 'inet', 'twill']);
      await waitFor('the table restored', async () => /twill masq/.test(await table()), 5_000, 200);
    });
  },
});
