// bench/wireguard-rotation: what a key rotation costs the traffic through
// the rotating node, on wireguard-go in the netns lab (three hosts, one pod
// each, a PSK). Each row is one rotation of h1, asked as the control plane
// asks it (a new rotateKey token on its lease), while h1's pod pings h2's
// every 10 ms and back, and sends h2's pod a TCP stream: pings lost, the
// longest gap between two replies, the longest stall of the stream, whether
// it arrived whole, and how long after h1 set its new key each peer swapped
// it in (the control plane's round trip: h1's packets wait in WireGuard's
// queue meanwhile, 128 per peer).
//   node --import tsx bench/wireguard-rotation.ts [rotations]   (root)
import { Cluster } from '../test/e2e/cluster.js';
import { waitFor } from '../test/helpers/procs.js';
import { askRotation, logMarks, swapDelays, Traffic, type TrafficReport } from '../test/e2e/wg-traffic.js';

const ROTATIONS = Number(process.argv[2] ?? 5);
const PSK = 'QN8KhA3Z870TmXcmu4KsyxRxdP0LTY9D/kXgV4A6rZU=';

interface Row {
  stream: 'paced' | 'bulk';
  /** key pairs h1 made for the one token (one, always) */
  made: number;
  report: TrafficReport;
  swapped: Record<string, number | undefined>;
}

const c = await Cluster.create({ hosts: { h1: 0, h2: 0, h3: 0 }, conf: { Network: '10.246.0.0/16', Backend: { Type: 'wireguard', PSK } }, agentArgs: ['--ip-masq'], privateDirs: ['/run/wireguard'] });
const rows: Row[] = [];
try {
  await c.startAll();
  for (const h of ['h1', 'h2', 'h3']) await c.addPod(h);
  const [p1, p2] = [c.node('h1').pods[0]!, c.node('h2').pods[0]!];
  await waitFor('the pods reach each other', async () => (await c.lab.ping(p1, p2.ip, { count: 1, interval: 0.2, deadline: 2 })).received === 1, 60_000, 200);
  const streams: Row['stream'][] = [...Array<'paced'>(ROTATIONS).fill('paced'), 'bulk'];
  for (const [i, stream] of streams.entries()) {
    const traffic = await Traffic.start(c, p1, p2, { stream });
    const marks = logMarks(c);
    const old = await askRotation(c, 'h1', `bench-${process.pid}-${i}`);
    await waitFor('h2 and h3 swapped the key', () => {
      const d = swapDelays(c, 'h1', ['h2', 'h3'], marks);
      return Object.values(d).every((v) => v !== undefined) && d;
    }, 120_000, 50).catch((e: Error) => {
      throw new Error(`${e.message}\n${['h1', 'h2'].map((h) => c.node(h).agent?.output().slice(-2500)).join('\n')}`);
    });
    const fresh = (await c.lease('h1'))?.backendData.PublicKey;
    if (fresh === old) throw new Error('h1 did not publish a new key');
    await traffic.flowing(100);
    const report = await traffic.stop();
    const made = [...(c.node('h1').agent?.output() ?? '').slice(marks.get('h1')).matchAll(/made a new key pair/g)].length;
    rows.push({ stream, made, report, swapped: swapDelays(c, 'h1', ['h2', 'h3'], marks) });
  }
} finally {
  await c.cleanup();
}

console.log(`\nkey rotation of h1 on wireguard-go, pings every 10 ms h1 <-> h2, a TCP stream h1 -> h2 (paced: 4 KiB every 10 ms; bulk: as fast as it goes)\n`);
console.log('| # | stream | pings lost h1->h2 / h2->h1 | longest gap between replies | TCP stall | TCP stream whole | h2, h3 swapped after | key pairs made |');
console.log('|---|---|---|---|---|---|---|---|');
for (const [i, r] of rows.entries()) {
  const [a, b] = r.report.pings;
  console.log(`| ${i + 1} | ${r.stream} | ${a?.lost} of ${a?.sent} / ${b?.lost} of ${b?.sent} | ${Math.max(a?.longestGapMs ?? 0, b?.longestGapMs ?? 0)} ms | ${r.report.tcp?.longestStallMs} ms | ${r.report.tcp?.whole ? 'yes' : `no (${r.report.tcp?.error})`} | ${r.swapped.h2} ms, ${r.swapped.h3} ms | ${r.made} |`);
}
