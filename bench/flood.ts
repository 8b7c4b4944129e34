// bench/flood: does one hostile node (or an unauthenticated stranger) slow
// down everyone else? `twill controller` as built, on the embedded broker;
// a calm node's latencies measured first on a quiet controller, then while
// another process floods it, each reported as a ratio to the quiet baseline:
//   connect   TCP connect to CONNACK, with the node's password
//   join      a new node's hello to its lease on its own topic
//   snapshot  the node API's first page of the network
// Floods (each from its own process, as fast as the controller takes it):
//   hellos        one node's hellos, QoS 0, without end (rate limit: refused unparsed)
//   statuses      one node's statuses, QoS 0
//   bad logins    64 connections at a time with wrong passwords, half for
//                 existing node names, half unknown
//   huge packets  connections announcing a 64 MB PUBLISH, again and again
// Then the login timing: a wrong password for an existing name against an
// unknown name (equal, or names could be enumerated; every refusal is held
// back a second by design, so what must match is the time around it).
//
// Run: npm run build && node --import tsx bench/flood.ts [samples, default 40]
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import mqtt from 'mqtt';
import { nodeClientId } from '../core/acl.js';
import { DEFAULT_PREFIX, Topics } from '../core/topics.js';
import { hashPassword } from '../control/auth/credentials.js';
import { SqliteStore } from '../control/store/sqlite.js';

const ROOT = resolve(import.meta.dirname, '..');
const NET = 'bench';
const PASSWORD = 'bench-password-of-every-calm-node';
const topics = new Topics();
const WARMUP = 3;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hello = (ip: string) => JSON.stringify({ v: 2, agentVersion: 'bench', publicIP: ip });

type FloodKind = 'hellos' | 'statuses' | 'bad logins' | 'huge packets';

// ---- the flooder: a process of its own, so its CPU is not the measurer's ----

async function flood(kind: FloodKind, url: string): Promise<void> {
  const { hostname, port } = new URL(url);
  if (kind === 'hellos' || kind === 'statuses') {
    const c = await mqtt.connectAsync(url, { username: 'flooder', password: PASSWORD, clientId: nodeClientId(DEFAULT_PREFIX, NET, 'flooder'), reconnectPeriod: 1000 });
    const topic = kind === 'hellos' ? topics.nodeHello(NET, 'flooder') : topics.nodeStatus(NET, 'flooder');
    const payload = kind === 'hellos' ? hello('127.1.0.1') : JSON.stringify({ v: 2, state: 'online', errors: [] });
    for (;;) await c.publishAsync(topic, payload, { qos: 0 });
  }
  if (kind === 'bad logins') {
    let i = 0;
    const one = async () => {
      for (;;) {
        const name = i++ % 2 ? `calm-${i % 100}` : `nobody-${i}`;
        await mqtt.connectAsync(url, { username: name, password: 'wrong', clientId: nodeClientId(DEFAULT_PREFIX, NET, name), reconnectPeriod: 0, connectTimeout: 10_000 })
          .then((c) => c.endAsync(true), () => {});
      }
    };
    await Promise.all(Array.from({ length: 64 }, one));
  }
  // huge packets: a PUBLISH header announcing 64 MiB, then its body until the broker hangs up
  const one = async () => {
    for (;;) {
      await new Promise<void>((done) => {
        const s = connect(Number(port), hostname);
        s.on('error', () => {});
        s.on('close', () => done());
        s.on('connect', () => {
          s.write(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x20]));
          const chunk = Buffer.alloc(64 * 1024);
          const pump = () => { while (!s.destroyed && s.write(chunk)); };
          s.on('drain', pump);
          pump();
        });
      });
    }
  };
  await Promise.all(Array.from({ length: 8 }, one));
}

if (process.argv[2] === '--flooder') {
  await flood(process.argv[3] as FloodKind, process.argv[4] as string);
}

// ---- the measurer ----

interface Samples { connect: number[]; join: number[]; snapshot: number[] }

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] ?? NaN; };
const p95 = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * 0.95))] ?? NaN; };

let nextCalm = 0;

/** One calm node: connect, hello, lease; and one snapshot page. Times in ms. */
async function sample(url: string, api: string, into: Samples): Promise<void> {
  const name = `calm-${nextCalm++}`;
  const t0 = performance.now();
  const c = await mqtt.connectAsync(url, { username: name, password: PASSWORD, clientId: nodeClientId(DEFAULT_PREFIX, NET, name), reconnectPeriod: 0, connectTimeout: 60_000 });
  into.connect.push(performance.now() - t0);
  try {
    const leaseTopic = topics.nodeLease(NET, name);
    const got = new Promise<void>((r) => c.on('message', (t, p) => { if (t === leaseTopic && p.includes('"subnet"')) r(); }));
    await c.subscribeAsync(leaseTopic, { qos: 1 });
    const t1 = performance.now();
    await c.publishAsync(topics.nodeHello(NET, name), hello(`127.2.${Math.floor(nextCalm / 250)}.${(nextCalm % 250) + 1}`), { qos: 1 });
    await got;
    into.join.push(performance.now() - t1);
    const t2 = performance.now();
    const r = await fetch(`${api}/v2/networks/${NET}/snapshot?limit=500`, { headers: { authorization: `Basic ${Buffer.from(`${name}:${PASSWORD}`).toString('base64')}` } });
    await r.arrayBuffer();
    if (r.status !== 200) throw new Error(`snapshot: HTTP ${r.status}`);
    into.snapshot.push(performance.now() - t2);
  } finally {
    await c.endAsync(true);
  }
}

/** Wrong-password CONNECTs for one name, 20 at a time, each answered (CONNACK refused) in ms. */
async function wrongLogin(url: string, name: string, n: number): Promise<number[]> {
  const out: number[] = [];
  const one = async () => {
    const t0 = performance.now();
    await mqtt.connectAsync(url, { username: name, password: 'wrong-password', clientId: nodeClientId(DEFAULT_PREFIX, NET, name), reconnectPeriod: 0 }).then((c) => c.endAsync(true), () => {});
    out.push(performance.now() - t0);
  };
  for (let i = 0; i < n; i += 20) await Promise.all(Array.from({ length: Math.min(20, n - i) }, one));
  return out;
}

if (process.argv[2] !== '--flooder') {
  const SAMPLES = Number(process.argv[2] ?? 40);
  const FLOODS: FloodKind[] = ['hellos', 'statuses', 'bad logins', 'huge packets'];
  const dir = mkdtempSync(join(tmpdir(), 'twill-bench-flood-'));
  const procs: ChildProcess[] = [];
  try {
    const dataDir = join(dir, 'data');
    const netFile = join(dir, 'net.json');
    writeFileSync(netFile, JSON.stringify({ Network: '10.200.0.0/14', SubnetLen: 24, Backend: { Type: 'alloc' } }));
    {
      const store = new SqliteStore(join(dataDir, 'twill.db'));
      const hash = await hashPassword(PASSWORD);
      for (const name of ['flooder', ...Array.from({ length: SAMPLES * (FLOODS.length + 1) + WARMUP }, (_, i) => `calm-${i}`)]) {
        await store.putNode({ name, network: NET, passwordHash: hash, createdAt: new Date().toISOString() });
      }
      await store.close();
    }
    const ctl = spawn(process.execPath, [join(ROOT, 'bin/twill.js'), 'controller', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--network', `${NET}=${netFile}`], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, TWILL_LOG_LEVEL: 'warn' } });
    procs.push(ctl);
    let out = '';
    ctl.stdout?.on('data', (b: Buffer) => { out = (out + b.toString()).slice(-100_000); });
    ctl.stderr?.on('data', (b: Buffer) => { out = (out + b.toString()).slice(-100_000); });
    for (let i = 0; !/broker (mqtt:\/\/\S+), .*admin API (http:\/\/\S+)/.test(out); i++) {
      if (i > 600 || ctl.exitCode !== null) throw new Error(`controller did not start: ${out}`);
      await sleep(100);
    }
    const [, url, api] = /broker (mqtt:\/\/\S+), .*admin API (http:\/\/\S+)/.exec(out) as RegExpExecArray;
    const base: Samples = { connect: [], join: [], snapshot: [] };
    // warm-up, not counted
    for (let i = 0; i < WARMUP; i++) await sample(url as string, api as string, { connect: [], join: [], snapshot: [] });
    for (let i = 0; i < SAMPLES; i++) await sample(url as string, api as string, base);

    const rows: string[][] = [['flood', 'connect ms (p50 / p95)', 'ratio', 'join ms (p50 / p95)', 'ratio', 'snapshot ms (p50 / p95)', 'ratio', 'failed']];
    const row = (what: string, s: Samples, failed: number) => {
      const cell = (xs: number[]) => `${median(xs).toFixed(1)} / ${p95(xs).toFixed(1)}`;
      const ratio = (xs: number[], b: number[]) => (median(xs) / median(b)).toFixed(2);
      rows.push([what, cell(s.connect), ratio(s.connect, base.connect), cell(s.join), ratio(s.join, base.join), cell(s.snapshot), ratio(s.snapshot, base.snapshot), String(failed)]);
    };
    row('none (quiet baseline)', base, 0);
    for (const kind of FLOODS) {
      const f = fork(import.meta.filename, ['--flooder', kind, url as string], { execArgv: ['--import', 'tsx'], cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
      procs.push(f);
      await sleep(2_000); // the flood under way before the first sample
      const s: Samples = { connect: [], join: [], snapshot: [] };
      let failed = 0;
      for (let i = 0; i < SAMPLES; i++) {
        await sample(url as string, api as string, s).catch((e: Error) => {
          if (!failed++) console.error(`  ${kind}: a calm node failed: ${e.message}`, out.split('\n').filter((l) => /refused.*calm/.test(l)).slice(-2).join('\n'));
        });
      }
      f.kill('SIGKILL');
      await new Promise((r) => f.once('exit', r));
      row(kind, s, failed);
      await sleep(1_000);
    }
    const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
    console.log(`bench/flood: ${SAMPLES} calm nodes per row, one flooding process, twill controller on the embedded broker, this machine's ${(await import('node:os')).cpus().length} cores`);
    for (const r of rows) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));

    const known = await wrongLogin(url as string, 'calm-1', 200);
    const unknown = await wrongLogin(url as string, 'no-such-node', 200);
    console.log('');
    console.log('wrong password, 200 CONNECTs each (refusals wait 1 s by design)     p50 ms   p95 ms');
    console.log(`  existing node name                                          ${median(known).toFixed(2).padStart(8)} ${p95(known).toFixed(2).padStart(8)}`);
    console.log(`  unknown node name                                           ${median(unknown).toFixed(2).padStart(8)} ${p95(unknown).toFixed(2).padStart(8)}`);
    console.log(`  ratio existing / unknown                                    ${(median(known) / median(unknown)).toFixed(2).padStart(8)}`);
  } finally {
    for (const p of procs) p.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}
