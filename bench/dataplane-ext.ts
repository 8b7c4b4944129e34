// bench/dataplane-ext: iperf3 TCP throughput between two pods on different
// hosts for ipip, ipsec and udp, each beside the underlay between the same two
// hosts measured in the same environment and run:
//   - udp, and vxlan for comparison, in the netns lab on this machine's kernel;
//   - ipip and ipsec inside user-mode-linux (this kernel has neither), where
//     every syscall costs far more than on the host: compare each with the
//     underlay inside UML, not with the netns figures.
//   node --import tsx bench/dataplane-ext.ts [seconds]
//   (TWILL_BENCH_NETNS_ONLY=1: udp and vxlan only)
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
}

async function iperf(lab: Lab, server: string, client: string, ip: string): Promise<number> {
  const srv = lab.spawn(server, ['iperf3', '-s', '-1']);
  for (let i = 0; i < 100 && !(await lab.exec(server, ['ss', '-tln'])).stdout.includes(':5201'); i++) await new Promise((r) => setTimeout(r, 100));
  const out = await lab.exec(client, ['iperf3', '-c', ip, '-t', String(SECONDS), '-J'], { timeoutMs: (SECONDS + 30) * 1000 });
  await srv.exited;
  const j = JSON.parse(out.stdout) as { end: { sum_received: { bits_per_second: number } } };
  return j.end.sum_received.bits_per_second / 1e9;
}

async function measure(backend: string, where: Row['where'], conf: unknown): Promise<Row> {
  const c = await Cluster.create({ hosts: { b1: 0, b2: 0 }, conf, agentArgs: ['--ip-masq'] });
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
    const underlay = await iperf(c.lab, h2.ns, h1.ns, h2.ip);
    const overlay = await iperf(c.lab, p2.ns, p1.ns, p2.ip);
    return { backend, where, underlay, overlay };
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
  rows.push(await measure('vxlan', 'netns', { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }));
  // TWILL_BENCH_NETNS_ONLY=1: udp and vxlan only, without the UML half
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
  console.log(`| backend | where | underlay Gbit/s | pod to pod Gbit/s | ratio to underlay |`);
  console.log(`|---|---|---|---|---|`);
  for (const r of rows) console.log(`| ${r.backend} | ${r.where} | ${r.underlay.toFixed(2)} | ${r.overlay.toFixed(2)} | ${(r.overlay / r.underlay).toFixed(2)} |`);
  const udp = rows.find((r) => r.backend === 'udp');
  const vxlan = rows.find((r) => r.backend === 'vxlan');
  if (udp && vxlan) console.log(`\nudp / vxlan (same run): ${(udp.overlay / vxlan.overlay).toFixed(2)} (goal: at least 0.6)`);
}
