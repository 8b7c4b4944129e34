// The wireguard backend's pure parts, without a device: what each mode
// builds from the leases (agent/wireguard/desired.ts), whose a device is,
// and the commands that close the gap between a device and the leases
// (agent/wireguard/plan.ts), reading `wg show dump` and writing `wg set`
// without a secret on the command line (agent/wireguard/wg.ts).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNetConf, type NetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import type { LinkRecord } from '../../agent/kernel/index.js';
import { desiredDevices, type DesiredInput, type PeerSpec } from '../../agent/wireguard/desired.js';
import { classify, KICK_KEEPALIVE, PEERS_PER_COMMAND, planDevices, planInterface, planLink, planPeerDelta, planPeers, wgCommands } from '../../agent/wireguard/plan.js';
import { canonEndpoint, parseDump, PSK_ARG, pskDigest, setArgv, type WgDump } from '../../agent/wireguard/wg.js';

const KEYS = {
  own: 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=',
  b: 'GIVR9aCXIyiZWvDPxQgqx0AlhOdCfIOtndzooB0Ajio=',
  c: 'dURTDMgCTAPLYBtsypKk0cHWJvihAoEU0gCRUYPPwno=',
  b2: 'Szgs11ENVsvirDtoQ95QPYMBFGDmSokrCXEHuiC0KgY=',
};
const PSK = 'yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=';
const DUAL = { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:10::/56' };

function conf(extra: Record<string, unknown>, net: Record<string, unknown> = { Network: '10.244.0.0/16' }): NetConf {
  return parseNetConf({ ...net, Backend: { Type: 'wireguard', ...extra } }, {});
}

function lease(node: string, n: number, key: string | undefined, o: Partial<Lease> = {}): Lease {
  return {
    network: 'pods', node, subnet: `10.244.${n}.0/24`, ipv6Subnet: null, publicIP: `192.168.1.${n}`, publicIPv6: null,
    backendType: 'wireguard', backendData: key ? { PublicKey: key } : {}, expiresAt: null, createdAt: '2025-01-01T00:00:00Z', revision: n, ...o,
  };
}

function input(config: NetConf, peers: Lease[], o: Partial<DesiredInput> = {}): DesiredInput {
  return { config, own: lease('a', 1, KEYS.own, config.EnableIPv6 ? { ipv6Subnet: 'fd00:10:0:1::/64', publicIPv6: 'fd00:100::1' } : {}), peers, local: { publicIP: '192.168.1.1', ...(config.EnableIPv6 && { publicIPv6: 'fd00:100::1' }) }, underlayMtu: 1500, publicKey: KEYS.own, ...o };
}

const link = (o: Partial<LinkRecord> = {}): LinkRecord => ({ index: 5, name: 'flannel-wg', kind: 'tun', link: { kind: 'tun' }, mtu: 1420, up: false, flags: [], addresses: [], ...o });
const emptyDump = (o: Partial<WgDump> = {}): WgDump => ({ listenPort: 0, peers: [], ...o });

describe('wireguard: what each mode builds', () => {
  test('IPv4: flannel-wg on ListenPort, the subnet address /32, the Network routed in, a peer per node (endpoint public IP:port, its subnet), MTU 60 below', () => {
    const d = desiredDevices(input(conf({ PersistentKeepaliveInterval: 25 }), [lease('b', 2, KEYS.b), lease('c', 3, KEYS.c)]));
    assert.deepEqual(d.problems, []);
    assert.deepEqual(d.devices, [{
      name: 'flannel-wg', underlay: 4, listenPort: 51820, mtu: 1440, addresses: ['10.244.1.0/32'], routes: ['10.244.0.0/16'],
      peers: [
        { node: 'b', publicKey: KEYS.b, endpoint: '192.168.1.2:51820', allowedIps: ['10.244.2.0/24'], keepalive: 25 },
        { node: 'c', publicKey: KEYS.c, endpoint: '192.168.1.3:51820', allowedIps: ['10.244.3.0/24'], keepalive: 25 },
      ],
    }]);
  });

  const dualPeer = () => lease('b', 2, KEYS.b, { ipv6Subnet: 'fd00:10:0:2::/64', publicIPv6: 'fd00:100::2' });

  test('separate dual stack: flannel-wg over IPv4 and flannel-wg-v6 over IPv6 (ListenPortV6, MTU 80 below), one key for both', () => {
    const d = desiredDevices(input(conf({}, DUAL), [dualPeer()]));
    assert.deepEqual(d.problems, []);
    assert.deepEqual(d.devices.map((x) => [x.name, x.underlay, x.listenPort, x.mtu, x.addresses, x.routes]), [
      ['flannel-wg', 4, 51820, 1440, ['10.244.1.0/32'], ['10.244.0.0/16']],
      ['flannel-wg-v6', 6, 51821, 1420, ['fd00:10:0:1::/128'], ['fd00:10::/56']],
    ]);
    assert.deepEqual(d.devices.map((x) => x.peers.map((p) => [p.publicKey, p.endpoint, p.allowedIps])), [
      [[KEYS.b, '192.168.1.2:51820', ['10.244.2.0/24']]],
      [[KEYS.b, '[fd00:100::2]:51821', ['fd00:10:0:2::/64']]],
    ]);
  });

  test('ipv4, ipv6 and auto: one flannel-wg carrying both families over the chosen underlay', () => {
    const v4 = desiredDevices(input(conf({ Mode: 'ipv4' }, DUAL), [dualPeer()])).devices;
    assert.deepEqual(v4.map((x) => [x.name, x.listenPort, x.mtu, x.addresses, x.routes, x.peers[0]?.endpoint, x.peers[0]?.allowedIps]), [
      ['flannel-wg', 51820, 1440, ['10.244.1.0/32', 'fd00:10:0:1::/128'], ['10.244.0.0/16', 'fd00:10::/56'], '192.168.1.2:51820', ['10.244.2.0/24', 'fd00:10:0:2::/64']],
    ]);
    const v6 = desiredDevices(input(conf({ Mode: 'ipv6' }, DUAL), [dualPeer()])).devices;
    assert.deepEqual(v6.map((x) => [x.name, x.listenPort, x.mtu, x.peers[0]?.endpoint]), [['flannel-wg', 51820, 1420, '[fd00:100::2]:51820']]);
    // auto, private addresses on both sides: IPv4, as flanneld would ("cross fingers")
    const auto = desiredDevices(input(conf({ Mode: 'auto' }, DUAL), [dualPeer()])).devices;
    assert.deepEqual(auto.map((x) => [x.name, x.mtu, x.peers[0]?.endpoint]), [['flannel-wg', 1420, '192.168.1.2:51820']]);
  });

  test("auto picks as flanneld: a public IPv4 first, a public IPv6 when this host's is public too, else IPv4; a peer's only address", () => {
    const pick = (peer: Partial<Lease>, local: DesiredInput['local']) =>
      desiredDevices(input(conf({ Mode: 'auto' }, DUAL), [lease('b', 2, KEYS.b, { ipv6Subnet: 'fd00:10:0:2::/64', ...peer })], { local })).devices[0]?.peers[0]?.endpoint;
    assert.equal(pick({ publicIP: '203.0.113.2', publicIPv6: '2001:db8::2' }, { publicIP: '198.51.100.1', publicIPv6: '2001:db8::1' }), '203.0.113.2:51820');
    assert.equal(pick({ publicIP: '10.0.0.2', publicIPv6: '2001:db8::2' }, { publicIP: '10.0.0.1', publicIPv6: '2001:db8::1' }), '[2001:db8::2]:51820');
    assert.equal(pick({ publicIP: '10.0.0.2', publicIPv6: '2001:db8::2' }, { publicIP: '10.0.0.1', publicIPv6: 'fd00::1' }), '10.0.0.2:51820');
    assert.equal(pick({ publicIP: null, publicIPv6: 'fd00::2' }, { publicIP: '10.0.0.1', publicIPv6: 'fd00::1' }), '[fd00::2]:51820');
  });

  test('IPv6 only: flannel-wg-v6 alone', () => {
    const d = desiredDevices({ ...input(conf({}, { EnableIPv4: false, ...DUAL, Network: undefined }), []), own: lease('a', 1, KEYS.own, { subnet: null, ipv6Subnet: 'fd00:10:0:1::/64', publicIP: null, publicIPv6: 'fd00:100::1' }), local: { publicIPv6: 'fd00:100::1' } });
    assert.deepEqual(d.devices.map((x) => [x.name, x.mtu, x.addresses]), [['flannel-wg-v6', 1420, ['fd00:10:0:1::/128']]]);
  });

  test('Backend.MTU sizes the devices as the underlay would', () => {
    assert.equal(desiredDevices(input(conf({ MTU: 9000 }), [])).devices[0]?.mtu, 8940);
  });

  test('a peer without a key, of another backend, with this host\'s key, or sharing a key, gets no tunnel and is reported', () => {
    const d = desiredDevices(input(conf({}), [lease('b', 2, undefined), lease('c', 3, KEYS.c, { backendType: 'vxlan' }), lease('d', 4, KEYS.own), lease('e', 5, KEYS.b), lease('f', 6, KEYS.b)]));
    assert.deepEqual(d.devices[0]?.peers.map((p) => p.node), ['e']);
    assert.equal(d.problems.length, 4);
    assert.match(d.problems[0]!, /peer b published no PublicKey/);
    assert.match(d.problems[1]!, /peer c runs the vxlan backend/);
    assert.match(d.problems[2]!, /peer d publishes this node's own public key/);
    assert.match(d.problems[3]!, /peers e and f publish the same public key: only e gets a tunnel/);
  });

  test('a host without the public address its tunnel runs over builds no device and says so', () => {
    const d = desiredDevices(input(conf({}, DUAL), [], { local: { publicIP: '192.168.1.1' } }));
    assert.deepEqual(d.devices.map((x) => x.name), ['flannel-wg']);
    assert.match(d.problems[0]!, /flannel-wg-v6 runs over IPv6 and this host has no public IPv6 address/);
  });
});

describe('wireguard: whose a device is', () => {
  test('a kernel WireGuard device, or a TUN a live wireguard-go answers for, is twill\'s; anything else of the name is reported', () => {
    assert.deepEqual(classify('flannel-wg', undefined, undefined), { name: 'flannel-wg', state: 'absent' });
    assert.equal((classify('flannel-wg', link(), emptyDump()) as { impl: string }).impl, 'wireguard-go');
    assert.equal((classify('flannel-wg', link({ kind: 'wireguard', link: undefined }), emptyDump()) as { impl: string }).impl, 'kernel');
    const tun = classify('flannel-wg', link(), undefined);
    assert.equal(tun.state, 'foreign');
    assert.match((tun as { reason: string }).reason, /TUN device named flannel-wg exists and no WireGuard answers for it/);
    const dummy = classify('flannel-wg', link({ kind: 'dummy', link: undefined }), undefined);
    assert.match((dummy as { reason: string }).reason, /a dummy device named flannel-wg exists and is not WireGuard: twill leaves it alone/);
  });

  test('a missing device is made, someone else\'s is in the way, and one of ours no longer wanted goes', () => {
    const [v4, v6] = desiredDevices(input(conf({}, DUAL), [])).devices;
    const plan = planDevices([v4!], [classify('flannel-wg', undefined, undefined), classify('flannel-wg-v6', link({ name: 'flannel-wg-v6' }), emptyDump())]);
    assert.deepEqual(plan, { create: [v4], remove: ['flannel-wg-v6'], conflicts: [] });
    const blocked = planDevices([v4!, v6!], [classify('flannel-wg', link({ kind: 'dummy', link: undefined }), undefined), classify('flannel-wg-v6', undefined, undefined)]);
    assert.deepEqual(blocked.create, [v6]);
    assert.equal(blocked.conflicts.length, 1);
    assert.deepEqual(blocked.remove, []);
  });

  test('the link gets its MTU, exactly its addresses (link-local ones stay) and up', () => {
    const spec = desiredDevices(input(conf({}), [])).devices[0]!;
    assert.deepEqual(planLink(spec, link({ addresses: [{ family: 4, cidr: '10.244.9.0/32', scope: 'global' }, { family: 6, cidr: 'fe80::1/64', scope: 'link' }] })), [
      'link set dev flannel-wg mtu 1440',
      'addr del 10.244.9.0/32 dev flannel-wg',
      'addr add 10.244.1.0/32 dev flannel-wg',
      'link set dev flannel-wg up',
    ]);
    assert.deepEqual(planLink(spec, link({ mtu: 1440, up: true, addresses: [{ family: 4, cidr: '10.244.1.0/32', scope: 'global' }] })), []);
  });
});

describe('wireguard: peers and the device, compared', () => {
  const spec = (peers: PeerSpec[]) => ({ ...desiredDevices(input(conf({}), [])).devices[0]!, peers });
  const pb: PeerSpec = { node: 'b', publicKey: KEYS.b, endpoint: '192.168.1.2:51820', allowedIps: ['10.244.2.0/24'], keepalive: 0 };
  const pc: PeerSpec = { node: 'c', publicKey: KEYS.c, endpoint: '192.168.1.3:51820', allowedIps: ['10.244.3.0/24'], keepalive: 0 };

  test('the private key (read by wg from the key file) and the listen port are set only when they differ', () => {
    const key = { publicKey: KEYS.own, file: '/var/lib/twill/wgkey' };
    assert.deepEqual(planInterface(spec([]), emptyDump(), key), ['private-key', '/var/lib/twill/wgkey', 'listen-port', '51820']);
    assert.deepEqual(planInterface(spec([]), emptyDump({ publicKey: KEYS.own, listenPort: 51820 }), key), []);
    assert.deepEqual(planInterface(spec([]), emptyDump({ publicKey: KEYS.b, listenPort: 51820 }), key), ['private-key', '/var/lib/twill/wgkey']);
  });

  test('a new peer is added whole and kicked into a handshake; a changed one gets what differs; a stray one goes, last', () => {
    const have = [
      { publicKey: KEYS.c, endpoint: '192.168.9.9:51820', allowedIps: ['10.244.3.0/24'], latestHandshake: 0, keepalive: 25, pskDigest: pskDigest(PSK) },
      { publicKey: KEYS.b2, endpoint: '192.168.1.7:51820', allowedIps: ['10.244.7.0/24'], latestHandshake: 0, keepalive: 0 },
    ];
    const changes = planPeers([pb, pc], have, undefined);
    assert.deepEqual(changes.ops, [
      { args: ['peer', KEYS.b, 'endpoint', '192.168.1.2:51820', 'allowed-ips', '10.244.2.0/24', 'persistent-keepalive', String(KICK_KEEPALIVE)], kick: KEYS.b },
      { args: ['peer', KEYS.c, 'endpoint', '192.168.1.3:51820', 'persistent-keepalive', 'off', 'preshared-key', '/dev/null'] },
      { args: ['peer', KEYS.b2, 'remove'] },
    ]);
    assert.deepEqual([changes.added, changes.changed, changes.removed], [1, 1, 1]);
    assert.deepEqual(planPeers([pb], [{ ...have[1]!, publicKey: KEYS.b, endpoint: '192.168.1.2:51820', allowedIps: ['10.244.2.0/24'] }], undefined).ops, []);
  });

  test('with a PSK every peer gets it through a pipe; a peer with the wrong one gets it again', () => {
    const changes = planPeers([{ ...pb, keepalive: 25 }, pc], [{ publicKey: KEYS.c, endpoint: pc.endpoint, allowedIps: pc.allowedIps, latestHandshake: 0, keepalive: 0, pskDigest: pskDigest('other') }], pskDigest(PSK));
    assert.deepEqual(changes.ops, [
      { args: ['peer', KEYS.b, 'endpoint', '192.168.1.2:51820', 'allowed-ips', '10.244.2.0/24', 'persistent-keepalive', '25', 'preshared-key', PSK_ARG] },
      { args: ['peer', KEYS.c, 'preshared-key', PSK_ARG] },
    ]);
  });

  test('rotation on the delta path: the new key is added (taking the allowed IPs) before the old one is removed, in one command, then its kick is cleared', () => {
    const prev = new Map([['b', pb], ['c', pc]]);
    const next = new Map([['b', { ...pb, publicKey: KEYS.b2 }], ['c', pc]]);
    const changes = planPeerDelta(prev, next, ['b'], undefined);
    assert.deepEqual(wgCommands([], changes), [
      ['peer', KEYS.b2, 'endpoint', '192.168.1.2:51820', 'allowed-ips', '10.244.2.0/24', 'persistent-keepalive', String(KICK_KEEPALIVE), 'peer', KEYS.b, 'remove'],
      ['peer', KEYS.b2, 'persistent-keepalive', 'off'],
    ]);
    // the same on the full pass, which reads the device
    const full = planPeers([...next.values()], [...prev.values()].map((p) => ({ ...p, latestHandshake: 1 })), undefined);
    assert.deepEqual(wgCommands([], full)[0], ['peer', KEYS.b2, 'endpoint', '192.168.1.2:51820', 'allowed-ips', '10.244.2.0/24', 'persistent-keepalive', String(KICK_KEEPALIVE), 'peer', KEYS.b, 'remove']);
  });

  test('delta: a node gone is its key removed at once; a node new is added; one that moved gets its new endpoint', () => {
    const prev = new Map([['b', pb], ['c', pc]]);
    const next = new Map([['c', { ...pc, endpoint: '192.168.1.33:51820' }], ['d', { ...pc, node: 'd', publicKey: KEYS.b2, allowedIps: ['10.244.4.0/24'] }]]);
    const ops = planPeerDelta(prev, next, ['b', 'c', 'd'], undefined).ops.map((o) => o.args);
    assert.deepEqual(ops, [
      ['peer', KEYS.b2, 'endpoint', '192.168.1.3:51820', 'allowed-ips', '10.244.4.0/24', 'persistent-keepalive', String(KICK_KEEPALIVE)],
      ['peer', KEYS.c, 'endpoint', '192.168.1.33:51820'],
      ['peer', KEYS.b, 'remove'],
    ]);
  });

  test(`at most ${PEERS_PER_COMMAND} peers per wg set, the device's own settings first`, () => {
    const many = Array.from({ length: PEERS_PER_COMMAND + 1 }, (_, i) => ({ ...pb, node: `n${i}`, publicKey: `${String(i).padStart(43, 'A')}=`, keepalive: 5 }));
    const cmds = wgCommands(['listen-port', '51820'], planPeers(many, [], undefined));
    assert.equal(cmds.length, 2);
    assert.deepEqual(cmds[0]!.slice(0, 3), ['listen-port', '51820', 'peer']);
    assert.equal(cmds[0]!.filter((a) => a === 'peer').length, PEERS_PER_COMMAND);
    assert.equal(cmds[1]!.filter((a) => a === 'peer').length, 1);
  });
});

describe('wireguard: wg itself', () => {
  test('wg show dump is read into records that hold no secret', () => {
    const priv = 'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=';
    const text = [
      `${priv}\t${KEYS.own}\t51820\toff`,
      `${KEYS.b}\t${PSK}\t192.168.1.2:51820\t10.244.2.0/24\t1735689600\t100\t200\t25`,
      `${KEYS.c}\t(none)\t[fd00:100:0::3]:51821\t10.244.3.0/24,fd00:10:0:3::/64\t0\t0\t0\toff`,
      `${KEYS.b2}\t(none)\t(none)\t(none)\t0\t0\t0\toff`,
      '',
    ].join('\n');
    const d = parseDump(text);
    assert.deepEqual(d, {
      publicKey: KEYS.own,
      listenPort: 51820,
      peers: [
        { publicKey: KEYS.b, pskDigest: pskDigest(PSK), endpoint: '192.168.1.2:51820', allowedIps: ['10.244.2.0/24'], latestHandshake: 1735689600, keepalive: 25 },
        { publicKey: KEYS.c, endpoint: '[fd00:100::3]:51821', allowedIps: ['10.244.3.0/24', 'fd00:10:0:3::/64'], latestHandshake: 0, keepalive: 0 },
        { publicKey: KEYS.b2, allowedIps: [], latestHandshake: 0, keepalive: 0 },
      ],
    });
    const json = JSON.stringify(d);
    assert.ok(!json.includes(priv) && !json.includes(PSK));
    assert.deepEqual(parseDump(`(none)\t(none)\t0\toff\n`), { listenPort: 0, peers: [] });
    assert.throws(() => parseDump(`${priv}\tx\n`), (e: Error) => /first line has 2 fields/.test(e.message) && !e.message.includes(priv));
  });

  test('endpoints are compared in one form', () => {
    assert.equal(canonEndpoint('[fd00:0100::0003]:51821'), '[fd00:100::3]:51821');
    assert.equal(canonEndpoint('10.0.0.1:51820'), '10.0.0.1:51820');
    assert.equal(canonEndpoint('fd00::1:51820'), undefined);
    assert.equal(canonEndpoint('10.0.0.1:70000'), undefined);
  });

  test('wg set takes the PSK through its own pipe per use, never on the command line', () => {
    const { argv, pipes } = setArgv('flannel-wg', ['peer', KEYS.b, 'preshared-key', PSK_ARG, 'peer', KEYS.c, 'preshared-key', PSK_ARG], PSK);
    assert.deepEqual(argv, ['set', 'flannel-wg', 'peer', KEYS.b, 'preshared-key', '/dev/fd/3', 'peer', KEYS.c, 'preshared-key', '/dev/fd/4']);
    assert.deepEqual(pipes, [PSK, PSK]);
    assert.ok(!argv.join(' ').includes(PSK));
    assert.throws(() => setArgv('flannel-wg', ['preshared-key', PSK_ARG], undefined), /none was given/);
  });
});
