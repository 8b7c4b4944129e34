// Node credentials. The store keeps only a scrypt hash; the password is shown
// once, in the agent config that `twill node add` prints.
import { createHmac, randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import type { NodeRecord, Store } from './store/store.js';

const N = 16384;
const R = 8;
const P = 1;
const KEYLEN = 32;

function scrypt(password: string, salt: Buffer, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCb(password, salt, KEYLEN, opts, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

export function generatePassword(): string {
  return randomBytes(24).toString('base64url');
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, { N, r: R, p: P });
  return `scrypt$${N}$${R}$${P}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [, n, r, p, salt, hash] = parts as [string, string, string, string, string, string];
  const expected = Buffer.from(hash, 'base64url');
  const key = await scrypt(password, Buffer.from(salt, 'base64url'), { N: Number(n), r: Number(r), p: Number(p) });
  return key.length === expected.length && timingSafeEqual(key, expected);
}

/** Verified against when the node is unknown, so the answer takes as long as for a wrong password. */
export const DUMMY_HASH = 'scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

export interface CredentialCheck {
  /** The node when the password is its own; undefined for a wrong password or an unknown node. */
  check(node: string, password: string): Promise<NodeRecord | undefined>;
}

/**
 * Node credentials checked against the store, remembering each password it
 * has verified: an agent asks for its snapshot right after its broker
 * session is up, and again on every gap, and one scrypt per request (tens of
 * ms of CPU) would make a fleet's reconnect cost minutes. What is remembered
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
