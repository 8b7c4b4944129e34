import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  BACKEND_OPTIONS, BACKEND_TYPES, DEFAULT_ESP_PROPOSAL, SECRET_MASK,
  maskSecrets, nodeConfig, parseNetConf, publicConfig, readNetConf, subnetRanges, type NetConf,
} from '../../core/config.js';
import { ConfigError } from '../../core/errors.js';
import { parseIP } from '../../core/cidr.js';

const NO_ENV = {};
const PSK = 'k'.repeat(96);
/** a key as `wg genpsk` prints it */
const WG_PSK = 'yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=';
const NET = { Network: '10.3.0.0/16' };

function parse(input: unknown, env: Record<string, string | undefined> = NO_ENV): NetConf {
  return parseNetConf(typeof input === 'string' ? input : JSON.stringify(input), env);
}

/** The errors parsing input gives; fails the test when it parses. */
function errorsOf(input: unknown, env: Record<string, string | undefined> = NO_ENV): string[] {
  try {
    parse(input, env);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
    assert.ok(e.errors.length > 0);
    return e.errors;
  }
  assert.fail(`expected ${JSON.stringify(input)} to be refused`);
}

/** The warnings of a config that parses. */
function warningsOf(input: unknown): string[] {
  return readNetConf(JSON.stringify(input), NO_ENV).warnings;
}

function assertError(input: unknown, expected: string | RegExp): void {
  const errors = errorsOf(input);
  const hit = errors.some((e) => (typeof expected === 'string' ? e === expected : expected.test(e)));
  assert.ok(hit, `no error matching ${String(expected)} in:\n  ${errors.join('\n  ')}`);
}

const ip = (s: string): bigint => {
  const a = parseIP(s);
  assert.ok(a);
  return a.ip;
};

describe('flannel test vectors', () => {
  test('an IPv4 /16 gets /24 subnets from the second to the last, over vxlan', () => {
    assert.deepEqual(parse({ Network: '10.3.0.0/16' }), {
      EnableIPv4: true,
      EnableIPv6: false,
      Network: '10.3.0.0/16',
      SubnetLen: 24,
      SubnetMin: '10.3.1.0',
      SubnetMax: '10.3.255.0',
      Backend: { Type: 'vxlan', VNI: 1, Port: 8472, GBP: false, DirectRouting: false, Learning: false },
    });
  });

  test('an IPv6-only /48 gets /64 subnets', () => {
    const c = parseNetConf('{"EnableIPv6":true,"IPv6Network":"fc00::/48", "EnableIPv4": false}', NO_ENV);
    assert.deepEqual(c, {
      EnableIPv4: false,
      EnableIPv6: true,
      IPv6Network: 'fc00::/48',
      IPv6SubnetLen: 64,
      IPv6SubnetMin: 'fc00:0:0:1::',
      IPv6SubnetMax: 'fc00:0:0:ffff::',
      Backend: { Type: 'vxlan', VNI: 1, Port: 8472, GBP: false, DirectRouting: false, Learning: false },
    });
    assert.equal(c.Network, undefined);
    assert.equal(c.SubnetLen, undefined);
  });

  // pkg/subnet/config_test.go, its inputs as flannel writes them (lower-case keys and all)
  test("flannel's TestConfigDefaults, TestIPv6ConfigDefaults, TestConfigOverrides and TestIPv6ConfigOverrides", () => {
    const d = parse('{ "network": "10.3.0.0/16" }');
    assert.deepEqual([d.Network, d.SubnetMin, d.SubnetMax, d.SubnetLen], ['10.3.0.0/16', '10.3.1.0', '10.3.255.0', 24]);
    const d6 = parse('{ "enableIPv6": true, "ipv6Network": "fc00::/48", "enableIPv4": false }');
    assert.deepEqual([d6.IPv6Network, d6.IPv6SubnetMin, d6.IPv6SubnetMax, d6.IPv6SubnetLen], ['fc00::/48', 'fc00:0:0:1::', 'fc00:0:0:ffff::', 64]);
    const o = parse('{ "Network": "10.3.0.0/16", "SubnetMin": "10.3.5.0", "SubnetMax": "10.3.8.0", "SubnetLen": 28 }');
    assert.deepEqual([o.Network, o.SubnetMin, o.SubnetMax, o.SubnetLen], ['10.3.0.0/16', '10.3.5.0', '10.3.8.0', 28]);
    const o6 = parse('{ "EnableIPv6": true, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::", "IPv6SubnetMax": "fc00:0:0:f::", "IPv6SubnetLen": 124, "enableIPv4": false }');
    assert.deepEqual([o6.IPv6Network, o6.IPv6SubnetMin, o6.IPv6SubnetMax, o6.IPv6SubnetLen], ['fc00::/48', 'fc00:0:0:1::', 'fc00:0:0:f::', 124]);
  });

  test('a /24 is split into four /26', () => {
    const c = parse({ Network: '10.0.0.0/24' });
    assert.equal(c.SubnetLen, 26);
    assert.equal(c.SubnetMin, '10.0.0.64');
    assert.equal(c.SubnetMax, '10.0.0.192');
  });
});

describe('subnet length defaults', () => {
  for (const [network, len] of [['10.0.0.0/8', 24], ['10.0.0.0/22', 24], ['10.0.0.0/23', 25], ['10.0.0.0/26', 28], ['10.0.0.0/28', 30]] as const) {
    test(`${network} gives /${len}`, () => assert.equal(parse({ Network: network }).SubnetLen, len));
  }
  test('beyond /28 the network is too small', () => {
    assert.deepEqual(errorsOf({ Network: '10.0.0.0/29' }), ['Network 10.0.0.0/29 is too small: the prefix must be /28 or shorter']);
  });

  const v6 = (n: string) => ({ EnableIPv4: false, EnableIPv6: true, IPv6Network: n });
  for (const [network, len] of [['fc00::/32', 64], ['fc00::/62', 64], ['fc00::/63', 65], ['fc00::/124', 126]] as const) {
    test(`${network} gives /${len}`, () => assert.equal(parse(v6(network)).IPv6SubnetLen, len));
  }
  test('beyond /124 the IPv6 network is too small', () => {
    assertError(v6('fc00::/125'), 'IPv6Network fc00::/125 is too small: the prefix must be /124 or shorter');
  });
  test('SubnetLen 0 means the default, as it does in flannel', () => {
    assert.equal(parse({ ...NET, SubnetLen: 0 }).SubnetLen, 24);
  });
});

describe('explicit subnet length', () => {
  test('within bounds it is kept', () => {
    assert.equal(parse({ ...NET, SubnetLen: 18 }).SubnetLen, 18);
    assert.equal(parse({ ...NET, SubnetLen: 30 }).SubnetLen, 30);
    const c = parse({ ...NET, SubnetLen: 20 });
    assert.equal(c.SubnetMin, '10.3.16.0');
    assert.equal(c.SubnetMax, '10.3.240.0');
  });
  test('at most 30', () => assertError({ ...NET, SubnetLen: 31 }, /^SubnetLen 31 is too long: at most 30/));
  test('at least the prefix plus two', () => {
    assertError({ ...NET, SubnetLen: 17 }, /^SubnetLen 17 is too short for Network 10\.3\.0\.0\/16: at least 18/);
    assertError({ ...NET, SubnetLen: -1 }, /^SubnetLen -1 is too short/);
  });
  test('IPv6: at most 126, at least the prefix plus two', () => {
    const v6 = { EnableIPv6: true, IPv6Network: 'fc00::/48', ...NET };
    assert.equal(parse({ ...v6, IPv6SubnetLen: 126 }).IPv6SubnetLen, 126);
    assert.equal(parse({ ...v6, IPv6SubnetLen: 50 }).IPv6SubnetLen, 50);
    assertError({ ...v6, IPv6SubnetLen: 127 }, /^IPv6SubnetLen 127 is too long: at most 126/);
    assertError({ ...v6, IPv6SubnetLen: 49 }, /^IPv6SubnetLen 49 is too short for IPv6Network fc00::\/48: at least 50/);
  });
});

describe('SubnetMin and SubnetMax', () => {
  test('explicit bounds inside the network are kept, canonically written', () => {
    const c = parse({ ...NET, SubnetMin: '10.3.10.0', SubnetMax: '10.3.20.0' });
    assert.equal(c.SubnetMin, '10.3.10.0');
    assert.equal(c.SubnetMax, '10.3.20.0');
    const v6 = parse({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'FC00:0000::/48', IPv6SubnetMin: 'FC00:0:0:0A00:0:0:0:0' });
    assert.equal(v6.IPv6Network, 'fc00::/48');
    assert.equal(v6.IPv6SubnetMin, 'fc00:0:0:a00::');
  });
  test('the first subnet may be chosen explicitly, and min may equal max', () => {
    const c = parse({ ...NET, SubnetMin: '10.3.0.0', SubnetMax: '10.3.0.0' });
    assert.equal(c.SubnetMin, '10.3.0.0');
  });
  test('outside the network', () => {
    assertError({ ...NET, SubnetMin: '10.4.1.0' }, 'SubnetMin 10.4.1.0 is outside Network 10.3.0.0/16');
    assertError({ ...NET, SubnetMax: '10.2.0.0' }, 'SubnetMax 10.2.0.0 is outside Network 10.3.0.0/16');
  });
  test('not aligned to the subnet length', () => {
    assertError({ ...NET, SubnetMin: '10.3.1.5' }, /^SubnetMin 10\.3\.1\.5 is not aligned to SubnetLen 24: did you mean 10\.3\.1\.0\?/);
    assertError({ ...NET, SubnetLen: 20, SubnetMax: '10.3.17.0' }, /^SubnetMax 10\.3\.17\.0 is not aligned to SubnetLen 20/);
    assertError(
      { EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fc00::/48', IPv6SubnetMin: 'fc00:0:0:1::1' },
      /^IPv6SubnetMin fc00:0:0:1::1 is not aligned to IPv6SubnetLen 64/,
    );
  });
  test('min above max', () => {
    assertError({ ...NET, SubnetMin: '10.3.9.0', SubnetMax: '10.3.5.0' }, 'SubnetMin 10.3.9.0 is greater than SubnetMax 10.3.5.0');
  });
  test('not an address of the family', () => {
    assertError({ ...NET, SubnetMin: 'ten' }, 'SubnetMin "ten" is not an IPv4 address');
    assertError({ ...NET, SubnetMax: 'fc00::' }, 'SubnetMax "fc00::" is not an IPv4 address');
    assertError({ ...NET, EnableIPv6: true, IPv6Network: 'fc00::/48', IPv6SubnetMin: '10.3.1.0' }, 'IPv6SubnetMin "10.3.1.0" is not an IPv6 address');
  });
});

describe('networks and families', () => {
  test('Network is required when IPv4 is on', () => assertError({}, /^Network is required when EnableIPv4 is true/));
  test('IPv6Network is required when IPv6 is on', () => {
    assertError({ ...NET, EnableIPv6: true }, /^IPv6Network is required when EnableIPv6 is true/);
  });
  test('both families off', () => {
    assert.deepEqual(errorsOf({ EnableIPv4: false }), ['EnableIPv4 and EnableIPv6 are both false: enable at least one']);
  });
  test('Network must be IPv4 and IPv6Network IPv6', () => {
    assertError({ Network: 'fc00::/48' }, /^Network fc00::\/48 is an IPv6 network: Network must be IPv4/);
    assertError({ ...NET, EnableIPv6: true, IPv6Network: '10.4.0.0/16' }, /^IPv6Network 10\.4\.0\.0\/16 is an IPv4 network: IPv6Network must be IPv6/);
  });
  test('host bits set: the right network is suggested', () => {
    assertError({ Network: '10.3.1.0/16' }, 'Network 10.3.1.0/16 has host bits set: did you mean 10.3.0.0/16?');
    assertError({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fc00::1/48' }, 'IPv6Network fc00::1/48 has host bits set: did you mean fc00::/48?');
  });
  test('not a CIDR', () => {
    assertError({ Network: '10.3.0.0' }, /^Network "10\.3\.0\.0" is not a CIDR: expected an IPv4 network/);
    assertError({ Network: '10.3.0.0/33' }, /^Network "10\.3\.0\.0\/33" is not a CIDR/);
  });
  test('dual stack fills both families', () => {
    const c = parse({ ...NET, EnableIPv6: true, IPv6Network: 'fc00::/48' });
    assert.equal(c.SubnetLen, 24);
    assert.equal(c.IPv6SubnetLen, 64);
  });
  test("a switched-off family's fields are ignored, but still type-checked", () => {
    const c = parse({ EnableIPv4: false, Network: '10.3.0.0/16', SubnetLen: 99, EnableIPv6: true, IPv6Network: 'fc00::/48' });
    assert.equal(c.Network, undefined);
    assert.equal(c.SubnetLen, undefined);
    assertError({ EnableIPv4: false, SubnetLen: '24', EnableIPv6: true, IPv6Network: 'fc00::/48' }, /^SubnetLen "24" is a string/);
  });
});

describe('keys and types, as Go decodes them', () => {
  test('keys match case-insensitively, in the Backend too', () => {
    const c = parse({ network: '10.3.0.0/16', SUBNETLEN: 20, subnetmin: '10.3.16.0', backend: { type: 'vxlan', vni: 7, port: 4789 } });
    assert.equal(c.Network, '10.3.0.0/16');
    assert.equal(c.SubnetLen, 20);
    assert.equal(c.SubnetMin, '10.3.16.0');
    assert.deepEqual(c.Backend, { Type: 'vxlan', VNI: 7, Port: 4789, GBP: false, DirectRouting: false, Learning: false });
  });
  test('when one field is written twice the last occurrence wins, even with an exact duplicate in between', () => {
    assert.equal(parseNetConf('{"Network":"10.1.0.0/16","network":"10.2.0.0/16"}', NO_ENV).Network, '10.2.0.0/16');
    assert.equal(parseNetConf('{"Network":"10.1.0.0/16","network":"10.2.0.0/16","Network":"10.3.0.0/16"}', NO_ENV).Network, '10.3.0.0/16');
    assert.equal(parseNetConf('{"Network":"10.1.0.0/16","Backend":{"Type":"udp","type":"host-gw"}}', NO_ENV).Backend.Type, 'host-gw');
  });
  test('wrong types name the field, the value and the expected type', () => {
    assertError({ Network: '10.3.0.0/16', SubnetLen: '24' }, 'SubnetLen "24" is a string: expected an integer');
    assertError({ Network: '10.3.0.0/16', EnableIPv4: 'true' }, /^EnableIPv4 "true" is a string: expected a boolean/);
    assertError({ Network: 10 }, 'Network 10 is a number: expected a string');
    assertError({ Network: ['10.3.0.0/16'] }, 'Network is an array: expected a string');
    assertError({ ...NET, SubnetLen: 24.5 }, 'SubnetLen 24.5 is not an integer');
    assertError({ ...NET, Backend: 'vxlan' }, /^Backend "vxlan" is a string: expected an object/);
    assertError({ ...NET, Backend: { Type: 3 } }, 'Backend.Type 3 is a number: expected a string');
  });
  test('null leaves the default, as it does in Go', () => {
    const c = parse({ ...NET, SubnetLen: null, EnableIPv4: null, Backend: null });
    assert.equal(c.SubnetLen, 24);
    assert.equal(c.EnableIPv4, true);
    assert.equal(c.Backend.Type, 'vxlan');
  });
  test('an unknown top-level key is ignored as Go ignores it, with a warning naming the closest field', () => {
    const r = readNetConf(JSON.stringify({ ...NET, SubnetLne: 20, Foo: 1 }), NO_ENV);
    assert.equal(r.config.SubnetLen, 24);
    assert.deepEqual(r.warnings, ['SubnetLne: unknown field, ignored as flannel does; did you mean SubnetLen?', 'Foo: unknown field, ignored as flannel does']);
    // a typo of the one required field still fails, on the rule it breaks
    assertError({ Netwrok: '10.0.0.0/8' }, /^Network is required when EnableIPv4 is true/);
    assert.deepEqual(warningsOf({ Netwrok: '10.0.0.0/8', ...NET }), ['Netwrok: unknown field, ignored as flannel does; did you mean Network?']);
  });
  test("a real user's IPv6-only file with flannel's unknown IPv6Subnet starts, with a warning", () => {
    const r = readNetConf('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd76:cac2:6150::/56","IPv6Subnet":"fd76:cac2:6150::1/64","EnableNFTables":false,"Backend":{"Type":"vxlan"}}', NO_ENV);
    assert.equal(r.config.IPv6Network, 'fd76:cac2:6150::/56');
    assert.equal(r.config.IPv6SubnetLen, 64);
    assert.deepEqual(r.warnings, ['IPv6Subnet: unknown field, ignored as flannel does; did you mean IPv6SubnetLen?']);
  });
  test("flannel's Networks and IPv6Networks are read by flannel and never allocated from: warned about, ignored", () => {
    assert.deepEqual(warningsOf({ ...NET, Networks: ['10.9.0.0/16'] }), ['Networks: flanneld does not allocate from it (it uses Network), and neither does twill: ignored']);
  });
  test("EnableNFTables: true puts the rules in twill's nftables table, false (or absent) keeps iptables", () => {
    assert.equal(parse({ ...NET, EnableNFTables: false }).EnableNFTables, undefined);
    assert.equal(parse({ ...NET, EnableNFTables: true }).EnableNFTables, true);
    assertError({ ...NET, EnableNFTables: 'yes' }, /^EnableNFTables "yes" is a string: expected a boolean/);
  });
  test("kube-flannel.yml's own net-conf.json reads as flannel reads it", () => {
    const c = parse('{\n  "Network": "10.244.0.0/16",\n  "EnableNFTables": false,\n  "Backend": {\n    "Type": "vxlan"\n  }\n}\n');
    assert.deepEqual([c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax, c.Backend.Type], ['10.244.0.0/16', 24, '10.244.1.0', '10.244.255.0', 'vxlan']);
  });
  test('every broken rule is listed at once', () => {
    const errors = errorsOf({ Network: '10.3.1.0/16', SubnetLen: 31, SubnetMin: 'x', Foo: 1, Backend: { Type: 'vxlan', VNI: 0, Bar: 1 } });
    assert.equal(errors.length, 4, errors.join('\n'));
  });
  test('an already-parsed value is accepted', () => {
    assert.equal(parseNetConf({ Network: '10.3.0.0/16' }, NO_ENV).SubnetLen, 24);
    assert.throws(() => parseNetConf([1], NO_ENV), (e: unknown) => e instanceof ConfigError && /net-conf\.json is an array/.test(e.message));
  });
});

describe('invalid JSON', () => {
  test('the position and the reason are named', () => {
    assert.deepEqual(errorsOf('{"Network": "10.3.0.0/16",\n  "Backend": {"Type": "vxlan",}}'), [
      'invalid JSON at line 2, column 31: expected a double-quoted property name, found "}" (JSON allows no comma before })',
    ]);
    assertError('{"Network" "10.3.0.0/16"}', /^invalid JSON at line 1, column 12: expected ':' after property name "Network"/);
    assertError('{"Network": "10.3.0.0/16"', /^invalid JSON at line 1, column 26: expected ',' or '}'/);
    assertError('{"Network": 10.3.0.0/16}', /^invalid JSON at line 1, column 17: expected ',' or '}'/);
    assertError("{'Network': '10.3.0.0/16'}", /^invalid JSON at line 1, column 2: expected a double-quoted property name/);
    assertError('{"Network": "10.3.0.0/16"} x', /^invalid JSON at line 1, column 28: unexpected "x" after the end/);
    assertError('{"Network": "10.3', /^invalid JSON at line 1, column 13: unterminated string/);
  });
  test('empty input and a non-object are refused', () => {
    assertError('', /^net-conf\.json is empty/);
    assertError('  \n', /^net-conf\.json is empty/);
    assertError('"10.3.0.0/16"', /^net-conf\.json "10\.3\.0\.0\/16" is a string: expected a JSON object/);
  });
  test('a syntax error never quotes the file, so a PSK stays out of it', () => {
    const secret = 'S3cr3t'.repeat(20);
    for (const text of [`{"Backend": {"Type": "ipsec", "PSK": "${secret}" x}}`, `{"Backend": {"PSK": "${secret}\u0001"}}`, `{"Backend": {"PSK": "${secret}`]) {
      for (const e of errorsOf(text)) assert.ok(!e.includes('S3cr3t'), e);
    }
  });
  test('deep nesting is an error, not a crash', () => {
    assertError(`{"Backend": ${'['.repeat(5000)}`, /nested too deeply/);
  });
});

describe('backends', () => {
  const backend = (b: Record<string, unknown>, extra: Record<string, unknown> = {}, env: Record<string, string> = {}) =>
    parse({ ...NET, ...extra, Backend: b }, env).Backend;

  test('each type has its defaults', () => {
    assert.deepEqual(backend({ Type: 'vxlan' }), { Type: 'vxlan', VNI: 1, Port: 8472, GBP: false, DirectRouting: false, Learning: false });
    assert.deepEqual(backend({ Type: 'host-gw' }), { Type: 'host-gw' });
    assert.deepEqual(backend({ Type: 'udp' }), { Type: 'udp', Port: 8285 });
    assert.deepEqual(backend({ Type: 'ipip' }), { Type: 'ipip', DirectRouting: false });
    assert.deepEqual(backend({ Type: 'ipsec', PSK }), { Type: 'ipsec', PSK, UDPEncap: false, ESPProposal: DEFAULT_ESP_PROPOSAL });
    assert.deepEqual(backend({ Type: 'alloc' }), { Type: 'alloc' });
    assert.deepEqual(backend({ Type: 'aws-vpc' }), { Type: 'aws-vpc', RouteTableID: [] });
    assert.deepEqual(backend({ Type: 'gce' }), { Type: 'gce' });
    assert.deepEqual(backend({ Type: 'ali-vpc', AccessKeyID: 'id', AccessKeySecret: 'secret' }), {
      Type: 'ali-vpc', AccessKeyID: 'id', AccessKeySecret: 'secret',
    });
  });

  test('every type is covered', () => {
    assert.deepEqual(Object.keys(BACKEND_OPTIONS).sort(), [...BACKEND_TYPES].sort());
  });

  test('vxlan options and their bounds', () => {
    assert.deepEqual(backend({ Type: 'vxlan', VNI: 16777215, Port: 1, GBP: true, DirectRouting: true, MTU: 1400, Learning: true }), {
      Type: 'vxlan', VNI: 16777215, Port: 1, GBP: true, DirectRouting: true, MTU: 1400, Learning: true,
    });
    // flannel's MTU: the device gets MTU - 50; 0 (Go's zero) is the underlay's, as absent
    assert.equal((backend({ Type: 'vxlan', MTU: 0 }) as { MTU?: number }).MTU, undefined);
    assertError({ ...NET, Backend: { Type: 'vxlan', MTU: 600 } }, 'Backend.MTU 600 is out of range: from 626 to 65535 (the device gets MTU - 50, and IPv4 needs at least 576)');
    assertError({ ...NET, Backend: { Type: 'vxlan', Learning: 'on' } }, /^Backend\.Learning "on" is a string: expected a boolean/);
    assert.equal((backend({ Type: 'vxlan', VNI: 1, Port: 65535 }) as { Port: number }).Port, 65535);
    assertError({ ...NET, Backend: { Type: 'vxlan', VNI: 0 } }, 'Backend.VNI 0 is out of range: it must be from 1 to 16777215');
    assertError({ ...NET, Backend: { Type: 'vxlan', VNI: 16777216 } }, /^Backend\.VNI 16777216 is out of range/);
    assertError({ ...NET, Backend: { Type: 'vxlan', Port: 0 } }, 'Backend.Port 0 is out of range: it must be from 1 to 65535');
    assertError({ ...NET, Backend: { Type: 'vxlan', Port: 65536 } }, /^Backend\.Port 65536 is out of range/);
    assertError({ ...NET, Backend: { Type: 'vxlan', GBP: 'yes' } }, /^Backend\.GBP "yes" is a string: expected a boolean/);
    assertError({ ...NET, Backend: { Type: 'vxlan', DirectRouting: 1 } }, /^Backend\.DirectRouting 1 is a number: expected a boolean/);
  });
  test("Windows-only options (vxlan's MacPrefix and Name, host-gw's Name) are accepted with a warning, as flannel ignores them on Linux", () => {
    const r = readNetConf(JSON.stringify({ ...NET, Backend: { Type: 'vxlan', MacPrefix: '0E-2A', Name: 'vxlan0' } }), NO_ENV);
    assert.deepEqual(r.config.Backend, { Type: 'vxlan', VNI: 1, Port: 8472, GBP: false, DirectRouting: false, Learning: false });
    assert.deepEqual(r.warnings, [
      'Backend.MacPrefix: a Windows-only vxlan option, ignored on Linux as flannel does',
      'Backend.Name: a Windows-only vxlan option, ignored on Linux as flannel does',
    ]);
    assert.deepEqual(readNetConf(JSON.stringify({ ...NET, Backend: { Type: 'host-gw', name: 'cbr0' } }), NO_ENV).warnings, [
      'Backend.Name: a Windows-only host-gw option, ignored on Linux as flannel does',
    ]);
  });
  test('vxlan works with IPv6', () => {
    assert.equal(backend({ Type: 'vxlan' }, { EnableIPv6: true, IPv6Network: 'fc00::/48' }).Type, 'vxlan');
  });

  test('udp: Port bounds', () => {
    assert.deepEqual(backend({ Type: 'udp', Port: 9000 }), { Type: 'udp', Port: 9000 });
    assertError({ ...NET, Backend: { Type: 'udp', Port: 0 } }, /^Backend\.Port 0 is out of range/);
    assertError({ ...NET, Backend: { Type: 'udp', Port: 70000 } }, /^Backend\.Port 70000 is out of range/);
  });
  test('ipip: DirectRouting', () => {
    assert.deepEqual(backend({ Type: 'ipip', DirectRouting: true }), { Type: 'ipip', DirectRouting: true });
  });
  test('udp, ipip and ipsec are IPv4 only', () => {
    for (const Type of ['udp', 'ipip', 'ipsec']) {
      assertError(
        { ...NET, EnableIPv6: true, IPv6Network: 'fc00::/48', Backend: { Type, PSK } },
        new RegExp(`^Backend\\.Type ${Type} is IPv4 only: it cannot be used with EnableIPv6 true \\(.+\\)$`),
      );
    }
  });

  test('ipsec: PSK required, at least 96 characters, never echoed', () => {
    assertError({ ...NET, Backend: { Type: 'ipsec' } }, /^Backend\.PSK is required for type ipsec/);
    const short = 'hunter2hunter';
    const errors = errorsOf({ ...NET, Backend: { Type: 'ipsec', PSK: short } });
    assert.deepEqual(errors, ['Backend.PSK is 13 characters: at least 96 are required']);
    assertError({ ...NET, Backend: { Type: 'ipsec', PSK: 'k'.repeat(95) } }, 'Backend.PSK is 95 characters: at least 96 are required');
    for (const e of errorsOf({ ...NET, Backend: { Type: 'ipsec', PSK: 123456 } })) assert.ok(!e.includes('123456'), e);
    assertError({ ...NET, Backend: { Type: 'ipsec', PSK: 123456 } }, 'Backend.PSK is a number: expected a string');
  });
  test('ipsec: UDPEncap and ESPProposal', () => {
    assert.deepEqual(backend({ Type: 'ipsec', PSK, UDPEncap: true, ESPProposal: 'aes256gcm16-sha384-ecp384' }), {
      Type: 'ipsec', PSK, UDPEncap: true, ESPProposal: 'aes256gcm16-sha384-ecp384',
    });
    assertError({ ...NET, Backend: { Type: 'ipsec', PSK, ESPProposal: '' } }, /^Backend\.ESPProposal is empty/);
    assertError({ ...NET, Backend: { Type: 'ipsec', PSK, UDPEncap: 'true' } }, /^Backend\.UDPEncap "true" is a string/);
  });

  test("wireguard: flannel's options and defaults, read as flanneld reads them", () => {
    assert.deepEqual(backend({ Type: 'wireguard' }), { Type: 'wireguard', ListenPort: 51820, ListenPortV6: 51821, PersistentKeepaliveInterval: 0, Mode: 'separate' });
    assert.deepEqual(backend({ Type: 'WireGuard', PSK: WG_PSK, ListenPort: 4000, ListenPortV6: 4001, PersistentKeepaliveInterval: 25, Mode: 'auto', MTU: 1500, KeyRotation: '720h' }), {
      Type: 'wireguard', PSK: WG_PSK, ListenPort: 4000, ListenPortV6: 4001, PersistentKeepaliveInterval: 25, Mode: 'auto', MTU: 1500, KeyRotation: '720h',
    });
    // Go cannot tell 0 from absent: MTU 0 is the underlay's, an empty PSK none
    assert.deepEqual(backend({ Type: 'wireguard', MTU: 0, PSK: '' }), { Type: 'wireguard', ListenPort: 51820, ListenPortV6: 51821, PersistentKeepaliveInterval: 0, Mode: 'separate' });
    assert.equal((parse({ ...NET, EnableIPv6: true, IPv6Network: 'fd00:10::/56', Backend: { Type: 'wireguard', Mode: 'ipv6' } }).Backend as { Mode: string }).Mode, 'ipv6');
  });

  test('wireguard: a PSK must be a WireGuard key, and is never echoed', () => {
    for (const bad of ['k'.repeat(96), WG_PSK.slice(1), WG_PSK.replace('=', 'A'), `${WG_PSK.slice(0, 42)}B=`]) {
      const errors = errorsOf({ ...NET, Backend: { Type: 'wireguard', PSK: bad } });
      assert.deepEqual(errors, ['Backend.PSK is not a WireGuard key: make one with "wg genpsk" (32 bytes in base64, 44 characters ending in "=")']);
      assert.ok(!errors.join().includes(bad));
    }
    // masked, as the shared topic carries it, it is expected
    assert.equal((parseNetConf({ ...NET, Backend: { Type: 'wireguard', PSK: SECRET_MASK } }, NO_ENV, { masked: true }).Backend as { PSK: string }).PSK, SECRET_MASK);
    assert.equal((nodeConfig(parse({ ...NET, Backend: { Type: 'wireguard', PSK: WG_PSK } })).Backend as { PSK: string }).PSK, WG_PSK, 'a node needs the PSK');
    assert.ok(!JSON.stringify(publicConfig(parse({ ...NET, Backend: { Type: 'wireguard', PSK: WG_PSK } }))).includes(WG_PSK));
  });

  test('wireguard: Mode, ports, MTU and KeyRotation out of their rules are refused with the reason', () => {
    assertError({ ...NET, Backend: { Type: 'wireguard', Mode: 'both' } }, 'Backend.Mode "both" is not known: use one of separate, auto, ipv4, ipv6');
    assertError({ ...NET, Backend: { Type: 'wireguard', Mode: 'ipv6' } }, /^Backend\.Mode ipv6 needs EnableIPv6/);
    assertError({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:10::/56', Backend: { Type: 'wireguard', Mode: 'ipv4' } }, /^Backend\.Mode ipv4 needs EnableIPv4/);
    assertError({ ...NET, EnableIPv6: true, IPv6Network: 'fd00:10::/56', Backend: { Type: 'wireguard', ListenPortV6: 51820 } }, 'Backend.ListenPort and Backend.ListenPortV6 are both 51820: in Mode separate each family has its own device, and each device its own port');
    assert.equal((parse({ ...NET, Backend: { Type: 'wireguard', ListenPortV6: 51820 } }).Backend as { ListenPortV6: number }).ListenPortV6, 51820, 'IPv4 only: one device');
    assertError({ ...NET, Backend: { Type: 'wireguard', ListenPort: 70000 } }, 'Backend.ListenPort 70000 is out of range: it must be from 1 to 65535');
    assertError({ ...NET, Backend: { Type: 'wireguard', PersistentKeepaliveInterval: -1 } }, /^Backend\.PersistentKeepaliveInterval -1 is out of range/);
    assertError({ ...NET, Backend: { Type: 'wireguard', MTU: 600 } }, 'Backend.MTU 600 is out of range: from 636 to 65535 (a device gets MTU - 60, and IPv4 needs at least 576)');
    assertError({ ...NET, EnableIPv6: true, IPv6Network: 'fd00:10::/56', Backend: { Type: 'wireguard', MTU: 1300 } }, 'Backend.MTU 1300 is out of range: from 1360 to 65535 (a device gets MTU - 80, and IPv6 needs at least 1280)');
    assertError({ ...NET, Backend: { Type: 'wireguard', KeyRotation: '5m' } }, /^Backend\.KeyRotation 5m is too short: at least 10m/);
    assertError({ ...NET, Backend: { Type: 'wireguard', KeyRotation: 'weekly' } }, /^Backend\.KeyRotation "weekly" is not a duration/);
  });

  test('aws-vpc: RouteTableID is one ID or a list, always a list in effect', () => {
    assert.deepEqual(backend({ Type: 'aws-vpc', RouteTableID: 'rtb-1' }), { Type: 'aws-vpc', RouteTableID: ['rtb-1'] });
    assert.deepEqual(backend({ Type: 'aws-vpc', RouteTableID: ['rtb-1', 'rtb-2'], RouteLimit: 100 }), {
      Type: 'aws-vpc', RouteTableID: ['rtb-1', 'rtb-2'], RouteLimit: 100,
    });
    assertError({ ...NET, Backend: { Type: 'aws-vpc', RouteTableID: 5 } }, /^Backend\.RouteTableID 5 is a number: expected a route table ID or an array/);
    assertError({ ...NET, Backend: { Type: 'aws-vpc', RouteTableID: ['rtb-1', 2] } }, 'Backend.RouteTableID[1] 2 is a number: expected a string');
    assertError({ ...NET, Backend: { Type: 'aws-vpc', RouteTableID: '' } }, /^Backend\.RouteTableID is empty/);
  });
  test('RouteLimit is a positive integer for the clouds', () => {
    assert.deepEqual(backend({ Type: 'gce', RouteLimit: 250 }), { Type: 'gce', RouteLimit: 250 });
    assertError({ ...NET, Backend: { Type: 'gce', RouteLimit: 0 } }, 'Backend.RouteLimit 0 is not positive: it must be at least 1');
    assertError({ ...NET, Backend: { Type: 'aws-vpc', RouteLimit: -5 } }, /^Backend\.RouteLimit -5 is not positive/);
    assertError({ ...NET, Backend: { Type: 'ali-vpc', AccessKeyID: 'a', AccessKeySecret: 'b', RouteLimit: 1.5 } }, 'Backend.RouteLimit 1.5 is not an integer');
    assert.deepEqual(warningsOf({ ...NET, Backend: { Type: 'vxlan', RouteLimit: 5 } }), ['Backend.RouteLimit: unknown option of vxlan, ignored as flannel does']);
  });

  test('ali-vpc: credentials from the Backend, else the environment', () => {
    const env = { ACCESS_KEY_ID: 'env-id', ACCESS_KEY_SECRET: 'env-secret' };
    assert.deepEqual(backend({ Type: 'ali-vpc' }, {}, env), { Type: 'ali-vpc', AccessKeyID: 'env-id', AccessKeySecret: 'env-secret' });
    assert.deepEqual(backend({ Type: 'ali-vpc', AccessKeyID: 'own-id', AccessKeySecret: 'own-secret' }, {}, env), {
      Type: 'ali-vpc', AccessKeyID: 'own-id', AccessKeySecret: 'own-secret',
    });
    // An empty key falls back to the environment, as flannel's does.
    assert.equal((backend({ Type: 'ali-vpc', AccessKeySecret: '' }, {}, env) as { AccessKeySecret: string }).AccessKeySecret, 'env-secret');
  });
  test('ali-vpc: missing credentials name both ways to give them', () => {
    const errors = errorsOf({ ...NET, Backend: { Type: 'ali-vpc' } });
    assert.deepEqual(errors, [
      'Backend.AccessKeyID is missing for type ali-vpc: set it in the Backend or in the environment variable ACCESS_KEY_ID',
      'Backend.AccessKeySecret is missing for type ali-vpc: set it in the Backend or in the environment variable ACCESS_KEY_SECRET',
    ]);
    for (const e of errorsOf({ ...NET, Backend: { Type: 'ali-vpc', AccessKeyID: 'id', AccessKeySecret: 98765 } })) assert.ok(!e.includes('98765'), e);
  });
  test('the default process environment is read when none is given', () => {
    const saved = { id: process.env.ACCESS_KEY_ID, secret: process.env.ACCESS_KEY_SECRET };
    try {
      process.env.ACCESS_KEY_ID = 'proc-id';
      process.env.ACCESS_KEY_SECRET = 'proc-secret';
      const b = parseNetConf({ ...NET, Backend: { Type: 'ali-vpc' } }).Backend;
      assert.deepEqual(b, { Type: 'ali-vpc', AccessKeyID: 'proc-id', AccessKeySecret: 'proc-secret' });
    } finally {
      if (saved.id === undefined) delete process.env.ACCESS_KEY_ID;
      else process.env.ACCESS_KEY_ID = saved.id;
      if (saved.secret === undefined) delete process.env.ACCESS_KEY_SECRET;
      else process.env.ACCESS_KEY_SECRET = saved.secret;
    }
  });

  test('unknown options are ignored as Go ignores them, each warned about with the type and the closest option', () => {
    assert.deepEqual(warningsOf({ ...NET, Backend: { Type: 'vxlan', Foo: 1, DirectRoutnig: true } }), [
      'Backend.Foo: unknown option of vxlan, ignored as flannel does',
      'Backend.DirectRoutnig: unknown option of vxlan, ignored as flannel does; did you mean DirectRouting?',
    ]);
    assert.deepEqual(warningsOf({ ...NET, Backend: { Type: 'host-gw', Port: 1 } }), ['Backend.Port: unknown option of host-gw (it takes none), ignored as flannel does']);
    assert.deepEqual(warningsOf({ ...NET, Backend: { Type: 'udp', VNI: 1 } }), ['Backend.VNI: unknown option of udp, ignored as flannel does']);
    assert.deepEqual(warningsOf({ ...NET, Backend: { Type: 'ipsec', PSK, PKS: 'x' } }), ['Backend.PKS: unknown option of ipsec, ignored as flannel does; did you mean PSK?']);
  });
  test('Type is required inside a Backend, read case-insensitively as flanneld does, and must be known', () => {
    assertError({ ...NET, Backend: {} }, /^Backend\.Type is missing: it must be one of vxlan, host-gw/);
    assertError({ ...NET, Backend: { VNI: 1 } }, /^Backend\.Type is missing/);
    assert.equal(parse({ ...NET, Backend: { Type: 'VXLAN' } }).Backend.Type, 'vxlan');
    assert.equal(parse({ ...NET, Backend: { Type: 'Host-GW' } }).Backend.Type, 'host-gw');
    assertError({ ...NET, Backend: { Type: 'vxaln' } }, /^Backend\.Type "vxaln" is not known \(did you mean vxlan\?\): it must be one of/);
    assertError({ ...NET, Backend: { Type: 'fancy' } }, /^Backend\.Type "fancy" is not known: it must be one of/);
    // flannel's backends twill has not: what to use instead
    assertError({ ...NET, Backend: { Type: 'tencent-vpc' } }, /^Backend\.Type "tencent-vpc" is not known: twill writes the route tables of AWS/);
  });
});

describe('secrets', () => {
  const ipsec = () => parse({ ...NET, Backend: { Type: 'ipsec', PSK } });
  const ali = () => parse({ ...NET, Backend: { Type: 'ali-vpc', AccessKeyID: 'LTAIkeyid', AccessKeySecret: 'very-secret' } });

  test('maskSecrets masks the PSK and leaves the original alone', () => {
    const c = ipsec();
    const masked = maskSecrets(c);
    assert.equal((masked.Backend as { PSK: string }).PSK, SECRET_MASK);
    assert.equal((c.Backend as { PSK: string }).PSK, PSK);
    assert.ok(!JSON.stringify(masked).includes(PSK));
  });
  test('maskSecrets masks the access key secret but keeps the key ID', () => {
    const masked = maskSecrets(ali());
    assert.deepEqual(masked.Backend, { Type: 'ali-vpc', AccessKeyID: 'LTAIkeyid', AccessKeySecret: SECRET_MASK });
  });
  test('publicConfig carries no secret', () => {
    assert.ok(!JSON.stringify(publicConfig(ipsec())).includes(PSK));
    assert.ok(!JSON.stringify(publicConfig(ali())).includes('very-secret'));
    const plain = parse(NET);
    assert.deepEqual(publicConfig(plain), plain);
  });
  test("nodeConfig keeps the secret a node's backend needs and masks the control plane's", () => {
    assert.equal((nodeConfig(ipsec()).Backend as { PSK: string }).PSK, PSK, 'an ipsec node needs the PSK');
    const own = nodeConfig(ali());
    assert.equal((own.Backend as { AccessKeySecret: string }).AccessKeySecret, SECRET_MASK);
    assert.ok(!JSON.stringify(own).includes('very-secret'));
    // and the node's agent still reads what it is given
    assert.equal(parseNetConf(own, NO_ENV).Backend.Type, 'ali-vpc');
  });
  test('a masked copy shares no array with the original', () => {
    const c = parse({ ...NET, Backend: { Type: 'aws-vpc', RouteTableID: ['rtb-1'] } });
    const m = maskSecrets(c);
    (m.Backend as { RouteTableID: string[] }).RouteTableID.push('rtb-2');
    assert.deepEqual((c.Backend as { RouteTableID: string[] }).RouteTableID, ['rtb-1']);
  });
});

describe('subnetRanges', () => {
  test('IPv4: network, length and the first and last subnets as bigints', () => {
    const r = subnetRanges(parse(NET));
    assert.equal(r.v6, undefined);
    assert.deepEqual(r.v4, { network: { family: 4, ip: ip('10.3.0.0'), prefix: 16 }, len: 24, min: ip('10.3.1.0'), max: ip('10.3.255.0') });
    assert.equal(typeof r.v4?.min, 'bigint');
  });
  test('IPv6 and dual stack', () => {
    const r = subnetRanges(parse({ ...NET, SubnetMin: '10.3.4.0', EnableIPv6: true, IPv6Network: 'fc00::/48' }));
    assert.equal(r.v4?.min, ip('10.3.4.0'));
    assert.deepEqual(r.v6, { network: { family: 6, ip: ip('fc00::'), prefix: 48 }, len: 64, min: ip('fc00:0:0:1::'), max: ip('fc00:0:0:ffff::') });
    assert.ok(!('v4' in subnetRanges(parse({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fc00::/48' }))));
  });
  test('a hand-made config is checked, not trusted', () => {
    const bad: NetConf = { ...parse(NET), SubnetMin: '10.9.0.0' };
    assert.throws(() => subnetRanges(bad), ConfigError);
  });
  test('an effective config reads back as itself', () => {
    for (const input of [NET, { ...NET, SubnetLen: 20, EnableIPv6: true, IPv6Network: 'fc00::/48', Backend: { Type: 'aws-vpc', RouteTableID: 'rtb-1' } }]) {
      const once = parse(input);
      assert.deepEqual(parseNetConf(once, NO_ENV), once);
    }
  });
});

describe('twill config check', () => {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'twill-config-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  function twill(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      const env = { ...process.env };
      delete env.ACCESS_KEY_ID;
      delete env.ACCESS_KEY_SECRET;
      const child = spawn(process.execPath, ['bin/twill.js', ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  }

  test('a valid file: exit 0, the effective config on stdout, the PSK masked', async () => {
    const file = join(dir, 'ok.json');
    await writeFile(file, JSON.stringify({ network: '10.3.0.0/16', Backend: { Type: 'ipsec', PSK } }));
    const r = await twill('config', 'check', file);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.ok(!r.stdout.includes(PSK));
    assert.ok(r.stdout.includes('\n  "Network": "10.3.0.0/16"'), 'pretty-printed with two spaces');
    assert.deepEqual(JSON.parse(r.stdout), {
      EnableIPv4: true, EnableIPv6: false, Network: '10.3.0.0/16', SubnetLen: 24, SubnetMin: '10.3.1.0', SubnetMax: '10.3.255.0',
      Backend: { Type: 'ipsec', PSK: SECRET_MASK, UDPEncap: false, ESPProposal: DEFAULT_ESP_PROPOSAL },
    });
  });

  test('an invalid file: exit 1, each error on its own line on stderr, nothing on stdout', async () => {
    const file = join(dir, 'bad.json');
    await writeFile(file, JSON.stringify({ Network: '10.3.0.0/16', SubnetLen: 31, Backend: { Type: 'ipsec', PSK: 'tooshort' } }));
    const r = await twill('config', 'check', file);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.deepEqual(r.stderr.trimEnd().split('\n'), [
      `${file}: SubnetLen 31 is too long: at most 30, so that a node's subnet holds its tunnel and bridge addresses`,
      `${file}: Backend.PSK is 8 characters: at least 96 are required`,
    ]);
    assert.ok(!r.stderr.includes('tooshort'));
  });

  test("a cloud network's overlay: the config on stdout, the twill extension explained in notes on stderr", async () => {
    const file = join(dir, 'overlay.json');
    await writeFile(file, JSON.stringify({ Network: '10.60.0.0/16', Backend: { Type: 'aws-vpc', Overlay: { Type: 'vxlan' } } }));
    const r = await twill('config', 'check', file);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).Backend, { Type: 'aws-vpc', RouteTableID: [], Overlay: { Type: 'vxlan', VNI: 1, Port: 8472, GBP: false, Learning: false } });
    const notes = r.stderr.trimEnd().split('\n');
    assert.ok(notes.length >= 2 && notes.every((n) => n.startsWith(`${file}: note: `)), r.stderr);
    assert.match(notes[0] ?? '', /Backend\.Overlay is a twill extension flannel lacks/);
  });

  test('a missing file is a clear error, exit 1', async () => {
    const file = join(dir, 'absent.json');
    const r = await twill('config', 'check', file);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: no such file`));
  });

  test('a missing argument prints the usage, exit 2', async () => {
    const r = await twill('config', 'check');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /usage: twill config check FILE/);
  });
});
