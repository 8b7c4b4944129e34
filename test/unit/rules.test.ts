// Masquerade and forward rules, planned as the agent plans them and applied to
// iptables in memory (test/fakes/iptables.ts); the same golden file as the
// network-namespace test of the real iptables (test/e2e/vxlan.test.ts).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseNetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import { forwardChain, masqChain, parseSave, planChain } from '../../agent/iptables.js';
import { desiredChains, ensureRules, removeUnwanted } from '../../agent/rules.js';
import { FakeIptables } from '../fakes/iptables.js';
import { ROOT } from '../helpers/procs.js';

const lease: Lease = {
  network: 'n', node: 'a', subnet: '10.244.7.0/24', ipv6Subnet: 'fd00:0:0:7::/64', publicIP: '192.0.2.1', publicIPv6: null,
  backendType: 'vxlan', backendData: {}, expiresAt: null, createdAt: '2030-01-01T00:00:00.000Z', revision: 1,
};
const v4 = parseNetConf({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }, {});
const dual = parseNetConf({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00::/48', IPv6SubnetLen: 64, Backend: { Type: 'vxlan' } }, {});
const on = { ipMasq: true, forwardRules: true };

async function twillRules(ipt: FakeIptables, family: 4 | 6 = 4): Promise<string> {
  const text = (await ipt.save(family, 'filter')) + (await ipt.save(family, 'nat'));
  return text.split('\n').filter((l) => l.includes('TWILL-')).join('\n').replaceAll(lease.subnet as string, '<POD_SUBNET>') + '\n';
}

describe('iptables rules', () => {
  test('match the golden copy, in twill\'s own chains, with one jump first in each parent', async () => {
    const ipt = new FakeIptables();
    assert.deepEqual((await ensureRules(ipt, v4, lease, on)).sort(), ['filter/TWILL-FWD', 'nat/TWILL-POSTRTG']);
    assert.equal(await twillRules(ipt), readFileSync(join(ROOT, 'test/golden/rules-10.244.0.0-16.txt'), 'utf8'));
    assert.deepEqual(await ensureRules(ipt, v4, lease, on), [], 'a second pass changes nothing');
    assert.equal(ipt.restores, 2);
  });

  test('a jump that someone moved down or doubled is put back first, once; a chain edited by hand is rewritten', async () => {
    const ipt = new FakeIptables();
    await ensureRules(ipt, v4, lease, on);
    await ipt.restore(4, '*nat\n-I POSTROUTING 1 -j RETURN\n-A POSTROUTING -m comment --comment "twill masq" -j TWILL-POSTRTG\n-D TWILL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "twill masq" -j RETURN\nCOMMIT\n');
    assert.deepEqual(await ensureRules(ipt, v4, lease, on), ['nat/TWILL-POSTRTG']);
    const post = parseSave(await ipt.save(4, 'nat')).get('POSTROUTING');
    assert.deepEqual(post, ['-m comment --comment "twill masq" -j TWILL-POSTRTG', '-j RETURN']);
    assert.equal(await twillRules(ipt), readFileSync(join(ROOT, 'test/golden/rules-10.244.0.0-16.txt'), 'utf8'));
  });

  test('dual stack gets the same rules in ip6tables, with IPv6 multicast excluded', async () => {
    const ipt = new FakeIptables();
    await ensureRules(ipt, dual, lease, on);
    const nat6 = await ipt.save(6, 'nat');
    assert.match(nat6, /-A TWILL-POSTRTG -s fd00::\/48 ! -d ff00::\/8 -m comment --comment "twill masq" -j MASQUERADE --random-fully/);
    assert.match(nat6, /-A TWILL-POSTRTG -s fd00:0:0:7::\/64 -d fd00::\/48 /);
    assert.match(await ipt.save(6, 'filter'), /-A TWILL-FWD -d fd00::\/48 -m comment --comment "twill forward" -j ACCEPT/);
  });

  test('--random-fully only where iptables has it (1.6.2 and later)', async () => {
    const old = await desiredChains(new FakeIptables('iptables v1.6.1'), v4, lease, on);
    assert.ok(old.v4[0]?.rules.every((r) => !r.includes('--random-fully')));
    const cur = await desiredChains(new FakeIptables('iptables v1.6.2'), v4, lease, on);
    assert.ok(cur.v4[0]?.rules.some((r) => r.endsWith('MASQUERADE --random-fully')));
  });

  test('turning --ip-masq off removes the chain and its jump; forward rules stay', async () => {
    const ipt = new FakeIptables();
    await ensureRules(ipt, v4, lease, on);
    await removeUnwanted(ipt, { ipMasq: false, forwardRules: true });
    const nat = parseSave(await ipt.save(4, 'nat'));
    assert.equal(nat.has('TWILL-POSTRTG'), false);
    assert.deepEqual(nat.get('POSTROUTING'), []);
    assert.equal(parseSave(await ipt.save(4, 'filter')).has('TWILL-FWD'), true);
  });

  test('planChain writes nothing for a chain already as wanted', () => {
    const spec = forwardChain('10.244.0.0/16');
    const current = new Map([[spec.chain, [...spec.rules]], ['FORWARD', ['-m comment --comment "twill forward" -j TWILL-FWD', '-j DROP']]]);
    assert.deepEqual(planChain(spec, current), []);
    const masq = masqChain('10.244.0.0/16', '10.244.7.0/24', 4, false);
    assert.deepEqual(planChain(masq, new Map([['POSTROUTING', []]])).slice(0, 2), [':TWILL-POSTRTG - [0:0]', `-A TWILL-POSTRTG ${masq.rules[0]}`]);
  });
});
