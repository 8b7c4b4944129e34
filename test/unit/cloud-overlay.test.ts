// The agent's backend on a cloud network (agent/backends/cloud-overlay.ts),
// on the in-memory kernel, iptables and host settings (test/fakes): without
// Backend.Overlay it is alloc's, nothing in the kernel; with it, the overlay's
// vxlan entries for exactly the pairs that use the overlay, a peer without
// an overlay agent said once, a reach change of this node a full pass and a
// peer's a delta, and the reverse-path settings kept and taken out. The same
// backend runs on the real kernel, moves and pings included, in
// test/kernel/cloud-overlay.test.ts.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNetConf, type NetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import type { Reach } from '../../core/backends/overlay.js';
import { createLogger } from '../../core/log.js';
import { Metrics } from '../../core/metrics.js';
import { backendFactory } from '../../agent/backends/index.js';
import { findExternal } from '../../agent/iface.js';
import { RPF_CHAIN, RPF_TABLE } from '../../agent/reverse-path.js';
import { StateDir } from '../../agent/state.js';
import { FakeHost } from '../fakes/host.js';
import { FakeIptables } from '../fakes/iptables.js';
import { FakeKernel } from '../fakes/kernel.js';

const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

const ROUTE: Reach = { via: 'route' };
const FULL: Reach = { via: 'overlay', why: 'route table full (2 of 2)' };
const mac = (n: number) => `0a:00:00:00:00:${n.toString(16).padStart(2, '0')}`;

function lease(node: string, n: number, reach: Reach | undefined, extra: Partial<Lease> = {}): Lease {
  return {
    network: 'net', node, subnet: `10.60.${n}.0/24`, ipv6Subnet: null, publicIP: `192.168.1.${n}`, publicIPv6: null,
    backendType: 'aws-vpc', backendData: { VtepMAC: mac(n) }, expiresAt: null, createdAt: '2030-01-01T00:00:00.000Z', revision: n,
    ...(reach && { reach }), ...extra,
  };
}

const conf = (backend: Record<string, unknown>, extra: Record<string, unknown> = {}): NetConf => parseNetConf({ Network: '10.60.0.0/16', ...extra, Backend: backend }, {});
const OVERLAY = conf({ Type: 'aws-vpc', Overlay: { Type: 'vxlan' } });

async function make(config: NetConf, dir = mkdtempSync(join(tmpdir(), 'twill-cloud-'))) {
  dirs.push(dir);
  const kernel = FakeKernel.host({ cidr: '192.168.1.1/24', gateway: '192.168.1.254' });
  const host = new FakeHost(kernel);
  const iptables = new FakeIptables();
  const logs: string[] = [];
  const external = await findExternal({ iface: ['eth0'] }, kernel);
  const metrics = new Metrics();
  const backend = await backendFactory(config.Backend.Type)({
    config, external, state: new StateDir(dir), log: createLogger('test', 'debug', (l) => logs.push(l)), metrics, kernel, iptables, host,
  });
  return { kernel, host, iptables, backend, logs, metrics, dir };
}

const peersOf = (...ls: Lease[]) => new Map(ls.map((l) => [l.node, l]));
const overlayRoutes = (k: FakeKernel) => k.routesVia('flannel.1').map((r) => r.dst).sort();

describe('a cloud network without Backend.Overlay', () => {
  for (const type of ['aws-vpc', 'gce', 'ali-vpc'] as const) {
    test(`${type}: the agent is alloc's: nothing in the kernel, iptables or the host's settings; the underlay's MTU; nothing published`, async () => {
      const config = conf({ Type: type, ...(type === 'ali-vpc' ? { AccessKeyID: 'a', AccessKeySecret: 'b' } : {}) });
      const { kernel, host, iptables, backend } = await make(config);
      const before = JSON.stringify([kernel.links, kernel.routes]);
      assert.deepEqual((await backend.reconcile(config, lease('self', 1, undefined, { backendType: type }), peersOf(lease('b', 2, undefined, { backendType: type })))).errors, []);
      assert.equal(JSON.stringify([kernel.links, kernel.routes]), before);
      assert.equal(kernel.reads, 0);
      assert.equal(iptables.restores, 0);
      assert.equal(host.writes, 0);
      assert.equal(backend.mtu(), 1500);
      assert.deepEqual(backend.backendData(), {});
    });
  }
});

describe('a cloud network with Backend.Overlay', () => {
  test('reached by route: the device and VtepMAC whatever the peers, entries for the overlay peers only, the overlay MTU', async () => {
    const { kernel, backend } = await make(OVERLAY);
    const r = await backend.reconcile(OVERLAY, lease('self', 1, ROUTE), peersOf(lease('b', 2, ROUTE), lease('c', 3, FULL), lease('d', 4, undefined)));
    assert.deepEqual(r.errors, []);
    const dev = kernel.links.find((l) => l.name === 'flannel.1');
    assert.equal(dev?.mac, backend.backendData().VtepMAC);
    assert.deepEqual(Object.keys(backend.backendData()), ['VtepMAC']);
    // d's reach not judged yet: overlay, as the contract says
    assert.deepEqual(overlayRoutes(kernel), ['10.60.3.0/24', '10.60.4.0/24']);
    assert.deepEqual(kernel.fdb.map((f) => [f.mac, f.dst]).sort(), [[mac(3), '192.168.1.3'], [mac(4), '192.168.1.4']]);
    assert.equal(backend.mtu(), 1450);
  });

  test('reached over the overlay: every peer over it; a peer without VtepMAC gets nothing and is said once, in errors while it lasts', async () => {
    const { kernel, backend, logs } = await make(OVERLAY);
    const noAgent = lease('b', 2, ROUTE, { backendData: {} });
    const peers = peersOf(noAgent, lease('c', 3, ROUTE), lease('e', 5, FULL, { backendData: {} }));
    const first = await backend.reconcile(OVERLAY, lease('self', 1, FULL), peers);
    assert.deepEqual(first.errors, [
      'peer b runs no overlay agent: it is reachable only through its cloud route',
      'peer e runs no overlay agent and has no cloud route: it is unreachable until its agent runs',
    ]);
    assert.deepEqual(overlayRoutes(kernel), ['10.60.3.0/24']);
    const second = await backend.reconcile(OVERLAY, lease('self', 1, FULL), peers);
    assert.deepEqual(second.errors, first.errors);
    assert.equal(logs.filter((l) => /peer b runs no overlay agent/.test(l)).length, 1, logs.join('\n'));
    // its agent starts: the entry comes, the error goes
    const started = peersOf(lease('b', 2, ROUTE), lease('c', 3, ROUTE), lease('e', 5, FULL, { backendData: {} }));
    const third = await backend.reconcile(OVERLAY, lease('self', 1, FULL), started, new Set(['b']));
    assert.deepEqual(third.errors, ['peer e runs no overlay agent and has no cloud route: it is unreachable until its agent runs']);
    assert.deepEqual(overlayRoutes(kernel), ['10.60.2.0/24', '10.60.3.0/24']);
  });

  test('many peers without an overlay agent: the status names five and counts the rest; the log names each once', async () => {
    const { backend, logs } = await make(OVERLAY);
    const peers = peersOf(...Array.from({ length: 12 }, (_, i) => lease(`p${i + 2}`, i + 2, ROUTE, { backendData: {} })));
    const r = await backend.reconcile(OVERLAY, lease('self', 1, FULL), peers);
    assert.equal(r.errors.length, 6);
    assert.equal(r.errors[5], "and 7 more peers run no overlay agent (the agent's log names each)");
    assert.equal(logs.filter((l) => /runs no overlay agent/.test(l)).length, 12);
  });

  test("a peer's move is its own change only (no kernel read); this node's move is a full pass over every pair", async () => {
    const { kernel, backend } = await make(OVERLAY);
    const own = lease('self', 1, ROUTE);
    let peers = peersOf(lease('b', 2, ROUTE), lease('c', 3, FULL));
    // a first look, and a member new on the overlay, are no move the control plane waits on
    assert.equal((await backend.reconcile(OVERLAY, own, peers)).confirm, undefined);
    assert.equal((await backend.reconcile(OVERLAY, own, peersOf(...peers.values(), lease('d', 4, FULL)), new Set(['d']))).confirm, undefined);
    await backend.reconcile(OVERLAY, own, peers, new Set(['d']));
    assert.deepEqual(overlayRoutes(kernel), ['10.60.3.0/24']);
    const reads = kernel.reads;
    // c got its route (room appeared): its entries go; b must go to the overlay: its entries come
    peers = peersOf(lease('b', 2, FULL), lease('c', 3, ROUTE));
    const moved = await backend.reconcile(OVERLAY, own, peers, new Set(['b', 'c']));
    assert.deepEqual(moved.errors, []);
    // b's route is deleted only once every agent applied this: the agent says so at once
    assert.equal(moved.confirm, true);
    assert.deepEqual(overlayRoutes(kernel), ['10.60.2.0/24']);
    assert.equal(kernel.reads, reads, 'a delta reads nothing');
    // this node's own route must go: every peer is over the overlay now, though the pass was told of none
    const self = await backend.reconcile(OVERLAY, lease('self', 1, FULL), peers, new Set());
    assert.deepEqual(self.errors, []);
    assert.equal(self.confirm, true);
    assert.deepEqual(overlayRoutes(kernel), ['10.60.2.0/24', '10.60.3.0/24']);
    assert.ok(kernel.reads > reads, 'a full pass');
    // moving to the route needs no such haste: the route was in place before the lease said so
    assert.equal((await backend.reconcile(OVERLAY, lease('self', 1, ROUTE), peers, new Set())).confirm, undefined);
  });

  test('the reverse-path settings: overlay device loose, underlay marks answered from our table, forward lookups untouched', async () => {
    const { kernel, host, iptables, backend } = await make(OVERLAY);
    await backend.reconcile(OVERLAY, lease('self', 1, ROUTE), peersOf(lease('c', 3, FULL)));
    assert.equal(await host.getSysctl('net/ipv4/conf/flannel.1/rp_filter'), '2');
    assert.equal(await host.getSysctl('net/ipv4/conf/eth0/src_valid_mark'), '1');
    assert.deepEqual((await host.rules()).filter((r) => r.protocol === '122').map((r) => [r.priority, r.iif, r.goto, r.nop ? 'nop' : r.table]), [
      [3122, 'eth0', '3124', ''], [3123, undefined, undefined, String(RPF_TABLE)], [3124, undefined, undefined, 'nop'],
    ]);
    assert.deepEqual(iptables.table(4, 'mangle').get(RPF_CHAIN), ['-s 10.60.0.0/16 -i eth0 -m comment --comment "twill rpf" -j MARK --set-xmark 0x1000/0x1000']);
    assert.deepEqual(kernel.routes.filter((r) => r.table === RPF_TABLE).map((r) => [r.dst, r.dev, r.protocol]), [['10.60.0.0/16', 'eth0', 122]]);
    // a second pass with nothing changed writes nothing
    const writes = [host.writes, iptables.restores];
    await backend.reconcile(OVERLAY, lease('self', 1, ROUTE), peersOf(lease('c', 3, FULL)));
    assert.deepEqual([host.writes, iptables.restores], writes);
  });

  test('the overlay leaves the config: device, entries, rules, chain and table go, src_valid_mark as it was; then alloc again', async () => {
    const { kernel, host, iptables, backend } = await make(OVERLAY);
    await host.setSysctl('net/ipv4/conf/eth0/src_valid_mark', '0');
    await backend.reconcile(OVERLAY, lease('self', 1, FULL), peersOf(lease('c', 3, ROUTE)));
    const plain = conf({ Type: 'aws-vpc' });
    assert.deepEqual((await backend.reconcile(plain, lease('self', 1, FULL), peersOf(lease('c', 3, ROUTE)))).errors, []);
    assert.equal(kernel.links.some((l) => l.name === 'flannel.1'), false);
    assert.deepEqual(kernel.routes.filter((r) => r.protocol === 122), []);
    assert.deepEqual((await host.rules()).filter((r) => r.protocol === '122'), []);
    assert.equal(iptables.table(4, 'mangle').has(RPF_CHAIN), false);
    assert.equal(await host.getSysctl('net/ipv4/conf/eth0/src_valid_mark'), '0');
    assert.deepEqual(backend.backendData(), {});
    assert.equal(backend.mtu(), 1500);
  });

  test('an agent restarted without the overlay in its config still takes out what a run with it left', async () => {
    const first = await make(OVERLAY);
    await first.backend.reconcile(OVERLAY, lease('self', 1, ROUTE), peersOf(lease('c', 3, FULL)));
    // the same host and state directory, the config changed while the agent was down
    const plain = conf({ Type: 'aws-vpc' });
    const again = await backendFactory('aws-vpc')({
      config: plain, external: await findExternal({ iface: ['eth0'] }, first.kernel), state: new StateDir(first.dir), log: createLogger('test', 'error', () => {}),
      metrics: new Metrics(), kernel: first.kernel, iptables: first.iptables, host: first.host,
    });
    await again.reconcile(plain, lease('self', 1, ROUTE), peersOf(lease('c', 3, FULL)));
    assert.equal(first.kernel.links.some((l) => l.name === 'flannel.1'), false);
    assert.deepEqual((await first.host.rules()).filter((r) => r.protocol === '122'), []);
  });

  test('an agent restarted with the same overlay deletes nothing; one restarted with another VNI replaces the device', async () => {
    const first = await make(OVERLAY);
    const own = lease('self', 1, ROUTE);
    await first.backend.reconcile(OVERLAY, own, peersOf(lease('c', 3, FULL)));
    const restart = async (config: NetConf) => {
      const b = await backendFactory('aws-vpc')({
        config, external: await findExternal({ iface: ['eth0'] }, first.kernel), state: new StateDir(first.dir), log: createLogger('test', 'error', () => {}),
        metrics: new Metrics(), kernel: first.kernel, iptables: first.iptables, host: first.host,
      });
      assert.deepEqual((await b.reconcile(config, own, peersOf(lease('c', 3, FULL)))).errors, []);
      return b;
    };
    const mark = first.kernel.log.length;
    const again = await restart(OVERLAY);
    assert.deepEqual(first.kernel.log.slice(mark).filter((l) => / del /.test(` ${l} `)), [], 'nothing deleted');
    assert.equal(again.backendData().VtepMAC, first.backend.backendData().VtepMAC, 'the same VtepMAC (peers keep their entries)');
    const vni7 = conf({ Type: 'aws-vpc', Overlay: { Type: 'vxlan', VNI: 7 } });
    await restart(vni7);
    assert.deepEqual(first.kernel.links.filter((l) => l.link?.kind === 'vxlan').map((l) => l.name), ['flannel.7']);
    assert.deepEqual(first.kernel.routesVia('flannel.7').map((r) => r.dst), ['10.60.3.0/24']);
  });

  test("retire() (the agent's backend replaced) takes it all out too", async () => {
    const { kernel, host, iptables, backend } = await make(OVERLAY);
    await backend.reconcile(OVERLAY, lease('self', 1, ROUTE), peersOf(lease('c', 3, FULL)));
    await backend.retire?.();
    assert.equal(kernel.links.some((l) => l.name === 'flannel.1'), false);
    assert.deepEqual((await host.rules()).filter((r) => r.protocol === '122'), []);
    assert.equal(iptables.table(4, 'mangle').has(RPF_CHAIN), false);
  });

  test('IPv6 enabled: the overlay carries IPv4 only (no flannel-v6, no VtepMACv6)', async () => {
    const dual = conf({ Type: 'gce', Overlay: { Type: 'vxlan' } }, { EnableIPv6: true, IPv6Network: 'fd00::/48' });
    const { kernel, backend } = await make(dual);
    const own = lease('self', 1, FULL, { backendType: 'gce', ipv6Subnet: 'fd00:0:0:1::/64' });
    assert.deepEqual((await backend.reconcile(dual, own, peersOf(lease('c', 3, FULL, { backendType: 'gce' })))).errors, []);
    assert.deepEqual(kernel.links.filter((l) => l.link?.kind === 'vxlan').map((l) => l.name), ['flannel.1']);
    assert.deepEqual(Object.keys(backend.backendData()), ['VtepMAC']);
  });

  test('/metrics says how this node is reached and how many overlay peers it has', async () => {
    const { backend, metrics } = await make(OVERLAY);
    await backend.reconcile(OVERLAY, lease('self', 1, FULL), peersOf(lease('b', 2, ROUTE), lease('c', 3, ROUTE)));
    const text = metrics.render();
    assert.match(text, /twill_agent_overlay_peers 2/);
    assert.match(text, /twill_agent_reach\{via="overlay"\} 1/);
  });
});
