// The CLI against the admin HTTP API of a running controller: what an
// operator of the serverless deployment does, here against the local one.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { nodeClientId } from '../../core/acl.js';
import { DEFAULT_PREFIX, Topics } from '../../core/topics.js';
import { addNode, startAgent, startController, subnetOf, writeNetConf, type AgentProc, type ControllerProc } from '../helpers/cluster.js';
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
    const c = await mqtt.connectAsync(ctl.url, { username: creds.username, password: creds.password, clientId: nodeClientId(DEFAULT_PREFIX, 'lab', 'n1'), reconnectPeriod: 0 });
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

  test('network list and node list as tables and as JSON, through the API and from the data directory', async () => {
    for (const where of [env, { TWILL_API: '' }]) {
      const extra = where === env ? [] : ['--data-dir', ctl.dataDir];
      const t = await runTwill(['network', 'list', ...extra], where);
      assert.equal(t.code, 0, t.stderr);
      assert.match(t.stdout, /^NAME\s+NETWORK\s+IPV6 NETWORK\s+BACKEND\s+LEASES\s+REVISION\n/);
      assert.match(t.stdout, /\nlab\s+10\.70\.0\.0\/16\s+-\s+host-gw\s+1\s+\d+\n/);
      const j = JSON.parse((await runTwill(['network', 'list', '-o', 'json', ...extra], where)).stdout) as { name: string; backend: string; leases: number }[];
      assert.deepEqual(j.filter((n) => n.name === 'lab').map((n) => [n.backend, n.leases]), [['host-gw', 1]]);
      const nodes = JSON.parse((await runTwill(['node', 'list', '-o', 'json', ...extra], where)).stdout) as { name: string; network: string }[];
      assert.deepEqual(nodes.map((n) => [n.name, n.network]), [['n1', 'lab']]);
      assert.ok(!JSON.stringify(nodes).includes('password'), 'no hash or password in the list');
    }
    const bad = await runTwill(['network', 'list', '-o', 'yaml'], env);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /-o yaml: the output formats are table and json/);
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

  test('a request body over 64 KiB is refused with 413 and changes nothing', async () => {
    const before = await (await fetch(`${api}/v1/networks`, { headers: { authorization: `Bearer ${env.TWILL_API_TOKEN}` } })).json();
    const huge = JSON.stringify({ Network: '10.71.0.0/16', Padding: 'x'.repeat(200 * 1024) });
    const r = await fetch(`${api}/v1/networks/huge`, { method: 'PUT', headers: { authorization: `Bearer ${env.TWILL_API_TOKEN}`, 'content-type': 'application/json' }, body: huge }).catch((e: Error) => e);
    assert.ok(!(r instanceof Error), `an answer, not a dropped connection: ${r instanceof Error ? r.message : ''}`);
    assert.equal(r.status, 413);
    assert.match(((await r.json()) as { error: string }).error, /larger than 65536 bytes: nothing was changed/);
    // The same without a Content-Length (chunked): refused once the limit is passed.
    const chunked = new ReadableStream({ start(c) { for (let i = 0; i < 10; i++) c.enqueue(new TextEncoder().encode('x'.repeat(16 * 1024))); c.close(); } });
    const rc = await fetch(`${api}/v1/networks/huge`, { method: 'PUT', headers: { authorization: `Bearer ${env.TWILL_API_TOKEN}` }, body: chunked, duplex: 'half' } as RequestInit).catch((e: Error) => e);
    assert.ok(!(rc instanceof Error), `an answer: ${rc instanceof Error ? rc.message : ''}`);
    assert.equal(rc.status, 413);
    const after = await (await fetch(`${api}/v1/networks`, { headers: { authorization: `Bearer ${env.TWILL_API_TOKEN}` } })).json();
    assert.deepEqual(after, before);
  });

  test('without the admin token a body is refused before it is read, and a 100 MB one is cut off', async () => {
    const { connect } = await import('node:net');
    const { port } = new URL(api);
    const sock = connect(Number(port), '127.0.0.1');
    let answer = '';
    sock.on('data', (d) => { answer += d.toString(); });
    const closed = new Promise<void>((r) => sock.on('close', () => r()));
    sock.on('error', () => {});
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.write(`PUT /v1/networks/x HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nContent-Length: ${100 * 1024 * 1024}\r\n\r\n`);
    // Send the body as fast as the server takes it, until it hangs up.
    const chunk = Buffer.alloc(64 * 1024, 0x78);
    let sent = 0;
    let open = true;
    void closed.then(() => { open = false; });
    while (open && sent < 100 * 1024 * 1024) {
      if (!sock.write(chunk)) await Promise.race([new Promise((r) => sock.once('drain', r)), closed]);
      sent += chunk.length;
      // Reads what came back between writes, as an HTTP client does.
      await new Promise((r) => setImmediate(r));
    }
    await closed;
    assert.match(answer, /^HTTP\/1\.1 401 /, 'answered 401 at once');
    assert.match(answer, /missing admin token/);
    assert.ok(sent < 32 * 1024 * 1024, `the connection was cut long before 100 MB (after ${sent} bytes sent)`);
  });

  test('a malformed %-escape in a path is a 400 naming it, not a 500', async () => {
    const r = await fetch(`${api}/v1/nodes/%E0%A4%A`, { method: 'DELETE', headers: { authorization: `Bearer ${env.TWILL_API_TOKEN}` } });
    assert.equal(r.status, 400);
    assert.match(((await r.json()) as { error: string }).error, /malformed %-escape/);
  });

  test("a name the dashboard's asset table inherits is no file, a target that is no path is a 400: never a 500, and the controller serves on", async () => {
    for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
      const anonymous = await fetch(`${api}/dashboard/${name}`);
      assert.equal(anonymous.status, 401, `/dashboard/${name} without a token: no file, so the admin API's, which wants the token`);
      const signed = await fetch(`${api}/dashboard/${name}`, { headers: { authorization: `Bearer ${env.TWILL_API_TOKEN}` } });
      assert.equal(signed.status, 404, `/dashboard/${name} with the token`);
    }
    // Request targets fetch would never send: written on a socket as a hostile client would.
    const raw = async (target: string) => {
      const { connect } = await import('node:net');
      const sock = connect(Number(new URL(api).port), '127.0.0.1');
      let answer = '';
      sock.on('data', (d) => { answer += d.toString(); });
      sock.on('error', () => {});
      await new Promise<void>((r) => sock.once('connect', () => r()));
      sock.write(`GET ${target} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n`);
      await new Promise<void>((r) => sock.on('close', () => r()));
      return Number(/^HTTP\/1\.1 (\d{3}) /.exec(answer)?.[1]);
    };
    for (const target of ['//', '//[', '//x/v1/status', '*']) {
      const status = await raw(target);
      assert.ok(status >= 400 && status < 500, `GET ${target}: ${status}, a 4xx`);
    }
    assert.equal((await fetch(`${api}/dashboard/`)).status, 200, 'the controller still serves');
    assert.doesNotMatch(ctl.output(), /internal error|TypeError/);
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

describe('twill agent checks where it writes before it starts', () => {
  test('an unusable state directory or subnet file exits 1 at once with one line naming it, and never spins', async () => {
    const { writeFileSync } = await import('node:fs');
    const base = tempDir();
    const config = join(base, 'agent.json');
    writeFileSync(config, JSON.stringify({ broker: 'mqtt://127.0.0.1:9', network: 'n', node: 'a', username: 'a', password: 'p' }));
    const cases: [string[], RegExp][] = [
      // under /proc, mkdir answers ENOENT for ever: Node's recursive mkdir looped on it at full CPU
      [['--state-dir', '/proc/nope/deeper'], /^twill agent: state directory \/proc\/nope\/deeper cannot be written: ENOENT \(mkdir\); set --state-dir/],
      [['--state-dir', `${config}/x`], /^twill agent: state directory \S+ cannot be written: ENOTDIR/],
      [['--state-dir', join(base, 'state'), '--subnet-file', '/proc/nope/subnet.env'], /^twill agent: subnet file \/proc\/nope\/subnet\.env cannot be written: its directory: ENOENT/],
      [['--state-dir', join(base, 'state'), '--subnet-file', base], /^twill agent: subnet file \S+ is a directory; set --subnet-file/],
    ];
    for (const [flags, why] of cases) {
      const r = await runTwill(['agent', '--config', config, ...flags]);
      assert.equal(r.code, 1, `${flags.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, why);
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    }
    removeTempDirs();
  });
});

describe('twill agent stops on SIGTERM in every state', () => {
  after(async () => removeTempDirs());

  test('unreachable broker, refused login, holding a lease: each exits 0 within its promised 4 s', async () => {
    const base = tempDir();
    const net = await writeNetConf(base, 'net', { Network: '10.72.0.0/16', Backend: { Type: 'alloc' } });
    const ctl = await startController({ dataDir: join(base, 'data'), networks: { sig: net } });
    try {
      const good = await addNode(ctl.dataDir, 'sig-good', 'sig', ctl.url);
      const states: [string, () => Promise<AgentProc>, (a: AgentProc) => Promise<unknown>][] = [
        ['broker unreachable', async () => startAgent(base, { ...good, node: 'sig-a', username: 'sig-a', broker: `mqtt://127.0.0.1:${await freePort()}` }), (a) => waitFor('connect errors', () => /broker connection error/.test(a.output()))],
        ['login refused', async () => startAgent(base, { ...(await addNode(ctl.dataDir, 'sig-b', 'sig', ctl.url)), password: 'wrong' }), (a) => waitFor('login refused', async () => /login refused/.test(await (await fetch(`${a.metrics}/readyz`)).text()))],
        ['holding a lease', async () => startAgent(base, good), (a) => subnetOf(a)],
      ];
      for (const [state, start, reached] of states) {
        const a = await start();
        await reached(a);
        const t0 = Date.now();
        await a.stop();
        const took = Date.now() - t0;
        assert.equal(await a.exited, 0, `${state}: ${a.output().slice(-500)}`);
        assert.ok(took < 4_000 + 2_000, `${state}: exited ${took} ms after SIGTERM`);
      }
    } finally {
      await ctl.kill();
    }
  });
});
