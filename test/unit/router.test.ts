// The plane's one HTTP router (control/http/router.ts), as each listener of
// each host serves it: which part answers which path, the admin token before
// anything but the dashboard's files, and a 4xx (never a 500) for a request
// that names nothing, inherited property names of the asset table included.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { silentLogger } from '../../core/log.js';
import { Metrics } from '../../core/metrics.js';
import { Topics } from '../../core/topics.js';
import { createControlPlane, type ControlPlane } from '../../control/plane.js';
import type { HttpResponse, Surface } from '../../control/http/router.js';
import { splitTarget } from '../../control/http/router.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { removeTempDirs, tempDir } from '../helpers/procs.js';
import { RecordingPublisher } from '../helpers/recording-publisher.js';

const TOKEN = 'admin-token-for-tests-0123456789';
const LOCAL_API = new Set<Surface>(['admin', 'node', 'metrics']);
const LOCAL_METRICS = new Set<Surface>(['metrics', 'health']);
const FUNCTION_API = new Set<Surface>(['admin']);
const FUNCTION_NODE_API = new Set<Surface>(['node']);

describe('the HTTP router', () => {
  let store: SqliteStore;
  let plane: ControlPlane;
  const text = (r: HttpResponse) => (typeof r.body === 'string' ? r.body : r.headers['content-encoding'] === 'gzip' ? gunzipSync(r.body).toString() : r.body.toString());
  const get = (path: string, serves: Set<Surface>, headers: Record<string, string> = {}) =>
    plane.http({ method: 'GET', path, query: new URLSearchParams(), headers }, serves);
  const admin = { authorization: `Bearer ${TOKEN}` };

  before(async () => {
    store = new SqliteStore(join(tempDir(), 'twill.db'));
    plane = createControlPlane({
      store, publisher: new RecordingPublisher(), topics: new Topics(), log: silentLogger, metrics: new Metrics(),
      admin: { token: TOKEN, broker: 'mqtt://127.0.0.1:1883' },
    });
  });
  after(async () => {
    await store.close();
    removeTempDirs();
  });

  test("the dashboard's files need no token; a name the asset table inherits is no file: 401 without a token, 404 with it", async () => {
    const page = await get('/dashboard/', LOCAL_API);
    assert.equal(page.status, 200);
    assert.match(page.headers['content-type'] ?? '', /text\/html/);
    assert.equal((await get('/dashboard/app.js', FUNCTION_API)).status, 200);
    for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__']) {
      for (const serves of [LOCAL_API, FUNCTION_API]) {
        const anonymous = await get(`/dashboard/${name}`, serves);
        assert.equal(anonymous.status, 401, `/dashboard/${name} without a token`);
        const signed = await get(`/dashboard/${name}`, serves, admin);
        assert.equal(signed.status, 404, `/dashboard/${name} with the token`);
        assert.match(JSON.parse(text(signed)).error, /no such endpoint: \/dashboard\//);
      }
    }
  });

  test('each listener answers only its own paths', async () => {
    // The local API address: admin API, node API and /metrics; no /healthz (it is the admin API's path space).
    assert.equal((await get('/metrics', LOCAL_API)).status, 200);
    assert.match(text(await get('/metrics', LOCAL_API)), /twill_network_leases|# /);
    assert.equal((await get('/healthz', LOCAL_API)).status, 401);
    assert.equal((await get('/v2/networks/n/snapshot', LOCAL_API)).status, 401, 'the node API wants node credentials');
    assert.match(text(await get('/v2/networks/n/snapshot', LOCAL_API)), /missing node credentials/);
    assert.equal((await get('/v1/status', LOCAL_API)).status, 401);
    assert.equal((await get('/v1/status', LOCAL_API, admin)).status, 200);
    // --metrics-addr: /metrics and /healthz, anything else 404 saying what is there.
    assert.equal((await get('/metrics', LOCAL_METRICS)).status, 200);
    assert.equal(text(await get('/healthz', LOCAL_METRICS)), 'ok\n');
    for (const path of ['/v1/status', '/dashboard/', '/v2/networks/n/snapshot', '/']) {
      const r = await get(path, LOCAL_METRICS, admin);
      assert.equal(r.status, 404, path);
      assert.equal(text(r), 'not found: try /metrics or /healthz\n');
    }
    // The deployment's two function URLs: each its own part, nothing of the other's.
    assert.equal((await get('/v2/networks/n/snapshot', FUNCTION_API)).status, 401);
    assert.equal((await get('/v2/networks/n/snapshot', FUNCTION_API, admin)).status, 404, 'the Api function has no node API');
    assert.equal((await get('/metrics', FUNCTION_API, admin)).status, 404);
    for (const path of ['/v1/status', '/dashboard/', '/metrics']) {
      const r = await get(path, FUNCTION_NODE_API, admin);
      assert.equal(r.status, 404, path);
      assert.match(text(r), /no such endpoint/);
    }
  });

  test('a request target is split into its path and query, never parsed against a made-up host', async () => {
    const t = splitTarget('/v1/networks/a?force=true');
    assert.equal(t?.path, '/v1/networks/a');
    assert.equal(t?.query.get('force'), 'true');
    // Two slashes are a path (a URL parser would take what follows for a host, or throw): it names no endpoint.
    assert.equal(splitTarget('//')?.path, '//');
    assert.equal((await get('//', LOCAL_API)).status, 401);
    assert.equal((await get('//', LOCAL_API, admin)).status, 404);
    for (const target of ['*', 'http://x/v1/status', '']) assert.equal(splitTarget(target), undefined, `${JSON.stringify(target)} is no path: the host answers 400`);
  });

  test('no admin token configured: every admin path is 503 saying so, the dashboard included', async () => {
    const unset = createControlPlane({
      store, publisher: new RecordingPublisher(), topics: new Topics(), log: silentLogger,
      admin: { token: async () => undefined, broker: 'wss://example/mqtt' },
    });
    for (const path of ['/dashboard/', '/v1/status']) {
      const r = await unset.http({ method: 'GET', path, query: new URLSearchParams(), headers: admin }, FUNCTION_API);
      assert.equal(r.status, 503, path);
      assert.match(text(r), /the admin token is not configured/);
    }
  });
});
