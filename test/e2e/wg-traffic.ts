// Traffic between two pods that says what a change cost it: a ping every
// 10 ms each way and a TCP stream (a paced byte pattern, checked byte by
// byte at the receiver), with the figures a rotation is judged by: pings
// lost, the longest gap between two replies, the longest TCP stall, and
// whether the stream arrived whole. Used by test/e2e/wireguard.test.ts and
// bench/wireguard-rotation.ts, which also asks for rotations through here.
import type { Pod, LabProcess } from '../helpers/netns.js';
import { TWILL, waitFor } from '../helpers/procs.js';
import type { Cluster } from './cluster.js';

/** Receives one stream and checks every byte (offset mod 251); prints its port, then a JSON summary. */
const SERVER = `
const net = require('node:net');
let expected = 0, bytes = 0, last = 0, stall = 0, corruptAt = null;
const srv = net.createServer((s) => {
  srv.close();
  s.on('data', (d) => {
    const now = Date.now();
    if (bytes > 0) stall = Math.max(stall, now - last);
    last = now;
    for (const b of d) { if (corruptAt === null && b !== expected % 251) corruptAt = expected; expected++; }
    bytes += d.length;
  });
  const done = (e) => { console.log(JSON.stringify({ bytes, stallMs: stall, corruptAt, error: e ? e.message : null })); process.exit(0); };
  s.on('end', () => done());
  s.on('error', (e) => done(e));
});
srv.listen(0, () => console.log('port ' + srv.address().port));
`;

/**
 * Sends 4 KiB every 10 ms (paced), or as fast as TCP takes it (bulk), until
 * a line on stdin, then ends the stream; prints how much it sent.
 */
const CLIENT = `
const net = require('node:net');
const [host, port, mode] = process.argv.slice(1);
let off = 0, stop = false;
const chunk = (n) => { const buf = Buffer.alloc(n); for (let i = 0; i < n; i++) buf[i] = (off + i) % 251; off += n; return buf; };
const s = net.connect(Number(port), host, () => {
  let t;
  if (mode === 'bulk') {
    const pump = () => { while (!stop && s.write(chunk(65536))); };
    s.on('drain', pump);
    pump();
  } else {
    t = setInterval(() => s.write(chunk(4096)), 10);
  }
  process.stdin.once('data', () => { stop = true; clearInterval(t); s.end(); });
});
s.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
s.on('close', () => { console.log('sent ' + off); process.exit(0); });
`;

export interface PingFigures {
  from: string;
  to: string;
  /** echo requests up to the last one answered */
  sent: number;
  lost: number;
  longestGapMs: number;
}

export interface TrafficReport {
  pings: PingFigures[];
  /** absent without a stream */
  tcp?: { sent: number; received: number; whole: boolean; longestStallMs: number; error: string | null };
}

export interface TrafficOptions {
  /** the TCP stream from a to b: 4 KiB every 10 ms (paced, the default), as fast as it goes (bulk), or none */
  stream?: 'paced' | 'bulk' | 'none';
  /** pings both ways (the default), or only from a to b: b then sends nothing of its own but the replies */
  pings?: 'both' | 'a to b';
}

const replies = (p: LabProcess) => [...p.output().matchAll(/^\[(\d+\.\d+)\] \d+ bytes from \S+ icmp_seq=(\d+)/gm)].map((m) => ({ at: Number(m[1]) * 1000, seq: Number(m[2]) }));

/** Lost: every sequence number up to the last answered one that got no answer (one still in flight at the end is not counted). */
function pingFigures(p: LabProcess, from: Pod, to: Pod): PingFigures {
  const r = replies(p);
  const seqs = new Set(r.map((x) => x.seq));
  const last = Math.max(0, ...seqs);
  let lost = 0;
  for (let s = 1; s <= last; s++) if (!seqs.has(s)) lost++;
  let gap = 0;
  for (let i = 1; i < r.length; i++) gap = Math.max(gap, r[i]!.at - r[i - 1]!.at);
  return { from: from.name, to: to.name, sent: last, lost, longestGapMs: Math.round(gap) };
}

export class Traffic {
  private constructor(
    private readonly pings: { p: LabProcess; from: Pod; to: Pod }[],
    private readonly tcp?: { server: LabProcess; client: LabProcess },
  ) {}

  /** Pings every 10 ms a -> b (and b -> a) and a TCP stream from a to b; resolves once each is flowing. */
  static async start(c: Cluster, a: Pod, b: Pod, o: TrafficOptions = {}): Promise<Traffic> {
    let tcp: { server: LabProcess; client: LabProcess } | undefined;
    if (o.stream !== 'none') {
      const server = c.lab.spawn(b, [process.execPath, '-e', SERVER]);
      const port = await waitFor('the TCP server listening', () => /^port (\d+)$/m.exec(server.output())?.[1], 30_000);
      tcp = { server, client: c.lab.spawn(a, [process.execPath, '-e', CLIENT, b.ip, port, o.stream ?? 'paced'], { stdin: true }) };
    }
    const ping = (from: Pod, to: Pod) => ({ p: c.lab.spawn(from, ['ping', '-D', '-n', '-i', '0.01', '-W', '5', to.ip]), from, to });
    const t = new Traffic(o.pings === 'a to b' ? [ping(a, b)] : [ping(a, b), ping(b, a)], tcp);
    await t.flowing(50);
    return t;
  }

  /** Resolves once every ping has n more replies than now: traffic that went through whatever happened meanwhile. */
  async flowing(n: number): Promise<void> {
    const base = this.pings.map((x) => replies(x.p).length);
    await waitFor(`${n} more replies each way`, () => this.pings.every((x, i) => replies(x.p).length >= base[i]! + n), 60_000, 20);
  }

  async stop(): Promise<TrafficReport> {
    const tcp = this.tcp && (await this.stopStream(this.tcp));
    for (const x of this.pings) x.p.child.kill('SIGINT');
    await Promise.all(this.pings.map((x) => x.p.exited));
    return { pings: this.pings.map((x) => pingFigures(x.p, x.from, x.to)), ...(tcp && { tcp }) };
  }

  private async stopStream({ server, client }: { server: LabProcess; client: LabProcess }): Promise<TrafficReport['tcp']> {
    client.child.stdin?.write('stop\n');
    await client.exited;
    await waitFor('the TCP server summary', () => server.output().includes('{'), 30_000).catch(() => undefined);
    await server.stop();
    const summary = JSON.parse(/^\{.*\}$/m.exec(server.output())?.[0] ?? 'null') as { bytes: number; stallMs: number; corruptAt: number | null; error: string | null } | null;
    const sent = Number(/^sent (\d+)$/m.exec(client.output())?.[1] ?? -1);
    const clientError = /^error (.*)$/m.exec(client.output())?.[1] ?? null;
    return {
      sent,
      received: summary?.bytes ?? 0,
      whole: !!summary && summary.corruptAt === null && summary.error === null && summary.bytes === sent && clientError === null,
      longestStallMs: summary?.stallMs ?? -1,
      error: clientError ?? summary?.error ?? (summary ? null : 'the receiver printed no summary'),
    };
  }
}

/**
 * Asks a node for a new key pair as the control plane does: a new token in
 * Lease.rotateKey, written to the store like any lease write a running
 * controller did not make itself (it publishes the change to the node's own
 * topic from the store's change log). Returns the key the node published
 * before.
 */
/** The twill command where the operator runs it: beside the controller (its API listens on the router's address). */
async function twillBesideController(c: Cluster, args: string[]): Promise<string> {
  return (await c.lab.exec(c.lab.routerNs, [process.execPath, TWILL, ...args], { timeoutMs: 60_000 })).stdout;
}

/**
 * Asks a rotation as an operator does: `twill node rotate-key` on the data
 * directory, which goes through the controller serving it. Returns the
 * node's key before, and the token the command printed.
 */
export async function rotateKey(c: Cluster, node: string): Promise<{ old: string; token: string }> {
  const old = (await c.lease(node))?.backendData.PublicKey as string;
  const r = { stdout: await twillBesideController(c, ['node', 'rotate-key', node, '--data-dir', c.dataDir]) };
  const token = /\(token ([A-Za-z0-9._:-]+),/.exec(r.stdout)?.[1];
  if (!token) throw new Error(`twill node rotate-key printed no token: ${r.stdout}`);
  return { old, token };
}

/** What `twill status -o json` says of a node's key (its public key, what runs its devices, the rotation asked of it). */
export async function keyStatus(c: Cluster, node: string): Promise<{ publicKey: string | null; rotation: string; token?: string; implementation?: string } | undefined> {
  const out = await twillBesideController(c, ['status', '-o', 'json', '--data-dir', c.dataDir]);
  const leases = (JSON.parse(out) as { leases: { node: string; key?: { publicKey: string | null; rotation: string; token?: string; implementation?: string } }[] }).leases;
  return leases.find((l) => l.node === node)?.key;
}

/** Writes a rotation token into a node's lease in the store, as a replayed write would: the same token twice must ask nothing. */
export async function askRotation(c: Cluster, node: string, token: string): Promise<string> {
  return c.withStore(async (s) => {
    const l = await s.getLease(c.network, node);
    if (!l) throw new Error(`${node} has no lease`);
    const { revision, ...rest } = l;
    await s.replaceLease({ ...rest, rotateKey: token }, revision);
    return l.backendData.PublicKey as string;
  });
}

/** Where each host's agent log stands now: swapDelays then reads only what comes after. */
export function logMarks(c: Cluster): Map<string, number> {
  return new Map([...c.nodes.values()].map((n) => [n.name, n.agent?.output().length ?? 0]));
}

/**
 * How long after the node set its new key each peer swapped it in, from
 * their agents' logs since marks (ms; undefined where a log has no such
 * line yet): the control plane's round trip, during which the node's
 * packets wait in WireGuard's queue.
 */
export function swapDelays(c: Cluster, node: string, peers: string[], marks = new Map<string, number>()): Record<string, number | undefined> {
  const at = (host: string, re: RegExp) => {
    const m = re.exec((c.node(host).agent?.output() ?? '').slice(marks.get(host) ?? 0));
    return m ? Date.parse(m[1]!) : undefined;
  };
  const made = at(node, /^(\S+) info \S+: made a new key pair/m);
  const out: Record<string, number | undefined> = {};
  for (const p of peers) {
    const swapped = at(p, new RegExp(`^(\\S+) info \\S+: a peer has a new key: swapped for its old one in one step .*peer=${node} `, 'm'));
    out[p] = made !== undefined && swapped !== undefined ? swapped - made : undefined;
  }
  return out;
}
