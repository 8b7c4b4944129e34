// bench/dataplane-ext: iperf3 TCP throughput between two pods on different
// hosts for ipip, ipsec, udp and wireguard, each beside the underlay between
// the same two hosts measured in the same environment and run, and what the
// CPU costs per Gbit/s:
//   - udp, wireguard (on wireguard-go: this kernel has no WireGuard), and
//     vxlan for comparison, in the netns lab on this machine's kernel;
//   - ipip and ipsec inside user-mode-linux (this kernel has neither), where
//     every syscall costs far more than on the host: compare each with the
//     underlay inside UML, not with the netns figures.
//   node --import tsx bench/dataplane-ext.ts [seconds]
//   (TWILL_BENCH_NETNS_ONLY=1: udp, wireguard and vxlan only)
//
// CPU per Gbit/s counts the CPU time of the processes that carry the
// stream, over the run, per Gbit/s delivered: iperf3 at both ends (its own
// figures, user and system), both agents (udp's data plane runs in them)
// and, for wireguard, the wireguard-go of both hosts. Softirq work the kernel does outside any process (most of vxlan's
// encapsulation) is in no process's time, so a kernel backend's figure is
// a floor; the machine is shared, so the time of the whole machine is not
// used.
import { readFileSync } from 'node:fs';
import { run } from '../agent/kernel/exec.js';
import { Cluster } from '../test/e2e/cluster.js';
import type { Lab } from '../test/helpers/netns.js';
import { insideUml, runInUml } from '../test/helpers/uml.js';

const SECONDS = Number(process.argv[2] ?? 5);
const PSK = 'bench-psk-'.padEnd(100, '0123456789');
const MARK = '@@bench ';

interface Row {
  backend: string;
  where: 'netns' | 'UML';
  underlay: number;
  overlay: number;
  /** CPU cores per Gbit/s (see above) */
  underlayCpu: number;
  overlayCpu: number;
  /** TCP segments the pod-to-pod sender retransmitted */
  retransmits: number;
}

/** CPU seconds so far of processes (utime + stime from /proc, in clock ticks of 1/100 s). */
function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // gone
    }
  }
  return ticks / 100;
}

/** The pids of the wireguard-go processes in these namespaces. */
async function wireguardGo(namespaces: string[]): Promise<number[]> {
  const pids: number[] = [];
  for (const ns of namespaces) {
    for (const pid of (await run(['ip', 'netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean).map(Number)) {
      try {
        if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'wireguard-go') pids.push(pid);
      } catch {
        // gone
      }
    }
  }
  return pids;
}

/** Gbit/s from client to server, and the CPU cores per Gbit/s of iperf3 at both ends and of the helpers named. */
async function iperf(lab: Lab, server: string, client: string, ip: string, helpers: number[] = []): Promise<{ gbps: number; cpu: number; retransmits: number }> {
  const srv = lab.spawn(server, ['iperf3', '-s', '-1']);
  for (let i = 0; i < 100 && !(await lab.exec(server, ['ss', '-tln'])).stdout.includes(':5201'); i++) await new Promise((r) => setTimeout(r, 100));
  const before = cpuSeconds(helpers);
  const out = await lab.exec(client, ['iperf3', '-c', ip, '-t', String(SECONDS), '-J'], { timeoutMs: (SECONDS + 30) * 1000 });
  const helperCores = (cpuSeconds(helpers) - before) / SECONDS;
  await srv.exited;
  const j = JSON.parse(out.stdout) as { end: { sum_received: { bits_per_second: number }; sum_sent: { retransmits?: number }; cpu_utilization_percent: { host_total: number; remote_total: number } } };
  const gbps = j.end.sum_received.bits_per_second / 1e9;
  const iperfCores = (j.end.cpu_utilization_percent.host_total + j.end.cpu_utilization_percent.remote_total) / 100;
  return { gbps, cpu: (iperfCores + helperCores) / gbps, retransmits: j.end.sum_sent.retransmits ?? 0 };
}

async function measure(backend: string, where: Row['where'], conf: unknown, privateDirs?: string[]): Promise<Row> {
  const c = await Cluster.create({ hosts: { b1: 0, b2: 0 }, conf, agentArgs: ['--ip-masq'], privateDirs });
  try {
    await c.startAll();
    const p1 = await c.addPod('b1');
    const p2 = await c.addPod('b2');
    // the overlay is up once the pods reach each other (ipsec: the SAs are negotiated)
    let up = false;
    for (let i = 0; i < 20 && !up; i++) up = (await c.lab.ping(p1, p2.ip, { count: 1, interval: 0.2, deadline: 2 })).received === 1;
    if (!up) throw new Error(`${backend}: pods cannot reach each other`);
    const h1 = c.node('b1').host;
    const h2 = c.node('b2').host;
    const helpers = [...(await wireguardGo([h1.ns, h2.ns])), ...['b1', 'b2'].map((n) => c.node(n).agent?.child.pid ?? 0)];
    const underlay = await iperf(c.lab, h2.ns, h1.ns, h2.ip, helpers);
    const overlay = await iperf(c.lab, p2.ns, p1.ns, p2.ip, helpers);
    return { backend, where, underlay: underlay.gbps, overlay: overlay.gbps, underlayCpu: underlay.cpu, overlayCpu: overlay.cpu, retransmits: overlay.retransmits };
  } finally {
    await c.cleanup();
  }
}

const UML_RUNS: [string, unknown][] = [
  ['ipip', { Network: '10.248.0.0/16', Backend: { Type: 'ipip' } }],
  ['ipsec', { Network: '10.250.0.0/16', Backend: { Type: 'ipsec', PSK } }],
  ['ipsec (UDPEncap)', { Network: '10.251.0.0/16', Backend: { Type: 'ipsec', PSK, UDPEncap: true } }],
];

if (insideUml()) {
  // the guest half: measure, and hand each row back on its own line
  for (const [name, conf] of UML_RUNS) console.log(MARK + JSON.stringify(await measure(name, 'UML', conf)));
} else {
  const rows: Row[] = [];
  rows.push(await measure('udp', 'netns', { Network: '10.249.0.0/16', Backend: { Type: 'udp' } }));
  rows.push(await measure('wireguard (wireguard-go)', 'netns', { Network: '10.246.0.0/16', Backend: { Type: 'wireguard' } }, ['/run/wireguard']));
  rows.push(await measure('vxlan', 'netns', { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }));
  // TWILL_BENCH_NETNS_ONLY=1: udp, wireguard and vxlan only, without the UML half
  const res = process.env.TWILL_BENCH_NETNS_ONLY ? { code: 0 } : await runInUml({
    command: `${process.execPath} --import tsx bench/dataplane-ext.ts ${SECONDS}`,
    modules: ['ipip', 'esp4', 'xfrm_user'],
    timeoutMs: 15 * 60_000,
    onLine: (line) => {
      if (line.startsWith(MARK)) rows.push(JSON.parse(line.slice(MARK.length)) as Row);
      else if (/Error|error/.test(line)) process.stderr.write(`uml: ${line}\n`);
    },
  });
  if (res.code !== 0) process.stderr.write(`the UML half exited with ${res.code}\n`);

  console.log(`\niperf3 TCP, ${SECONDS} s each, two hosts (netns on a veth/bridge underlay), one pod each, same run\n`);
  console.log(`| backend | where | underlay Gbit/s | pod to pod Gbit/s | ratio to underlay | CPU per Gbit/s, underlay | CPU per Gbit/s, pod to pod | TCP retransmits, pod to pod |`);
  console.log(`|---|---|---|---|---|---|---|---|`);
  for (const r of rows) console.log(`| ${r.backend} | ${r.where} | ${r.underlay.toFixed(2)} | ${r.overlay.toFixed(2)} | ${(r.overlay / r.underlay).toFixed(2)} | ${r.underlayCpu.toFixed(2)} | ${r.overlayCpu.toFixed(2)} | ${r.retransmits} |`);
  console.log('\n(CPU per Gbit/s: CPU cores of iperf3 at both ends, both agents and any wireguard-go, per Gbit/s delivered; softirq work outside a process is not counted)');
  const udp = rows.find((r) => r.backend === 'udp');
  const vxlan = rows.find((r) => r.backend === 'vxlan');
  if (udp && vxlan) console.log(`\nudp / vxlan (same run): ${(udp.overlay / vxlan.overlay).toFixed(2)} (goal: at least 0.6)`);
  const wg = rows.find((r) => r.backend.startsWith('wireguard'));
  if (wg && vxlan) console.log(`wireguard-go / vxlan (same run): ${(wg.overlay / vxlan.overlay).toFixed(2)}`);
}
