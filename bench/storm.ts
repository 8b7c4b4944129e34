// bench/storm: the control plane under a fleet that moves at once. For each
// broker (the embedded one, and Mosquitto with its default configuration)
// and N light agents (bench/storm-agents.ts: the agent's real watch, in
// worker processes, without a backend), against `twill controller` as built:
//   join storm          N agents start at once against an empty network
//   leave + join        one agent leaves (its lease released through the
//                       admin API) at the moment another joins
//   controller restart  the controller is stopped and started again
//   broker restart      Mosquitto only: the broker is stopped and started again
// Each phase ends when every agent holds the complete view (its lease, in
// sync, every peer and none that left; after a restart, on a new session
// where its broker went away). Printed: the time that took, the controller's
// CPU and peak memory, hellos per node, and whether any lease changed subnet.
// Run after `npm run build`:
//   node --import tsx bench/storm.ts [sizes, default 1000,5000] [brokers, default embedded,mosquitto] [light|watch]
import { execSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import mqtt from 'mqtt';
import { hashPassword } from '../control/auth/credentials.js';
import { SqliteStore } from '../control/store/sqlite.js';
import type { ExpectCmd, WorkerCmd, WorkerReport } from './storm-agents.js';

const SIZES = (process.argv[2] ?? '1000,5000').split(',').map(Number);
const BROKERS = (process.argv[3] ?? 'embedded,mosquitto').split(',');
/** light (default) or watch: the agents (bench/storm-agents.ts) */
const KIND = (process.argv[4] ?? 'light') as 'light' | 'watch';
const ROOT = resolve(import.meta.dirname, '..');
const NET = 'storm';
const WORKERS = 4;
const PHASE_TIMEOUT_MS = 300_000;
const PASSWORD = 'storm-bench-password-of-every-light-agent';
/** clock ticks per second, the unit of /proc/PID/stat's CPU times */
const TICKS = Number(execSync('getconf CLK_TCK').toString().trim()) || 100;

async function freePort(): Promise<number> {
  return new Promise((r) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => r(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** CPU seconds (user + system) a process has used, and its peak resident memory in MB. */
function usage(pid: number): { cpu: number; peakMb: number } {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpu = (Number(f[11]) + Number(f[12])) / TICKS;
    const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return { cpu, peakMb: hwm ? Number(hwm[1]) / 1024 : NaN };
  } catch {
    return { cpu: NaN, peakMb: NaN };
  }
}

class Proc {
  readonly child: ChildProcess;
  out = '';
  constructor(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (b: Buffer) => { this.out = (this.out + b.toString()).slice(-200_000); };
    this.child.stdout?.on('data', keep);
    this.child.stderr?.on('data', keep);
  }
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const done = new Promise((r) => this.child.once('exit', r));
    this.child.kill(signal);
    await Promise.race([done, sleep(15_000).then(() => this.child.kill('SIGKILL'))]);
  }
}

async function waitUntil(what: string, fn: () => boolean | Promise<boolean>, timeoutMs: number, progress?: () => string): Promise<number> {
  const t0 = performance.now();
  let shown = 0;
  for (;;) {
    if (progress && performance.now() - shown > 10_000) {
      shown = performance.now();
      console.error(`  ${what} ${((shown - t0) / 1000).toFixed(0)} s: ${progress()}`);
    }
    if (await fn()) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
    await sleep(100);
  }
}

interface Row {
  broker: string;
  n: number;
  phase: string;
  seconds: number | string;
  cpu: number;
  agentsCpu: number;
  peakMb: number;
  hellosPerNode: number;
  moved: number;
}

async function scenario(brokerKind: string, n: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'twill-storm-'));
  const dataDir = join(dir, 'data');
  const procs: Proc[] = [];
  const workers: ChildProcess[] = [];
  try {
    writeFileSync(join(dir, 'net.json'), JSON.stringify({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'vxlan' } }));
    // The nodes, registered as `twill node add` would (one hash: every light agent shares the password).
    {
      const store = new SqliteStore(join(dataDir, 'twill.db'));
      const hash = await hashPassword(PASSWORD);
      for (let i = 0; i <= n; i++) await store.putNode({ name: `node-${i}`, network: NET, passwordHash: hash, createdAt: new Date().toISOString() });
      await store.close();
    }
    const mqttPort = await freePort();
    const apiPort = await freePort();
    let mosquitto: Proc | undefined;
    const startMosquitto = async () => {
      const conf = join(dir, 'mosquitto.conf');
      // Debian's defaults otherwise (max_queued_messages 1000): what an operator gets.
      writeFileSync(conf, `listener ${mqttPort} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\n`);
      mosquitto = new Proc('/usr/sbin/mosquitto', ['-c', conf]);
      procs.push(mosquitto);
      await waitUntil('mosquitto', async () => {
        try {
          const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, { reconnectPeriod: 0, connectTimeout: 1000 });
          await c.endAsync();
          return true;
        } catch {
          return false;
        }
      }, 10_000);
    };
    if (brokerKind === 'mosquitto') await startMosquitto();
    const brokerUrl = `mqtt://127.0.0.1:${mqttPort}`;
    let controller: Proc;
    const startController = async () => {
      const args = ['bin/twill.js', 'controller', '--data-dir', dataDir, '--network', `${NET}=${join(dir, 'net.json')}`, '--api-listen', `127.0.0.1:${apiPort}`];
      if (brokerKind === 'mosquitto') args.push('--broker', brokerUrl);
      else args.push('--listen', `127.0.0.1:${mqttPort}`);
      // STORM_PROFILE=DIR writes the controller's CPU profiles there (node --cpu-prof)
      controller = new Proc(process.execPath, [...(process.env.STORM_PROFILE ? ['--cpu-prof', '--cpu-prof-dir', process.env.STORM_PROFILE] : []), ...args]);
      procs.push(controller);
      await waitUntil('controller ready', () => controller.out.includes('controller ready'), 60_000);
    };
    await startController();

    const reports: WorkerReport[] = [];
    let epoch = 0;
    for (let w = 0; w < WORKERS; w++) {
      const prof = process.env.STORM_PROFILE && w === 0 ? ['--cpu-prof', '--cpu-prof-dir', process.env.STORM_PROFILE] : [];
      const child = fork(join(ROOT, 'bench/storm-agents.ts'), [], { execArgv: ['--import', 'tsx', ...prof], cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const k = w;
      child.on('message', (m: WorkerReport) => {
        if (m.complete >= 0) reports[k] = m;
        else leaseReplies[k]?.(m);
      });
      workers.push(child);
    }
    const leaseReplies: ((m: WorkerReport) => void)[] = [];
    const send = (w: number, c: WorkerCmd) => workers[w]!.send(c);
    const all = (c: WorkerCmd) => workers.forEach((_, w) => send(w, c));
    const complete = () => reports.reduce((s, r) => s + (r?.complete ?? 0), 0);
    const agentsUp = () => reports.reduce((s, r) => s + (r?.agents ?? 0), 0);
    const hellos = () => reports.reduce((s, r) => s + (r?.hellos ?? 0), 0);
    const leases = async () => {
      const got = await Promise.all(workers.map((_, w) => new Promise<WorkerReport>((r) => { leaseReplies[w] = r; send(w, { cmd: 'leases' }); })));
      return new Map(got.flatMap((g) => g.leases ?? []));
    };
    const expect = async (e: Omit<ExpectCmd, 'cmd'>) => {
      all({ cmd: 'expect', ...e });
      epoch++;
      await waitUntil('workers told', () => reports.length === WORKERS && reports.every((r) => r.epoch === epoch), 60_000);
    };

    const phase = async (name: string, expected: number, act: () => Promise<void>, before?: Map<string, string | null>) => {
      const pid = controller.child.pid!;
      const c0 = usage(pid).cpu;
      const workersCpu = () => workers.reduce((sum, w) => sum + usage(w.pid!).cpu, 0);
      const a0 = workersCpu();
      const h0 = hellos();
      let seconds: number | string;
      const t0 = performance.now();
      try {
        await act();
        await waitUntil(name, () => complete() === expected, PHASE_TIMEOUT_MS, () => {
          const why: Record<string, number> = {};
          for (const r of reports) for (const [k, v] of Object.entries(r?.why ?? {})) why[k] = (why[k] ?? 0) + v;
          return `${complete()} complete, ${hellos()} hellos; ${Object.entries(why).map(([k, v]) => `${k} ${v}`).join(', ')}`;
        });
        seconds = (performance.now() - t0) / 1000;
      } catch {
        seconds = `> ${PHASE_TIMEOUT_MS / 1000} (${complete()} of ${expected})`;
      }
      const u = usage(controller.child.pid!);
      let moved = 0;
      if (before) {
        const now = await leases();
        for (const [node, subnet] of before) if (subnet && now.has(node) && now.get(node) !== subnet) moved++;
      }
      const row: Row = { broker: brokerKind, n, phase: name, seconds, cpu: controller.child.pid === pid ? u.cpu - c0 : u.cpu, agentsCpu: workersCpu() - a0, peakMb: u.peakMb, hellosPerNode: (hellos() - h0) / expected, moved };
      printRow(row);
    };

    // ---- join storm ----
    await expect({ peers: n - 1, reconnect: false });
    await phase('join storm', n, async () => {
      for (let w = 0; w < WORKERS; w++) {
        const agents = [];
        for (let i = w; i < n; i += WORKERS) agents.push({ node: `node-${i}`, i });
        send(w, { cmd: 'start', kind: KIND, broker: brokerUrl, password: PASSWORD, network: NET, agents });
      }
    });
    const granted = await leases();

    // ---- a leave and a join at the same moment ----
    await expect({ peers: n - 1, without: 'node-0', reconnect: false });
    await phase('leave + join', n, async () => {
      send(0, { cmd: 'stop', node: 'node-0' });
      const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
      await Promise.all([
        fetch(`http://127.0.0.1:${apiPort}/v1/leases/${NET}/node-0`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } }).then((r) => {
          if (r.status !== 200) throw new Error(`release: HTTP ${r.status}`);
        }),
        Promise.resolve(send(0, { cmd: 'start', kind: KIND, broker: brokerUrl, password: PASSWORD, network: NET, agents: [{ node: `node-${n}`, i: n }] })),
      ]);
    }, granted);

    // ---- controller restart ----
    await expect({ peers: n - 1, without: 'node-0', reconnect: brokerKind === 'embedded' });
    await phase('controller restart', n, async () => {
      await controller.stop();
      await startController();
    }, granted);

    // ---- broker restart ----
    if (mosquitto) {
      await expect({ peers: n - 1, without: 'node-0', reconnect: true });
      await phase('broker restart', n, async () => {
        await mosquitto!.stop();
        await startMosquitto();
      }, granted);
    }
    if (agentsUp() !== n) console.error(`(${agentsUp()} agents up at the end, of ${n})`);
  } finally {
    for (const w of workers) w.connected && w.send({ cmd: 'stop' });
    await sleep(3000);
    for (const w of workers) w.kill('SIGKILL');
    for (const p of procs.reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function printRow(r: Row): void {
  const s = typeof r.seconds === 'number' ? r.seconds.toFixed(1) : r.seconds;
  console.log(`| ${r.broker} | ${r.n.toLocaleString('en-US')} | ${r.phase} | ${s} | ${r.cpu.toFixed(1)} | ${Math.round(r.peakMb)} | ${r.agentsCpu.toFixed(0)} | ${r.hellosPerNode.toFixed(2)} | ${r.moved} |`);
}

async function main(): Promise<void> {
  if (!existsSync(join(ROOT, 'dist/cli/main.js'))) throw new Error('run npm run build first: the bench runs twill as built');
  // Each row as its phase ends: a run stopped midway keeps what it measured.
  console.log(`\nbench/storm (${KIND} agents): until every agent holds the complete view\n`);
  console.log('| broker | agents | phase | seconds | controller CPU s | controller peak MB | agents\' CPU s (all) | hellos per node | leases moved |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const b of BROKERS) for (const n of SIZES) await scenario(b, n);
}

await main();
