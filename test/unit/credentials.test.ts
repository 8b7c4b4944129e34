// Node passwords: what the store keeps, and that nodes added by an earlier
// version (scrypt hashes) still log in after an upgrade.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, scryptSync } from 'node:crypto';
import { BoundedCredentials, CredentialsBusyError, DUMMY_HASH, generatePassword, hashPassword, verifyPassword, VerifiedCredentials } from '../../control/auth/credentials.js';
import type { NodeRecord } from '../../control/store/store.js';

test('a hash verifies its own password only, and holds no trace of it', async () => {
  const pw = generatePassword();
  const h = await hashPassword(pw);
  assert.match(h, /^sha256\$[\w-]{22}\$[\w-]{43}$/);
  assert.ok(!h.includes(pw));
  assert.equal(await verifyPassword(pw, h), true);
  assert.equal(await verifyPassword(pw + 'x', h), false);
  assert.equal(await verifyPassword(generatePassword(), h), false);
  // salted: the same password twice gives two hashes
  assert.notEqual(await hashPassword(pw), h);
});

test('a scrypt hash written by an earlier version still verifies', async () => {
  const pw = generatePassword();
  const salt = randomBytes(16);
  const key = scryptSync(pw, salt, 32, { N: 16384, r: 8, p: 1 });
  const old = `scrypt$16384$8$1$${salt.toString('base64url')}$${key.toString('base64url')}`;
  assert.equal(await verifyPassword(pw, old), true);
  assert.equal(await verifyPassword('wrong', old), false);
});

test('a malformed or unknown hash verifies nothing', async () => {
  for (const h of ['', 'sha256$', 'sha256$a$b$c', 'scrypt$1$2', 'bcrypt$x$y', DUMMY_HASH]) {
    assert.equal(await verifyPassword('anything', h), false, h);
  }
});

test('remembered checks follow the stored hash: a rotated password is checked afresh', async () => {
  const pw = generatePassword();
  const rec: NodeRecord = { name: 'n1', network: 'net', passwordHash: await hashPassword(pw), createdAt: new Date().toISOString() };
  const creds = new VerifiedCredentials({ getNode: async (n) => (n === rec.name ? rec : undefined) });
  assert.equal((await creds.check('n1', pw))?.name, 'n1');
  assert.equal((await creds.check('n1', pw))?.name, 'n1');
  assert.equal(await creds.check('n1', 'wrong'), undefined);
  assert.equal(await creds.check('nobody', pw), undefined);
  const next = generatePassword();
  rec.passwordHash = await hashPassword(next);
  assert.equal(await creds.check('n1', pw), undefined, 'the old password no longer logs in');
  assert.equal((await creds.check('n1', next))?.name, 'n1');
});

test('login checks run a bounded number at a time; past the queue they are refused at once, the rest all answered', async () => {
  let running = 0;
  let most = 0;
  const releases: (() => void)[] = [];
  const slow = {
    async check(node: string) {
      running++;
      most = Math.max(most, running);
      await new Promise<void>((r) => releases.push(r));
      running--;
      return node === 'good' ? ({ name: 'good' } as never) : undefined;
    },
  };
  const bounded = new BoundedCredentials(slow, 2, 3);
  const results = Array.from({ length: 5 }, (_, i) => bounded.check(i === 4 ? 'good' : `bad${i}`, 'pw'));
  // the sixth finds two running and three waiting: refused, without running
  await assert.rejects(bounded.check('good', 'pw'), (e: Error) => e instanceof CredentialsBusyError && /too many logins at once \(3 waiting\)/.test(e.message));
  while (releases.length || running) {
    await new Promise((r) => setImmediate(r));
    releases.shift()?.();
  }
  const answers = await Promise.all(results);
  assert.equal(most, 2, 'never more than two at a time');
  assert.deepEqual(answers.map((a) => (a as { name?: string } | undefined)?.name), [undefined, undefined, undefined, undefined, 'good']);
});
