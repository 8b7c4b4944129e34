// Start-up of `twill agent`: from spawning the process to /readyz answering
// ready (its lease held and a complete view of the network applied, so a
// peer that left while it was down is gone), and from SIGTERM to exit. The
// network holds 500 peers and one that left while the agent was down. Three
// ways to run the command: the build (dist/, what npm start, npm test and a
// host install run), the TypeScript sources through tsx with its cache warm,
// and the sources with a cold cache (each process inside user-mode-linux, and
// the first run on a fresh machine). No root; the agent's backend is alloc.
// Run: node --import tsx bench/agent-start.ts [runs]
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNetConf } from '../core/config.js';
import { silentLogger } from '../core/log.js';
import { addNode } from '../control/http/admin.js';
import { startLocalController } from '../control/local/server.js';
import { freePort, ROOT, TWILL } from '../test/helpers/procs.js';

const RUNS = Number(process.argv[2] ?? 5);
const PEERS = 500;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'twill-bench-start-'));
  const lc = await startLocalController({
    dataDir: join(dir, 'data'), listen: '127.0.0.1:0', log: silentLogger,
    networks: [{ name: 'net', config: parseNetConf({ Network: '10.0.0.0/8', Backend: { Type: 'alloc' } }, {}) }],
  });
  try {
    for (let i = 0; i < PEERS; i++) await lc.controller.join('net', `peer${i}`, { publicIP: `192.0.2.${(i % 250) + 1}` });
    const creds = await addNode(lc.store, { name: 'me', network: 'net', broker: lc.url });
    const config = join(dir, 'me.json');
    writeFileSync(config, JSON.stringify(creds), { mode: 0o600 });
    const modes: { name: string; env: NodeJS.ProcessEnv }[] = [
      { name: 'build (dist/)', env: {} },
      { name: 'sources, tsx cache warm', env: { TWILL_FROM_SOURCE: '1', TMPDIR: join(dir, 'tsx-warm') } },
      { name: 'sources, tsx cache cold', env: { TWILL_FROM_SOURCE: '1' } },
    ];
    const rows: string[][] = [];
    for (const mode of modes) {
      const ready: number[] = [];
      const exit: number[] = [];
      for (let r = 0; r < RUNS + 1; r++) {
        // a peer leaves while the agent is down: ready must mean it is gone
        await lc.controller.join('net', 'leaver', { publicIP: '192.0.2.254' });
        await lc.controller.release('net', 'leaver');
        const tmp = mode.env.TMPDIR ?? mkdtempSync(join(dir, 'cold-'));
        const port = await freePort();
        const t0 = performance.now();
        const child = spawn(process.execPath, [TWILL, 'agent', '--config', config, '--subnet-file', join(dir, 'subnet.env'), '--state-dir', join(dir, 'state'),
          '--metrics-addr', `127.0.0.1:${port}`, '--iface', 'lo', '--public-ip', '192.0.2.200'], { cwd: ROOT, env: { ...process.env, ...mode.env, TMPDIR: tmp }, stdio: 'ignore' });
        const exited = new Promise<void>((res) => child.once('exit', () => res()));
        for (;;) {
          const r2 = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
          if (r2?.status === 200) break;
          if (performance.now() - t0 > 120_000) throw new Error(`${mode.name}: not ready after 120 s`);
          await new Promise((res) => setTimeout(res, 10));
        }
        const t1 = performance.now();
        const peers = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        const known = Number(/^twill_agent_peers (\d+)/m.exec(peers)?.[1]);
        if (known !== PEERS) throw new Error(`${mode.name}: ready with ${known} peers, not ${PEERS}`);
        child.kill('SIGTERM');
        await exited;
        const t2 = performance.now();
        // the first run of the warm mode fills the cache; it is not counted
        if (r > 0 || mode.env.TMPDIR === undefined) { ready.push(t1 - t0); exit.push(t2 - t1); }
        if (!mode.env.TMPDIR) rmSync(tmp, { recursive: true, force: true });
      }
      rows.push([mode.name, String(Math.round(median(ready))), String(Math.round(Math.max(...ready))), String(Math.round(median(exit)))]);
    }
    const base = Number(rows[0]![1]);
    console.log(`twill agent start-up, ${PEERS} peers, median of ${RUNS} runs (ms)\n`);
    console.log('| how the command runs | spawn to ready | worst | SIGTERM to exit | ready vs build |');
    console.log('|---|---|---|---|---|');
    for (const r of rows) console.log(`| ${r[0]} | ${r[1]} | ${r[2]} | ${r[3]} | ${(Number(r[1]) / base).toFixed(1)}x |`);
  } finally {
    await lc.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
