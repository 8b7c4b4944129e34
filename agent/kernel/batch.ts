// Applies many iproute2 commands with one process: `ip -force -batch -` or
// `bridge -force -batch -`. One spawn costs about as much as a few hundred
// netlink requests, so a reconcile sends its whole difference this way.
//
// -force keeps going after a line the kernel refuses and reports it as
// "Command failed -:N" on stderr, after that line's own error text. But a line
// iproute2 cannot parse (a bad address, a vxlan "dev" that does not exist)
// makes it exit on the spot: the remaining lines are silently skipped, and the
// stderr looks like any other failure. To tell exactly which lines ran, every
// command is followed by a marker line that always fails without touching the
// kernel (an unknown object). A marker's "Command failed" proves that every
// line before it was read and tried; when the markers stop early, the next
// command stopped the batch, and the batch resumes after it in a new process.

import { TwillError } from '../../core/errors.js';
import { run, type RunOptions } from './exec.js';

export type BatchTool = 'ip' | 'bridge';

export interface BatchFailure {
  /** 1-based index into the commands passed in */
  line: number;
  command: string;
  error: string;
  /** true when iproute2 gave up on this line and exited (it did not run the rest in that process) */
  aborted?: boolean;
}

export interface BatchWarning {
  line: number;
  command: string;
  text: string;
}

export interface BatchResult {
  tool: BatchTool;
  /** commands that succeeded */
  applied: number;
  failures: BatchFailure[];
  /** text printed by commands that nevertheless succeeded */
  warnings: BatchWarning[];
  /** processes spawned; more than one only when a line stopped iproute2 */
  spawns: number;
  durationMs: number;
}

export interface BatchOptions {
  netns?: string;
  timeoutMs?: number;
}

const MARKER = 'twill-mark';
/** Past this many early exits the input is broken, not unlucky: stop spawning. */
export const MAX_BATCH_RESTARTS = 16;
const MARKER_TEXT = new RegExp(`^Object "${MARKER}" is unknown`);
const FAILED = /^Command failed -:(\d+)$/;

/** Rejects text iproute2's batch reader would not see as one command. */
export function checkCommand(command: string): void {
  // A newline splits a command in two, a trailing backslash glues it to the
  // next line, and '#' starts a comment: each would shift or hide lines.
  if (/[\n\r#]/.test(command) || /\\\s*$/.test(command) || command.trim() === '') {
    throw new TwillError('BadBatchCommand', `not a single iproute2 batch line: ${JSON.stringify(command)}`);
  }
}

/** What one process made of its input, in terms of the commands it was given. */
export interface ParsedRun {
  started: boolean;
  /** commands known to have been tried (0-based count from the run's first command) */
  confirmed: number;
  failures: Map<number, string>;
  warnings: Map<number, string>;
  /** text printed after the last marker: why the process stopped early */
  trailing: string;
}

/**
 * Reads the stderr of a batch laid out as: marker, cmd0, marker, cmd1,
 * marker, ... (so command i is input line 2i+2 and its marker line 2i+3).
 */
export function parseBatchStderr(stderr: string): ParsedRun {
  const out: ParsedRun = { started: false, confirmed: 0, failures: new Map(), warnings: new Map(), trailing: '' };
  let pending: string[] = [];
  for (const line of stderr.split('\n')) {
    const m = FAILED.exec(line.trim());
    if (!m) {
      if (line.trim() !== '' && !MARKER_TEXT.test(line)) pending.push(line);
      continue;
    }
    const n = Number(m[1]);
    const text = pending.join('\n').trim();
    pending = [];
    if (n === 1) {
      out.started = true;
    } else if (n % 2 === 0) {
      out.failures.set(n / 2 - 1, text || 'failed (iproute2 printed no reason)');
    } else {
      const i = (n - 3) / 2;
      out.confirmed = i + 1;
      // Text before a marker whose command did not fail is a warning from it.
      if (text && !out.failures.has(i)) out.warnings.set(i, text);
    }
  }
  out.trailing = pending.join('\n').trim();
  return out;
}

function layout(commands: readonly string[]): string {
  const lines = [MARKER];
  for (const c of commands) lines.push(c, MARKER);
  return lines.join('\n') + '\n';
}

export async function applyBatch(
  tool: BatchTool,
  commands: readonly string[],
  opts: BatchOptions = {},
): Promise<BatchResult> {
  const started = performance.now();
  const result: BatchResult = { tool, applied: 0, failures: [], warnings: [], spawns: 0, durationMs: 0 };
  for (const c of commands) checkCommand(c);
  let offset = 0;
  while (offset < commands.length) {
    const chunk = commands.slice(offset);
    const runOpts: RunOptions = {
      netns: opts.netns,
      input: layout(chunk),
      timeoutMs: opts.timeoutMs,
      okCodes: [0, 1, 255],
      stderrViaFile: true,
    };
    const res = await run([tool, '-force', '-batch', '-'], runOpts);
    result.spawns++;
    const parsed = parseBatchStderr(res.stderr);
    if (!parsed.started) {
      // It never read a line: a bad namespace, a missing binary, a bad option.
      throw new TwillError('BatchFailed', `${tool} -batch did not start${opts.netns ? ` in netns ${opts.netns}` : ''}: ${res.stderr.trim() || `exit code ${res.code}`}`);
    }
    for (let i = 0; i < parsed.confirmed; i++) {
      const line = offset + i + 1;
      const command = commands[offset + i]!;
      const error = parsed.failures.get(i);
      if (error !== undefined) result.failures.push({ line, command, error });
      else result.applied++;
      const warning = parsed.warnings.get(i);
      if (warning !== undefined) result.warnings.push({ line, command, text: warning });
    }
    if (parsed.confirmed === chunk.length) break;
    const stopped = offset + parsed.confirmed;
    result.failures.push({
      line: stopped + 1,
      command: commands[stopped]!,
      error: parsed.failures.get(parsed.confirmed) ?? (parsed.trailing || `${tool} exited (code ${res.code}) without saying why`),
      aborted: true,
    });
    offset = stopped + 1;
    if (result.spawns > MAX_BATCH_RESTARTS) {
      for (let i = offset; i < commands.length; i++) {
        result.failures.push({ line: i + 1, command: commands[i]!, error: `not tried: ${tool} stopped early ${result.spawns} times in this batch` });
      }
      break;
    }
  }
  result.durationMs = performance.now() - started;
  return result;
}
