// ipsec end to end. This machine's kernel has no ESP module, so the host side
// of this file boots user-mode-linux once and runs the file again inside,
// where each host of the lab runs an agent and the agent's own charon.
// Besides the scenario every backend passes: an ESP SA per direction, only
// ESP (or UDP 4500) on the underlay, a running ping through rekeys, and the
// PSK nowhere but where it must be.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { insideUml, umlSuite } from '../helpers/uml.js';
import { waitFor } from '../helpers/procs.js';
import type { LabProcess } from '../helpers/netns.js';
import { Cluster } from './cluster.js';
import { overlayScenario, skipKernel } from './scenario.js';

// A rekey of every CHILD_SA every 15 s (IKE_SAs every 30 s): the whole
// scenario, kill -9 included, runs through several of them.
const REKEY_S = 15;
const PSK = `twill-test-psk-${'0123456789abcdef'.repeat(7)}`;

interface Policy {
  src: string;
  dst: string;
  dir: string;
  tmpl?: string;
}

async function policies(c: Cluster, on: string): Promise<Policy[]> {
  const text = await c.ip(on, ['xfrm', 'policy', 'list']);
  return text.split(/\n(?=src )/).flatMap((block) => {
    const sel = /^src (\S+) dst (\S+)/.exec(block);
    const dir = /dir (\w+)/.exec(block);
    const tmpl = /tmpl src (\S+) dst (\S+)/.exec(block);
    return sel && dir ? [{ src: sel[1]!, dst: sel[2]!, dir: dir[1]!, ...(tmpl && { tmpl: `${tmpl[1]} ${tmpl[2]}` }) }] : [];
  });
}

/** SAs as (src, dst, spi), read without keeping the keys `ip xfrm state` also prints. */
async function espStates(c: Cluster, on: string): Promise<{ src: string; dst: string; spi: string; encap: boolean }[]> {
  const text = await c.ip(on, ['xfrm', 'state', 'list']);
  return text.split(/\n(?=src )/).flatMap((block) => {
    const m = /^src (\S+) dst (\S+)\s+proto esp spi (0x[0-9a-f]+)/.exec(block);
    return m ? [{ src: m[1]!, dst: m[2]!, spi: m[3]!, encap: /encap type espinudp/.test(block) }] : [];
  });
}

/**
 * What tcpdump sees between two hosts while fn runs, one line per packet,
 * captured in the underlay namespace on the first host's port of the bridge
 * (the bridge device itself sees only what is addressed to it).
 */
async function capture(c: Cluster, from: string, to: string, fn: () => Promise<void>): Promise<string[]> {
  const [a, b] = [c.node(from).host.ip, c.node(to).host.ip];
  const dump: LabProcess = c.lab.spawn(c.lab.underlayNs, ['tcpdump', '-i', `v${from}`, '-nn', '-l', '-p', `host ${a} and host ${b}`]);
  await waitFor('tcpdump listening', () => dump.output().includes('listening on'), 10_000, 50);
  await fn();
  await new Promise((r) => setTimeout(r, 300));
  await dump.stop();
  return dump.output().split('\n').filter((l) => /^\d\d:\d\d/.test(l));
}

async function podPings(c: Cluster, from: string, to: string, count = 10): Promise<void> {
  const a = c.node(from).pods[0]!;
  const b = c.node(to).pods[0]!;
  const r = await c.lab.ping(a, b.ip, { count, interval: 0.05, deadline: 10 });
  assert.equal(r.received, count, r.output);
}

if (!insideUml()) {
  umlSuite({ name: 'ipsec', file: import.meta.filename, modules: ['esp4', 'xfrm_user'] });
} else {
  process.env.TWILL_IPSEC_REKEY_TIME = `${REKEY_S}s`;
  const NETWORK = '10.250.0.0/16';

  overlayScenario({
    name: 'ipsec',
    conf: { Network: NETWORK, Backend: { Type: 'ipsec', PSK } },
    hosts: { h1: 0, h2: 0, h3: 0 },
    present: async (c, on, peer) => {
      const mine = await c.subnetOf(on);
      const theirs = await c.subnetOf(peer);
      const ips = `${c.node(on).host.ip} ${c.node(peer).host.ip}`;
      const back = `${c.node(peer).host.ip} ${c.node(on).host.ip}`;
      const p = await policies(c, on);
      const has = (src: unknown, dst: unknown, dir: string, tmpl: string) => p.some((x) => x.src === src && x.dst === dst && x.dir === dir && x.tmpl === tmpl);
      if (!(has(mine, theirs, 'out', ips) && has(theirs, mine, 'in', back) && has(theirs, mine, 'fwd', back))) return false;
      // and the SAs are up, so that no first packet waits for the key exchange
      const sas = (await espStates(c, on)).map((s) => `${s.src} ${s.dst}`);
      return sas.includes(ips) && sas.includes(back);
    },
    absent: async (c, on, subnet) => !(await policies(c, on)).some((p) => p.src === subnet || p.dst === subnet),
    drift: async (c, on, peer) => {
      const mine = (await c.subnetOf(on)) as string;
      const theirs = (await c.subnetOf(peer)) as string;
      await c.ip(on, ['xfrm', 'policy', 'delete', 'src', mine, 'dst', theirs, 'dir', 'out']);
      await c.ip(on, ['xfrm', 'policy', 'delete', 'src', theirs, 'dst', mine, 'dir', 'fwd']);
    },
    diagnose: (c, on) => {
      try {
        return `charon's log on ${on}:\n${readFileSync(join(c.node(on).stateDir, 'ipsec', 'charon.log'), 'utf8').split('\n').slice(-60).join('\n')}`;
      } catch (e) {
        return `no charon log on ${on}: ${(e as Error).message}`;
      }
    },
    extra: (get) => {
      test('an ESP SA per direction between every two nodes, and MTU 77 below the underlay', async () => {
        const c = get();
        for (const [a, b] of [['h1', 'h2'], ['h1', 'h3'], ['h2', 'h3']] as const) {
          const s = await espStates(c, a);
          const ia = c.node(a).host.ip;
          const ib = c.node(b).host.ip;
          assert.ok(s.some((x) => x.src === ia && x.dst === ib), `${a}: no ESP SA to ${b}`);
          assert.ok(s.some((x) => x.src === ib && x.dst === ia), `${a}: no ESP SA from ${b}`);
        }
        assert.match(c.subnetEnv('h1') ?? '', /FLANNEL_MTU=1423\n/);
      });

      test('the underlay carries only ESP between the nodes, never the pods\' packets', async () => {
        const c = get();
        const lines = await capture(c, 'h1', 'h2', async () => {
          await podPings(c, 'h1', 'h2');
          await podPings(c, 'h2', 'h1');
        });
        const packets = lines;
        const esp = lines.filter((l) => /ESP\(spi=0x[0-9a-f]+,seq=/.test(l));
        assert.ok(esp.length >= 40, `expected ESP for 40 pings, saw ${esp.length} of ${packets.length} packets:\n${lines.slice(0, 30).join('\n')}`);
        const pods = [...c.nodes.values()].flatMap((n) => n.pods.map((p) => p.ip));
        const leaks = lines.filter((l) => /ICMP|proto ICMP/.test(l) || pods.some((ip) => l.includes(` ${ip}`) || l.includes(`${ip} `) || l.includes(`${ip}:`)));
        assert.deepEqual(leaks, [], 'pod traffic in the clear on the underlay');
        // IKE (UDP 500) may pass too, and ARP (not IP: it carries no pod data); nothing else does.
        const other = packets.filter((l) => !/ESP\(spi=/.test(l) && !/\.500 > .*\.500: (isakmp|UDP)/.test(l) && !/ ARP, /.test(l));
        assert.deepEqual(other, [], 'packets other than ESP and IKE between the nodes');
      });

      test(`a running ping loses nothing while the SAs are rekeyed (every ${REKEY_S} s)`, async () => {
        const c = get();
        const [ia, ib] = [c.node('h1').host.ip, c.node('h2').host.ip];
        const spis = async () => new Set((await espStates(c, 'h1')).filter((s) => s.src === ia && s.dst === ib).map((s) => s.spi));
        const before = await spis();
        const from = c.node('h2').pods[0]!;
        const to = c.node('h1').pods[0]!;
        const seconds = REKEY_S + 5;
        const r = await c.lab.ping(from, to.ip, { count: seconds * 10, interval: 0.1, deadline: seconds + 10 });
        const afterSpis = await spis();
        assert.ok([...afterSpis].some((s) => !before.has(s)), `no rekey happened: SPIs before ${[...before]}, after ${[...afterSpis]}`);
        assert.equal(r.received, r.transmitted, r.output.split('\n').slice(-4).join('\n'));
      });

      test('the PSK appears in no log, no state file, and not in the config every node reads', async () => {
        const c = get();
        for (const n of c.nodes.values()) {
          assert.ok(!(n.agent?.output() ?? '').includes(PSK), `${n.name}'s agent logged the PSK`);
          const walk = (dir: string): string[] =>
            readdirSync(dir).flatMap((f) => {
              const p = join(dir, f);
              const st = statSync(p);
              return st.isDirectory() ? walk(p) : st.isFile() ? [p] : [];
            });
          for (const f of walk(n.stateDir)) assert.ok(!readFileSync(f, 'utf8').includes(PSK), `${f} holds the PSK`);
          // the agent's copy of the shared config is what the shared topic carried
          assert.match(readFileSync(join(n.stateDir, 'config.json'), 'utf8'), /"PSK":"\*{8}"/);
        }
        assert.ok(!(c.controller?.output() ?? '').includes(PSK), 'the controller logged the PSK');
      });
    },
  });

  describe('ipsec with UDPEncap: ESP in UDP 4500', { skip: skipKernel }, () => {
    let c: Cluster;
    before(async () => {
      c = await Cluster.create({
        underlays: ['192.168.141.0/24'],
        hosts: { e1: 0, e2: 0 },
        conf: { Network: '10.251.0.0/16', Backend: { Type: 'ipsec', PSK, UDPEncap: true } },
        agentArgs: ['--ip-masq'],
      });
      await c.startAll();
      await c.addPod('e1');
      await c.addPod('e2');
    });
    after(async () => {
      await c?.cleanup();
    });

    test('pods ping across, the underlay sees only UDP 4500 (and IKE), and the MTU leaves room for it', async () => {
      await waitFor('SAs up', async () => (await espStates(c, 'e1')).filter((s) => s.encap).length >= 2, 20_000, 200);
      const lines = await capture(c, 'e1', 'e2', async () => {
        await podPings(c, 'e1', 'e2');
        await podPings(c, 'e2', 'e1');
      });
      const packets = lines;
      assert.ok(packets.filter((l) => /\.4500 > .*\.4500: UDP-encap: ESP\(spi=/.test(l)).length >= 40, lines.slice(0, 30).join('\n'));
      assert.deepEqual(packets.filter((l) => /: ESP\(spi=/.test(l) && !/UDP-encap/.test(l)), [], 'plain ESP (protocol 50) on the underlay');
      // (ARP is the underlay finding a neighbour whose entry expired, which a slow UML makes likely: not IP, nothing of the pods')
      assert.deepEqual(packets.filter((l) => !/\.(4500|500) > .*\.(4500|500): /.test(l) && !/ ARP, /.test(l)), [], 'IP packets other than UDP 500/4500');
      assert.ok((await espStates(c, 'e1')).every((s) => s.encap), 'every SA is UDP-encapsulated');
      assert.match(c.subnetEnv('e1') ?? '', /FLANNEL_MTU=1415\n/);
    });
  });
}
