// bench/dataplane: iperf3 TCP throughput between two pods on different hosts
// for each backend, beside the underlay between the two host namespaces
// themselves (the limit), all in the same netns lab and the same run.
//   node --import tsx bench/dataplane.ts [seconds]
import { Cluster } from '../test/e2e/cluster.js';
import type { Lab } from '../test/helpers/netns.js';

const SECONDS = Number(process.argv[2] ?? 5);

interface Row { what: string; gbps: number }

async function iperf(lab: Lab, server: string, client: string, ip: string): Promise<number> {
  const srv = lab.spawn(server, ['iperf3', '-s', '-1']);
  await new Promise((r) => setTimeout(r, 300));
  const out = await lab.exec(client, ['iperf3', '-c', ip, '-t', String(SECONDS), '-J'], { timeoutMs: (SECONDS + 15) * 1000 });
  await srv.exited;
  const j = JSON.parse(out.stdout) as { end: { sum_received: { bits_per_second: number } } };
  return j.end.sum_received.bits_per_second / 1e9;
}

async function measure(name: string, conf: unknown): Promise<Row[]> {
  const c = await Cluster.create({ hosts: { h1: 0, h2: 0 }, conf });
  try {
    await c.startAll();
    const p1 = await c.addPod('h1');
    const p2 = await c.addPod('h2');
    // the overlay is up when the pods reach each other
    const ping = await c.lab.ping(p1, p2.ip, { count: 3, interval: 0.2, deadline: 10 });
    if (ping.received === 0) throw new Error(`${name}: pods cannot reach each other`);
    const h1 = c.node('h1').host;
    const h2 = c.node('h2').host;
    const underlay = await iperf(c.lab, h2.ns, h1.ns, h2.ip);
    const overlay = await iperf(c.lab, p2.ns, p1.ns, p2.ip);
    return [
      { what: `underlay (host to host, ${name} run)`, gbps: underlay },
      { what: `${name} (pod to pod)`, gbps: overlay },
    ];
  } finally {
    await c.cleanup();
  }
}

const rows: Row[] = [];
for (const [name, conf] of [
  ['vxlan', { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }],
  ['host-gw', { Network: '10.245.0.0/16', Backend: { Type: 'host-gw' } }],
] as const) {
  rows.push(...(await measure(name, conf)));
}
console.log(`\niperf3 TCP, ${SECONDS} s each, two hosts (netns on a veth/bridge underlay), one pod each\n`);
console.log(`${'path'.padEnd(40)}  ${'Gbit/s'.padStart(7)}  ${'ratio to underlay'.padStart(17)}`);
for (let i = 0; i < rows.length; i += 2) {
  const u = rows[i] as Row;
  const o = rows[i + 1] as Row;
  console.log(`${u.what.padEnd(40)}  ${u.gbps.toFixed(2).padStart(7)}  ${'1.00'.padStart(17)}`);
  console.log(`${o.what.padEnd(40)}  ${o.gbps.toFixed(2).padStart(7)}  ${(o.gbps / u.gbps).toFixed(2).padStart(17)}`);
}
