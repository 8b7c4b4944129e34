// EnableNFTables against the real nft (Debian's nftables) in a lab host
// namespace: twill's table as flannel's rules in nftables, byte for byte the
// golden copy; a rule removed by hand comes back and is reported; going back
// to iptables removes the table.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import type { IptablesIO } from '../../agent/iptables.js';
import { NftRules, nft } from '../../agent/nftables.js';
import { HostRules } from '../../agent/rules.js';
import { StateDir } from '../../agent/state.js';
import { Lab, labUnavailable, type Host } from '../helpers/netns.js';
import { ROOT } from '../helpers/procs.js';

const skip = process.env.CI ? false : (labUnavailable({}) ?? false);
const CONF = parseNetConf({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd76:cac2:6150::/56', EnableNFTables: true, Backend: { Type: 'vxlan' } }, {});
const LEASE: Lease = {
  network: 'n', node: 'k', subnet: '10.244.7.0/24', ipv6Subnet: 'fd76:cac2:6150:7::/64', publicIP: '192.168.100.10', publicIPv6: null,
  backendType: 'vxlan', backendData: {}, expiresAt: null, createdAt: '2030-01-01T00:00:00.000Z', revision: 1,
};
const OPTS = { ipMasq: true, forwardRules: true };

describe('nftables rules in a namespace', { skip }, () => {
  let lab: Lab;
  let h: Host;
  let dir: string;
  const list = async () => (await lab.exec(h, ['nft', 'list', 'table', 'inet', 'twill'])).stdout;
  before(async () => {
    lab = await Lab.create();
    h = await lab.addHost('n1');
    dir = mkdtempSync(join(tmpdir(), 'twill-nft-'));
  });
  after(async () => {
    await lab?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  test("twill's table holds flannel's masquerade and forward rules for both families, as the golden copy", async () => {
    const rules = new NftRules(nft({ netns: h.ns }));
    assert.deepEqual(await rules.ensure(CONF, LEASE, OPTS), { repaired: false });
    const golden = readFileSync(join(ROOT, 'test/golden/nft-10.244.0.0-16.txt'), 'utf8');
    assert.equal((await list()).replaceAll('10.244.7.0/24', '<POD_SUBNET>').replaceAll('fd76:cac2:6150:7::/64', '<POD_SUBNET6>'), golden);
    assert.deepEqual(await rules.ensure(CONF, LEASE, OPTS), { repaired: false });
  });

  test('a rule deleted by hand comes back on the next pass and is reported; a table deleted by hand too', async () => {
    const rules = new NftRules(nft({ netns: h.ns }));
    await rules.ensure(CONF, LEASE, OPTS);
    const before = await list();
    await lab.exec(h, ['nft', 'flush', 'chain', 'inet', 'twill', 'forward']);
    assert.notEqual(await list(), before);
    assert.deepEqual(await rules.ensure(CONF, LEASE, OPTS), { repaired: true });
    assert.equal(await list(), before);
    await lab.exec(h, ['nft', 'delete', 'table', 'inet', 'twill']);
    assert.deepEqual(await rules.ensure(CONF, LEASE, OPTS), { repaired: true });
    assert.equal(await list(), before);
  });

  test('a network back on iptables loses the table; a host that never used nftables never runs nft', async () => {
    const state = new StateDir(dir);
    const calls: string[] = [];
    const io = nft({ netns: h.ns });
    const counted = { list: () => (calls.push('list'), io.list()), apply: (s: string) => (calls.push('apply'), io.apply(s)) };
    const noIptables: IptablesIO = { save: async () => '', restore: async () => {}, version: async () => 'iptables v1.8.9 (nf_tables)' };
    const host = new HostRules(noIptables, new NftRules(counted), state);
    await host.ensure(CONF, LEASE, OPTS);
    assert.match(await list(), /table inet twill/);
    const back = new HostRules(noIptables, new NftRules(counted), state);
    await back.ensure({ ...CONF, EnableNFTables: undefined }, LEASE, OPTS);
    await assert.rejects(list(), /No such file or directory/);
    calls.length = 0;
    const fresh = new HostRules(noIptables, new NftRules(counted), new StateDir(mkdtempSync(join(dir, 'fresh-'))));
    await fresh.ensure({ ...CONF, EnableNFTables: undefined }, LEASE, OPTS);
    assert.deepEqual(calls, []);
  });
});
