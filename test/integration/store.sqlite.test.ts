import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseNetConf } from '../../core/config.js';
import { leasesHash } from '../../core/lease.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { storeSuite } from '../helpers/store-suite.js';

const ROOT = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
const CONF = parseNetConf({ Network: '10.0.0.0/8' }, {});

let dir = '';
let files = 0;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'twill-store-'));
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

storeSuite('sqlite', async () => {
  const file = join(dir, `suite-${++files}.db`);
  const store = new SqliteStore(file);
  const others: SqliteStore[] = [];
  return {
    store,
    // Another connection to the same file, as the CLI or a second process opens it.
    another: async () => { const o = new SqliteStore(file); others.push(o); return o; },
    close: async () => { for (const o of others) await o.close(); await store.close(); },
  };
});

/** Subnet i of 10.0.0.0/8 in /24s, unique for every i below 65536. */
const subnetOf = (i: number): string => `10.${(i >> 8) & 255}.${i & 255}.0/24`;

describe('sqlite: durability', () => {
  test('the file keeps every lease, the manifest and the nodes across close and reopen', async () => {
    const file = join(dir, 'reopen.db');
    const first = new SqliteStore(file);
    await first.putNetwork('n', CONF, undefined);
    const written = [];
    for (let i = 1; i <= 50; i++) {
      written.push(
        await first.createLease({
          network: 'n', node: `node-${i}`, subnet: subnetOf(i), ipv6Subnet: null, publicIP: '192.0.2.1', publicIPv6: null,
          backendType: 'vxlan', backendData: { VtepMAC: `02:00:00:00:00:${(i % 256).toString(16).padStart(2, '0')}` },
          expiresAt: i % 10 === 0 ? null : new Date(Date.now() + 3_600_000).toISOString(), createdAt: new Date().toISOString(),
        }),
      );
    }
    await first.deleteLease('n', 'node-7');
    await first.putNode({ name: 'node-1', network: 'n', passwordHash: 'scrypt$x$y', createdAt: '2030-01-01T00:00:00.000Z' });
    const net = await first.getNetwork('n');
    await first.close();

    const second = new SqliteStore(file);
    try {
      assert.deepEqual(await second.getNetwork('n'), net);
      const leases = await second.listLeases('n');
      const expected = written.filter((l) => l.node !== 'node-7');
      const byNode = (a: { node: string }, b: { node: string }) => a.node.localeCompare(b.node);
      assert.deepEqual([...leases].sort(byNode), [...expected].sort(byNode));
      assert.equal(net?.leaseCount, 49);
      assert.equal(net?.leaseHash, leasesHash(leases));
      assert.ok(await second.getNode('node-1'));
      // The unique index survived too: a reopened store still refuses a taken subnet.
      await assert.rejects(second.createLease({ ...expected[0]!, node: 'other' }));
    } finally {
      await second.close();
    }
  });

  // The writer runs in its own process, announces each step before it starts
  // ("begin") and after its await returns ("ok"). stdout to a pipe is
  // synchronous on Linux, so an "ok" read after the kill was acknowledged
  // before it.
  const WRITER = `
    const { SqliteStore } = await import(process.env.TWILL_STORE_MODULE);
    const { parseNetConf } = await import(process.env.TWILL_CONFIG_MODULE);
    const store = new SqliteStore(process.env.TWILL_STORE_FILE);
    if (!(await store.getNetwork('n'))) await store.putNetwork('n', parseNetConf({ Network: '10.0.0.0/8' }, {}), undefined);
    let i = Number(process.env.TWILL_START);
    const subnet = (k) => '10.' + ((k >> 8) & 255) + '.' + (k & 255) + '.0/24';
    const lease = (k, ip) => ({
      network: 'n', node: 'node-' + k, subnet: subnet(k), ipv6Subnet: null, publicIP: ip, publicIPv6: null,
      backendType: 'vxlan', backendData: {}, expiresAt: new Date(Date.now() + 3600000).toISOString(), createdAt: new Date().toISOString(),
    });
    process.stdout.write('ready\\n');
    for (;; i++) {
      process.stdout.write('begin create node-' + i + '\\n');
      const l = await store.createLease(lease(i, '192.0.2.1'));
      process.stdout.write('ok create node-' + i + '\\n');
      if (i % 3 === 0) {
        process.stdout.write('begin replace node-' + i + '\\n');
        await store.replaceLease(lease(i, '192.0.2.2'), l.revision);
        process.stdout.write('ok replace node-' + i + '\\n');
      }
      if (i % 4 === 0) {
        process.stdout.write('begin delete node-' + (i - 2) + '\\n');
        await store.deleteLease('n', 'node-' + (i - 2));
        process.stdout.write('ok delete node-' + (i - 2) + '\\n');
      }
    }
  `;

  interface Round { lines: string[]; signal: NodeJS.Signals | null; stderr: string }

  /** Starts the writer and SIGKILLs it a random while after it is ready. */
  function runWriter(file: string, start: number): Promise<Round> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', WRITER], {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          ...process.env,
          TWILL_STORE_MODULE: pathToFileURL(join(ROOT, 'control/store/sqlite.ts')).href,
          TWILL_CONFIG_MODULE: pathToFileURL(join(ROOT, 'core/config.ts')).href,
          TWILL_STORE_FILE: file,
          TWILL_START: String(start),
        },
      });
      let out = '';
      let err = '';
      let killTimer: NodeJS.Timeout | undefined;
      const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (!killTimer && out.includes('ready\n')) {
          killTimer = setTimeout(() => child.kill('SIGKILL'), 20 + Math.random() * 250);
        }
      });
      child.on('error', reject);
      child.on('close', (_code, signal) => {
        clearTimeout(guard);
        if (killTimer) clearTimeout(killTimer);
        resolve({ lines: out.split('\n').filter(Boolean), signal, stderr: err });
      });
    });
  }

  test('a writer killed with SIGKILL at random moments leaves a consistent store with every acknowledged lease', async (t) => {
    const file = join(dir, 'crash.db');
    /** Nodes whose lease the writer's acknowledged steps left in place. */
    const acked = new Set<string>();
    let next = 1;
    let totalAcked = 0;
    for (let round = 0; round < 6; round++) {
      const r = await runWriter(file, next);
      assert.equal(r.signal, 'SIGKILL', `round ${round}: the writer should run until killed; stderr:\n${r.stderr}`);
      let inflight: { op: string; node: string } | undefined;
      for (const line of r.lines) {
        const m = /^(begin|ok) (create|replace|delete) (node-\d+)$/.exec(line);
        if (!m) continue;
        const [, phase, op, node] = m as unknown as [string, string, string, string];
        if (phase === 'begin') {
          inflight = { op, node };
          if (op === 'create') next = Number(node.slice(5)) + 1;
          continue;
        }
        inflight = undefined;
        totalAcked++;
        if (op === 'delete') acked.delete(node);
        else acked.add(node);
      }

      assert.ok(existsSync(file));
      const store = new SqliteStore(file);
      try {
        const net = await store.getNetwork('n');
        assert.ok(net, `round ${round}: the network survived`);
        const leases = await store.listLeases('n');
        assert.equal(net.leaseCount, leases.length, `round ${round}: leaseCount matches the leases`);
        assert.equal(net.leaseHash, leasesHash(leases), `round ${round}: leaseHash matches the leases`);
        const present = new Set(leases.map((l) => l.node));
        for (const node of acked) {
          if (inflight?.op === 'delete' && inflight.node === node) continue;
          assert.ok(present.has(node), `round ${round}: acknowledged lease of ${node} is missing`);
        }
        for (const node of present) {
          const maybe = inflight?.op === 'create' && inflight.node === node;
          assert.ok(acked.has(node) || maybe, `round ${round}: ${node} is leased though its lease was deleted or never acknowledged`);
        }
        // What the unfinished step did is now settled: carry it into the model.
        if (inflight?.op === 'create' && present.has(inflight.node)) acked.add(inflight.node);
        if (inflight?.op === 'delete' && !present.has(inflight.node)) acked.delete(inflight.node);
        assert.equal(new Set(leases.map((l) => l.subnet)).size, leases.length, 'no subnet is leased twice');
      } finally {
        await store.close();
      }
    }
    assert.ok(totalAcked > 0, 'the writer acknowledged some writes before being killed');
    t.diagnostic(`${totalAcked} acknowledged writes over 6 kills; ${acked.size} leases at the end`);
  });
});

describe('sqlite: who can read it', () => {
  test('the data directory it makes and every file of the database are the owner\'s alone, even where they were not', async () => {
    const { chmodSync, statSync, writeFileSync } = await import('node:fs');
    const fresh = join(dir, 'private', 'data');
    const store = new SqliteStore(join(fresh, 'twill.db'));
    await store.putNode({ name: 'n1', network: 'n', passwordHash: 'sha256$x$y', createdAt: '2030-01-01T00:00:00.000Z' });
    const mode = (p: string) => statSync(p).mode & 0o777;
    assert.equal(mode(fresh), 0o700);
    for (const f of ['twill.db', 'twill.db-wal', 'twill.db-shm']) assert.equal(mode(join(fresh, f)), 0o600, f);
    await store.close();
    // A database an earlier version left readable by others is closed up when opened.
    const old = join(dir, 'old.db');
    writeFileSync(old, '');
    chmodSync(old, 0o644);
    const again = new SqliteStore(old);
    await again.putNode({ name: 'n2', network: 'n', passwordHash: 'sha256$x$y', createdAt: '2030-01-01T00:00:00.000Z' });
    assert.equal(mode(old), 0o600);
    assert.equal(mode(`${old}-wal`), 0o600);
    await again.close();
  });
});
