// The routed backends (vxlan, host-gw, ipip) and their peer sync, on a kernel
// in memory (test/fakes/kernel.ts): what each peer costs in the kernel, the
// change of one peer without a read, drift and a deleted device repaired by
// the full pass, a departed peer's entries removed at start-up, someone
// else's route left alone. The same backends run against the real kernel in
// test/kernel and test/e2e.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNetConf, type NetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import { createLogger } from '../../core/log.js';
import { Metrics } from '../../core/metrics.js';
import type { Backend } from '../../agent/backends/backend.js';
import { hostGwBackend } from '../../agent/backends/host-gw.js';
import { ipipBackend } from '../../agent/backends/ipip.js';
import { vxlanBackend } from '../../agent/backends/vxlan.js';
import { findExternal } from '../../agent/iface.js';
import { StateDir } from '../../agent/state.js';
import { FakeKernel } from '../fakes/kernel.js';

const dirs: string[] = [];
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

function lease(node: string, n: number, extra: Partial<Lease> = {}): Lease {
  return {
    network: 'net', node, subnet: `10.244.${n}.0/24`, ipv6Subnet: null, publicIP: `192.168.1.${n}`, publicIPv6: null,
    backendType: 'vxlan', backendData: { VtepMAC: `0a:00:00:00:00:${n.toString(16).padStart(2, '0')}` },
    expiresAt: null, createdAt: '2030-01-01T00:00:00.000Z', revision: n, ...extra,
  };
}

async function make(factory: typeof vxlanBackend, conf: Record<string, unknown>, kernel = FakeKernel.host({ cidr: '192.168.1.1/24', gateway: '192.168.1.254' }), extra: { blackholeRoute?: boolean } = {}) {
  const config: NetConf = parseNetConf(conf, {});
  const dir = mkdtempSync(join(tmpdir(), 'twill-backend-'));
  dirs.push(dir);
  const logs: string[] = [];
  const log = createLogger('test', 'debug', (l) => logs.push(l));
  const external = await findExternal({ iface: ['eth0'] }, kernel);
  const backend: Backend = await factory({ config, external, state: new StateDir(dir), log, metrics: new Metrics(), kernel, ...extra });
  const own = lease('self', 1);
  return { config, kernel, backend, own, logs };
}

const peersOf = (...ls: Lease[]) => new Map(ls.map((l) => [l.node, l]));

describe('vxlan on the in-memory kernel', () => {
  test('builds flannel.<VNI> and, per peer, a permanent neighbour, an fdb entry and an onlink route', async () => {
    const { config, kernel, backend, own } = await make(vxlanBackend, { Network: '10.244.0.0/16', Backend: { Type: 'vxlan', VNI: 4 } });
    const r = await backend.reconcile(config, own, peersOf(lease('b', 2), lease('c', 3)));
    assert.deepEqual(r.errors, []);
    const dev = kernel.links.find((l) => l.name === 'flannel.4');
    assert.equal(dev?.link?.kind, 'vxlan');
    assert.equal(dev?.mtu, 1450);
    assert.equal(dev?.up, true);
    assert.deepEqual(dev?.addresses.map((a) => a.cidr), ['10.244.1.0/32']);
    assert.equal(dev?.mac, backend.backendData().VtepMAC);
    assert.deepEqual(kernel.routesVia('flannel.4').map((x) => [x.dst, x.via, x.onlink]), [['10.244.2.0/24', '10.244.2.0', true], ['10.244.3.0/24', '10.244.3.0', true]]);
    assert.deepEqual(kernel.neighbours.map((n) => [n.ip, n.mac, n.permanent]), [['10.244.2.0', '0a:00:00:00:00:02', true], ['10.244.3.0', '0a:00:00:00:00:03', true]]);
    assert.deepEqual(kernel.fdb.map((f) => [f.mac, f.dst]), [['0a:00:00:00:00:02', '192.168.1.2'], ['0a:00:00:00:00:03', '192.168.1.3']]);
    assert.equal(backend.mtu(), 1450);
  });

  test("flannel's MTU and Learning: the device gets MTU - 50 (and FLANNEL_MTU with it), learning as asked", async () => {
    const { config, kernel, backend, own } = await make(vxlanBackend, { Network: '10.244.0.0/16', Backend: { Type: 'vxlan', MTU: 1400, Learning: true } });
    assert.deepEqual((await backend.reconcile(config, own, peersOf(lease('b', 2)))).errors, []);
    const dev = kernel.links.find((l) => l.name === 'flannel.1');
    assert.equal(dev?.mtu, 1350);
    assert.equal(backend.mtu(), 1350);
    assert.equal((dev?.link as { learning?: boolean } | undefined)?.learning, true);
  });

  test("flanneld's --ip-blackhole-route: the own subnet gets a blackhole route behind the pod bridge's, kept like every other entry", async () => {
    const kernel = FakeKernel.host({ cidr: '192.168.1.1/24', gateway: '192.168.1.254' });
    const { config, backend, own } = await make(vxlanBackend, { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }, kernel, { blackholeRoute: true });
    assert.deepEqual((await backend.reconcile(config, own, peersOf(lease('b', 2)))).errors, []);
    const hole = () => kernel.routes.filter((r) => r.type === 6).map((r) => [r.dst, r.dev, r.metric]);
    assert.deepEqual(hole(), [['10.244.1.0/24', undefined, 4096]]);
    kernel.deleteRoute('10.244.1.0/24');
    assert.deepEqual((await backend.reconcile(config, own, peersOf(lease('b', 2)))).errors, []);
    assert.deepEqual(hole(), [['10.244.1.0/24', undefined, 4096]]);
  });

  test('one peer leaving costs its three entries and no read of the kernel', async () => {
    const { config, kernel, backend, own } = await make(vxlanBackend, { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
    await backend.reconcile(config, own, peersOf(lease('b', 2), lease('c', 3)));
    const reads = kernel.reads;
    const mark = kernel.log.length;
    await backend.reconcile(config, own, peersOf(lease('b', 2)), new Set(['c']));
    assert.equal(kernel.reads, reads, 'the change of one peer is applied without a dump');
    assert.deepEqual(kernel.log.slice(mark).map((l) => l.split(' ').slice(0, 3).join(' ')), ['ip route del', 'ip neigh del', 'bridge fdb del']);
    assert.deepEqual(kernel.routesVia().map((x) => x.dst), ['10.244.2.0/24']);
  });

  test('a route deleted by hand and a deleted device come back on the next full pass, and the drift is logged', async () => {
    const { config, kernel, backend, own, logs } = await make(vxlanBackend, { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
    const peers = peersOf(lease('b', 2), lease('c', 3));
    await backend.reconcile(config, own, peers);
    kernel.deleteRoute('10.244.2.0/24');
    await backend.reconcile(config, own, peers);
    assert.deepEqual(kernel.routesVia().map((x) => x.dst).sort(), ['10.244.2.0/24', '10.244.3.0/24']);
    assert.ok(logs.some((l) => /warn .*repaired kernel drift .*routes=1/.test(l)), logs.join('\n'));
    kernel.deleteDevice('flannel.1');
    assert.equal(kernel.routesVia().length, 0, 'the kernel drops a device\'s routes with it');
    const r = await backend.reconcile(config, own, peers);
    assert.deepEqual(r.errors, []);
    assert.equal(kernel.routesVia().length, 2);
    assert.equal(kernel.neighbours.length, 2);
    assert.equal(kernel.fdb.length, 2);
  });

  test('entries of a peer that left while the agent was down are removed by the first pass', async () => {
    const kernel = FakeKernel.host({ cidr: '192.168.1.1/24', gateway: '192.168.1.254' });
    const first = await make(vxlanBackend, { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }, kernel);
    await first.backend.reconcile(first.config, first.own, peersOf(lease('b', 2), lease('gone', 9)));
    // a new agent process (a new backend) starts with the kernel as the old one left it
    const second = await make(vxlanBackend, { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }, kernel);
    await second.backend.reconcile(second.config, second.own, peersOf(lease('b', 2)));
    assert.deepEqual(kernel.routesVia().map((x) => x.dst), ['10.244.2.0/24']);
    assert.deepEqual(kernel.neighbours.map((n) => n.ip), ['10.244.2.0']);
    assert.deepEqual(kernel.fdb.map((f) => f.dst), ['192.168.1.2']);
  });

  test('a route of someone else in a peer\'s place is reported and left alone', async () => {
    const { config, kernel, backend, own } = await make(vxlanBackend, { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
    await kernel.apply('ip', ['route add 10.244.2.0/24 via 192.168.1.200 dev eth0 proto 4 table 254 metric 0']);
    const r = await backend.reconcile(config, own, peersOf(lease('b', 2)));
    assert.equal(r.errors.length, 1);
    assert.match(r.errors[0] as string, /route 254 10\.244\.2\.0\/24 0 is not twill's and is in the way/);
    assert.deepEqual(kernel.routes.filter((x) => x.dst === '10.244.2.0/24').map((x) => [x.via, x.protocol]), [['192.168.1.200', 4]]);
  });
});

describe('host-gw on the in-memory kernel', () => {
  test('routes each on-link peer via its public IP and reports the one that is not on-link', async () => {
    const { config, kernel, backend, own } = await make(hostGwBackend, { Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } });
    const far = lease('far', 5, { publicIP: '172.16.0.5' });
    const r = await backend.reconcile(config, own, peersOf(lease('b', 2), far));
    assert.deepEqual(kernel.routesVia().map((x) => [x.dst, x.via, x.dev]), [['10.244.2.0/24', '192.168.1.2', 'eth0']]);
    assert.equal(r.errors.length, 1);
    assert.match(r.errors[0] as string, /peer far \(172\.16\.0\.5\) is not on-link from eth0: host-gw needs every node on one L2 network/);
  });

  test('refuses to start when the public IP is not an address of this host', async () => {
    const kernel = FakeKernel.host({ cidr: '192.168.1.1/24', gateway: '192.168.1.254' });
    const config = parseNetConf({ Network: '10.244.0.0/16', Backend: { Type: 'host-gw' } }, {});
    const dir = mkdtempSync(join(tmpdir(), 'twill-backend-'));
    dirs.push(dir);
    const external = await findExternal({ iface: ['eth0'], publicIP: '203.0.113.9' }, kernel);
    await assert.rejects(hostGwBackend({ config, external, state: new StateDir(dir), log: createLogger('t', 'error', () => {}), metrics: new Metrics(), kernel }),
      /public IP 203\.0\.113\.9 is not an address of this host \(behind NAT\?\)/);
  });
});

describe('ipip on the in-memory kernel', () => {
  test('with DirectRouting, an on-link peer is routed directly and a far one through flannel.ipip', async () => {
    const { config, kernel, backend, own } = await make(ipipBackend, { Network: '10.244.0.0/16', Backend: { Type: 'ipip', DirectRouting: true } });
    const far = lease('far', 5, { publicIP: '172.16.0.5' });
    const r = await backend.reconcile(config, own, peersOf(lease('b', 2), far));
    assert.deepEqual(r.errors, []);
    assert.deepEqual(kernel.routesVia().map((x) => [x.dst, x.via, x.dev, x.onlink]).sort(), [
      ['10.244.2.0/24', '192.168.1.2', 'eth0', false],
      ['10.244.5.0/24', '172.16.0.5', 'flannel.ipip', true],
    ]);
    assert.equal(kernel.links.find((l) => l.name === 'flannel.ipip')?.mtu, 1480);
  });

  test('refuses a device named flannel.ipip that is not an ipip tunnel, saying why', async () => {
    const kernel = FakeKernel.host({ cidr: '192.168.1.1/24', gateway: '192.168.1.254' });
    kernel.addLink({ name: 'flannel.ipip', kind: 'dummy' });
    await assert.rejects(make(ipipBackend, { Network: '10.244.0.0/16', Backend: { Type: 'ipip' } }, kernel), /a dummy device named flannel\.ipip exists and is not an ipip tunnel/);
  });
});
