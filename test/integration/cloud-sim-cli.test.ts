// The simulated cloud through the CLI, as a newcomer uses it: a controller
// process with --cloud sim, instances started and stopped with twill sim in
// other processes, and twill status showing routes appear, disappear and stop
// at the limit.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { nodeClientId } from '../../core/acl.js';
import { DEFAULT_PREFIX, Topics } from '../../core/topics.js';
import { addNode, startController, writeNetConf, type ControllerProc } from '../helpers/cluster.js';
import { freePort, removeTempDirs, runTwill, tempDir, waitFor } from '../helpers/procs.js';

const topics = new Topics();
const ALI_SECRET = 'ali-access-key-secret-for-tests-only';

describe('twill controller --cloud sim with twill sim and twill status', () => {
  let dir: string;
  let dataDir: string;
  let ctl: ControllerProc;
  let metricsUrl: string;

  const extra = async () => {
    const port = await freePort();
    metricsUrl = `http://127.0.0.1:${port}/metrics`;
    return ['--cloud', 'sim', '--reconcile-interval', '200ms', '--metrics-addr', `127.0.0.1:${port}`];
  };
  const sim = async (...args: string[]) => {
    const r = await runTwill(['sim', ...args, '--data-dir', dataDir]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };
  const status = async () => {
    const r = await runTwill(['status', '--data-dir', dataDir]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };
  /** node -> ROUTE column of twill status, for the demo network */
  const routes = async (): Promise<Record<string, string>> => {
    const out: Record<string, string> = {};
    for (const line of (await status()).split('\n')) {
      const m = /^demo\s+(\S+)\s+10\.60\.\d+\.0\/24\s+-\s+\S+\s+aws-vpc\s+in \S+\s+(.*)$/.exec(line);
      if (m) out[m[1] as string] = (m[2] as string).trim();
    }
    return out;
  };

  before(async () => {
    dir = tempDir('twill-sim-');
    dataDir = join(dir, 'data');
    const conf = await writeNetConf(dir, 'demo', { Network: '10.60.0.0/16', Backend: { Type: 'aws-vpc', RouteLimit: 2 } });
    const plain = await writeNetConf(dir, 'plain', { Network: '10.61.0.0/16', Backend: { Type: 'alloc' } });
    const ali = await writeNetConf(dir, 'ali', { Network: '10.62.0.0/16', Backend: { Type: 'ali-vpc', AccessKeyID: 'LTAIexampleid', AccessKeySecret: ALI_SECRET } });
    ctl = await startController({ dataDir, networks: { demo: conf, plain, ali }, extra: await extra() });
  });

  after(async () => {
    await ctl?.kill();
    removeTempDirs();
  });

  test('routes appear for running instances and stop at the limit, the rest marked pending once', async () => {
    await sim('instance', 'start', 'web-1', '--network', 'demo');
    await waitFor('web-1 routed', async () => (await routes())['web-1'] === 'ok');
    await sim('instance', 'start', 'web-2', '--network', 'demo');
    await waitFor('web-2 routed', async () => (await routes())['web-2'] === 'ok');
    await sim('instance', 'start', 'web-3', '--network', 'demo');
    await waitFor('web-3 pending', async () => (await routes())['web-3'] === 'route pending: route table full (2 of 2, Backend.RouteLimit)');
    assert.match(await status(), /1 route\(s\) pending/);
    const table = await sim('routes', '--network', 'demo');
    assert.equal(table.trim().split('\n').length, 3, table);
    assert.match(table, /rtb-sim-demo\s+10\.60\.\d+\.0\/24\s+web-1\s+instance/);
    const m = await (await fetch(metricsUrl)).text();
    assert.match(m, /twill_route_pending\{network="demo",node="web-3"\} 1/);
    assert.match(m, /twill_routes\{network="demo"\} 2/);
    // Several reconciles later, the pending node was still logged once.
    await new Promise((r) => setTimeout(r, 700));
    assert.equal(ctl.output().split('\n').filter((l) => l.includes('route pending') && l.includes('node=web-3')).length, 1);
  });

  test('a terminated instance loses its route and lease; the pending one gets the room', async () => {
    await sim('instance', 'terminate', 'web-1', '--network', 'demo');
    await waitFor('web-3 routed', async () => {
      const r = await routes();
      return r['web-1'] === undefined && r['web-3'] === 'ok';
    });
    const table = await sim('routes', '--network', 'demo');
    assert.doesNotMatch(table, /web-1/);
    assert.match(table, /web-3/);
    assert.doesNotMatch(await (await fetch(metricsUrl)).text(), /node="web-3"/);
  });

  test('a stopped instance keeps its lease without a route; started again it waits its turn', async () => {
    await sim('instance', 'stop', 'web-2');
    await waitFor('web-2 stopped', async () => (await routes())['web-2'] === 'route pending: instance is stopped');
    assert.doesNotMatch(await sim('routes', '--network', 'demo'), /web-2/);
    await sim('instance', 'start', 'web-2', '--network', 'demo');
    await waitFor('web-2 routed again', async () => (await routes())['web-2'] === 'ok');
    const list = await sim('instance', 'list', '--network', 'demo');
    assert.match(list, /web-1\s+demo\s+terminated/);
  });


  test("an ali-vpc network's access key secret reaches no node: not its own topic, not the node API, not the log", async () => {
    await sim('instance', 'start', 'ecs-1', '--network', 'ali');
    await waitFor('ecs-1 leased', async () => (await status()).split('\n').some((l) => /^ali\s+ecs-1\s+10\.62\./.test(l)));
    const creds = await addNode(dataDir, 'ecs-1', 'ali', ctl.url);
    const c = await mqtt.connectAsync(ctl.url, { clientId: nodeClientId(DEFAULT_PREFIX, 'ali', 'ecs-1'), username: creds.username, password: creds.password, reconnectPeriod: 0 });
    try {
      const own = new Promise<string>((resolve) => c.on('message', (t, p) => { if (t === topics.nodeLease('ali', 'ecs-1') && p.length) resolve(p.toString()); }));
      await c.subscribeAsync(topics.nodeLease('ali', 'ecs-1'), { qos: 1 });
      const msg = await own;
      assert.match(msg, /"lease":\{/, 'the instance reads its own lease');
      assert.ok(!msg.includes(ALI_SECRET), 'its own topic carries the access key secret');
      const snapshot = await fetch(`${ctl.api}/v2/networks/ali/snapshot`, { headers: { authorization: `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}` } });
      const body = await snapshot.text();
      assert.equal(snapshot.status, 200, body);
      assert.ok(!body.includes(ALI_SECRET), 'the node API answer carries the access key secret');
    } finally {
      await c.endAsync(true);
    }
    assert.ok(!ctl.output().includes(ALI_SECRET), "the controller's log carries the access key secret");
  });
  test('a controller killed with SIGKILL is repaired by the next one; what changed meanwhile is caught up', async () => {
    await ctl.kill();
    await sim('instance', 'start', 'web-4', '--network', 'demo');
    await sim('instance', 'terminate', 'web-3', '--network', 'demo');
    ctl = await startController({ dataDir, networks: {}, extra: await extra() });
    await waitFor('web-4 routed', async () => {
      const r = await routes();
      return r['web-4'] === 'ok' && r['web-3'] === undefined;
    });
  });

  test('the source/destination check is on at start and off once routed; a route deleted by hand comes back at a later reconcile', async () => {
    await sim('instance', 'start', 'web-5', '--network', 'demo');
    await waitFor('web-5 pending', async () => (await routes())['web-5']?.startsWith('route pending: route table full'));
    const list = await sim('instance', 'list', '--network', 'demo');
    assert.match(list, /^INSTANCE\s+NETWORK\s+STATE\s+PRIVATE IP\s+SRC\/DST CHECK$/m);
    assert.match(list, /^web-4\s+demo\s+running\s+172\.31\.\d+\.\d+\s+off$/m, 'the route controller turned off the check of the instance it routes through');
    assert.match(list, /^web-5\s+demo\s+running\s+172\.31\.\d+\.\d+\s+on$/m, 'a pending instance keeps the check EC2 starts it with');
    const table = await sim('routes', '--network', 'demo');
    const dest = /(10\.60\.\d+\.0\/24)\s+web-2\s/.exec(table)?.[1];
    assert.ok(dest, table);
    assert.equal(await sim('route', 'delete', dest, '--network', 'demo'), `route ${dest} (to web-2) deleted from rtb-sim-demo\n`);
    // (the controller reconciles every 200 ms here: the route may be back already)
    // web-2's lease is older than web-5's: the room goes back to it, not to the pending one.
    await waitFor('web-2 routed again', async () => (await sim('routes', '--network', 'demo')).split('\n').some((l) => l.split(/\s+/).slice(1, 3).join(' ') === `${dest} web-2`));
    assert.match((await routes())['web-5'] ?? '', /^route pending: route table full/);
  });

  test('bad sim commands say what is wrong', async () => {
    const r1 = await runTwill(['sim', 'instance', 'start', 'web-9', '--data-dir', dataDir]);
    assert.equal(r1.code, 2);
    assert.match(r1.stderr, /--network NET is required/);
    const r2 = await runTwill(['sim', 'instance', 'stop', 'nope', '--data-dir', dataDir]);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /instance nope does not exist/);
    const r3 = await runTwill(['sim', 'instance', 'start', 'web-1', '--network', 'demo', '--data-dir', dataDir]);
    assert.match(r3.stderr, /web-1 is terminated/);
    const r5 = await runTwill(['sim', 'route', 'delete', '10.60.250.0/24', '--network', 'demo', '--data-dir', dataDir]);
    assert.equal(r5.code, 1);
    assert.match(r5.stderr, /no route 10\.60\.250\.0\/24 in rtb-sim-demo: it holds 10\.60\./);
    const r6 = await runTwill(['sim', 'route', 'delete', '10.60.250.0/24', '--data-dir', dataDir]);
    assert.equal(r6.code, 2);
    assert.match(r6.stderr, /--network NET is required/);
    const r7 = await runTwill(['sim', 'route', 'add', '--data-dir', dataDir]);
    assert.equal(r7.code, 2);
    assert.match(r7.stderr, /route add: expected delete/);
    const r4 = await runTwill(['controller', '--cloud', 'azure']);
    assert.equal(r4.code, 2);
    assert.match(r4.stderr, /--cloud "azure" is not known: use one of aws, gce, ali, sim/);
  });
});
