// Runs a command inside user-mode-linux, for the kernel features this
// machine's own kernel lacks (ipip, ESP). Debian's linux.uml boots as an
// ordinary process with the host's filesystem as its root (hostfs), so node,
// iproute2, strongSwan and this checkout are all there as they are on the
// host. Boot takes a few seconds; a test file boots once and runs its whole
// scenario inside.
//
//   host                                  guest (PID 1 = the init script below)
//   linux.uml ... init=DIR/init.sh        mounts proc, sys, dev, tmpfs on /run /tmp /var/tmp,
//     fd 1  <- kernel console (kept        binds the UML modules where modprobe finds them,
//              for diagnostics)            loads the modules asked for, runs the command with
//     fd 3  <- con1 = /dev/tty1            its output on /dev/tty1, then "@@twill-uml-exit N"
//
// hostfs writes go through to the real disk, so the guest writes only to the
// tmpfs mounts (the lab, tsx's cache, charon's pid file all live there). The
// guest has no network device: nothing it does can leave this machine.
//
// Everything is undone even when a test fails: the UML process group is
// killed (the guest and every process in it die with it) and the temp dir
// removed, from cleanup() and again at process exit.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ROOT } from './procs.js';
import { labUnavailable } from './netns.js';

export const UML_KERNEL = '/usr/bin/linux.uml';
export const UML_MODULES = '/usr/lib/uml/modules';
const EXIT_MARK = '@@twill-uml-exit ';
const SETUP_MARK = '@@twill-uml-setup-failed ';
const READY_MARK = '@@twill-uml-ready';
const SHIM_SOURCE = join(ROOT, 'test/helpers/uml-xstate.c');
/** what uml-reporter.mjs prints for each finished test */
const EVENT_PREFIX = '@@twill-test ';

interface UmlTestEvent {
  name: string;
  passed: boolean;
  skip?: string;
  error?: string;
  durationMs: number;
}

/** Set inside the guest, so a test file can tell which side it runs on. */
export function insideUml(): boolean {
  return process.env.TWILL_UML === '1';
}

function has(bin: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The kernel version whose modules the package ships (one per package version). */
export function umlKernelVersion(): string | undefined {
  try {
    return readdirSync(UML_MODULES).sort().pop();
  } catch {
    return undefined;
  }
}

/** Why UML cannot run here, or undefined. Tests fail with this reason: they never skip for it. */
export function umlUnavailable(): string | undefined {
  if (process.platform !== 'linux' || process.arch !== 'x64') return 'user-mode-linux needs Linux on x86-64';
  if (!existsSync(UML_KERNEL)) return `${UML_KERNEL} is missing (apt-get install user-mode-linux)`;
  if (!umlKernelVersion()) return `no modules under ${UML_MODULES} (apt-get install --reinstall user-mode-linux)`;
  if (!has('modprobe')) return 'modprobe is missing (apt-get install kmod)';
  if (!has('cc')) return 'a C compiler is missing for the UML xstate shim (apt-get install gcc libc6-dev)';
  return undefined;
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

function initScript(o: { command: string; modules: string[]; env: Record<string, string>; cwd: string; exchange: string }): string {
  const exports = Object.entries(o.env).map(([k, v]) => `export ${k}=${q(v)}`).join('\n');
  return `#!/bin/sh
# PID 1 inside user-mode-linux, written by test/helpers/uml.ts.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
out=/dev/tty1
down() { sync; poweroff -f; echo o > /proc/sysrq-trigger; }
fail() { echo "${SETUP_MARK}$*" > $out; down; }
mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs shm /dev/shm
# Everything written from here on goes to memory, never through hostfs to the host's disk.
mount -t tmpfs run /run || fail "tmpfs on /run"
mkdir -p /run/lock /run/netns
# A checkout under the host's /tmp would vanish
# under the tmpfs: keep the host's /tmp reachable and bind it back in place.
mkdir -p /run/host-tmp
mount --bind /tmp /run/host-tmp || fail "bind the host's /tmp"
mount -t tmpfs tmp /tmp || fail "tmpfs on /tmp"
mount -t tmpfs vartmp /var/tmp || fail "tmpfs on /var/tmp"
for p in ${q(o.cwd)}; do
  case "$p" in
    /tmp/*) rel=\${p#/tmp/}; mkdir -p "/tmp/$rel" && mount --bind "/run/host-tmp/$rel" "/tmp/$rel" || fail "bind $p" ;;
  esac
done
# The host has no /lib/modules/<version> for this kernel, and creating one
# would write to the host: modprobe gets a root of its own in tmpfs instead,
# also for the modules the kernel asks for by itself (nf_tables, crypto, ...).
v=$(uname -r)
mkdir -p /run/uml-modules/lib/modules/$v
mount --bind ${q(UML_MODULES)}/$v /run/uml-modules/lib/modules/$v || fail "bind modules $v"
printf '#!/bin/sh\\nexec /usr/sbin/modprobe -d /run/uml-modules "$@"\\n' > /run/modprobe
chmod 755 /run/modprobe
echo /run/modprobe > /proc/sys/kernel/modprobe
for m in ${o.modules.map(q).join(' ')}; do /run/modprobe "$m" || fail "modprobe $m"; done
# This kernel's nf_tables has no IPv4 family (CONFIG_NF_TABLES_IPV4 is off),
# but the legacy x_tables are there: iptables means iptables-legacy inside.
mkdir -p /run/uml-bin
for t in iptables ip6tables; do
  for s in "" -save -restore; do
    [ -x /usr/sbin/$t-legacy$s ] && ln -sf /usr/sbin/$t-legacy$s /run/uml-bin/$t$s
  done
done
PATH=/run/uml-bin:$PATH
ip link set lo up
hostname twill-uml
export HOME=/root TMPDIR=/tmp TWILL_UML=1 TWILL_UML_EXCHANGE=${q(o.exchange)}
${exports}
cd ${q(o.cwd)} || fail "cd ${o.cwd}"
echo "${READY_MARK}" > $out
( ${o.command} ) > $out 2>&1 < /dev/null
echo "${EXIT_MARK}$?" > $out
down
`;
}

export interface UmlRunOptions {
  /** shell command run as root inside the guest, from cwd (default: this checkout) */
  command: string;
  /** kernel modules to load first (dependencies come along) */
  modules?: string[];
  /** guest memory; it is backed by /dev/shm and only what is touched is used */
  memMb?: number;
  env?: Record<string, string>;
  cwd?: string;
  timeoutMs?: number;
  /** each line the command prints, as it prints it */
  onLine?: (line: string) => void;
}

export interface UmlResult {
  /** the command's exit code */
  code: number;
  bootMs: number;
  totalMs: number;
}

const live = new Set<ChildProcess>();
const dirs = new Set<string>();
process.on('exit', () => {
  for (const c of live) killGroup(c);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function killGroup(c: ChildProcess): void {
  if (c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return;
  try {
    process.kill(-c.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/**
 * Boots UML, runs the command, and resolves with its exit code once the
 * guest has powered off. Rejects (with the kernel console's tail) when the
 * guest cannot boot, its setup fails, or the timeout passes.
 */
export async function runInUml(o: UmlRunOptions): Promise<UmlResult> {
  const why = umlUnavailable();
  if (why) throw new Error(`user-mode-linux cannot run: ${why}`);
  // Named like the netns lab's dirs, so a later run sweeps it up if this process is killed.
  const dir = mkdtempSync(join(tmpdir(), `twl-${process.pid}-${randomBytes(2).toString('hex')}-uml-`));
  dirs.add(dir);
  const t0 = Date.now();
  try {
    const shim = join(dir, 'xstate.so');
    execFileSync('cc', ['-O2', '-shared', '-fPIC', '-o', shim, SHIM_SOURCE, '-ldl'], { stdio: ['ignore', 'ignore', 'pipe'] });
    const init = join(dir, 'init.sh');
    writeFileSync(init, initScript({ command: o.command, modules: o.modules ?? [], env: o.env ?? {}, cwd: o.cwd ?? ROOT, exchange: dir }), { mode: 0o755 });
    const args = [
      `mem=${o.memMb ?? 2048}M`, 'root=/dev/root', 'rootfstype=hostfs', 'rootflags=/', 'rw', `init=${init}`,
      'quiet', 'con=null', 'ssl=null', 'con0=null,fd:1', 'con1=fd:3',
      // UML keeps a pid file and its management socket in $HOME/.uml unless told otherwise
      `uml_dir=${dir}`, 'umid=uml',
    ];
    const child = spawn(UML_KERNEL, args, {
      // its own process group: the guest's host-side helpers die with it
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      // guest memory lives in a file under TMPDIR: keep it in RAM
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, TMPDIR: '/dev/shm', LD_PRELOAD: shim },
    });
    live.add(child);
    let consoleTail = '';
    const keep = (d: Buffer) => {
      consoleTail = (consoleTail + d.toString()).slice(-16_384);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    let code: number | undefined;
    let setupError: string | undefined;
    let bootMs = 0;
    let buf = '';
    const tty = child.stdio[3] as NodeJS.ReadableStream;
    tty.on('data', (d: Buffer) => {
      buf += d.toString().replace(/\r/g, '');
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line === READY_MARK) bootMs = Date.now() - t0;
        else if (line.startsWith(EXIT_MARK)) code = Number(line.slice(EXIT_MARK.length));
        else if (line.startsWith(SETUP_MARK)) setupError = line.slice(SETUP_MARK.length);
        else o.onLine?.(line);
      }
    });
    tty.on('error', () => {});
    const timeoutMs = o.timeoutMs ?? 10 * 60_000;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child);
    }, timeoutMs);
    const status = await new Promise<number | null>((resolve) => {
      child.on('close', (c) => resolve(c));
      child.on('error', () => resolve(null));
    });
    clearTimeout(timer);
    killGroup(child);
    live.delete(child);
    const tail = () => `\n--- UML console (last lines) ---\n${consoleTail.split('\n').filter((l) => !/setup_one_line/.test(l)).slice(-40).join('\n')}`;
    if (timedOut) throw new Error(`user-mode-linux run timed out after ${timeoutMs} ms${tail()}`);
    if (setupError) throw new Error(`user-mode-linux guest setup failed: ${setupError}${tail()}`);
    if (code === undefined) throw new Error(`user-mode-linux stopped (status ${status}) before the command finished${tail()}`);
    return { code, bootMs, totalMs: Date.now() - t0 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
    dirs.delete(dir);
  }
}

/**
 * The host side of a test file that runs inside UML: one test that boots the
 * guest and runs this same file there with node's test runner, turning each
 * test the guest finishes into a subtest here as it finishes. Skips only where
 * every kernel test skips (not root, outside CI); a UML that cannot run is a
 * failure.
 */
export function umlSuite(o: { name: string; file: string; modules: string[]; timeoutMs?: number; memMb?: number }): void {
  const skip = process.env.CI ? false : (labUnavailable() ?? false);
  // A whole scenario inside UML on a busy 2-core machine: ipip's took 431 s
  // in one CI run and over 480 s in another, and past 900 s with one of the
  // two cores taken by another job (every process inside starts several
  // times slower, Node 24's larger binary too); the bound only catches a
  // hang, and two suites of 25 minutes still fit CI's 90.
  const timeoutMs = o.timeoutMs ?? 25 * 60_000;
  test(`${o.name} (inside user-mode-linux)`, { skip, timeout: timeoutMs + 30_000 }, async (t) => {
    const file = relative(ROOT, o.file);
    const reporter = relative(ROOT, join(ROOT, 'test/helpers/uml-reporter.mjs'));
    const pending: Promise<unknown>[] = [];
    const failed: string[] = [];
    let output = '';
    const res = await runInUml({
      command: `${q(process.execPath)} --import tsx --test --test-reporter=./${reporter} --test-reporter-destination=stdout ${q(file)}`,
      modules: o.modules,
      memMb: o.memMb,
      timeoutMs,
      env: { ...(process.env.CI && { CI: process.env.CI }), ...(process.env.TWILL_LOG_LEVEL && { TWILL_LOG_LEVEL: process.env.TWILL_LOG_LEVEL }) },
      onLine: (line) => {
        if (!line.startsWith(EVENT_PREFIX)) {
          output = (output + line + '\n').slice(-20_000);
          return;
        }
        const ev = JSON.parse(line.slice(EVENT_PREFIX.length)) as UmlTestEvent;
        if (!ev.passed) failed.push(ev.name);
        pending.push(
          t.test(`${ev.name} [${(ev.durationMs / 1000).toFixed(1)} s in UML]`, { skip: ev.skip }, () => {
            if (!ev.passed) throw new Error(ev.error ?? 'failed inside user-mode-linux');
          }),
        );
      },
    });
    await Promise.all(pending);
    t.diagnostic(`booted in ${(res.bootMs / 1000).toFixed(1)} s, ran in ${(res.totalMs / 1000).toFixed(1)} s`);
    assert.ok(pending.length > 0, `no test ran inside user-mode-linux (exit ${res.code}):\n${output}`);
    assert.equal(res.code, 0, `tests inside user-mode-linux failed${failed.length ? `: ${failed.join('; ')}` : ''}\n${output.slice(-4000)}`);
  });
}
