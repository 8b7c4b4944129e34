// A cloud network with an overlay on the real kernel: three "instances"
// (namespaces on one underlay) behind a router namespace that plays the VPC
// (its kernel routes are the cloud route table's), each with a pod made by
// the real CNI bridge plugin, and strict reverse-path filtering (rp_filter=1)
// on all and on every device, as cloud images have it. The agents' backend
// (agent/backends/cloud-overlay.ts) programs each instance's kernel from the
// leases, handed over one host at a time, as the agents would get them.
//
// A-B routed and A-C, B-C over the overlay all ping; then C moves overlay ->
// route and B route -> overlay exactly as the route controller orders them
// (core/backends/overlay.ts), the leases reaching the hosts in the worst
// order, with pings running across each move: not one packet is lost; and,
// as a control, the same kind of move without the reverse-path settings does
// lose packets. The hosts' reverse-path settings are repaired after drift and
// removed when the overlay leaves the config.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseNetConf, type NetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import type { Reach } from '../../core/backends/overlay.js';
import { createLogger } from '../../core/log.js';
import { Metrics } from '../../core/metrics.js';
import type { Backend } from '../../agent/backends/backend.js';
import { cloudBackend } from '../../agent/backends/cloud-overlay.js';
import { iptablesAt } from '../../agent/iptables.js';
import { iproute2 } from '../../agent/kernel/io.js';
import { RPF_NFT_TABLE, RPF_PRIORITY, RPF_TABLE, hostIO } from '../../agent/reverse-path.js';
import { nft } from '../../agent/nftables.js';
import { StateDir } from '../../agent/state.js';
import { Lab, labUnavailable, type Host, type LabProcess, type Pod } from '../helpers/netns.js';

// In CI the kernel tests run as root and must run: a missing tool fails there rather than skipping.
const skip = process.env.CI ? false : (labUnavailable({}) ?? false);

const NETWORK = '10.60.0.0/16';

/** The mark rule in iptables (mangle, chain TWILL-RPF) or, with EnableNFTables, in nftables (table ip twill-rpf). */
const MODES = {
  iptables: {
    spoil: ['iptables', '-t', 'mangle', '-F', 'TWILL-RPF'],
    show: ['iptables', '-t', 'mangle', '-S', 'TWILL-RPF'],
    rule: /-A TWILL-RPF -s 10\.60\.0\.0\/16 -i eth0 .* --set-xmark 0x1000\/0x1000/,
  },
  nftables: {
    spoil: ['nft', 'flush', 'chain', 'ip', RPF_NFT_TABLE, 'prerouting'],
    show: ['nft', 'list', 'table', 'ip', RPF_NFT_TABLE],
    rule: /iifname "eth0" ip saddr 10\.60\.0\.0\/16 meta mark set meta mark \| 0x0*1000/,
  },
} as const;

for (const [modeName, mode] of Object.entries(MODES)) {
  const nftables = modeName === 'nftables';
  const WITH_OVERLAY: NetConf = parseNetConf({ Network: NETWORK, EnableNFTables: nftables, Backend: { Type: 'aws-vpc', Overlay: { Type: 'vxlan' } } }, {});
  const WITHOUT: NetConf = parseNetConf({ Network: NETWORK, EnableNFTables: nftables, Backend: { Type: 'aws-vpc' } }, {});

  interface Member {
    name: string;
    host: Host;
    backend: Backend;
    lease: Lease;
    pod?: Pod;
    logs: string[];
  }

  /** A pod-to-pod ping running across a move, with -O so that a lost echo shows too. */
  interface Probe {
    proc: LabProcess;
    what: string;
  }

  const replied = (out: string) => new Set([...out.matchAll(/bytes from .*icmp_seq=(\d+)/g)].map((m) => Number(m[1])));
  const sent = (out: string) => Math.max(0, ...[...out.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1])));

  describe(`a cloud network with an overlay, rp_filter=1 on every host and device (the mark in ${modeName})`, { skip }, () => {
    let lab: Lab;
    const members = new Map<string, Member>();
    let revision = 10;
    const m = (name: string) => members.get(name)!;
    const peersOf = (self: string) => new Map([...members.values()].filter((x) => x.name !== self).map((x) => [x.name, x.lease]));
    const sh = (where: string | Host | Pod, ...argv: string[]) => lab.exec(where, argv).then((r) => r.stdout);
    const sysctl = (h: Host, key: string) => sh(h, 'sysctl', '-n', key).then((s) => s.trim());

    /** The route controller's half: the cloud route table, played by the router's kernel. */
    const vpcRoute = (name: string, present: boolean) =>
      present
        ? sh(lab.routerNs, 'ip', 'route', 'replace', m(name).lease.subnet!, 'via', m(name).host.ip)
        : sh(lab.routerNs, 'ip', 'route', 'del', m(name).lease.subnet!);

    /** What the controller writes in a lease (a new revision), before any agent has it. */
    const writeReach = (name: string, reach: Reach) => {
      m(name).lease = { ...m(name).lease, reach, revision: ++revision };
    };

    /** One host's agent applies the leases it has now: its own changed -> a full pass; else the changed peers only. */
    const apply = async (name: string, changed?: string[]) => {
      const x = m(name);
      const r = await x.backend.reconcile(WITH_OVERLAY, x.lease, peersOf(name), changed && new Set(changed));
      assert.deepEqual(r.errors, [], `${name}: ${x.logs.join('\n')}`);
    };

    const startPing = (from: string, to: string): Probe => ({
      proc: lab.spawn(m(from).pod!, ['ping', '-n', '-O', '-i', '0.05', m(to).pod!.ip]),
      what: `${from} -> ${to}`,
    });

    /** Waits for every probe to send n more echoes: traffic flows through the state just made. */
    const flow = async (probes: Probe[], n = 20) => {
      const from = probes.map((p) => sent(p.proc.output()));
      const bound = Date.now() + 60_000; // only for a ping that stopped: it sends every 50 ms
      while (probes.some((p, i) => sent(p.proc.output()) < from[i]! + n)) {
        if (Date.now() > bound) assert.fail(`the pings stopped sending: ${probes.map((p) => p.proc.output()).join('\n')}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };

    /** Stops the probes; every echo sent before the last 10 (still in flight at the stop) had its reply. */
    const lost = async (probes: Probe[]) => {
      const report: string[] = [];
      for (const p of probes) {
        p.proc.child.kill('SIGINT');
        await p.proc.exited;
        const out = p.proc.output();
        const got = replied(out);
        const last = sent(out) - 10;
        assert.ok(last >= 30, `${p.what}: too few echoes to judge (${last + 10})`);
        const missing = Array.from({ length: last }, (_, i) => i + 1).filter((s) => !got.has(s));
        if (missing.length) report.push(`${p.what}: no reply to icmp_seq ${missing.join(',')}`);
      }
      return report;
    };

    before(async () => {
      lab = await Lab.create();
      // the VPC's router: strict too, and no redirects (a VPC sends none)
      await sh(lab.routerNs, 'sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=1', 'net.ipv4.conf.eth0.rp_filter=1', 'net.ipv4.conf.all.send_redirects=0', 'net.ipv4.conf.eth0.send_redirects=0');
      for (const [i, name] of ['a', 'b', 'c'].entries()) {
        const host = await lab.addHost(name);
        // rp_filter=1 on all, on every device there is, and (default) on every device made later: cni0, veths, flannel.1
        await sh(host, 'sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=1', 'net.ipv4.conf.default.rp_filter=1', 'net.ipv4.conf.eth0.rp_filter=1', 'net.ipv4.conf.lo.rp_filter=1', 'net.ipv4.conf.all.accept_redirects=0');
        const stateDir = join(lab.dir, 'state', name);
        mkdirSync(stateDir, { recursive: true });
        const logs: string[] = [];
        const ctx = {
          config: WITH_OVERLAY,
          external: { iface: { name: 'eth0', mtu: 1500, ipv4: host.ip, addresses: [host.ip], up: true }, publicIP: host.ip },
          state: new StateDir(stateDir),
          log: createLogger(name, 'debug', (l) => logs.push(l)),
          metrics: new Metrics(),
          kernel: iproute2({ netns: host.ns }),
          iptables: iptablesAt(host.ns),
          host: hostIO({ netns: host.ns }),
          rpfNft: nft({ netns: host.ns, family: 'ip', table: RPF_NFT_TABLE }),
        };
        const backend = await cloudBackend('aws-vpc')(ctx);
        const lease: Lease = {
          network: 'lab', node: name, subnet: `10.60.${i + 1}.0/24`, ipv6Subnet: null, publicIP: host.ip, publicIPv6: null,
          backendType: 'aws-vpc', backendData: backend.backendData(), expiresAt: null, createdAt: '2030-01-01T00:00:00.000Z', revision: ++revision,
          reach: name === 'c' ? { via: 'overlay', why: 'route table full (2 of 2)' } : { via: 'route' },
        };
        members.set(name, { name, host, backend, lease, logs });
      }
    });
    after(async () => {
      await lab?.cleanup();
    });

    test('A-B through the VPC, A-C and B-C over the overlay: every pod pings every pod, and only overlay pairs have entries', async () => {
      await vpcRoute('a', true);
      await vpcRoute('b', true);
      for (const name of ['a', 'b', 'c']) await apply(name);
      for (const x of members.values()) {
        // FLANNEL_MTU is the overlay's; the plugin's own masquerade off, so pods' sources cross unchanged (flanneld's ipMasq would keep them too)
        const env = `FLANNEL_NETWORK=${NETWORK}\nFLANNEL_SUBNET=${x.lease.subnet!.replace('.0/24', '.1/24')}\nFLANNEL_MTU=${x.backend.mtu()}\nFLANNEL_IPMASQ=true\n`;
        x.pod = await lab.addPod(x.host, env);
      }
      assert.equal(m('a').backend.mtu(), 1450);
      const routes = async (name: string) => (await sh(m(name).host, 'ip', 'route', 'show', 'dev', 'flannel.1', 'proto', '122')).trim().split('\n').filter(Boolean).map((l) => l.split(' ')[0]).sort();
      assert.deepEqual(await routes('a'), ['10.60.3.0/24']);
      assert.deepEqual(await routes('b'), ['10.60.3.0/24']);
      assert.deepEqual(await routes('c'), ['10.60.1.0/24', '10.60.2.0/24']);
      for (const [from, to] of [['a', 'b'], ['b', 'a'], ['a', 'c'], ['c', 'a'], ['b', 'c'], ['c', 'b']] as const) {
        const r = await lab.ping(m(from).pod!, m(to).pod!.ip, { count: 3, interval: 0.1 });
        assert.equal(r.received, 3, `${from} -> ${to}: ${r.output}`);
      }
      // the mark rule in the mode's tool only
      for (const x of members.values()) {
        assert.match(await sh(x.host, ...mode.show), mode.rule);
        if (nftables) assert.doesNotMatch(await sh(x.host, 'iptables-save', '-t', 'mangle'), /TWILL-RPF/);
      }
      // strict stays strict everywhere but on the overlay device
      for (const x of members.values()) {
        assert.equal(await sysctl(x.host, 'net.ipv4.conf.all.rp_filter'), '1');
        assert.equal(await sysctl(x.host, 'net.ipv4.conf.eth0.rp_filter'), '1');
        assert.equal(await sysctl(x.host, 'net.ipv4.conf.cni0.rp_filter'), '1');
        assert.equal(await sysctl(x.host, 'net.ipv4.conf.flannel/1.rp_filter'), '2');
        assert.equal(await sysctl(x.host, 'net.ipv4.conf.eth0.src_valid_mark'), '1');
      }
    });

    test('C moves overlay -> route (room appeared), A and B applying first: no packet lost', async () => {
      const probes = [startPing('a', 'c'), startPing('c', 'b')];
      await flow(probes);
      // the controller: the cloud route first, confirmed in place, then reach=route in the lease
      await vpcRoute('c', true);
      writeReach('c', { via: 'route' });
      await apply('a', ['c']);
      await flow(probes);
      await apply('b', ['c']);
      await flow(probes);
      await apply('c');
      await flow(probes);
      assert.deepEqual(await lost(probes), []);
      assert.equal((await sh(m('c').host, 'ip', 'route', 'show', 'dev', 'flannel.1', 'proto', '122')).trim(), '', 'C, reached by route with route peers only, has no overlay route');
      assert.equal((await sh(m('a').host, 'ip', 'route', 'show', 'dev', 'flannel.1', 'proto', '122')).trim(), '');
    });

    test('B moves route -> overlay (its route must go), B applying first: no packet lost', async () => {
      const probes = [startPing('a', 'b'), startPing('b', 'c')];
      await flow(probes);
      // the controller: reach=overlay first; the route goes only once every member applied it
      writeReach('b', { via: 'overlay', why: 'route table full (2 of 2)' });
      await apply('b');
      await flow(probes);
      await apply('c', ['b']);
      await flow(probes);
      await apply('a', ['b']);
      await flow(probes);
      await vpcRoute('b', false);
      await flow(probes);
      assert.deepEqual(await lost(probes), []);
    });

    test('the control: without the reverse-path settings, the same kind of move does lose packets, and these probes see it', async () => {
      // taken out by hand on every host; only delta passes run until the loss is seen, so nothing puts them back
      for (const x of members.values()) {
        for (const p of [RPF_PRIORITY + 1, RPF_PRIORITY, RPF_PRIORITY + 2]) await sh(x.host, 'ip', 'rule', 'del', 'priority', String(p));
        await sh(x.host, 'sysctl', '-qw', 'net.ipv4.conf.flannel/1.rp_filter=1');
      }
      const probes = [startPing('a', 'c')];
      await flow(probes);
      // C's route must go: reach=overlay first; A applies it, C not yet: A's echoes reach C over the overlay, C routes A through the VPC
      writeReach('c', { via: 'overlay', why: 'route table full (2 of 2)' });
      await apply('a', ['c']);
      await flow(probes);
      const report = await lost(probes);
      assert.equal(report.length, 1, 'echoes were lost');
      // the rest of the move, with full passes: everything back in place
      for (const name of ['c', 'a', 'b']) await apply(name);
      await vpcRoute('c', false);
      for (const [from, to] of [['a', 'c'], ['b', 'c']] as const) {
        const r = await lab.ping(m(from).pod!, m(to).pod!.ip, { count: 3, interval: 0.1 });
        assert.equal(r.received, 3, `${from} -> ${to}: ${r.output}`);
      }
    });

    test('what was changed behind its back comes back on the next full pass, and is said', async () => {
      const b = m('b');
      await sh(b.host, 'ip', 'rule', 'del', 'priority', String(RPF_PRIORITY));
      await sh(b.host, 'sysctl', '-qw', 'net.ipv4.conf.flannel/1.rp_filter=1', 'net.ipv4.conf.eth0.src_valid_mark=0');
      await sh(b.host, ...mode.spoil);
      await sh(b.host, 'ip', 'route', 'flush', 'table', String(RPF_TABLE));
      await apply('b');
      const rules = await sh(b.host, 'ip', 'rule', 'show');
      assert.match(rules, /3122:\s+from all fwmark 0x1000\/0x1000 iif eth0 goto 3124 proto 122\n3123:\s+from all fwmark 0x1000\/0x1000 lookup 7122 proto 122\n3124:\s+from all nop proto 122\n/);
      assert.equal(await sysctl(b.host, 'net.ipv4.conf.flannel/1.rp_filter'), '2');
      assert.equal(await sysctl(b.host, 'net.ipv4.conf.eth0.src_valid_mark'), '1');
      assert.match(await sh(b.host, ...mode.show), mode.rule);
      assert.match(await sh(b.host, 'ip', 'route', 'show', 'table', String(RPF_TABLE)), /10\.60\.0\.0\/16 dev eth0 proto 122/);
      assert.ok(b.logs.some((l) => /reverse-path settings were changed behind our back and are restored/.test(l)), b.logs.join('\n'));
      const r = await lab.ping(m('a').pod!, b.pod!.ip, { count: 3, interval: 0.1 });
      assert.equal(r.received, 3, r.output);
    });

    test('the overlay leaves the config: the device, its entries, the rule, the chain and the table go; src_valid_mark is put back', async () => {
      const a = m('a');
      const r = await a.backend.reconcile(WITHOUT, a.lease, peersOf('a'));
      assert.deepEqual(r.errors, []);
      assert.equal((await sh(a.host, 'ip', '-o', 'link', 'show')).includes('flannel.1'), false);
      assert.doesNotMatch(await sh(a.host, 'ip', 'rule', 'show'), /proto 122/);
      assert.equal((await sh(a.host, 'ip', 'route', 'show', 'table', String(RPF_TABLE))).trim(), '');
      assert.doesNotMatch(await sh(a.host, 'iptables-save', '-t', 'mangle'), /TWILL-RPF/);
      assert.doesNotMatch(await sh(a.host, 'nft', 'list', 'tables'), new RegExp(RPF_NFT_TABLE));
      assert.equal(await sysctl(a.host, 'net.ipv4.conf.eth0.src_valid_mark'), '0');
      assert.deepEqual(a.backend.backendData(), {});
      assert.equal(a.backend.mtu(), 1500);
    });
  });
}
