// udp end to end, in network namespaces on this machine's own kernel (TUN
// needs nothing more). The data plane lives in the agent process, so the
// scenario's kill -9 test measures how soon forwarding resumes instead of
// expecting no loss.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from '../helpers/procs.js';
import { base, type Cluster } from './cluster.js';
import { overlayScenario } from './scenario.js';
import { HEADER, writeHeader } from '../../agent/udp/wire.mjs';

const NETWORK = '10.249.0.0/16';

function table(c: Cluster, on: string): [string, string][] {
  try {
    return (JSON.parse(readFileSync(join(c.node(on).stateDir, 'udp-table.json'), 'utf8')) as { peers: [string, string][] }).peers;
  } catch {
    return [];
  }
}

async function metrics(c: Cluster, on: string): Promise<string> {
  const script = 'fetch("http://127.0.0.1:9464/metrics").then((r) => r.text()).then((t) => process.stdout.write(t))';
  return (await c.lab.exec(c.node(on).host, [process.execPath, '-e', script], { timeoutMs: 10_000 })).stdout;
}

function metric(text: string, name: string, labels: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

overlayScenario({
  name: 'udp',
  conf: { Network: NETWORK, Backend: { Type: 'udp' } },
  hosts: { h1: 0, h2: 0, h3: 0 },
  device: 'flannel0',
  present: async (c, on, peer) => {
    const subnet = await c.subnetOf(peer);
    const lease = await c.lease(peer);
    const route = await c.ip(on, ['route', 'show', NETWORK]);
    const link = await c.ip(on, ['link', 'show', 'flannel0']).catch(() => '');
    // LOWER_UP: the agent has the TUN device open (its carrier is off while no process does)
    return /dev flannel0/.test(route) && /[<,]UP[,>]/.test(link) && /LOWER_UP/.test(link) && table(c, on).some(([s, ip]) => s === subnet && ip === lease?.publicIP);
  },
  absent: async (c, on, subnet) => !table(c, on).some(([s]) => s === subnet),
  drift: async (c, on) => {
    await c.lab.exec(c.node(on).host, ['ip', 'route', 'del', NETWORK, 'dev', 'flannel0']);
  },
  restart: { resumeWithinMs: 1000, forwarding: 'forwarding with the saved table' },
  extra: (get) => {
    test('flannel0 is a TUN device with subnet.0/32, MTU 28 below the underlay, and a route for the whole Network', async () => {
      const c = get();
      const link = JSON.parse(await c.ip('h1', ['-j', '-d', 'link', 'show', 'flannel0'])) as { mtu: number; linkinfo: { info_kind: string; info_data: { type: string; persist: boolean } } }[];
      assert.equal(link[0]?.linkinfo.info_kind, 'tun');
      assert.equal(link[0]?.linkinfo.info_data.type, 'tun');
      assert.equal(link[0]?.mtu, 1472);
      assert.match(c.subnetEnv('h1') ?? '', /FLANNEL_MTU=1472/);
      const subnet = (await c.subnetOf('h1')) as string;
      assert.match(await c.ip('h1', ['-4', 'addr', 'show', 'dev', 'flannel0']), new RegExp(`inet ${base(subnet)}/32`));
      assert.match(await c.ip('h1', ['route', 'show', NETWORK]), new RegExp(`^${NETWORK.replace(/\./g, '\\.')} dev flannel0 proto 122 scope link`));
      // the socket: UDP 8285 on the public IP
      assert.match((await c.lab.exec(c.node('h1').host, ['ss', '-uln'])).stdout, new RegExp(`${c.node('h1').host.ip.replace(/\./g, '\\.')}:8285`));
    });

    test('iperf3 runs between pods on different hosts without IP fragments on the underlay, and the agent keeps answering while it does', async (t) => {
      const c = get();
      const server = c.node('h1').pods[0]!;
      const client = c.node('h2').pods[0]!;
      const srv = c.lab.spawn(server, ['iperf3', '-s', '-1']);
      await waitFor('iperf3 server', async () => (await c.lab.exec(server, ['ss', '-tln'])).stdout.includes(':5201'), 10_000, 100);
      const fragments = async () => {
        let n = 0;
        for (const h of ['h1', 'h2']) {
          const out = (await c.lab.exec(c.node(h).host, ['nstat', '-saz', 'IpFragCreates', 'IpReasmReqds'])).stdout;
          for (const m of out.matchAll(/^Ip(?:FragCreates|ReasmReqds)\s+(\d+)/gm)) n += Number(m[1]);
        }
        return n;
      };
      const fragmentsBefore = await fragments();
      const run = c.lab.exec(client, ['iperf3', '-c', server.ip, '-t', '3', '-J'], { timeoutMs: 30_000 });
      // A burst of packets is the workers' business: the agent's event loop still answers at once.
      const latencies: number[] = [];
      await new Promise((r) => setTimeout(r, 1000));
      for (let i = 0; i < 3; i++) {
        const t0 = Date.now();
        await metrics(c, 'h2');
        latencies.push(Date.now() - t0);
      }
      const report = JSON.parse((await run).stdout) as { end: { sum_received: { bits_per_second: number; bytes: number } } };
      await srv.stop();
      const gbps = report.end.sum_received.bits_per_second / 1e9;
      t.diagnostic(`iperf3 over udp: ${gbps.toFixed(2)} Gbit/s`);
      assert.ok(report.end.sum_received.bytes > 1_000_000, `iperf3 moved ${report.end.sum_received.bytes} bytes`);
      // node -e itself takes a few hundred ms to start; a stalled loop would take seconds
      assert.ok(Math.max(...latencies) < 3000, `metrics answered in ${latencies.join(', ')} ms during the transfer`);
      // 64 KB TCP super-packets leave as MTU-sized datagrams: nothing is IP-fragmented on the underlay
      assert.equal(await fragments(), fragmentsBefore, 'IP fragments made or reassembled on the hosts');
      const m = await metrics(c, 'h2');
      assert.ok(metric(m, 'twill_udp_packets_total', 'direction="out"') > 1000, m);
    });

    test('a destination with no lease and a datagram from a non-peer are dropped and counted', async () => {
      const c = get();
      const pod = c.node('h1').pods[0]!;
      const before = await metrics(c, 'h1');
      // 10.249.254.0/24 is in the Network, but no node holds it
      await c.lab.ping(pod, '10.249.254.9', { count: 2, interval: 0.2, deadline: 2 });
      // a host that is not in the cluster sends an IP packet for h1's pod to h1's port
      const stranger = await c.lab.addHost('x1');
      const packet = Buffer.alloc(28);
      packet.writeUInt8(0x45, 0);
      packet.writeUInt16BE(28, 2);
      packet.writeUInt8(64, 8);
      packet.writeUInt8(17, 9);
      Buffer.from([10, 249, 200, 1]).copy(packet, 12);
      Buffer.from(pod.ip.split('.').map(Number)).copy(packet, 16);
      // the wire format: twill's 16-byte chunk header, a 10-byte virtio_net_hdr (all zero: no offload), then the IP packet
      const payload = Buffer.concat([Buffer.alloc(10), packet]);
      const datagram = Buffer.concat([Buffer.alloc(HEADER), payload]);
      writeHeader(datagram, 0, 7, 0, payload.length);
      const send = `const s=require("dgram").createSocket("udp4");s.send(Buffer.from("${datagram.toString('hex')}","hex"),8285,"${c.node('h1').host.ip}",()=>s.close())`;
      await c.lab.exec(stranger, [process.execPath, '-e', send]);
      await waitFor('drops counted', async () => {
        const after = await metrics(c, 'h1');
        return (
          metric(after, 'twill_udp_dropped_total', 'direction="out",reason="no_lease"') >= metric(before, 'twill_udp_dropped_total', 'direction="out",reason="no_lease"') + 2 &&
          metric(after, 'twill_udp_dropped_total', 'direction="in",reason="not_a_peer"') >= metric(before, 'twill_udp_dropped_total', 'direction="in",reason="not_a_peer"') + 1
        );
      }, 5_000, 200);
    });
  },
});
