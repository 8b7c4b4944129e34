// The admin HTTP API's router: auth, every endpoint, and errors with the right status.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { silentLogger } from '../../core/log.js';
import { Topics } from '../../core/topics.js';
import { handleApi, type ApiDeps } from '../../control/http/api.js';
import { Controller } from '../../control/controller/controller.js';
import { verifyPassword } from '../../control/auth/credentials.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { removeTempDirs, tempDir } from '../helpers/procs.js';
import { RecordingPublisher } from '../helpers/recording-publisher.js';

const TOKEN = 'admin-token-for-tests-0123456789';

describe('admin API', () => {
  let store: SqliteStore;
  let deps: ApiDeps;
  const pub = new RecordingPublisher();
  const call = (method: string, path: string, body?: unknown, token: string | null = TOKEN) =>
    handleApi({ method, path, headers: token === null ? {} : { authorization: `Bearer ${token}` }, body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body) }, deps);
  const read = async (p: ReturnType<typeof call>) => {
    const r = await p;
    return { status: r.status, json: JSON.parse(r.body) as Record<string, unknown> & { error?: string } };
  };

  before(() => {
    store = new SqliteStore(join(tempDir(), 'twill.db'));
    const controller = new Controller(store, pub, { topics: new Topics(), log: silentLogger });
    deps = { store, controller, adminToken: TOKEN, broker: 'mqtts://broker.example:8883', log: silentLogger };
  });
  after(async () => {
    await store.close();
    removeTempDirs();
  });

  test('no token is 401, a wrong token is 403, and neither changes anything', async () => {
    assert.equal((await call('PUT', '/v1/networks/blue', { Network: '10.1.0.0/16' }, null)).status, 401);
    assert.equal((await call('PUT', '/v1/networks/blue', { Network: '10.1.0.0/16' }, 'nope')).status, 403);
    assert.equal((await store.listNetworks()).length, 0);
  });

  test('a network is created from flannel\'s net-conf.json; an invalid one is 400 with every error', async () => {
    const ok = await read(call('PUT', '/v1/networks/blue', { Network: '10.1.0.0/16', Backend: { Type: 'vxlan' } }));
    assert.equal(ok.status, 200);
    assert.equal((await store.getNetwork('blue'))?.config.SubnetLen, 24);
    const warned = await read(call('PUT', '/v1/networks/green', { Network: '10.2.0.0/16', Netwrk: 1 }));
    assert.equal(warned.status, 200);
    assert.deepEqual(warned.json.warnings, ['Netwrk: unknown field, ignored as flannel does; did you mean Network?']);
    const bad = await read(call('PUT', '/v1/networks/red', { Network: '10.1.0.0/16', SubnetLen: 31, Bogus: 1, Backend: { Type: 'vxlan', VNI: 0 } }));
    assert.equal(bad.status, 400);
    assert.equal((bad.json.errors as string[]).length, 2);
    assert.match((bad.json.errors as string[]).join('\n'), /SubnetLen 31 is too long/);
    assert.equal((await read(call('PUT', '/v1/networks/red', 'not json'))).status, 400);
    assert.equal(await store.getNetwork('red'), undefined);
  });

  test('adding a node returns its agent config once; the store keeps only a hash', async () => {
    const r = await read(call('POST', '/v1/nodes', { name: 'h1', network: 'blue' }));
    assert.equal(r.status, 201);
    assert.equal(r.json.broker, 'mqtts://broker.example:8883');
    assert.equal(r.json.username, 'h1');
    const rec = await store.getNode('h1');
    assert.ok(rec && !rec.passwordHash.includes(r.json.password as string));
    assert.equal(await verifyPassword(r.json.password as string, rec.passwordHash), true);
    assert.equal((await read(call('POST', '/v1/nodes', { name: 'h2', network: 'nowhere' }))).status, 404);
    assert.equal((await read(call('POST', '/v1/nodes', { name: 'bad/name', network: 'blue' }))).status, 400);
    assert.equal((await read(call('POST', '/v1/nodes', { network: 'blue' }))).status, 400);
    const list = await read(call('GET', '/v1/nodes'));
    assert.deepEqual((list.json as unknown as { name: string }[]).map((n) => n.name), ['h1']);
  });

  test('reserve and release a lease; status shows it; the backend type is then locked', async () => {
    const r = await read(call('PUT', '/v1/leases/blue/h1', { subnet: '10.1.7.0/24' }));
    assert.equal(r.status, 200);
    assert.equal(r.json.expiresAt, null);
    const st = await read(call('GET', '/v1/status'));
    assert.deepEqual((st.json.leases as { node: string; subnet: string }[]).map((l) => [l.node, l.subnet]), [['h1', '10.1.7.0/24']]);
    assert.equal((await read(call('PUT', '/v1/leases/blue/h9', { subnet: '10.2.0.0/24' }))).status, 400);
    const locked = await read(call('PUT', '/v1/networks/blue', { Network: '10.1.0.0/16', Backend: { Type: 'host-gw' } }));
    assert.equal(locked.status, 409);
    assert.match(locked.json.error as string, /backend type cannot change to host-gw/);
    assert.equal((await read(call('DELETE', '/v1/leases/blue/h1'))).status, 200);
    assert.equal((await read(call('DELETE', '/v1/leases/blue/h1'))).status, 404);
    assert.equal(pub.retained(new Topics().nodeLease('blue', 'h1')), '', 'the release deleted the retained lease');
    assert.equal(JSON.parse(pub.sent.at(-1)!.payload).lease, null, 'and told the node, live');
  });

  test('unknown paths are 404, wrong methods 405 with Allow, and removing a node revokes it', async () => {
    assert.equal((await call('GET', '/v1/nope')).status, 404);
    const m = await call('PATCH', '/v1/nodes');
    assert.equal(m.status, 405);
    assert.equal(m.headers.allow, 'GET, POST');
    assert.equal((await call('DELETE', '/v1/nodes/h1')).status, 200);
    assert.equal(await store.getNode('h1'), undefined);
    assert.equal((await call('DELETE', '/v1/nodes/h1')).status, 404);
  });
});
