// Runs one external command (ip, bridge, ...) and captures what it said.
// Everything the kernel layer does goes through here, so a failure always
// carries the exact command and its stderr, and a wedged command can never
// hang a reconcile: it is killed at the timeout.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TwillError } from '../../core/errors.js';

export const DEFAULT_TIMEOUT_MS = 30_000;

export interface RunOptions {
  /** run inside this network namespace (a name under /run/netns) */
  netns?: string;
  /** written to the command's stdin, which is then closed */
  input?: string;
  timeoutMs?: number;
  /** exit codes that count as success; default [0] */
  okCodes?: readonly number[];
  env?: NodeJS.ProcessEnv;
  /**
   * Collect stderr through an unlinked temp file instead of a pipe. iproute2
   * writes stderr unbuffered, a few bytes per write; through a pipe every
   * write wakes this process, which for a batch of thousands of lines costs
   * more than the netlink work itself.
   */
  stderrViaFile?: boolean;
}

export interface RunResult {
  argv: readonly string[];
  code: number;
  stdout: string;
  stderr: string;
}

export class CommandError extends TwillError {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    reason: string,
  ) {
    super('CommandFailed', `${formatArgv(argv)}: ${reason}${stderr.trim() ? `: ${stderr.trim()}` : ''}`);
    this.name = 'CommandError';
  }
}

// ip and bridge switch namespace themselves with -n, which saves the extra
// exec of `ip netns exec` (and its remount of /sys) on every call.
const NETNS_AWARE = new Set(['ip', 'bridge']);

/** The argv that runs argv inside netns (or argv itself when netns is unset). */
export function inNetns(argv: readonly string[], netns?: string): string[] {
  if (!netns) return [...argv];
  const [cmd, ...rest] = argv;
  if (cmd === undefined) throw new TypeError('empty command');
  if (NETNS_AWARE.has(cmd)) return [cmd, '-n', netns, ...rest];
  return ['ip', 'netns', 'exec', netns, cmd, ...rest];
}

export function formatArgv(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

export function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const full = inNetns(argv, opts.netns);
  const [cmd, ...args] = full;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const okCodes = opts.okCodes ?? [0];
  let errFd: number | undefined;
  if (opts.stderrViaFile) {
    const path = join(tmpdir(), `twill-stderr-${process.pid}-${randomBytes(6).toString('hex')}`);
    errFd = openSync(path, 'wx+', 0o600);
    unlinkSync(path); // nothing to clean up, whatever happens next
  }
  const readErrFile = (): string => {
    if (errFd === undefined) return '';
    try {
      const buf = Buffer.alloc(fstatSync(errFd).size);
      readSync(errFd, buf, 0, buf.length, 0);
      return buf.toString('utf8');
    } finally {
      closeSync(errFd);
      errFd = undefined;
    }
  };
  return new Promise((resolve, reject) => {
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(cmd!, args, {
        stdio: ['pipe', 'pipe', errFd ?? 'pipe'],
        env: opts.env ?? process.env,
        // its own process group, so a timeout also ends whatever it started
        detached: true,
      });
    } catch (e) {
      readErrFile();
      return reject(new CommandError(full, null, '', `could not start: ${(e as Error).message}`));
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e) => {
      clearTimeout(timer);
      readErrFile();
      reject(new CommandError(full, null, '', `could not start: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = errFd === undefined ? Buffer.concat(err).toString('utf8') : readErrFile();
      if (timedOut) return reject(new CommandError(full, code, stderr, `timed out after ${timeoutMs} ms`));
      if (code === null) return reject(new CommandError(full, null, stderr, `killed by ${signal}`));
      if (!okCodes.includes(code)) return reject(new CommandError(full, code, stderr, `exit code ${code}`));
      resolve({ argv: full, code, stdout, stderr });
    });
    // A command that exits before reading its input (a bad option) closes the
    // pipe under us; that is reported by its exit code, not as EPIPE.
    child.stdin!.on('error', () => {});
    child.stdin!.end(opts.input ?? '');
  });
}

/** Runs argv and parses its stdout as JSON (iproute2's -j output). */
export async function runJson(argv: readonly string[], opts: RunOptions = {}): Promise<unknown> {
  const res = await run(argv, opts);
  const text = res.stdout.trim();
  // older iproute2 releases print nothing at all, not "[]", for an empty dump
  if (text === '') return [];
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CommandError(res.argv, res.code, res.stderr, `output is not JSON (${(e as Error).message})`);
  }
}
