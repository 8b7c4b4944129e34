// The ipsec backend's IKE daemon: a charon of twill's own, started by the
// agent and configured only through vici. It runs with a strongswan.conf
// written for it (no /etc/ipsec.* or /etc/swanctl files are read: its only
// credentials are the ones the agent loads), its control socket, log and
// config in <state-dir>/ipsec, and a private /run (its pid file is fixed at
// /run/charon.pid, so two charons could not otherwise share a filesystem,
// as the hosts of a test lab do).
//
// charon outlives the agent on purpose: kill -9 or a restart of the agent
// leaves every IKE and ESP SA in place and rekeying on schedule, and the new
// agent finds the same charon on the socket and takes it over. Only when no
// charon answers does the agent start one.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { TwillError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { Vici } from './vici.js';
import { makeDirs } from '../../core/dirs.js';

const CHARON_PATHS = ['/usr/lib/ipsec/charon', '/usr/libexec/ipsec/charon', '/usr/lib/strongswan/charon'];
const START_TIMEOUT_MS = 30_000;
/** twill's record of the charon it started (charon's own pid file is in its private /run) */
const PID_FILE = 'charon.pid';

/** Only the plugins twill's connections use: PSK auth, AES-GCM/CBC, SHA-2, ECP and MODP groups, kernel IPsec, vici. */
const PLUGINS = 'random nonce aes sha1 sha2 hmac kdf gcm gmp openssl kernel-netlink socket-default vici';

export function charonPath(): string | undefined {
  return CHARON_PATHS.find((p) => existsSync(p));
}

function strongswanConf(dir: string, socket: string): string {
  return `# Written by the twill agent for its own charon; changes are overwritten.
charon {
  load = ${PLUGINS}
  # twill needs no routes of charon's: pod traffic follows the host's routes
  # and the IPsec policies pick it up.
  install_routes = no
  install_virtual_ip = no
  # only the connections the agent loads through vici
  load_modular = no
  plugins {
    vici {
      socket = unix://${socket}
    }
  }
  # Levels stay at 1: charon logs key material only at level 4.
  filelog {
    twill {
      path = ${join(dir, 'charon.log')}
      time_format = %Y-%m-%dT%H:%M:%S
      default = 1
      flush_line = yes
      append = no
    }
  }
  syslog {
    daemon {
      default = -1
    }
  }
}
`;
}

export class Charon {
  readonly dir: string;
  readonly socket: string;
  private vici?: Vici;

  constructor(
    stateDir: string,
    private readonly log: Logger,
  ) {
    this.dir = join(stateDir, 'ipsec');
    this.socket = join(this.dir, 'charon.vici');
  }

  /** Tail of charon's own log, for an error message. */
  logTail(lines = 15): string {
    for (const f of ['charon.log', 'charon.out']) {
      try {
        const text = readFileSync(join(this.dir, f), 'utf8').trim();
        if (text) return text.split('\n').slice(-lines).join('\n');
      } catch {
        // not written yet
      }
    }
    return '(charon wrote no log)';
  }

  /**
   * A live vici connection to our charon, starting charon when none answers.
   * started tells the caller that charon holds nothing yet (a fresh daemon).
   */
  async ensure(): Promise<{ vici: Vici; started: boolean }> {
    if (this.vici?.alive) return { vici: this.vici, started: false };
    this.vici = undefined;
    try {
      this.vici = await Vici.connect(this.socket);
      await this.vici.request('version');
      this.log.info('took over the running charon', { socket: this.socket });
      return { vici: this.vici, started: false };
    } catch {
      this.vici?.close();
      this.vici = undefined;
    }
    // A charon that is alive but slow to answer (a starved host) is waited
    // for, never doubled: a second one would start with no SAs and replace
    // every peer's IKE_SA, dropping the traffic the first one carries.
    const pid = this.runningPid();
    if (pid !== undefined) {
      this.vici = await this.connectWithin(`charon (pid ${pid}) is running but did not answer on ${this.socket}`);
      this.log.info('took over the running charon', { socket: this.socket, pid });
      return { vici: this.vici, started: false };
    }
    this.vici = await this.start();
    return { vici: this.vici, started: true };
  }

  /** The pid of the charon this directory's agent started, when it still runs. */
  private runningPid(): number | undefined {
    try {
      const pid = Number(readFileSync(join(this.dir, PID_FILE), 'utf8').trim());
      if (!Number.isInteger(pid) || pid <= 0) return undefined;
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'charon' ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Connects to the socket, retrying until START_TIMEOUT_MS; gone is when the wait is pointless. */
  private async connectWithin(failure: string, gone?: () => string | undefined): Promise<Vici> {
    const end = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      const why = gone?.();
      if (why) throw new TwillError('CharonFailed', `${why}:\n${this.logTail()}`);
      try {
        const vici = await Vici.connect(this.socket, 1000);
        await vici.request('version');
        return vici;
      } catch {
        if (Date.now() > end) throw new TwillError('CharonFailed', `${failure} within ${START_TIMEOUT_MS / 1000} s:\n${this.logTail()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  private async start(): Promise<Vici> {
    const bin = charonPath();
    if (!bin) throw new TwillError('CharonMissing', `strongSwan's charon is not installed (looked in ${CHARON_PATHS.join(', ')}): apt-get install strongswan-charon strongswan-swanctl libstrongswan-standard-plugins (the vici plugin comes with strongswan-swanctl)`);
    const vici = join(dirname(bin), 'plugins', 'libstrongswan-vici.so');
    if (!existsSync(vici)) throw new TwillError('CharonMissing', `charon has no vici plugin (${vici}), the only way twill configures it: apt-get install strongswan-swanctl`);
    makeDirs(this.dir, 0o700);
    const conf = join(this.dir, 'strongswan.conf');
    writeFileSync(conf, strongswanConf(this.dir, this.socket), { mode: 0o600 });
    const out = openSync(join(this.dir, 'charon.out'), 'a', 0o600);
    // A private mount namespace with its own /run: the pid file charon insists
    // on (/run/charon.pid) is then this charon's alone.
    const child = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount -t tmpfs -o mode=0755,size=1m twill-charon /run && exec "$0"', bin], {
      detached: true,
      stdio: ['ignore', out, out],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', STRONGSWAN_CONF: conf },
    });
    closeSync(out);
    let exited: number | null | undefined;
    child.once('exit', (code) => (exited = code));
    child.once('error', () => (exited = -1));
    child.unref();
    // unshare and sh exec into charon, so this pid is charon's own.
    writeFileSync(join(this.dir, PID_FILE), `${child.pid}\n`, { mode: 0o600 });
    this.log.info('started charon', { pid: child.pid, dir: this.dir });
    return this.connectWithin(`charon did not open ${this.socket}`, () => (exited !== undefined ? `charon exited (code ${exited}) at start` : undefined));
  }

  close(): void {
    this.vici?.close();
    this.vici = undefined;
  }
}
