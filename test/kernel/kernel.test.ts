// reconcile() against a real kernel, inside a lab host namespace: a vxlan
// device and 200 fake peers, hand-made damage, foreign objects that must
// survive, a device that must be recreated, and lines that fail.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Lab, labUnavailable, type Host } from '../helpers/netns.js';
import {
  FLANNEL_DEVICES,
  MAX_BATCH_RESTARTS,
  TWILL_ROUTE_PROTOCOL,
  applyBatch,
  readKernel,
  reconcile,
  type ActualState,
  type KernelState,
  type Ownership,
  type KernelPassReport,
} from '../../agent/kernel/index.js';

// In CI the kernel tests run as root and must run: a missing tool fails there rather than skipping.
const skip = process.env.CI ? false : (labUnavailable({}) ?? false);
const own: Ownership = { devices: FLANNEL_DEVICES };

const hex2 = (n: number) => n.toString(16).padStart(2, '0');
const vtepMac = (i: number) => `0e:00:00:00:${hex2(i >> 8)}:${hex2(i & 255)}`;
const vtep6Mac = (i: number) => `0e:00:00:06:${hex2(i >> 8)}:${hex2(i & 255)}`;

interface Opts {
  port?: number;
  mtu?: number;
  extraRoutes?: KernelState['routes'];
}

/** flannel's vxlan state for peers: per peer an onlink route, a permanent neighbour and an fdb entry. */
function desired(peers: number[], peers6: number[], o: Opts = {}): KernelState {
  const s: KernelState = {
    devices: [
      {
        name: 'flannel.1',
        link: { kind: 'vxlan', vni: 1, port: o.port ?? 8472, local: '192.168.100.10', dev: 'eth0' },
        mtu: o.mtu ?? 1450,
        mac: '0e:aa:00:00:00:01',
        addresses: ['10.244.0.0/32'],
      },
      {
        name: 'flannel-v6.1',
        // the IPv6 twin shares VNI and port; only its IPv6 local address keeps the two apart
        link: { kind: 'vxlan', vni: 1, port: 8472, local: 'fd00:100::a', dev: 'eth0' },
        mtu: 1430,
        mac: '0e:aa:00:00:06:01',
        addresses: ['fd10:244::/128'],
      },
    ],
    routes: [],
    neighbours: [],
    fdb: [],
  };
  for (const i of peers) {
    const sub = `10.244.${i}.0`;
    s.routes.push({ dst: `${sub}/24`, via: sub, dev: 'flannel.1', onlink: true });
    s.neighbours.push({ dev: 'flannel.1', ip: sub, mac: vtepMac(i) });
    s.fdb.push({ dev: 'flannel.1', mac: vtepMac(i), dst: `172.16.${i >> 8}.${i & 255}` });
  }
  for (const i of peers6) {
    const sub = `fd10:244:${i.toString(16)}::`;
    s.routes.push({ dst: `${sub}/64`, via: sub, dev: 'flannel-v6.1', onlink: true });
    s.neighbours.push({ dev: 'flannel-v6.1', ip: sub, mac: vtep6Mac(i) });
    s.fdb.push({ dev: 'flannel-v6.1', mac: vtep6Mac(i), dst: `fd00:100::${i.toString(16)}` });
  }
  s.routes.push(...(o.extraRoutes ?? []));
  return s;
}

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => from + k);
const FLANNEL = new Set(['flannel.1', 'flannel-v6.1']);

/** twill's entries as the kernel has them, in the same form as expected(). */
function kernelEntries(a: ActualState) {
  return {
    routes: a.routes.filter((r) => r.protocol === TWILL_ROUTE_PROTOCOL).map((r) => `${r.dst} via ${r.via} dev ${r.dev}${r.onlink ? ' onlink' : ''} metric ${r.metric}`).sort(),
    neighbours: a.neighbours.filter((n) => n.permanent && FLANNEL.has(n.dev)).map((n) => `${n.dev} ${n.ip} ${n.mac}`).sort(),
    fdb: a.fdb.filter((f) => f.dst && FLANNEL.has(f.dev)).map((f) => `${f.dev} ${f.mac} ${f.dst}${f.permanent ? '' : ' NOT-PERMANENT'}`).sort(),
  };
}

function expected(s: KernelState) {
  return {
    routes: s.routes.map((r) => `${r.dst} via ${r.via} dev ${r.dev}${r.onlink ? ' onlink' : ''} metric ${r.dst.includes(':') ? 1024 : 0}`).sort(),
    neighbours: s.neighbours.map((n) => `${n.dev} ${n.ip} ${n.mac}`).sort(),
    fdb: s.fdb.map((f) => `${f.dev} ${f.mac} ${f.dst}`).sort(),
  };
}

function assertClean(r: KernelPassReport) {
  assert.deepEqual(r.failures, [], 'no line failed');
  assert.deepEqual(r.plan.conflicts, []);
}

describe('kernel reconcile in a namespace', { skip }, () => {
  let lab: Lab;
  let h: Host;
  let read: () => Promise<ActualState>;
  let ip: (...args: string[]) => Promise<string>;
  const peers = range(1, 200);
  const peers6 = range(1, 5);

  before(async () => {
    lab = await Lab.create();
    h = await lab.addHost('k1');
    read = () => readKernel({ netns: h.ns });
    ip = async (...args) => (await lab.exec(h, ['ip', ...args])).stdout;
    await ip('-6', 'addr', 'add', 'fd00:100::a/64', 'dev', 'eth0', 'nodad');
  });
  after(async () => {
    await lab?.cleanup();
  });

  test('200 peers from empty: the kernel then holds exactly them', async () => {
    const want = desired(peers, peers6);
    const r = await reconcile(want, own, { netns: h.ns });
    assertClean(r);
    assert.deepEqual(r.plan.changes.devices.add, ['flannel.1', 'flannel-v6.1']);
    assert.equal(r.plan.changes.routes.add.length, 205);
    assert.equal(r.plan.changes.neighbours.add.length, 205);
    assert.equal(r.plan.changes.fdb.add.length, 205);
    // devices, then fdb, then neighbours and routes: one process each
    assert.deepEqual(r.batches.map((b) => [b.tool, b.spawns]), [['ip', 1], ['bridge', 1], ['ip', 1]]);
    assert.equal(r.commands, 2 * 3 + 205 * 3); // per device: link add, addr add, up

    const a = await read();
    assert.deepEqual(kernelEntries(a), expected(want));
    const vx = a.links.find((l) => l.name === 'flannel.1')!;
    assert.deepEqual(vx.link, { kind: 'vxlan', vni: 1, port: 8472, learning: false, gbp: false, local: '192.168.100.10', dev: 'eth0' });
    assert.equal(vx.mtu, 1450);
    assert.equal(vx.mac, '0e:aa:00:00:00:01');
    assert.ok(vx.up);
    assert.ok(vx.addresses.some((x) => x.cidr === '10.244.0.0/32'));
    const vx6 = a.links.find((l) => l.name === 'flannel-v6.1')!;
    assert.ok(vx6.addresses.some((x) => x.cidr === 'fd10:244::/128'));
  });

  test('reconciling again sends no command at all', async () => {
    const r = await reconcile(desired(peers, peers6), own, { netns: h.ns });
    assertClean(r);
    assert.equal(r.commands, 0);
    assert.deepEqual(r.plan.steps, []);
    assert.deepEqual(r.batches, []);
  });

  test('one route, one neighbour and one fdb entry deleted by hand come back, and nothing else is touched', async () => {
    await ip('route', 'del', '10.244.5.0/24');
    await ip('neigh', 'del', '10.244.6.0', 'dev', 'flannel.1');
    await ip('-6', 'route', 'del', 'fd10:244:3::/64');
    await lab.exec(h, ['bridge', 'fdb', 'del', vtepMac(7), 'dev', 'flannel.1', 'dst', '172.16.0.7', 'self']);
    const r = await reconcile(desired(peers, peers6), own, { netns: h.ns });
    assertClean(r);
    assert.deepEqual(r.plan.changes.routes.add.sort(), ['254 10.244.5.0/24 0', '254 fd10:244:3::/64 1024']);
    assert.deepEqual(r.plan.changes.neighbours.add, ['flannel.1 10.244.6.0']);
    assert.deepEqual(r.plan.changes.fdb.add, [`flannel.1 ${vtepMac(7)}`]);
    assert.equal(r.commands, 4);
    assert.deepEqual(kernelEntries(await read()), expected(desired(peers, peers6)));
  });

  test('an entry changed by hand is replaced in place', async () => {
    await ip('neigh', 'replace', '10.244.8.0', 'lladdr', '0e:bb:bb:bb:bb:bb', 'dev', 'flannel.1', 'nud', 'permanent');
    await ip('route', 'replace', '10.244.9.0/24', 'via', '10.244.99.0', 'dev', 'flannel.1', 'onlink', 'proto', String(TWILL_ROUTE_PROTOCOL));
    await lab.exec(h, ['bridge', 'fdb', 'replace', vtepMac(10), 'dev', 'flannel.1', 'dst', '172.16.9.9', 'self', 'permanent']);
    const r = await reconcile(desired(peers, peers6), own, { netns: h.ns });
    assertClean(r);
    assert.deepEqual(r.plan.changes.neighbours.replace, ['flannel.1 10.244.8.0']);
    assert.deepEqual(r.plan.changes.routes.replace, ['254 10.244.9.0/24 0']);
    assert.deepEqual(r.plan.changes.fdb.replace, [`flannel.1 ${vtepMac(10)}`]);
    assert.equal(r.commands, 3);
    assert.deepEqual(kernelEntries(await read()), expected(desired(peers, peers6)));
  });

  test('a peer removed from the desired state loses its route, neighbour and fdb entry', async () => {
    const fewer = peers.filter((i) => i !== 42);
    const r = await reconcile(desired(fewer, peers6), own, { netns: h.ns });
    assertClean(r);
    assert.deepEqual(r.plan.changes.routes.remove, ['254 10.244.42.0/24 0']);
    assert.deepEqual(r.plan.changes.neighbours.remove, ['flannel.1 10.244.42.0']);
    assert.deepEqual(r.plan.changes.fdb.remove, [`flannel.1 ${vtepMac(42)}`]);
    // route and neighbour go first, then the fdb entry
    assert.deepEqual(r.batches.map((b) => [b.tool, b.applied]), [['ip', 2], ['bridge', 1]]);
    assert.deepEqual(kernelEntries(await read()), expected(desired(fewer, peers6)));
    // and it comes back as a plain add (two processes: bridge, then ip)
    const back = await reconcile(desired(peers, peers6), own, { netns: h.ns });
    assertClean(back);
    assert.deepEqual(back.batches.map((b) => b.tool), ['bridge', 'ip']);
  });

  test("what is not twill's is never touched, even under twill's names", async () => {
    // a route of another protocol, one of the kernel's default "boot" protocol,
    // a permanent neighbour and an fdb entry on the underlay device, and a
    // bridge that happens to be named like a flannel vxlan device
    await ip('route', 'add', '10.99.0.0/16', 'via', '192.168.100.1', 'dev', 'eth0', 'proto', 'static');
    await ip('route', 'add', '10.98.0.0/16', 'via', '10.98.0.0', 'dev', 'flannel.1', 'onlink');
    await ip('neigh', 'add', '192.168.100.99', 'lladdr', '0e:cc:cc:cc:cc:cc', 'dev', 'eth0', 'nud', 'permanent');
    await lab.exec(h, ['bridge', 'fdb', 'add', '0e:dd:dd:dd:dd:dd', 'dev', 'eth0', 'self', 'permanent']);
    await ip('link', 'add', 'flannel.9', 'type', 'bridge');
    // and one foreign route sitting exactly where twill wants one
    await ip('route', 'add', '10.244.201.0/24', 'via', '192.168.100.1', 'dev', 'eth0', 'proto', 'static');
    const before = await read();

    const withConflict = desired([...peers, 201], peers6);
    const r = await reconcile(withConflict, own, { netns: h.ns });
    assert.deepEqual(r.failures, []);
    assert.deepEqual(r.plan.conflicts.map((c) => [c.kind, c.key]), [['route', '254 10.244.201.0/24 0']]);
    assert.equal(r.ok, false);
    // the peer's other entries are installed; the foreign route is not replaced
    assert.deepEqual(r.plan.changes.neighbours.add, ['flannel.1 10.244.201.0']);
    assert.deepEqual(r.plan.changes.routes.add, []);

    const r2 = await reconcile(desired(peers, peers6), own, { netns: h.ns });
    assertClean(r2);
    assert.deepEqual(r2.plan.changes.devices.remove, []);
    const a = await read();
    const routes = (s: ActualState) => s.routes.filter((x) => x.protocol !== TWILL_ROUTE_PROTOCOL && x.table === 254).map((x) => `${x.dst} ${x.via} ${x.dev} ${x.protocol}`).sort();
    assert.deepEqual(routes(a), routes(before));
    assert.ok(routes(a).includes('10.244.201.0/24 192.168.100.1 eth0 4'));
    assert.ok(routes(a).includes('10.98.0.0/16 10.98.0.0 flannel.1 3'));
    assert.ok(a.neighbours.some((n) => n.dev === 'eth0' && n.ip === '192.168.100.99' && n.permanent));
    assert.ok(a.fdb.some((f) => f.dev === 'eth0' && f.mac === '0e:dd:dd:dd:dd:dd'));
    assert.equal(a.links.find((l) => l.name === 'flannel.9')?.kind, 'bridge');

    // A desired device whose name is held by a foreign device is a conflict, not a takeover.
    const blocked = desired([], []);
    blocked.devices = [{ name: 'flannel.9', link: { kind: 'vxlan', vni: 9 } }];
    blocked.neighbours = [{ dev: 'flannel.9', ip: '10.9.0.1', mac: '0e:00:00:00:09:01' }];
    const plan = await reconcile(blocked, own, { netns: h.ns, dryRun: true });
    assert.deepEqual(plan.plan.conflicts.map((c) => c.kind).sort(), ['device', 'neighbour']);
    assert.ok(!plan.plan.steps.some((s) => s.commands.some((c) => c.includes('flannel.9'))));

    // a desired state that reaches onto a device twill does not own is refused outright
    const outside = desired(peers, peers6);
    outside.neighbours.push({ dev: 'eth0', ip: '192.168.100.98', mac: '0e:00:00:00:00:98' });
    await assert.rejects(reconcile(outside, own, { netns: h.ns }), /not one of twill's devices/);
    await ip('link', 'del', 'flannel.9');
  });

  test('an mtu change is made in place; a port change recreates the device and re-adds everything on it', async () => {
    const idx = async (name: string) => (await read()).links.find((l) => l.name === name)!.index;
    const before = await idx('flannel.1');
    const m = await reconcile(desired(peers, peers6, { mtu: 1400 }), own, { netns: h.ns });
    assertClean(m);
    assert.deepEqual(m.plan.changes.devices.update, ['flannel.1']);
    assert.equal(m.commands, 1);
    assert.equal(await idx('flannel.1'), before);

    const want = desired(peers, peers6, { port: 4789, mtu: 1400 });
    const r = await reconcile(want, own, { netns: h.ns });
    assertClean(r);
    assert.deepEqual(r.plan.changes.devices.replace, ['flannel.1']);
    assert.equal(r.plan.changes.routes.add.length, 200);
    assert.equal(r.plan.changes.neighbours.add.length, 200);
    assert.equal(r.plan.changes.fdb.add.length, 200);
    // nothing is deleted entry by entry: the entries went with the old device
    assert.deepEqual([r.plan.changes.routes.remove, r.plan.changes.neighbours.remove, r.plan.changes.fdb.remove], [[], [], []]);
    const a = await read();
    const vx = a.links.find((l) => l.name === 'flannel.1')!;
    assert.notEqual(vx.index, before);
    assert.equal(vx.link?.kind === 'vxlan' && vx.link.port, 4789);
    assert.equal(vx.mac, '0e:aa:00:00:00:01');
    assert.deepEqual(kernelEntries(a), expected(want));
    assert.equal((await reconcile(want, own, { netns: h.ns })).commands, 0);
  });

  test('a device twill owns but no longer wants is deleted', async () => {
    const want = desired(peers, [], { port: 4789, mtu: 1400 });
    want.devices = want.devices.filter((d) => d.name !== 'flannel-v6.1');
    const r = await reconcile(want, own, { netns: h.ns });
    assertClean(r);
    assert.deepEqual(r.plan.changes.devices.remove, ['flannel-v6.1']);
    assert.equal(r.commands, 1, 'its entries go with it');
    assert.ok(!(await read()).links.some((l) => l.name === 'flannel-v6.1'));
  });

  test('a failing line is reported with its error while the other lines apply', async () => {
    const res = await applyBatch(
      'ip',
      [
        'neigh replace 10.244.250.1 lladdr 0e:00:00:00:fa:01 dev flannel.1 nud permanent',
        'route add 10.250.0.0/24 via 10.250.0.0 dev nosuch0 onlink proto 122',
        'neigh replace 10.244.250.2 lladdr 0e:00:00:00:fa:02 dev flannel.1 nud permanent',
        // iproute2 exits on this one instead of reporting it; the batch resumes after it
        'route add 10.251.0.0/24 via not-an-address dev flannel.1',
        'neigh replace 10.244.250.3 lladdr 0e:00:00:00:fa:03 dev flannel.1 nud permanent',
      ],
      { netns: h.ns },
    );
    assert.equal(res.applied, 3);
    assert.deepEqual(
      res.failures.map((f) => [f.line, f.aborted ?? false]),
      [
        [2, false],
        [4, true],
      ],
    );
    assert.match(res.failures[0]!.error, /Cannot find device "nosuch0"/);
    assert.match(res.failures[0]!.command, /dev nosuch0/);
    assert.match(res.failures[1]!.error, /not-an-address/);
    const neigh = await ip('neigh', 'show', 'dev', 'flannel.1');
    for (const n of ['10.244.250.1', '10.244.250.2', '10.244.250.3']) assert.match(neigh, new RegExp(n.replace(/\./g, '\\.')));

    // The same through reconcile: the stray neighbours go, one route cannot be added.
    const want = desired(peers, [], { port: 4789, mtu: 1400, extraRoutes: [{ dst: '10.252.0.0/24', via: '192.168.100.1', dev: 'nosuch1' }] });
    want.devices = want.devices.filter((d) => d.name !== 'flannel-v6.1');
    const r = await reconcile(want, own, { netns: h.ns });
    assert.equal(r.ok, false);
    assert.equal(r.failures.length, 1);
    assert.equal(r.failures[0]!.tool, 'ip');
    assert.match(r.failures[0]!.command, /^route add 10\.252\.0\.0\/24 .*dev nosuch1/);
    assert.match(r.failures[0]!.error, /Cannot find device "nosuch1"/);
    assert.deepEqual(r.plan.changes.neighbours.remove.sort(), ['flannel.1 10.244.250.1', 'flannel.1 10.244.250.2', 'flannel.1 10.244.250.3']);
    const left = kernelEntries(await read());
    assert.equal(left.neighbours.length, 200);
    // and the next pass tries the missing route again, and only that
    const again = await reconcile(want, own, { netns: h.ns });
    assert.equal(again.commands, 1);
    assert.deepEqual(again.plan.changes.routes.add, ['254 10.252.0.0/24 0']);
  });

  test('a batch that keeps stopping early gives up instead of spawning once per line', async () => {
    const lines = Array.from({ length: MAX_BATCH_RESTARTS + 5 }, (_, i) => `route add 10.254.${i}.0/24 via bogus${i} dev flannel.1`);
    const res = await applyBatch('ip', lines, { netns: h.ns });
    assert.equal(res.spawns, MAX_BATCH_RESTARTS + 1);
    assert.equal(res.applied, 0);
    assert.equal(res.failures.length, lines.length);
    assert.equal(res.failures.filter((f) => f.aborted).length, MAX_BATCH_RESTARTS + 1);
    assert.match(res.failures.at(-1)!.error, /not tried/);
  });

  test('a desired state with a bad value is refused before anything is read or changed', async () => {
    const bad = desired(peers, []);
    bad.routes.push({ dst: '10.253.0.1/24', dev: 'flannel.1' });
    bad.fdb.push({ dev: 'flannel.1', mac: 'zz:00:00:00:00:00', dst: '172.16.0.1' });
    await assert.rejects(reconcile(bad, own, { netns: h.ns }), (e: Error) => {
      assert.match(e.message, /10\.253\.0\.1\/24" is not a network/);
      assert.match(e.message, /"zz:00:00:00:00:00" is not a MAC/);
      return true;
    });
  });
});

describe('blackhole routes (flanneld --ip-blackhole-route) in a namespace', { skip }, () => {
  let lab: Lab;
  let h: Host;
  before(async () => {
    lab = await Lab.create();
    h = await lab.addHost('k2');
  });
  after(async () => {
    await lab?.cleanup();
  });
  const want = (): KernelState => ({
    devices: [],
    routes: [{ dst: '10.244.9.0/24', blackhole: true, metric: 4096 }, { dst: 'fd10:244:9::/64', blackhole: true, metric: 4096 }],
    neighbours: [],
    fdb: [],
  });
  const blackholes = async () => (await readKernel({ netns: h.ns })).routes.filter((r) => r.protocol === TWILL_ROUTE_PROTOCOL).map((r) => `${r.type} ${r.dst} ${r.dev ?? '-'} ${r.metric}`).sort();

  test('are built without a device, read back as they are (nothing to do the second time), and come back when deleted', async () => {
    assertClean(await reconcile(want(), own, { netns: h.ns }));
    assert.deepEqual(await blackholes(), ['6 10.244.9.0/24 - 4096', '6 fd10:244:9::/64 - 4096']);
    // with no pod bridge yet, the subnet's traffic is dropped here, not sent out the default route
    await assert.rejects(lab.exec(h, ['ip', 'route', 'get', '10.244.9.7']), /No route to host|Invalid argument|blackhole/i);
    const again = await reconcile(want(), own, { netns: h.ns });
    assert.equal(again.commands, 0);
    await lab.exec(h, ['ip', 'route', 'del', 'blackhole', '10.244.9.0/24', 'metric', '4096']);
    const repaired = await reconcile(want(), own, { netns: h.ns });
    assert.deepEqual(repaired.plan.changes.routes.add, ['254 10.244.9.0/24 4096']);
    assert.deepEqual(await blackholes(), ['6 10.244.9.0/24 - 4096', '6 fd10:244:9::/64 - 4096']);
    // a pod bridge's own route for the subnet (metric 0) wins over the blackhole behind it
    await lab.exec(h, ['ip', 'link', 'add', 'cni0', 'type', 'bridge']);
    await lab.exec(h, ['ip', 'addr', 'add', '10.244.9.1/24', 'dev', 'cni0']);
    await lab.exec(h, ['ip', 'link', 'set', 'cni0', 'up']);
    assert.match((await lab.exec(h, ['ip', 'route', 'get', '10.244.9.7'])).stdout, /dev cni0/);
    assert.equal((await reconcile(want(), own, { netns: h.ns })).commands, 0);
  });

  test('a blackhole route with a device or a gateway is refused before anything is changed', async () => {
    await assert.rejects(
      reconcile({ devices: [], routes: [{ dst: '10.244.8.0/24', blackhole: true, dev: 'eth0' }], neighbours: [], fdb: [] }, own, { netns: h.ns }),
      /a blackhole route has no device and no gateway/,
    );
  });
});
