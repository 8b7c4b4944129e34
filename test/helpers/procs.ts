// Processes, ports and temp dirs for tests, each cleaned up even when a test
// fails: every spawned child is killed and every temp dir removed at exit of
// the test file (and by the caller's after() hooks before that).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');
export const TWILL = join(ROOT, 'bin/twill.js');

const children = new Set<ChildProcess>();
const dirs = new Set<string>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
// A test file stopped by a signal (the runner's timeout, ^C) cleans up too:
// the 'exit' handlers here and in netns.ts and uml.ts run on process.exit.
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  process.once(sig, () => process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGHUP' ? 1 : 15)));
}

export function tempDir(prefix = 'twill-test-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.add(d);
  return d;
}

export function removeTempDirs(): void {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs.clear();
}

export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(port));
    });
  });
}

/**
 * How long a process may take to come up before the test calls it hung. A
 * start's length is not something twill promises (on a busy 2-core machine,
 * inside user-mode-linux, it is many times the quiet figure); that it comes
 * up, or exits saying why, is.
 */
export const START_BOUND_MS = 120_000;

/**
 * Waits until a starting process has said `ready` (checked on its output), or
 * fails at once when it exits first, with what it printed; START_BOUND_MS
 * only catches a hang.
 */
export async function waitForStart(what: string, p: { child: ChildProcess; output(): string }, ready: (output: string) => boolean): Promise<void> {
  const end = Date.now() + START_BOUND_MS;
  for (;;) {
    const out = p.output();
    if (ready(out)) return;
    if (p.child.exitCode !== null || p.child.signalCode !== null) throw new Error(`${what}: the process exited before it was ready:\n${out.slice(-3000)}`);
    if (Date.now() > end) throw new Error(`timed out after ${START_BOUND_MS} ms waiting for ${what}:\n${out.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000, everyMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface Proc {
  child: ChildProcess;
  /** everything written to stdout and stderr so far */
  output(): string;
  /** SIGTERM and wait for exit */
  stop(): Promise<void>;
  /** SIGKILL and wait for exit */
  kill(): Promise<void>;
  exited: Promise<number | null>;
}

/** Starts a process (the twill CLI when cmd is omitted) and keeps its output. */
export function startProc(args: string[], opts: { cmd?: string[]; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Proc {
  const cmd = opts.cmd ?? [process.execPath, TWILL];
  const child = spawn(cmd[0] as string, [...cmd.slice(1), ...args], {
    cwd: opts.cwd ?? ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  let out = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => { children.delete(child); r(code); }));
  const signal = async (sig: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(sig);
    await exited;
  };
  return { child, output: () => out, stop: () => signal('SIGTERM'), kill: () => signal('SIGKILL'), exited };
}

/** Runs the twill CLI to completion. */
export async function runTwill(args: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [TWILL, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  return { code, stdout, stderr };
}

/** Sample cloud events in the clouds' documented shapes, kept with the tests (a clone of the repository alone runs them). */
export const EVENT_FIXTURES = join(ROOT, 'test', 'fixtures', 'events');
