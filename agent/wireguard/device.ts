// The WireGuard devices themselves: found, made and removed. Where the
// kernel has WireGuard, `ip link add NAME type wireguard`; where it has not,
// wireguard-go (WireGuard's own implementation over a TUN device), started
// by the agent in a session of its own so that it OUTLIVES the agent, like
// the ipsec backend's charon: kill -9 or a restart of the agent leaves the
// tunnel carrying traffic, and the next agent finds the device and its
// control socket (/run/wireguard/NAME.sock) and takes it over as it is.
// Everything after this point goes through `wg` alike for both (wg.ts).
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeDirs } from '../../core/dirs.js';
import { TwillError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { KernelIO } from '../kernel/index.js';
import { classify, type DeviceState, type Implementation } from './plan.js';
import type { WgIO } from './wg.js';

/** how long a starting wireguard-go may take to answer on its socket (a bound for a hang, not a promise) */
const START_TIMEOUT_MS = 30_000;
/** what `ip link add ... type wireguard` says where the kernel has no WireGuard */
const NO_KERNEL_WIREGUARD = /Unknown device type|not supported|Not supported|No such file or directory/i;

export interface DeviceOptions {
  kernel: KernelIO;
  wg: WgIO;
  log: Logger;
  /** where wireguard-go's output goes (<state-dir>/wireguard) */
  dir: string;
  /** the wireguard-go program; default from PATH */
  goBinary?: string;
}

export class WgDevices {
  /** the kernel refused a WireGuard device once: it has none, and wireguard-go makes every device after */
  private noKernel = false;

  constructor(private readonly o: DeviceOptions) {}

  /** What each name is now: absent, twill's (and which implementation), or someone else's. */
  async read(names: readonly string[]): Promise<DeviceState[]> {
    const links = await this.o.kernel.readLinks();
    return Promise.all(
      names.map(async (name) => {
        const link = links.find((l) => l.name === name);
        // Only WireGuard and TUN devices can answer wg; asking of any other kind would only fail.
        const dump = link && (link.kind === 'wireguard' || link.kind === 'tun') ? await this.o.wg.show(name) : undefined;
        return classify(name, link, dump);
      }),
    );
  }

  /** Makes the device: the kernel's where it has WireGuard, else a wireguard-go. */
  async create(name: string, mtu: number): Promise<Implementation> {
    if (!this.noKernel) {
      const r = await this.o.kernel.apply('ip', [`link add ${name} mtu ${mtu} type wireguard`]);
      const failure = r.failures[0];
      if (!failure) return 'kernel';
      if (!NO_KERNEL_WIREGUARD.test(failure.error)) throw new TwillError('WireguardDevice', `ip link add ${name} type wireguard: ${failure.error}`);
      this.noKernel = true;
      this.o.log.info('this kernel has no WireGuard: its devices are wireguard-go', { reason: failure.error.trim() });
    }
    await this.startGo(name);
    return 'wireguard-go';
  }

  /** Removes one of twill's devices; a wireguard-go ends when its TUN device goes. */
  async remove(name: string): Promise<void> {
    const r = await this.o.kernel.apply('ip', [`link del dev ${name}`]);
    if (r.failures[0]) throw new TwillError('WireguardDevice', `ip link del ${name}: ${r.failures[0].error}`);
  }

  private logFile(name: string): string {
    return join(this.o.dir, `${name}.wireguard-go.log`);
  }

  private logTail(name: string): string {
    try {
      const text = readFileSync(this.logFile(name), 'utf8').trim();
      return text ? text.split('\n').slice(-10).join('\n') : '(wireguard-go wrote nothing)';
    } catch {
      return '(wireguard-go wrote nothing)';
    }
  }

  private async startGo(name: string): Promise<void> {
    makeDirs(this.o.dir, 0o700);
    const out = openSync(this.logFile(name), 'w', 0o600);
    const bin = this.o.goBinary ?? 'wireguard-go';
    // Foreground (no fork of its own) in a new session (detached): the
    // agent knows its pid and its end, and neither the agent's exit nor a
    // signal to the agent's process group reaches it.
    const child = spawn(bin, [name], {
      detached: true,
      stdio: ['ignore', out, out],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', WG_PROCESS_FOREGROUND: '1', LOG_LEVEL: 'error' },
    });
    closeSync(out);
    let exited: string | undefined;
    child.once('exit', (code, signal) => (exited = signal ?? `exit code ${code}`));
    child.once('error', (e) => (exited = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'ENOENT' : e.message));
    child.unref();
    const end = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (exited === 'ENOENT') {
        throw new TwillError('WireguardMissing', `this kernel has no WireGuard and wireguard-go is not installed: apt-get install wireguard-go (or load the kernel's module: modprobe wireguard)`);
      }
      if (exited !== undefined) throw new TwillError('WireguardGoFailed', `wireguard-go for ${name} ended at start (${exited}):\n${this.logTail(name)}`);
      if (await this.o.wg.show(name)) break;
      if (Date.now() > end) throw new TwillError('WireguardGoFailed', `wireguard-go for ${name} did not answer on /run/wireguard/${name}.sock within ${START_TIMEOUT_MS / 1000} s:\n${this.logTail(name)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    this.o.log.info('started wireguard-go', { device: name, pid: child.pid });
  }
}
