// A host's WireGuard key pair (agent/wireguard/keys.ts): made here, kept in
// one 0600 file, the public key derived as wg derives it; a file twill
// cannot use is refused naming it and left as it is; rotation by token
// happens once per token and by age once per period, across restarts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { wireguardKeyProblem } from '../../core/backends/index.js';
import { keyFilePath, metaFilePath, newPrivateKey, publicKeyOf, WireguardKeys } from '../../agent/wireguard/keys.js';
import { tempDir } from '../helpers/procs.js';

// RFC 7748, section 6.1: Alice's X25519 private key and its public key, in wg's base64
const RFC_PRIVATE = 'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=';
const RFC_PUBLIC = 'hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=';
const HOUR = 3_600_000;

const mode = (f: string) => statSync(f).mode & 0o777;

describe('wireguard keys', () => {
  test('the public key is derived as RFC 7748 (and wg pubkey) derive it', () => {
    assert.equal(publicKeyOf(RFC_PRIVATE), RFC_PUBLIC);
  });

  test('a new private key is a clamped X25519 key in wg genkey\'s form', () => {
    for (let i = 0; i < 20; i++) {
      const k = newPrivateKey();
      assert.equal(wireguardKeyProblem(k), undefined);
      const raw = Buffer.from(k, 'base64');
      assert.equal(raw[0]! & 7, 0);
      assert.equal(raw[31]! & 0xc0, 0x40);
      assert.equal(wireguardKeyProblem(publicKeyOf(k)), undefined);
    }
  });

  test("the key file is the state directory's unless WIREGUARD_KEY_FILE names one, as flannel reads it", () => {
    assert.equal(keyFilePath('/var/lib/twill', {}), '/var/lib/twill/wgkey');
    assert.equal(keyFilePath('/var/lib/twill', { WIREGUARD_KEY_FILE: '/run/flannel/wgkey' }), '/run/flannel/wgkey');
    assert.equal(metaFilePath('/run/flannel/wgkey'), '/run/flannel/wgkey.twill.json');
  });

  test('the first start makes a key pair: the private key alone in a 0600 file, the record beside it 0600 and without it', () => {
    const dir = tempDir();
    const file = join(dir, 'sub', 'wgkey');
    const keys = WireguardKeys.load(file, () => Date.parse('2025-01-01T00:00:00Z'));
    const text = readFileSync(file, 'utf8');
    assert.equal(wireguardKeyProblem(text.trim()), undefined);
    assert.equal(publicKeyOf(text.trim()), keys.publicKey);
    assert.equal(mode(file), 0o600);
    assert.equal(mode(join(dir, 'sub')), 0o700);
    const meta = readFileSync(metaFilePath(file), 'utf8');
    assert.equal(mode(metaFilePath(file)), 0o600);
    assert.ok(!meta.includes(text.trim()), 'the record holds no private key');
    assert.equal(keys.madeAt, Date.parse('2025-01-01T00:00:00Z'));
    // a restart finds the same key and its age
    const again = WireguardKeys.load(file, () => Date.parse('2025-02-01T00:00:00Z'));
    assert.equal(again.publicKey, keys.publicKey);
    assert.equal(again.madeAt, keys.madeAt);
  });

  test('an existing key (flannel\'s) is used as it is, its age counted from the file', () => {
    const dir = tempDir();
    const file = join(dir, 'wgkey');
    writeFileSync(file, RFC_PRIVATE, { mode: 0o400 });
    utimesSync(file, new Date('2024-06-01T00:00:00Z'), new Date('2024-06-01T00:00:00Z'));
    const keys = WireguardKeys.load(file);
    assert.equal(keys.publicKey, RFC_PUBLIC);
    assert.equal(keys.madeAt, Date.parse('2024-06-01T00:00:00Z'));
    assert.equal(readFileSync(file, 'utf8'), RFC_PRIVATE, 'the file is not rewritten');
  });

  test('a key file others may read is refused, naming it, and never replaced', () => {
    const dir = tempDir();
    const file = join(dir, 'wgkey');
    writeFileSync(file, RFC_PRIVATE + '\n');
    chmodSync(file, 0o644);
    assert.throws(() => WireguardKeys.load(file), (e: Error) => e.message.includes(file) && /mode 0644/.test(e.message) && /chmod 600/.test(e.message) && !e.message.includes(RFC_PRIVATE));
    assert.equal(readFileSync(file, 'utf8'), RFC_PRIVATE + '\n');
    assert.equal(mode(file), 0o644);
    assert.equal(existsSync(metaFilePath(file)), false);
  });

  test('a key file that holds no key is refused, naming it without quoting it, and never replaced', () => {
    const dir = tempDir();
    const file = join(dir, 'wgkey');
    const junk = 'not-a-key-but-maybe-a-secret-of-someone-else';
    writeFileSync(file, junk, { mode: 0o600 });
    assert.throws(() => WireguardKeys.load(file), (e: Error) => e.message.includes(file) && /does not hold a WireGuard private key/.test(e.message) && !e.message.includes(junk));
    assert.equal(readFileSync(file, 'utf8'), junk);
  });

  test('a rotation token is honoured once: a new key pair, kept across restarts, and the same token asks nothing more', () => {
    const dir = tempDir();
    const file = join(dir, 'wgkey');
    let now = Date.parse('2025-01-01T00:00:00Z');
    const keys = WireguardKeys.load(file, () => now);
    const first = keys.publicKey;
    const firstPrivate = readFileSync(file, 'utf8');
    assert.equal(keys.rotationDue(undefined, undefined), undefined);
    assert.equal(keys.rotationDue('t1', undefined), 'asked');
    now += HOUR;
    keys.rotate('t1');
    assert.notEqual(keys.publicKey, first);
    assert.notEqual(readFileSync(file, 'utf8'), firstPrivate);
    assert.equal(publicKeyOf(readFileSync(file, 'utf8').trim()), keys.publicKey);
    assert.equal(mode(file), 0o600);
    assert.equal(keys.rotationDue('t1', undefined), undefined);
    const restarted = WireguardKeys.load(file, () => now);
    assert.equal(restarted.publicKey, keys.publicKey);
    assert.equal(restarted.honoured, 't1');
    assert.equal(restarted.rotationDue('t1', undefined), undefined);
    assert.equal(restarted.rotationDue('t2', undefined), 'asked');
  });

  test('KeyRotation: a key as old as the period is due, once; the new key starts the period again and keeps the last token', () => {
    const dir = tempDir();
    const file = join(dir, 'wgkey');
    let now = Date.parse('2025-01-01T00:00:00Z');
    const keys = WireguardKeys.load(file, () => now);
    keys.rotate('t1');
    now += 24 * HOUR - 1;
    assert.equal(keys.rotationDue('t1', 24 * HOUR), undefined);
    now += 1;
    assert.equal(keys.rotationDue('t1', 24 * HOUR), 'age');
    keys.rotate();
    assert.equal(keys.rotationDue('t1', 24 * HOUR), undefined);
    assert.equal(WireguardKeys.load(file, () => now).honoured, 't1');
  });

  test('a key put in the file by hand is a new key: its record follows it, the honoured token stays', () => {
    const dir = tempDir();
    const file = join(dir, 'wgkey');
    const keys = WireguardKeys.load(file);
    keys.rotate('t1');
    writeFileSync(file, RFC_PRIVATE + '\n', { mode: 0o600 });
    const again = WireguardKeys.load(file);
    assert.equal(again.publicKey, RFC_PUBLIC);
    assert.equal(again.honoured, 't1');
    assert.match(readFileSync(metaFilePath(file), 'utf8'), new RegExp(RFC_PUBLIC.replace(/[+/]/g, '\\$&')));
  });
});
