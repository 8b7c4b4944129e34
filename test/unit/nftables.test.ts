// EnableNFTables: the masquerade and forward rules as an nftables table of
// twill's own (agent/nftables.ts), planned without root; the same against
// the real nft in a namespace is test/kernel/nftables.test.ts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import { NftRules, nftRules, nftScript, type NftIO } from '../../agent/nftables.js';

const lease = (extra: Partial<Lease> = {}): Lease => ({
  network: 'n', node: 'a', subnet: '10.244.1.0/24', ipv6Subnet: 'fd00:0:0:1::/64', publicIP: '192.168.1.1', publicIPv6: null,
  backendType: 'vxlan', backendData: {}, expiresAt: null, createdAt: '2030-01-01T00:00:00.000Z', revision: 1, ...extra,
});
const DUAL = parseNetConf({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/56', EnableNFTables: true }, {});

/** nft as far as twill uses it: a script replaces the table, a listing shows it (as nft reformats it: tabs, a blank between chains). */
class FakeNft implements NftIO {
  table?: string;
  applied = 0;
  async list() {
    return this.table;
  }
  async apply(script: string) {
    this.applied++;
    const i = script.indexOf('table inet twill {');
    this.table = i < 0 ? undefined : script.slice(i).replaceAll('    ', '\t\t').replaceAll('  chain', '\tchain').replace('\n  }\n  chain', '\n\t}\n\n\tchain');
  }
}

describe("twill's nftables table", () => {
  test("flannel's masquerade rules for both families, kube-proxy's mark first, and the forward accepts", () => {
    const r = nftRules(DUAL, lease(), { ipMasq: true, forwardRules: true });
    assert.deepEqual(r.postrouting, [
      'meta mark & 0x4000 == 0x4000 return comment "twill masq"',
      'ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return comment "twill masq"',
      'ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return comment "twill masq"',
      'ip saddr != 10.244.0.0/16 ip daddr 10.244.1.0/24 return comment "twill masq"',
      'ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random comment "twill masq"',
      'ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random comment "twill masq"',
      'ip6 saddr fd00:0:0:1::/64 ip6 daddr fd00::/56 return comment "twill masq"',
      'ip6 saddr fd00::/56 ip6 daddr fd00:0:0:1::/64 return comment "twill masq"',
      'ip6 saddr != fd00::/56 ip6 daddr fd00:0:0:1::/64 return comment "twill masq"',
      'ip6 saddr fd00::/56 ip6 daddr != ff00::/8 masquerade fully-random comment "twill masq"',
      'ip6 saddr != fd00::/56 ip6 daddr fd00::/56 masquerade fully-random comment "twill masq"',
    ]);
    assert.deepEqual(r.forward, [
      'ip saddr 10.244.0.0/16 accept comment "twill forward"', 'ip daddr 10.244.0.0/16 accept comment "twill forward"',
      'ip6 saddr fd00::/56 accept comment "twill forward"', 'ip6 daddr fd00::/56 accept comment "twill forward"',
    ]);
    assert.ok(!nftRules(DUAL, lease(), { ipMasq: true, forwardRules: false, randomFully: false }).postrouting.some((l) => l.includes('fully-random')));
  });
  test('the script replaces the table in one transaction; with nothing to keep it only removes it', () => {
    const s = nftScript(nftRules(DUAL, lease(), { ipMasq: false, forwardRules: true }));
    assert.match(s, /^add table inet twill\ndelete table inet twill\ntable inet twill \{\n  chain forward \{\n    type filter hook forward priority filter; policy accept;\n/);
    assert.ok(!s.includes('postrouting'));
    assert.equal(nftScript({ postrouting: [], forward: [] }), 'add table inet twill\ndelete table inet twill\n');
  });
  test('written once; a table changed by hand is drift, written again and reported; a changed lease is a rewrite, not drift', async () => {
    const io = new FakeNft();
    const rules = new NftRules(io);
    const opts = { ipMasq: true, forwardRules: true };
    assert.deepEqual(await rules.ensure(DUAL, lease(), opts), { repaired: false });
    assert.deepEqual(await rules.ensure(DUAL, lease(), opts), { repaired: false });
    assert.equal(io.applied, 1);
    io.table = io.table?.replace(/\n[^\n]*ip saddr 10\.244\.0\.0\/16 accept[^\n]*/, '');
    assert.deepEqual(await rules.ensure(DUAL, lease(), opts), { repaired: true });
    assert.equal(io.applied, 2);
    assert.match(io.table ?? '', /ip saddr 10\.244\.0\.0\/16 accept/);
    assert.deepEqual(await rules.ensure(DUAL, lease({ subnet: '10.244.2.0/24' }), opts), { repaired: false });
    assert.match(io.table ?? '', /10\.244\.2\.0\/24/);
    await rules.remove();
    assert.equal(io.table, undefined);
  });
});
