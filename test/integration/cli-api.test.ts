// The CLI against the admin HTTP API of a running controller: what an
// operator of the serverless deployment does, here against the local one.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { nodeClientId } from '../../core/acl.js';
import { Topics } from '../../core/topics.js';
import { startController, writeNetConf, type ControllerProc } from '../helpers/cluster.js';
import { freePort, removeTempDirs, runTwill, tempDir, waitFor } from '../helpers/procs.js';

describe('twill CLI with --api', () => {
  let dir: string;
  let ctl: ControllerProc;
  let api: string;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    dir = tempDir();
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    ctl = await startController({ dataDir: join(dir, 'data'), networks: {}, extra: ['--api-listen', `127.0.0.1:${port}`] });
    const tokenFile = join(dir, 'data', 'admin-token');
    assert.equal(statSync(tokenFile).mode & 0o777, 0o600, 'the admin token is readable by its owner only');
    env = { TWILL_API: api, TWILL_API_TOKEN: readFileSync(tokenFile, 'utf8').trim() };
  });
  after(async () => {
    await ctl?.kill();
    removeTempDirs();
  });

  test('network set, node add, lease reserve and status go through the API, and agents hear of it at once', async () => {
    const file = await writeNetConf(dir, 'net', { Network: '10.70.0.0/16', Backend: { Type: 'host-gw' } });
    const set = await runTwill(['network', 'set', 'lab', file], env);
    assert.equal(set.code, 0, set.stderr);
    assert.match(set.stdout, /network lab stored/);
    const add = await runTwill(['node', 'add', 'n1', '--network', 'lab'], env);
    assert.equal(add.code, 0, add.stderr);
    const creds = JSON.parse(add.stdout) as { broker: string; username: string; password: string };
    assert.equal(creds.broker, ctl.url);
    // A subscriber sees the reservation without waiting for a sync: the API is the controller.
    const c = await mqtt.connectAsync(ctl.url, { username: creds.username, password: creds.password, clientId: nodeClientId('lab', 'n1'), reconnectPeriod: 0 });
    const seen = new Map<string, string>();
    c.on('message', (t, p) => seen.set(t, p.toString()));
    await c.subscribeAsync(new Topics().netChanges('lab'), { qos: 1 });
    const r = await runTwill(['lease', 'reserve', 'lab', '--node', 'n1', '--subnet', '10.70.9.0/24'], env);
    assert.equal(r.code, 0, r.stderr);
    await waitFor('change published', () => seen.get(new Topics().netChanges('lab'))?.includes('10.70.9.0/24'), 3_000);
    await c.endAsync();
    const st = await runTwill(['status'], env);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, /lab\s+n1\s+10\.70\.9\.0\/24\s+-\s+-\s+host-gw\s+never \(reserved\)/);
    const json = JSON.parse((await runTwill(['status', '--json'], env)).stdout) as { networks: { name: string }[] };
    assert.deepEqual(json.networks.map((n) => n.name), ['lab']);
  });

  test('errors come back with the API\'s reason; a wrong or missing token is refused', async () => {
    const bad = await writeNetConf(dir, 'bad', { Network: '10.70.0.0/16', SubnetLen: 31 });
    const r = await runTwill(['network', 'set', 'lab2', bad], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /invalid network config: SubnetLen 31 is too long/);
    const locked = await writeNetConf(dir, 'locked', { Network: '10.70.0.0/16', Backend: { Type: 'vxlan' } });
    assert.match((await runTwill(['network', 'set', 'lab', locked], env)).stderr, /backend type cannot change to vxlan/);
    const wrong = await runTwill(['status'], { ...env, TWILL_API_TOKEN: 'nope' });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /wrong admin token/);
    const none = await runTwill(['status'], { TWILL_API: api, TWILL_API_TOKEN: '' });
    assert.equal(none.code, 2);
    assert.match(none.stderr, /needs the admin token/);
    assert.match(ctl.output(), /api call refused: wrong admin token/);
    assert.doesNotMatch(ctl.output(), new RegExp(env.TWILL_API_TOKEN as string), 'the token is never logged');
  });

  test('a request body over 1 MiB is refused with 413 and changes nothing', async () => {
    const before = await (await fetch(`${api}/v1/networks`, { headers: { authorization: `Bearer ${env.TWILL_API_TOKEN}` } })).json();
    const huge = JSON.stringify({ Network: '10.71.0.0/16', Padding: 'x'.repeat(2 * 1024 * 1024) });
    const r = await fetch(`${api}/v1/networks/huge`, { method: 'PUT', headers: { authorization: `Bearer ${env.TWILL_API_TOKEN}`, 'content-type': 'application/json' }, body: huge }).catch((e: Error) => e);
    assert.ok(!(r instanceof Error), `an answer, not a dropped connection: ${r instanceof Error ? r.message : ''}`);
    assert.equal(r.status, 413);
    assert.match(((await r.json()) as { error: string }).error, /larger than 1048576 bytes: nothing was changed/);
    const after = await (await fetch(`${api}/v1/networks`, { headers: { authorization: `Bearer ${env.TWILL_API_TOKEN}` } })).json();
    assert.deepEqual(after, before);
  });
});

describe('twill CLI on a data directory that is not there', () => {
  test('status, node and lease say where they looked, exit 1, and create nothing', async () => {
    const { existsSync } = await import('node:fs');
    const base = tempDir();
    const missing = join(base, 'not-here');
    for (const args of [['status'], ['node', 'list'], ['node', 'add', 'n1', '--network', 'net'], ['lease', 'release', 'net', '--node', 'n1']]) {
      const r = await runTwill([...args, '--data-dir', missing]);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`no twill data directory at ${missing.replaceAll('/', '\\/')} \\(no twill\\.db there\\): start twill controller --data-dir`));
      assert.equal(existsSync(missing), false, `${args.join(' ')} created ${missing}`);
    }
    removeTempDirs();
  });
});
