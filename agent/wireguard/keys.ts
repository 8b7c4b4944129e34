// This host's WireGuard key pair. The private key is made here (X25519, by
// node:crypto: no command ever sees it on its argv), kept in one 0600 file
// and never leaves the host: `wg` reads it from that file, and only the
// public key is published. The file is flannel's: base64, as `wg genkey`
// prints it, at WIREGUARD_KEY_FILE when set, else in the agent's state
// directory. Beside it (same directory, 0600) twill keeps when the key was
// made and which rotation token it last honoured, so a rotation by age and a
// rotation asked by token (Lease.rotateKey) each happen exactly once, across
// restarts, with no clock shared with the control plane.
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { type Stats, closeSync, fchmodSync, fsyncSync, statSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { makeDirs } from '../../core/dirs.js';
import { TwillError, errorMessage } from '../../core/errors.js';
import { wireguardKeyProblem } from '../../core/backends/index.js';

/** flannel's name for the key file; WIREGUARD_KEY_FILE overrides the whole path. */
export const KEY_FILE_NAME = 'wgkey';

/** PKCS#8 DER header of a raw X25519 private key (RFC 8410): the 32 key bytes follow. */
const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

/** The key file's path: WIREGUARD_KEY_FILE as flannel reads it, else the state directory's. */
export function keyFilePath(stateDir: string, env: Record<string, string | undefined>): string {
  const fromEnv = env.WIREGUARD_KEY_FILE?.trim();
  return fromEnv ? fromEnv : join(stateDir, KEY_FILE_NAME);
}

/** Where twill keeps what it knows of the key (never the key itself), beside the key file. */
export function metaFilePath(keyFile: string): string {
  return join(dirname(keyFile), `${basename(keyFile)}.twill.json`);
}

/** The public key of a base64 private key, as `wg pubkey` prints it. */
export function publicKeyOf(privateKey: string): string {
  const raw = Buffer.from(privateKey, 'base64');
  const key = createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
  const x = createPublicKey(key).export({ format: 'jwk' }).x;
  if (!x) throw new Error('X25519 public key export gave no key');
  return Buffer.from(x, 'base64url').toString('base64');
}

/** A new private key, clamped as `wg genkey` clamps it (RFC 7748). */
export function newPrivateKey(): string {
  const raw = randomBytes(32);
  raw[0] = raw[0]! & 248;
  raw[31] = (raw[31]! & 127) | 64;
  return raw.toString('base64');
}

/** What twill keeps beside the key: nothing secret. */
interface Meta {
  v: 1;
  /** whose key this record describes: a key file replaced by hand is a new key */
  publicKey: string;
  /** ISO time the key was made (or first seen) */
  madeAt: string;
  /** the last Lease.rotateKey token honoured */
  honoured?: string;
}

/** Writes a small private file whole or not at all: a crash leaves the old one. */
function writePrivate(path: string, text: string): void {
  makeDirs(dirname(path), 0o700);
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  try {
    unlinkSync(tmp);
  } catch {
    // none left over
  }
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    fchmodSync(fd, 0o600);
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/**
 * Why a key file cannot be used, or undefined: a file others may read (the
 * key is then not this host's alone) or one that is not ours. Said, never
 * repaired: someone made that file, and replacing their key would cut the
 * host off from peers that know it.
 */
function fileProblem(path: string, st: Stats): string | undefined {
  if (!st.isFile()) return `${path} is not a regular file: twill leaves it alone; remove it to have a new key made there`;
  const mode = Number(st.mode) & 0o777;
  if (mode & 0o077) {
    return `${path} may be read by others (mode ${mode.toString(8).padStart(4, '0')}): a WireGuard private key must be the host's alone; chmod 600 ${path} (twill neither changes nor replaces it)`;
  }
  const uid = process.getuid?.();
  if (uid !== undefined && Number(st.uid) !== uid) return `${path} belongs to uid ${st.uid}, not to the agent (uid ${uid}): chown it, or remove it to have a new key made`;
  return undefined;
}

export class WireguardKeys {
  private meta!: Meta;

  private constructor(
    readonly file: string,
    private readonly now: () => number,
  ) {}

  /**
   * The key pair in file, made when there is none. A file twill cannot use
   * stops the agent with the reason and the file's name; it is never
   * overwritten.
   */
  static load(file: string, now: () => number = Date.now): WireguardKeys {
    const keys = new WireguardKeys(file, now);
    keys.open();
    return keys;
  }

  get publicKey(): string {
    return this.meta.publicKey;
  }

  /** When the key in use was made (ms since the epoch). */
  get madeAt(): number {
    return Date.parse(this.meta.madeAt);
  }

  get honoured(): string | undefined {
    return this.meta.honoured;
  }

  /**
   * Why a new key pair is due now: a rotation token not honoured yet, or a
   * key older than maxAgeMs (Backend.KeyRotation); undefined when none is.
   */
  rotationDue(token: string | undefined, maxAgeMs: number | undefined): 'asked' | 'age' | undefined {
    if (token !== undefined && token !== this.meta.honoured) return 'asked';
    if (maxAgeMs !== undefined && this.now() - this.madeAt >= maxAgeMs) return 'age';
    return undefined;
  }

  /**
   * A new key pair. The key file is written first: a crash before the record
   * beside it only makes the next start rotate once more, never lose a key.
   */
  rotate(token?: string): void {
    const privateKey = newPrivateKey();
    writePrivate(this.file, privateKey + '\n');
    this.meta = { v: 1, publicKey: publicKeyOf(privateKey), madeAt: new Date(this.now()).toISOString(), ...((token ?? this.meta.honoured) !== undefined && { honoured: token ?? this.meta.honoured }) };
    writePrivate(metaFilePath(this.file), JSON.stringify(this.meta) + '\n');
  }

  private open(): void {
    let st: Stats | undefined;
    try {
      st = statSync(this.file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new TwillError('WireguardKey', `cannot read the WireGuard key file ${this.file}: ${errorMessage(e)}`);
    }
    if (!st) {
      this.meta = { v: 1, publicKey: '', madeAt: '' };
      this.rotate();
      return;
    }
    const problem = fileProblem(this.file, st);
    if (problem) throw new TwillError('WireguardKey', problem);
    const text = readFileSync(this.file, 'utf8').trim();
    // The reason never quotes the file: it would be the private key.
    if (wireguardKeyProblem(text)) {
      throw new TwillError('WireguardKey', `${this.file} does not hold a WireGuard private key (32 bytes in base64, 44 characters, as wg genkey prints it): twill leaves it as it is; put a valid key in it, or remove it to have a new one made`);
    }
    const publicKey = publicKeyOf(text);
    const saved = this.readMeta();
    if (saved?.publicKey === publicKey) {
      this.meta = saved;
      return;
    }
    // A key twill did not make (flannel's, or one put there by hand): its age counts from the file's last change.
    this.meta = { v: 1, publicKey, madeAt: new Date(Number(st.mtimeMs)).toISOString(), ...(saved?.honoured !== undefined && { honoured: saved.honoured }) };
    writePrivate(metaFilePath(this.file), JSON.stringify(this.meta) + '\n');
  }

  private readMeta(): Meta | undefined {
    try {
      const m = JSON.parse(readFileSync(metaFilePath(this.file), 'utf8')) as Partial<Meta>;
      if (m.v !== 1 || typeof m.publicKey !== 'string' || typeof m.madeAt !== 'string' || Number.isNaN(Date.parse(m.madeAt))) return undefined;
      if (m.honoured !== undefined && typeof m.honoured !== 'string') return undefined;
      return { v: 1, publicKey: m.publicKey, madeAt: m.madeAt, ...(m.honoured !== undefined && { honoured: m.honoured }) };
    } catch {
      return undefined;
    }
  }
}
