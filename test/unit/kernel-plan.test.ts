// The kernel layer's pure parts, without root: parsing iproute2's JSON and
// batch stderr, the generic diff, desired-state checks, and the planner's
// ownership rules and ordering.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  FLANNEL_DEVICES,
  TWILL_ROUTE_PROTOCOL,
  checkCommand,
  diff,
  normalizeState,
  parseBatchStderr,
  parseFdb,
  parseLinks,
  parseNeighbours,
  parseRoutes,
  planReconcile,
  routeProtocol,
  type ActualState,
  type KernelState,
  type LinkRecord,
} from '../../agent/kernel/index.js';
import { splitJsonLines } from '../../agent/kernel/read.js';

describe('batch stderr', () => {
  // command i is input line 2i+2, its marker 2i+3; line 1 is the start marker
  const mark = (n: number, tool = 'ip') => `Object "twill-mark" is unknown, try "${tool} help".\nCommand failed -:${n}\n`;

  test('maps failures and warnings to the command that printed them', () => {
    const stderr =
      mark(1) +
      mark(3) + // cmd 0 ok
      'RTNETLINK answers: File exists\nCommand failed -:4\n' + // cmd 1 failed
      mark(5) +
      'vxlan: destination port not specified\n' + // cmd 2 warned but succeeded
      mark(7);
    const p = parseBatchStderr(stderr);
    assert.equal(p.started, true);
    assert.equal(p.confirmed, 3);
    assert.deepEqual([...p.failures], [[1, 'RTNETLINK answers: File exists']]);
    assert.deepEqual([...p.warnings], [[2, 'vxlan: destination port not specified']]);
    assert.equal(p.trailing, '');
  });

  test('text after the last marker is why iproute2 stopped', () => {
    const p = parseBatchStderr(mark(1) + mark(3) + 'Error: inet address is expected rather than "x".\n');
    assert.equal(p.confirmed, 1);
    assert.equal(p.trailing, 'Error: inet address is expected rather than "x".');
  });

  test('a process that never started has no first marker', () => {
    assert.equal(parseBatchStderr('Cannot open network namespace "x": No such file or directory\n').started, false);
  });

  test('refuses lines that would shift the numbering', () => {
    assert.throws(() => checkCommand('route add 10.0.0.0/8 dev x\nroute del 10.0.0.0/8'), /single iproute2 batch line/);
    assert.throws(() => checkCommand('link set x alias a#b'));
    assert.throws(() => checkCommand('link set x \\'));
    assert.throws(() => checkCommand('  '));
    checkCommand('route add 10.0.0.0/8 dev eth0');
  });
});

describe('iproute2 JSON', () => {
  test('routes: omitted fields mean boot, main, unicast, global, metric 0; default needs a family', () => {
    const routes = parseRoutes([
      { dst: 'default', gateway: '192.168.1.1', dev: 'eth0', protocol: '4', flags: [] },
      { dst: 'default', dev: 'eth0', metric: 1024, flags: [], pref: 'medium' },
      { dst: '10.244.3.0/24', gateway: '10.244.3.0', dev: 'flannel.1', flags: ['onlink'] },
      { dst: '10.244.2.0/24', gateway: '10.244.2.0', dev: 'flannel.1', protocol: '122', flags: ['onlink', 'linkdown'] },
      { type: '2', dst: '10.9.9.1', dev: 'eth0', table: '255', protocol: '2', scope: '254', prefsrc: '10.9.9.1', flags: [] },
      { dst: 'fd01:0:0::/64', gateway: 'fd00::5', dev: 'eth0', protocol: '122', metric: 1024, flags: [], pref: 'medium' },
      { dst: '10.5.0.0/16', protocol: '122', flags: [], nexthops: [{ gateway: '1.1.1.1', dev: 'eth0' }] },
      { weird: true },
    ]);
    assert.deepEqual(
      routes.map((r) => [r.family, r.table, r.type, r.dst, r.metric, r.protocol, r.via, r.dev, r.onlink, r.multipath]),
      [
        [4, 254, 1, '0.0.0.0/0', 0, 4, '192.168.1.1', 'eth0', false, false],
        [6, 254, 1, '::/0', 1024, 3, undefined, 'eth0', false, false],
        [4, 254, 1, '10.244.3.0/24', 0, 3, '10.244.3.0', 'flannel.1', true, false],
        [4, 254, 1, '10.244.2.0/24', 0, 122, '10.244.2.0', 'flannel.1', true, false],
        [4, 255, 2, '10.9.9.1/32', 0, 2, undefined, 'eth0', false, false],
        [6, 254, 1, 'fd01::/64', 1024, 122, 'fd00::5', 'eth0', false, false],
        [4, 254, 1, '10.5.0.0/16', 0, 122, undefined, undefined, false, true],
      ],
    );
  });

  test('links: vxlan details (local vs local6, gbp only when set), addresses with numeric or named scopes', () => {
    const links = parseLinks([
      {
        ifindex: 7,
        ifname: 'flannel.2',
        flags: ['BROADCAST', 'MULTICAST', 'UP', 'LOWER_UP'],
        mtu: 1400,
        address: '0E:00:00:00:00:02',
        linkinfo: { info_kind: 'vxlan', info_data: { id: 2, local: '10.9.9.1', link: 'eth0', port: 4789, learning: true, gbp: true } },
        addr_info: [
          { family: 'inet', local: '10.244.1.0', prefixlen: 32, scope: 'global' },
          { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: '253' },
        ],
      },
      {
        ifindex: 8,
        ifname: 'flannel-v6.3',
        flags: ['BROADCAST'],
        mtu: 1430,
        linkinfo: { info_kind: 'vxlan', info_data: { id: 3, local6: 'fd00:0::1', port: 8472, learning: false } },
      },
      { ifindex: 9, ifname: 'flannel0', flags: [], mtu: 1472, linkinfo: { info_kind: 'tun', info_data: { type: 'tun', pi: false } } },
      { ifindex: 10, ifname: 'tap0', flags: [], mtu: 1500, linkinfo: { info_kind: 'tun', info_data: { type: 'tap' } } },
      { ifindex: 1, ifname: 'lo', flags: ['LOOPBACK', 'UP'], mtu: 65536 },
    ]);
    assert.deepEqual(links[0]!.link, { kind: 'vxlan', vni: 2, port: 4789, learning: true, gbp: true, local: '10.9.9.1', dev: 'eth0' });
    assert.equal(links[0]!.mac, '0e:00:00:00:00:02');
    assert.equal(links[0]!.up, true);
    assert.deepEqual(links[0]!.addresses, [
      { family: 4, cidr: '10.244.1.0/32', scope: 'global' },
      { family: 6, cidr: 'fe80::1/64', scope: 'link' },
    ]);
    assert.deepEqual(links[1]!.link, { kind: 'vxlan', vni: 3, port: 8472, learning: false, gbp: false, local: 'fd00::1' });
    assert.deepEqual(links[2]!.link, { kind: 'tun' });
    assert.equal(links[3]!.link, undefined, 'a tap is not a tun twill could own');
    assert.equal(links[4]!.kind, undefined);
  });

  test('neighbours: state is an array; fdb: state is a string and the device is "ifname"', () => {
    const n = parseNeighbours([
      { dst: '10.244.2.0', dev: 'flannel.1', lladdr: 'AA:bb:cc:dd:ee:01', state: ['PERMANENT'] },
      { dst: 'fd00:0::7', dev: 'eth0', lladdr: 'aa:bb:cc:dd:ee:08', state: ['REACHABLE'] },
      { dst: '10.0.0.9', dev: 'eth0', state: ['FAILED'] },
    ]);
    assert.deepEqual(
      n.map((x) => [x.family, x.dev, x.ip, x.mac, x.permanent]),
      [
        [4, 'flannel.1', '10.244.2.0', 'aa:bb:cc:dd:ee:01', true],
        [6, 'eth0', 'fd00::7', 'aa:bb:cc:dd:ee:08', false],
        [4, 'eth0', '10.0.0.9', undefined, false],
      ],
    );
    const f = parseFdb([
      { mac: 'aa:bb:cc:dd:ee:01', ifname: 'flannel.1', dst: '192.168.1.2', flags: ['self'], state: 'permanent' },
      { mac: '33:33:00:00:00:01', ifname: 'eth0', flags: ['self'], state: 'permanent' },
      { mac: '56:ce:03:1e:82:29', ifname: 'br0', flags: [], master: 'br0', state: 'permanent' },
    ]);
    assert.deepEqual(f[0], { dev: 'flannel.1', mac: 'aa:bb:cc:dd:ee:01', dst: '192.168.1.2', state: 'permanent', permanent: true, self: true });
    assert.equal(f[1]!.dst, undefined);
    assert.equal(f[2]!.master, 'br0');
  });

  test('ip -j -batch prints one JSON document per line', () => {
    assert.deepEqual(splitJsonLines('[{"a":1}]\n[]\n[{"b":2}]\n', 3, 'x'), [[{ a: 1 }], [], [{ b: 2 }]]);
    assert.throws(() => splitJsonLines('[]\n[]\n', 3, 'read'), /expected 3 JSON documents/);
  });
});

describe('diff', () => {
  const o = {
    desiredKey: (d: { k: string; v: number }) => d.k,
    actualKey: (a: { k: string; v: number }) => a.k,
    same: (d: { v: number }, a: { v: number }) => d.v === a.v,
  };

  test('adds, replaces, removes and counts what is already right', () => {
    const r = diff(
      [
        { k: 'a', v: 1 },
        { k: 'b', v: 2 },
        { k: 'c', v: 3 },
      ],
      [
        { k: 'b', v: 2 },
        { k: 'c', v: 9 },
        { k: 'd', v: 4 },
      ],
      o,
    );
    assert.deepEqual(r.add, [{ k: 'a', v: 1 }]);
    assert.deepEqual(r.replace, [{ desired: { k: 'c', v: 3 }, actual: { k: 'c', v: 9 } }]);
    assert.deepEqual(r.remove, [{ k: 'd', v: 4 }]);
    assert.equal(r.unchanged, 1);
  });

  test('several actual objects under one key: keep the matching one, remove the rest', () => {
    const r = diff([{ k: 'a', v: 2 }], [{ k: 'a', v: 1 }, { k: 'a', v: 2 }, { k: 'a', v: 3 }], o);
    assert.equal(r.unchanged, 1);
    assert.deepEqual(r.remove, [{ k: 'a', v: 1 }, { k: 'a', v: 3 }]);
    const r2 = diff([{ k: 'a', v: 5 }], [{ k: 'a', v: 1 }, { k: 'a', v: 3 }], o);
    assert.deepEqual(r2.replace, [{ desired: { k: 'a', v: 5 }, actual: { k: 'a', v: 1 } }]);
    assert.deepEqual(r2.remove, [{ k: 'a', v: 3 }]);
  });

  test('a key desired twice is a bug, not a silent overwrite', () => {
    assert.throws(() => diff([{ k: 'a', v: 1 }, { k: 'a', v: 2 }], [], o), /appears twice/);
  });
});

describe('desired state', () => {
  test('fills defaults and writes every address one way', () => {
    const s = normalizeState({
      devices: [{ name: 'flannel-v6.1', link: { kind: 'vxlan', vni: 1, local: 'FD00:0:0::1' }, mac: '0E:AA:00:00:00:01', addresses: ['fd10:244:0::/128'] }],
      routes: [
        { dst: '10.244.2.0/24', via: '10.244.2.0', dev: 'flannel.1', onlink: true },
        { dst: 'fd10:244:2:0::/64', via: 'fd10:244:2::', dev: 'flannel-v6.1' },
      ],
      neighbours: [{ dev: 'flannel.1', ip: '10.244.2.0', mac: '0E:00:00:00:00:02' }],
      fdb: [{ dev: 'flannel.1', mac: '0e:00:00:00:00:02', dst: '192.168.1.2' }],
    });
    assert.deepEqual(s.devices[0], {
      name: 'flannel-v6.1',
      link: { kind: 'vxlan', vni: 1, port: 8472, learning: false, gbp: false, local: 'fd00::1' },
      mac: '0e:aa:00:00:00:01',
      addresses: ['fd10:244::/128'],
      up: true,
    });
    assert.deepEqual(s.routes, [
      { family: 4, table: 254, dst: '10.244.2.0/24', metric: 0, via: '10.244.2.0', dev: 'flannel.1', onlink: true, blackhole: false },
      { family: 6, table: 254, dst: 'fd10:244:2::/64', metric: 1024, via: 'fd10:244:2::', dev: 'flannel-v6.1', onlink: false, blackhole: false },
    ]);
    assert.equal(s.neighbours[0]!.mac, '0e:00:00:00:00:02');
  });

  test('lists every problem at once', () => {
    assert.throws(
      () =>
        normalizeState({
          devices: [{ name: 'a-name-much-too-long', link: { kind: 'vxlan', vni: 1 << 24 } }],
          routes: [{ dst: '10.0.0.1/8', dev: 'eth0' }, { dst: '10.1.0.0/16', via: 'fd00::1', dev: 'eth0' }],
          neighbours: [{ dev: 'flannel.1', ip: '10.0.0.300', mac: '0e:00:00:00:00:01' }],
        }),
      (e: Error) => {
        assert.match(e.message, /devices\.0\.name: not a valid interface name/);
        assert.match(e.message, /devices\.0\.link\.vni/);
        assert.match(e.message, /"10\.0\.0\.1\/8" is not a network with its host bits clear/);
        assert.match(e.message, /"10\.0\.0\.300" is not an IP address/);
        return true;
      },
    );
    assert.throws(() => normalizeState({ routes: [{ dst: '10.1.0.0/16', via: 'fd00::1', dev: 'eth0' }] }), /not of the same family/);
  });

  test('duplicates: identical ones merge, different ones under one key are refused', () => {
    const n = { dev: 'flannel.1', ip: '10.244.2.0', mac: '0e:00:00:00:00:02' };
    assert.equal(normalizeState({ neighbours: [n, { ...n }] }).neighbours.length, 1);
    assert.throws(() => normalizeState({ neighbours: [n, { ...n, mac: '0e:00:00:00:00:03' }] }), /two different neighbours for flannel\.1 10\.244\.2\.0/);
  });
});

describe('plan', () => {
  const own = { devices: FLANNEL_DEVICES };
  const vx = (name: string, vni: number, extra: Partial<LinkRecord> = {}): LinkRecord => ({
    index: 10 + vni,
    name,
    kind: 'vxlan',
    link: { kind: 'vxlan', vni, port: 8472, learning: false, gbp: false },
    mtu: 1450,
    up: true,
    flags: ['UP'],
    addresses: [],
    ...extra,
  });
  const eth0: LinkRecord = { index: 2, name: 'eth0', kind: 'veth', mtu: 1500, up: true, flags: ['UP'], addresses: [] };
  const want = (peers: number[], vni = 1): KernelState => ({
    devices: [{ name: 'flannel.1', link: { kind: 'vxlan', vni }, mtu: 1450 }],
    routes: peers.map((i) => ({ dst: `10.244.${i}.0/24`, via: `10.244.${i}.0`, dev: 'flannel.1', onlink: true })),
    neighbours: peers.map((i) => ({ dev: 'flannel.1', ip: `10.244.${i}.0`, mac: `0e:00:00:00:00:0${i}` })),
    fdb: peers.map((i) => ({ dev: 'flannel.1', mac: `0e:00:00:00:00:0${i}`, dst: `192.168.0.${i}` })),
  });
  const has = (peers: number[], extra: Partial<ActualState> = {}): ActualState => ({
    links: [eth0, vx('flannel.1', 1)],
    routes: peers.map((i) => ({ family: 4 as const, table: 254, type: 1, dst: `10.244.${i}.0/24`, metric: 0, protocol: TWILL_ROUTE_PROTOCOL, scope: 0, via: `10.244.${i}.0`, dev: 'flannel.1', onlink: true, flags: ['onlink'], multipath: false })),
    neighbours: peers.map((i) => ({ family: 4 as const, dev: 'flannel.1', ip: `10.244.${i}.0`, mac: `0e:00:00:00:00:0${i}`, state: ['PERMANENT'], permanent: true })),
    fdb: peers.map((i) => ({ dev: 'flannel.1', mac: `0e:00:00:00:00:0${i}`, dst: `192.168.0.${i}`, state: 'permanent', permanent: true, self: true })),
    ...extra,
  });

  test('in sync: no steps', () => {
    const p = planReconcile(normalizeState(want([1, 2])), has([1, 2]), own);
    assert.deepEqual(p.steps, []);
    assert.equal(p.commands, 0);
  });

  test('a new peer: fdb, then neighbour, then route; a gone peer: route and neighbour, then fdb', () => {
    const add = planReconcile(normalizeState(want([1, 2])), has([1]), own);
    assert.deepEqual(add.steps, [
      { tool: 'bridge', commands: ['fdb replace 0e:00:00:00:00:02 dev flannel.1 dst 192.168.0.2 self permanent'] },
      {
        tool: 'ip',
        commands: [
          'neigh replace 10.244.2.0 lladdr 0e:00:00:00:00:02 dev flannel.1 nud permanent',
          `route add 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink proto ${TWILL_ROUTE_PROTOCOL} table 254 metric 0`,
        ],
      },
    ]);
    const del = planReconcile(normalizeState(want([1])), has([1, 2]), own);
    assert.deepEqual(del.steps, [
      { tool: 'ip', commands: [`route del 10.244.2.0/24 proto ${TWILL_ROUTE_PROTOCOL} table 254 metric 0`, 'neigh del 10.244.2.0 dev flannel.1'] },
      { tool: 'bridge', commands: ['fdb del 0e:00:00:00:00:02 dev flannel.1 dst 192.168.0.2 self'] },
    ]);
  });

  test("routes are twill's by protocol only; neighbours and fdb only on twill's devices", () => {
    const actual = has([1]);
    actual.routes.push(
      { ...actual.routes[0]!, dst: '10.9.0.0/16', protocol: 3 }, // flannel's (boot) on twill's device
      { ...actual.routes[0]!, dst: '10.8.0.0/16', dev: 'eth0' }, // twill's on someone's device: twill's
    );
    actual.neighbours.push({ family: 4, dev: 'eth0', ip: '192.168.0.9', mac: '0e:00:00:00:00:99', state: ['PERMANENT'], permanent: true });
    actual.neighbours.push({ family: 4, dev: 'flannel.1', ip: '10.244.7.0', mac: '0e:00:00:00:00:77', state: ['STALE'], permanent: false });
    actual.fdb.push({ dev: 'eth0', mac: '0e:00:00:00:00:99', dst: '192.168.0.9', state: 'permanent', permanent: true, self: true });
    actual.fdb.push({ dev: 'flannel.1', mac: '33:33:00:00:00:01', state: 'permanent', permanent: true, self: true });
    const p = planReconcile(normalizeState(want([1])), actual, own);
    assert.deepEqual(p.changes.routes.remove, ['254 10.8.0.0/16 0']);
    assert.deepEqual(p.changes.neighbours.remove, []);
    assert.deepEqual(p.changes.fdb.remove, []);
  });

  test('a foreign route on a desired key is a conflict and is left alone', () => {
    const actual = has([]);
    actual.routes.push({ family: 4, table: 254, type: 1, dst: '10.244.1.0/24', metric: 0, protocol: 3, scope: 0, via: '10.244.1.0', dev: 'flannel.1', onlink: true, flags: [], multipath: false });
    const p = planReconcile(normalizeState(want([1])), actual, own);
    assert.deepEqual(p.conflicts.map((c) => c.key), ['254 10.244.1.0/24 0']);
    assert.ok(!p.steps.some((s) => s.commands.some((c) => c.startsWith('route'))));
  });

  test('a vni change recreates the device: nothing on it is deleted one by one, everything is re-added', () => {
    const p = planReconcile(normalizeState(want([1, 2], 2)), has([1, 2]), own);
    assert.deepEqual(p.changes.devices.replace, ['flannel.1']);
    assert.deepEqual(p.steps[0], {
      tool: 'ip',
      commands: ['link del dev flannel.1', 'link add flannel.1 mtu 1450 type vxlan id 2 dstport 8472 nolearning', 'link set dev flannel.1 up'],
    });
    assert.deepEqual([p.changes.routes.add.length, p.changes.neighbours.add.length, p.changes.fdb.add.length], [2, 2, 2]);
    assert.deepEqual([p.changes.routes.remove, p.changes.neighbours.remove, p.changes.fdb.remove], [[], [], []]);
  });

  test('mtu, mac, addresses and up state change in place; link-local addresses are the kernel\'s', () => {
    const actual = has([]);
    actual.links[1] = vx('flannel.1', 1, {
      mtu: 1500,
      up: false,
      addresses: [
        { family: 4, cidr: '10.244.9.0/32', scope: 'global' },
        { family: 6, cidr: 'fe80::1/64', scope: 'link' },
      ],
    });
    const w = want([]);
    w.devices[0]!.addresses = ['10.244.0.0/32'];
    const p = planReconcile(normalizeState(w), actual, own);
    assert.deepEqual(p.changes.devices.update, ['flannel.1']);
    assert.deepEqual(p.steps, [
      {
        tool: 'ip',
        commands: ['link set dev flannel.1 mtu 1450', 'addr del 10.244.9.0/32 dev flannel.1', 'addr add 10.244.0.0/32 dev flannel.1', 'link set dev flannel.1 up'],
      },
    ]);
  });

  test("a device under twill's name but of another kind is not twill's", () => {
    const actual = has([]);
    actual.links.push({ index: 30, name: 'flannel.7', kind: 'bridge', mtu: 1500, up: true, flags: [], addresses: [] });
    const p = planReconcile(normalizeState({}), actual, own);
    assert.deepEqual(p.changes.devices.remove, ['flannel.1'], 'the vxlan goes, the bridge stays');
    const blocked = planReconcile(normalizeState({ devices: [{ name: 'flannel.7', link: { kind: 'vxlan', vni: 7 } }] }), actual, own);
    assert.deepEqual(blocked.conflicts.map((c) => [c.kind, c.key]), [['device', 'flannel.7']]);
    assert.ok(!blocked.steps.some((s) => s.commands.some((c) => c.includes('flannel.7'))));
  });

  test('a desired state beyond the declared ownership is refused', () => {
    assert.throws(
      () => planReconcile(normalizeState({ devices: [{ name: 'vx0', link: { kind: 'vxlan', vni: 1 } }] }), has([]), own),
      /device vx0 \(vxlan\) is not listed in ownership\.devices/,
    );
    assert.throws(
      () => planReconcile(normalizeState({ fdb: [{ dev: 'eth0', mac: '0e:00:00:00:00:01', dst: '1.2.3.4' }] }), has([]), own),
      /fdb entry 0e:00:00:00:00:01 is on eth0, which is not one of twill's devices/,
    );
  });

  test('the route protocol must be one the kernel does not reserve', () => {
    assert.equal(routeProtocol({ devices: [] }), TWILL_ROUTE_PROTOCOL);
    assert.throws(() => routeProtocol({ devices: [], routeProtocol: 3 }), /5 to 255/);
  });
});
