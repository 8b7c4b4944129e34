// Node credentials. The store keeps only a hash; the password is shown once,
// in the agent config that `twill node add` prints.
//
// Every password is twill's own: 24 random bytes (192 bits), never one a
// person chose. Key stretching (scrypt, bcrypt) protects secrets people can
// remember, whose guesses can be enumerated; nobody enumerates 2^192, so a
// salted SHA-256 is as strong against a stolen store (NIST SP 800-63B keeps
// stretching for memorized secrets; GitHub and AWS store their random
// tokens the same way). And it costs microseconds where scrypt cost 30 ms of
// CPU per check: the broker checks every CONNECT, so a fleet of 5,000
// reconnecting after a controller restart cost 150 s of CPU on two cores
// before any agent got its lease. Hashes made by earlier versions (scrypt$)
// are still verified.
import { createHash, createHmac, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import type { NodeRecord, Store } from '../store/store.js';

const KEYLEN = 32;

function scrypt(password: string, salt: Buffer, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCb(password, salt, KEYLEN, opts, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

const sha256 = (salt: Buffer, password: string) => createHash('sha256').update(salt).update(password, 'utf8').digest();

export function generatePassword(): string {
  return randomBytes(24).toString('base64url');
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  return `sha256$${salt.toString('base64url')}$${sha256(salt, password).toString('base64url')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  let key: Buffer;
  let expected: Buffer;
  if (parts.length === 3 && parts[0] === 'sha256') {
    expected = Buffer.from(parts[2] as string, 'base64url');
    key = sha256(Buffer.from(parts[1] as string, 'base64url'), password);
  } else if (parts.length === 6 && parts[0] === 'scrypt') {
    const [, n, r, p, salt, hash] = parts as [string, string, string, string, string, string];
    expected = Buffer.from(hash, 'base64url');
    key = await scrypt(password, Buffer.from(salt, 'base64url'), { N: Number(n), r: Number(r), p: Number(p), maxmem: 64 * 1024 * 1024 });
  } else {
    return false;
  }
  return key.length === expected.length && timingSafeEqual(key, expected);
}

/** Verified against when the node is unknown, so the answer takes as long as for a wrong password. */
export const DUMMY_HASH = 'sha256$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

export interface CredentialCheck {
  /** The node when the password is its own; undefined for a wrong password or an unknown node. */
  check(node: string, password: string): Promise<NodeRecord | undefined>;
}

/**
 * Node credentials checked against the store, remembering each password it
 * has verified: a node whose hash is an earlier version's scrypt would
 * otherwise cost tens of ms of CPU on every CONNECT and node API request. What is remembered
 * is an HMAC of the password under a key that lives only in this process,
 * next to the stored hash it was verified against, so a rotated password is
 * checked afresh and nothing on disk or in a log can be used to log in.
 */
export class VerifiedCredentials implements CredentialCheck {
  private readonly key = randomBytes(32);
  private readonly seen = new Map<string, { hash: string; mac: Buffer }>();

  constructor(
    private readonly store: Pick<Store, 'getNode'>,
    private readonly maxEntries = 100_000,
  ) {}

  async check(node: string, password: string): Promise<NodeRecord | undefined> {
    const rec = await this.store.getNode(node);
    const mac = createHmac('sha256', this.key).update(node).update('\0').update(password).digest();
    const known = rec && this.seen.get(node);
    if (rec && known && known.hash === rec.passwordHash && timingSafeEqual(known.mac, mac)) return rec;
    const ok = await verifyPassword(password, rec?.passwordHash ?? DUMMY_HASH);
    if (!rec || !ok) return undefined;
    if (this.seen.size >= this.maxEntries) this.seen.delete(this.seen.keys().next().value as string);
    this.seen.set(node, { hash: rec.passwordHash, mac });
    return rec;
  }
}

/** Thrown when more logins wait than a BoundedCredentials lets queue: the caller answers "busy, retry". */
export class CredentialsBusyError extends Error {
  constructor(waiting: number) {
    super(`too many logins at once (${waiting} waiting): retry shortly`);
    this.name = 'CredentialsBusyError';
  }
}

/**
 * At most `concurrent` password checks at a time, at most `queued` more
 * waiting; past that a check is refused at once (CredentialsBusyError), so a
 * flood of logins with wrong passwords holds a bounded amount of memory and
 * CPU and a node with the right one still gets its turn. A hash of an
 * earlier version costs tens of ms of the thread pool: without a bound, 50
 * wrong-password connects pushed a legitimate login past a second.
 */
export class BoundedCredentials implements CredentialCheck {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly inner: CredentialCheck,
    private readonly concurrent = 4,
    private readonly queued = 1024,
  ) {}

  async check(node: string, password: string): Promise<NodeRecord | undefined> {
    if (this.running >= this.concurrent) {
      if (this.waiting.length >= this.queued) throw new CredentialsBusyError(this.waiting.length);
      await new Promise<void>((r) => this.waiting.push(r));
    } else {
      this.running++;
    }
    try {
      return await this.inner.check(node, password);
    } finally {
      // The slot passes straight to the next waiting check, if any.
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}
