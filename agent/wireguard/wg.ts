// The one way twill reads and writes a WireGuard device, kernel or
// wireguard-go alike: wireguard-tools' `wg`. Reads are `wg show DEV dump`,
// parsed here at the edge into records that hold no secret (the private key
// becomes its public key, a preshared key its digest). Writes are `wg set`,
// and a secret never travels on its argv (every process can read another's
// argv in /proc): the private key is read by wg from its 0600 file, and the
// PSK through a pipe on a file descriptor of its own (/dev/fd/N).
import { createHash } from 'node:crypto';
import { TwillError } from '../../core/errors.js';
import { SECRET_MASK } from '../../core/secret.js';
import { canonInterfaceAddress, canonIP } from '../kernel/addr.js';
import { CommandError, DEFAULT_TIMEOUT_MS, run, type RunResult } from '../kernel/exec.js';

/** What wg prints for an empty field. */
const NONE = '(none)';

export interface WgPeer {
  publicKey: string;
  /** sha256 of the preshared key (pskDigest), never the key; undefined: none */
  pskDigest?: string;
  /** "ip:port" or "[ip6]:port", canonical; undefined: none */
  endpoint?: string;
  /** canonical CIDRs, sorted */
  allowedIps: string[];
  /** seconds since the epoch of the last handshake; 0: none yet */
  latestHandshake: number;
  /** seconds; 0: off */
  keepalive: number;
}

export interface WgDump {
  /** the public key of the device's private key; undefined: it has none */
  publicKey?: string;
  listenPort: number;
  peers: WgPeer[];
}

/** An endpoint as wg prints it: "10.0.0.1:51820", "[fd00::1]:51821". */
export function endpointOf(ip: string, port: number): string | undefined {
  const c = canonIP(ip);
  if (!c) return undefined;
  return c.family === 4 ? `${c.text}:${port}` : `[${c.text}]:${port}`;
}

/** An endpoint in the canonical form endpointOf gives, or undefined when it is not one. */
export function canonEndpoint(text: string): string | undefined {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:]+):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const port = Number(m[2]);
  const c = canonIP(m[1]!);
  if (!c || port < 1 || port > 65535 || (c.family === 6) !== text.startsWith('[')) return undefined;
  return endpointOf(c.text, port);
}

/** How a PSK is compared without being kept: its digest. */
export function pskDigest(psk: string): string {
  return createHash('sha256').update(`twill wireguard psk\n${psk}`).digest('hex');
}

/**
 * `wg show DEV dump` as records. The first line is the device (private key,
 * public key, listen port, fwmark), each other line a peer (public key,
 * preshared key, endpoint, allowed ips, latest handshake, rx, tx,
 * persistent keepalive), tab-separated. Throws on anything else, without
 * quoting the text (it holds the private key).
 */
export function parseDump(text: string): WgDump {
  const lines = text.split('\n').filter((l) => l !== '');
  const head = lines[0]?.split('\t');
  if (!head || head.length !== 4) throw new Error(`wg show dump: the first line has ${head?.length ?? 0} fields, not 4 (is this wireguard-tools?)`);
  const port = Number(head[2]);
  const dump: WgDump = { ...(head[1] !== NONE && { publicKey: head[1] }), listenPort: Number.isInteger(port) ? port : 0, peers: [] };
  for (const [i, line] of lines.slice(1).entries()) {
    const f = line.split('\t');
    if (f.length !== 8) throw new Error(`wg show dump: peer line ${i + 1} has ${f.length} fields, not 8`);
    const [publicKey, psk, endpoint, allowed, handshake, , , keepalive] = f as [string, string, string, string, string, string, string, string];
    const ips = allowed === NONE ? [] : allowed.split(',').map((a) => canonInterfaceAddress(a.trim())?.text ?? a.trim());
    dump.peers.push({
      publicKey,
      ...(psk !== NONE && { pskDigest: pskDigest(psk) }),
      ...(endpoint !== NONE && { endpoint: canonEndpoint(endpoint) ?? endpoint }),
      allowedIps: ips.sort(),
      latestHandshake: Number(handshake) || 0,
      keepalive: keepalive === 'off' ? 0 : Number(keepalive) || 0,
    });
  }
  return dump;
}

/** Where a `wg set` argument takes the network's PSK: the executor gives it a pipe. */
export const PSK_ARG = Object.freeze({ psk: true as const });
export type WgArg = string | typeof PSK_ARG;

export interface WgIO {
  /** the device's state, or undefined when no WireGuard device of that name answers */
  show(dev: string): Promise<WgDump | undefined>;
  /** one `wg set DEV ...`: applied by wg as one request, in the order given */
  set(dev: string, args: readonly WgArg[], psk?: string): Promise<void>;
}

/** The lines wg prints when the name is not a WireGuard device it can reach (no device, another kind, a dead socket). */
const NOT_WIREGUARD = /Unable to access interface|No such device|Protocol not supported|Connection refused/;

const quote = (a: string) => `'${a.replace(/'/g, `'\\''`)}'`;

/**
 * Runs wg (exit codes 0 and 1 are answers: the caller reads stderr); each
 * secret reaches it on a pipe of its own, fds 3, 4, ... Node's child pipes
 * are socket pairs, which wg cannot open by /dev/fd/N, so a shell reading
 * its script from stdin (never from its argv) starts wg with a here-document
 * per secret: a pipe (dash; bash uses a pipe or an unlinked 0600 file).
 */
async function runWg(argv: string[], secrets: string[], timeoutMs: number): Promise<RunResult> {
  for (const s of secrets) if (!/^[A-Za-z0-9+/=]+$/.test(s)) throw new Error('wg: a secret handed on is not a base64 key');
  const script = `exec wg ${argv.map(quote).join(' ')} ${secrets.map((_, i) => `${3 + i}<<'TWILL_KEY_END'`).join(' ')}\n${secrets.map((s) => `${s}\nTWILL_KEY_END\n`).join('')}`;
  try {
    return secrets.length ? await run(['sh', '-s'], { input: script, timeoutMs, okCodes: [0, 1] }) : await run(['wg', ...argv], { timeoutMs, okCodes: [0, 1] });
  } catch (e) {
    // wg not found: by spawn itself, or by the shell (exit 127)
    if (e instanceof CommandError && (/ENOENT/.test(e.message) || e.exitCode === 127)) throw new TwillError('WgMissing', "wireguard-tools' wg is not installed: apt-get install wireguard-tools");
    throw e;
  }
}

/**
 * The argv of `wg set DEV ...` and the secret each pipe carries: every
 * PSK_ARG becomes /dev/fd/3, /dev/fd/4, ..., a pipe of its own (a pipe is
 * read once, so each use needs its own).
 */
export function setArgv(dev: string, args: readonly WgArg[], psk: string | undefined): { argv: string[]; pipes: string[] } {
  const pipes: string[] = [];
  const argv = ['set', dev, ...args.map((a) => {
    if (typeof a === 'string') return a;
    if (psk === undefined) throw new Error('wg set: a preshared key is asked for and none was given');
    pipes.push(psk);
    return `/dev/fd/${2 + pipes.length}`;
  })];
  return { argv, pipes };
}

export function wgIO(opts: { timeoutMs?: number } = {}): WgIO {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return {
    async show(dev) {
      const argv = ['show', dev, 'dump'];
      const r = await runWg(argv, [], timeoutMs);
      if (r.code === 0) return parseDump(r.stdout);
      if (NOT_WIREGUARD.test(r.stderr)) return undefined;
      throw new CommandError(['wg', ...argv], r.code, r.stderr, `exit code ${r.code}`);
    },
    async set(dev, args, psk) {
      const { argv, pipes } = setArgv(dev, args, psk);
      const r = await runWg(argv, pipes, timeoutMs);
      // wg quotes a key it could not parse: never the PSK
      const stderr = psk === undefined ? r.stderr : r.stderr.replaceAll(psk, SECRET_MASK);
      if (r.code !== 0) throw new CommandError(['wg', ...argv], r.code, stderr, `exit code ${r.code}`);
    },
  };
}
