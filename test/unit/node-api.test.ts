// The API agents read their network from (protocol v2's list): the local
// controller's HTTP server, real SQLite, real HTTP, node credentials.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import { silentLogger } from '../../core/log.js';
import { addNode } from '../../control/http/admin.js';
import { startLocalController, type LocalController } from '../../control/local/server.js';
import { Topics } from '../../core/topics.js';
import { Controller } from '../../control/controller/controller.js';
import { VerifiedCredentials } from '../../control/auth/credentials.js';
import { handleNodeApi, MAX_PAGE_BYTES, SnapshotCache } from '../../control/http/node-api.js';
import { FUNCTION_URL_MAX_BYTES } from '../helpers/serverless.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { RecordingPublisher } from '../helpers/recording-publisher.js';

const PSK = 'a1b2c3d4'.repeat(12);

describe('node API: snapshot and changes', () => {
  let dir: string;
  let lc: LocalController;
  let api: string;
  let creds: { username: string; password: string };
  let other: { username: string; password: string };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'twill-node-api-'));
    lc = await startLocalController({
      dataDir: dir, listen: '127.0.0.1:0', apiListen: '127.0.0.1:0', log: silentLogger,
      networks: [
        { name: 'sec', config: parseNetConf({ Network: '10.60.0.0/16', Backend: { Type: 'ipsec', PSK } }, {}) },
        { name: 'else', config: parseNetConf({ Network: '10.61.0.0/16', Backend: { Type: 'alloc' } }, {}) },
      ],
    });
    api = lc.apiUrl as string;
    for (let i = 0; i < 5; i++) await lc.controller.join('sec', `n${i}`, { publicIP: `192.0.2.${i + 1}` });
    creds = await addNode(lc.store, { name: 'reader', network: 'sec', broker: lc.url });
    other = await addNode(lc.store, { name: 'outsider', network: 'else', broker: lc.url });
  });
  after(async () => {
    await lc?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const basic = (c: { username: string; password: string }) => `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
  const get = (path: string, c: { username: string; password: string } | null = creds, headers: Record<string, string> = {}) =>
    fetch(`${api}${path}`, { headers: { ...(c && { authorization: basic(c) }), ...headers } });

  test('the snapshot comes in pages by node name, with the revision read before each page, and the PSK masked', async () => {
    const leases: Lease[] = [];
    let after: string | null = null;
    let pages = 0;
    let revision = 0;
    do {
      const r = await get(`/v2/networks/sec/snapshot?limit=2${after ? `&after=${after}` : ''}`);
      assert.equal(r.status, 200);
      const page = (await r.json()) as { revision: number; config: { Backend: { PSK: string } }; leases: Lease[]; next: string | null };
      assert.notEqual(page.config.Backend.PSK, PSK);
      assert.ok(!JSON.stringify(page).includes(PSK), 'the PSK is nowhere in the snapshot');
      leases.push(...page.leases);
      revision = page.revision;
      after = page.next;
      pages++;
    } while (after);
    assert.equal(pages, 3);
    assert.deepEqual(leases, await lc.store.listLeases('sec'));
    assert.equal(revision, (await lc.store.getNetwork('sec'))?.revision);
  });

  test('a large answer is gzipped when the agent asks for it', async () => {
    const r = await get('/v2/networks/sec/snapshot', creds, { 'accept-encoding': 'gzip' });
    assert.equal(r.headers.get('content-encoding'), 'gzip');
    const page = (await r.json()) as { leases: Lease[] };
    assert.equal(page.leases.length, 5);
  });

  test('changes since a revision: every peer-visible write after it, in order; a renewal is none', async () => {
    const since = (await lc.store.getNetwork('sec'))!.revision;
    await lc.controller.join('sec', 'n1', { publicIP: '192.0.2.2' }); // a renewal
    await lc.controller.join('sec', 'late', { publicIP: '192.0.2.50' });
    await lc.controller.release('sec', 'n2');
    const r = await get(`/v2/networks/sec/changes?since=${since}`);
    assert.equal(r.status, 200);
    const body = (await r.json()) as { revision: number; changes: { revision: number; node: string; lease: Lease | null }[]; more: boolean };
    assert.deepEqual(body.changes.map((c) => [c.revision, c.node, c.lease?.subnet ?? null]), [
      [since + 1, 'late', (await lc.store.getLease('sec', 'late'))!.subnet],
      [since + 2, 'n2', null],
    ]);
    assert.equal(body.revision, since + 2);
    assert.equal(body.more, false);
    const ahead = await get(`/v2/networks/sec/changes?since=${since + 99}`);
    assert.equal(ahead.status, 410);
    assert.match(((await ahead.json()) as { error: string }).error, /no longer reaches back to revision \d+: fetch the snapshot/);
  });

  test('only a node of the network, with its own password, reads it; bad requests say what is wrong', async () => {
    const none = await get('/v2/networks/sec/snapshot', null);
    assert.equal(none.status, 401);
    assert.match(none.headers.get('www-authenticate') ?? '', /^Basic/);
    assert.equal((await get('/v2/networks/sec/snapshot', { username: 'reader', password: 'wrong' })).status, 403);
    assert.equal((await get('/v2/networks/sec/snapshot', { username: 'nobody', password: 'x' })).status, 403);
    assert.equal((await get('/v2/networks/sec/snapshot', other)).status, 403, 'a node of another network');
    assert.equal((await get('/v2/networks/else/snapshot', other)).status, 200);
    const bad = await get('/v2/networks/sec/snapshot?limit=0');
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { error: string }).error, /limit must be a whole number from 1 to 5000, not "0"/);
    assert.equal((await get('/v2/networks/sec/changes')).status, 400);
    assert.equal((await get('/v2/networks/sec/snapshot?after=../x')).status, 400);
    assert.equal((await get('/v2/networks/sec/nothing')).status, 404);
    assert.equal((await fetch(`${api}/v2/networks/sec/snapshot`, { method: 'POST', headers: { authorization: basic(creds) } })).status, 405);
  });

  test('a rotated password is checked afresh: the old one, though verified before, is refused', async () => {
    assert.equal((await get('/v2/networks/sec/snapshot')).status, 200);
    const rotated = await addNode(lc.store, { name: 'reader', network: 'sec', broker: lc.url, rotate: true });
    assert.equal((await get('/v2/networks/sec/snapshot')).status, 403);
    assert.equal((await get('/v2/networks/sec/snapshot', rotated)).status, 200);
    creds = rotated;
  });
});

/** A SQLite store with network `net` (Network as given) and node `me`, for the router alone; removed afterwards. */
async function withNetwork(network: string, run: (w: { store: SqliteStore; controller: Controller; me: { password: string } }) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'twill-node-api-router-'));
  const store = new SqliteStore(join(dir, 'twill.db'));
  try {
    const controller = new Controller(store, new RecordingPublisher(), { topics: new Topics(), log: silentLogger });
    await controller.applyNetwork('net', parseNetConf({ Network: network, SubnetLen: 24, Backend: { Type: 'alloc' } }, {}));
    const me = await addNode(store, { name: 'me', network: 'net', broker: 'mqtt://127.0.0.1:1' });
    await run({ store, controller, me });
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('node API: a fleet asking at once', () => {
  test('a snapshot page is built once a second and says the revision it was read at; changes are always fresh', async () => {
    await withNetwork('10.62.0.0/16', async ({ store, controller, me }) => {
      let now = 1_000_000;
      const deps = { store, credentials: new VerifiedCredentials(store), log: silentLogger, cache: new SnapshotCache(1000), now: () => now };
      const ask = async (path: string, query = '') => {
        const r = await handleNodeApi({ method: 'GET', path: `/v2/networks/net/${path}`, query: new URLSearchParams(query), headers: { authorization: `Basic ${Buffer.from(`me:${me.password}`).toString('base64')}` } }, deps);
        assert.equal(r.status, 200, r.body.toString());
        return JSON.parse(r.body.toString()) as { revision: number; leases?: Lease[]; changes?: { node: string }[] };
      };
      await controller.join('net', 'a', { publicIP: '192.0.2.1' });
      const first = await ask('snapshot');
      await controller.join('net', 'b', { publicIP: '192.0.2.2' });
      const again = await ask('snapshot');
      assert.deepEqual(again, first, 'within the second: the same page, at its own revision');
      const since = await ask('changes', `since=${again.revision}`);
      assert.deepEqual(since.changes?.map((c) => c.node), ['b'], 'the changes since it bring the rest');
      now += 1000;
      const later = await ask('snapshot');
      assert.deepEqual(later.leases?.map((l) => l.node).sort(), ['a', 'b']);
      assert.ok(later.revision > first.revision);
      // the credentials are still checked on a cached page
      const r = await handleNodeApi({ method: 'GET', path: '/v2/networks/net/snapshot', query: new URLSearchParams(), headers: { authorization: `Basic ${Buffer.from('me:wrong').toString('base64')}` } }, deps);
      assert.equal(r.status, 403);
    });
  });
});

describe('node API: heavy leases', () => {
  test('a snapshot page stops before 4 MB of leases, so the function URL can carry it, and the pages still hold every lease once', async () => {
    await withNetwork('10.0.0.0/8', async ({ store, controller, me }) => {
      // 16 fields of 500 characters: the most backend data a hello may carry, ~8 KB a lease
      const heavy = Object.fromEntries(Array.from({ length: 16 }, (_, k) => [`k${k}`, 'x'.repeat(500)]));
      for (let i = 0; i < 700; i++) await controller.join('net', `n${i}`, { publicIP: '192.0.2.1', backendData: heavy });
      const deps = { store, credentials: new VerifiedCredentials(store), log: silentLogger };
      const seen: string[] = [];
      let after: string | null = null;
      let pages = 0;
      do {
        const r = await handleNodeApi({ method: 'GET', path: '/v2/networks/net/snapshot', query: new URLSearchParams({ limit: '5000', ...(after ? { after } : {}) }), headers: { authorization: `Basic ${Buffer.from(`me:${me.password}`).toString('base64')}` } }, deps);
        assert.equal(r.status, 200);
        assert.ok(r.body.length <= MAX_PAGE_BYTES + 64 * 1024, `page of ${r.body.length} bytes`);
        assert.ok(Buffer.byteLength(r.body.toString('base64')) < FUNCTION_URL_MAX_BYTES);
        const page = JSON.parse(r.body.toString()) as { leases: Lease[]; next: string | null };
        seen.push(...page.leases.map((l) => l.node));
        after = page.next;
        pages++;
      } while (after);
      assert.ok(pages >= 2, `${pages} pages`);
      assert.equal(seen.length, 700);
      assert.equal(new Set(seen).size, 700);
    });
  });
});
