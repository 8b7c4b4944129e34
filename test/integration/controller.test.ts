// The controller and agents over real MQTT connections, as processes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { nodeClientId } from '../../core/acl.js';
import { readSubnetEnv } from '../../agent/subnet-env.js';
import { DEFAULT_PREFIX, Topics } from '../../core/topics.js';
import { addNode, metric, snapshotAs, startAgent, startController, subnetOf, withStore, writeNetConf, type AgentProc, type ControllerProc } from '../helpers/cluster.js';
import { removeTempDirs, runTwill, tempDir, waitFor } from '../helpers/procs.js';

const topics = new Topics();
// Leases are short so that the expiry test is quick; live agents renew with
// most of the lease still left (at 2 s of 8), so a renewal delayed by a busy
// machine still lands in time.
const TTL = ['--lease-ttl', '8s', '--sync-interval', '300ms'];
const RENEW = ['--renew-margin', '6s'];

/** Connects as a node and records every message on the topics it subscribes to. */
async function client(url: string, username: string, password: string, clientId = nodeClientId(DEFAULT_PREFIX, 'blue', username)) {
  const c = await mqtt.connectAsync(url, { username, password, clientId, reconnectPeriod: 0 });
  const seen = new Map<string, string>();
  c.on('message', (t, p) => seen.set(t, p.toString()));
  return { c, seen };
}

describe('controller and agents over MQTT', () => {
  let dir: string;
  let ctl: ControllerProc;
  const agents: AgentProc[] = [];

  before(async () => {
    dir = tempDir();
    const net = await writeNetConf(dir, 'net', { Network: '10.20.0.0/16', Backend: { Type: 'alloc' } });
    const small = await writeNetConf(dir, 'small', { Network: '10.30.0.0/22', Backend: { Type: 'alloc' } });
    ctl = await startController({ dataDir: join(dir, 'data'), networks: { blue: net, tiny: small }, extra: TTL });
  });

  after(async () => {
    for (const a of agents) await a.kill();
    await ctl?.kill();
    removeTempDirs();
  });

  test('an agent joins, gets a lease and writes subnet.env as flannel does', async () => {
    const creds = await addNode(ctl.dataDir, 'alpha', 'blue', ctl.url);
    assert.equal(creds.username, 'alpha');
    assert.ok(creds.password.length >= 24);
    const a = await startAgent(dir, creds, RENEW);
    agents.push(a);
    const subnet = await subnetOf(a);
    assert.match(subnet, /^10\.20\.\d+\.1\/24$/);
    const env = readSubnetEnv(a.subnetFile);
    assert.equal(env.FLANNEL_NETWORK, '10.20.0.0/16');
    assert.equal(env.FLANNEL_IPMASQ, 'false');
    assert.ok(Number(env.FLANNEL_MTU) > 0);
    await waitFor('readyz', async () => (await fetch(`${a.metrics}/readyz`)).status === 200);
    assert.equal((await fetch(`${a.metrics}/healthz`)).status, 200);
    assert.equal(await metric(a, 'twill_agent_mqtt_connected'), 1);
    // The store holds the lease, and the agent's status arrives as online.
    const lease = await withStore(ctl.dataDir, (s) => s.getLease('blue', 'alpha'));
    assert.equal(lease?.subnet, subnet.replace('.1/', '.0/'));
    await waitFor('status online', () => withStore(ctl.dataDir, async (s) => (await s.listStatus()).find((r) => r.node === 'alpha' && r.status.state === 'online')));
    // The password is not in the store, only a hash.
    const node = await withStore(ctl.dataDir, (s) => s.getNode('alpha'));
    assert.ok(node && !node.passwordHash.includes(creds.password));
    // twill status shows it in a table
    const st = await runTwill(['status', '--data-dir', ctl.dataDir]);
    assert.equal(st.code, 0);
    assert.match(st.stdout, /alpha\s+10\.20\.\d+\.0\/24/);
    assert.match(st.stdout, /alpha\s+online/);
  });

  test('a peer appears in every agent, and a restart keeps the subnet', async () => {
    const creds = await addNode(ctl.dataDir, 'beta', 'blue', ctl.url);
    let b = await startAgent(dir, creds, RENEW);
    agents.push(b);
    const first = await subnetOf(b);
    const alpha = agents[0] as AgentProc;
    await waitFor('alpha sees beta', async () => (await metric(alpha, 'twill_agent_peers')) === 1);
    await b.kill();
    b = await startAgent(dir, creds, RENEW, b);
    agents.push(b);
    await waitFor('beta ready again', async () => (await fetch(`${b.metrics}/readyz`).catch(() => undefined))?.status === 200);
    assert.equal(readSubnetEnv(b.subnetFile).FLANNEL_SUBNET, first);
    // Even after its lease is gone, the state directory brings back the same subnet.
    await b.kill();
    const r = await runTwill(['lease', 'release', 'blue', '--node', 'beta', '--data-dir', ctl.dataDir]);
    assert.equal(r.code, 0, r.stderr);
    b = await startAgent(dir, creds, RENEW, b);
    agents.push(b);
    await waitFor('beta lease again', () => withStore(ctl.dataDir, (s) => s.getLease('blue', 'beta')));
    assert.equal((await withStore(ctl.dataDir, (s) => s.getLease('blue', 'beta')))?.subnet, first.replace('.1/', '.0/'));
  });

  test('a live agent renews; a dead one expires and every agent sees the removal', async () => {
    const creds = await addNode(ctl.dataDir, 'gamma', 'blue', ctl.url);
    const g = await startAgent(dir, creds, RENEW);
    agents.push(g);
    await subnetOf(g);
    const alpha = agents[0] as AgentProc;
    await waitFor('alpha sees gamma', async () => (await metric(alpha, 'twill_agent_peers')) === 2);
    await g.kill();
    // gamma expires one TTL after its last renewal (plus a sync pass); alpha, which renews, keeps its lease and drops gamma.
    await waitFor('gamma expired', async () => !(await withStore(ctl.dataDir, (s) => s.getLease('blue', 'gamma'))), 30_000);
    await waitFor('alpha drops gamma', async () => (await metric(alpha, 'twill_agent_peers')) === 1);
    assert.ok(await withStore(ctl.dataDir, (s) => s.getLease('blue', 'alpha')), 'alpha renewed its lease');
    assert.match(ctl.output(), /lease expired network=blue node=gamma/);
  });

  test('a node cannot publish as another node, write leases, or read another network', async () => {
    const creds = await addNode(ctl.dataDir, 'mallory', 'blue', ctl.url);
    const victimCreds = await addNode(ctl.dataDir, 'victim', 'blue', ctl.url);
    const before = await withStore(ctl.dataDir, (s) => s.getNetwork('blue'));

    // hello on another node's topic: refused, connection closed, nothing allocated
    const m1 = await client(ctl.url, creds.username, creds.password);
    const closed1 = new Promise<void>((r) => m1.c.once('close', () => r()));
    m1.c.publish(topics.nodeHello('blue', 'victim'), JSON.stringify({ v: 2, agentVersion: 'x', publicIP: '127.0.0.9' }), { qos: 1 });
    await closed1;
    await waitFor('refusal logged', () => ctl.output().includes('publish refused client=twill:blue:mallory node=mallory'));

    // a forged change on the shared topic: refused as well
    const m2 = await client(ctl.url, creds.username, creds.password);
    const closed2 = new Promise<void>((r) => m2.c.once('close', () => r()));
    m2.c.publish(topics.netChanges('blue'), JSON.stringify({ v: 2, revision: 999, node: 'victim', lease: null }), { qos: 1 });
    await closed2;

    // subscriptions outside its network and to another node's topic are refused
    const m3 = await client(ctl.url, creds.username, creds.password);
    const granted = await new Promise<number[]>((resolve) =>
      m3.c.subscribe([topics.netChanges('tiny'), topics.nodeLease('blue', 'victim'), '#', `${topics.root}/net/blue/#`, topics.netChanges('blue')], { qos: 1 }, (err, g) =>
        resolve(((err as { packet?: { granted: number[] } } | null)?.packet?.granted ?? g?.map((x) => x.qos)) as number[]),
      ),
    );
    assert.deepEqual(granted, [128, 128, 128, 128, 1]);
    await m3.c.endAsync();
    assert.match(ctl.output(), /subscribe refused client=twill:blue:mallory node=mallory/);

    // another node's client id is refused before it can take over that session:
    // the victim stays connected, its last will is not set off
    const v = await client(ctl.url, victimCreds.username, victimCreds.password);
    let victimClosed = false;
    v.c.on('close', () => (victimClosed = true));
    await assert.rejects(mqtt.connectAsync(ctl.url, { username: creds.username, password: creds.password, clientId: nodeClientId(DEFAULT_PREFIX, 'blue', 'victim'), reconnectPeriod: 0 }), /Bad username or password|Not authorized/);
    await waitFor('refusal logged', () => ctl.output().includes('client id \\"twill:blue:victim\\" is not node mallory\'s'));
    await v.c.publishAsync(topics.nodeStatus('blue', 'victim'), JSON.stringify({ v: 2, state: 'online', agentVersion: 'x', errors: [] }), { qos: 1 });
    assert.equal(victimClosed, false, 'the victim kept its session');
    await v.c.endAsync();
    // and a random one too, and the victim's id of twill 0.1
    await assert.rejects(mqtt.connectAsync(ctl.url, { username: creds.username, password: creds.password, clientId: 'mallory-4', reconnectPeriod: 0 }));
    await assert.rejects(mqtt.connectAsync(ctl.url, { username: creds.username, password: creds.password, clientId: 'twill-blue-victim', reconnectPeriod: 0 }));
    // Its own 0.1 id is let in while agents are upgraded, and logged as needing one.
    const old = await client(ctl.url, creds.username, creds.password, 'twill-blue-mallory');
    await waitFor('upgrade logged', () => /agent connected with the client id of twill 0\.1 agents: upgrade it .*client=twill-blue-mallory node=mallory/.test(ctl.output()));
    await old.c.endAsync();

    // wrong password and unknown user are refused at connect
    await assert.rejects(mqtt.connectAsync(ctl.url, { username: 'mallory', password: 'wrong', reconnectPeriod: 0 }));
    await assert.rejects(mqtt.connectAsync(ctl.url, { username: 'nobody', password: 'x', reconnectPeriod: 0 }));
    await assert.rejects(mqtt.connectAsync(ctl.url, { reconnectPeriod: 0 }));

    const afterNet = await withStore(ctl.dataDir, (s) => s.getNetwork('blue'));
    assert.ok(!(await withStore(ctl.dataDir, (s) => s.getLease('blue', 'victim'))));
    assert.equal(afterNet?.leaseCount, before?.leaseCount);
    // nothing was written for the victim: the node API, which lists the store, says so
    const victim = await withStore(ctl.dataDir, (s) => s.getLease('blue', 'victim'));
    assert.equal(victim, undefined);
  });

  test('a removed node is cut off at once: its session closes, it cannot come back, its lease goes; a rotation needs --rotate and cuts the old session', async () => {
    const creds = await addNode(ctl.dataDir, 'leaver', 'blue', ctl.url);
    const l = await client(ctl.url, creds.username, creds.password);
    await l.c.subscribeAsync(topics.nodeLease('blue', 'leaver'), { qos: 1 });
    await l.c.publishAsync(topics.nodeHello('blue', 'leaver'), JSON.stringify({ v: 2, agentVersion: 'test', publicIP: '127.0.0.44' }), { qos: 1 });
    await waitFor('lease', () => JSON.parse(l.seen.get(topics.nodeLease('blue', 'leaver')) ?? '{}').lease?.subnet);
    let closed = false;
    l.c.once('close', () => { closed = true; });
    const r = await runTwill(['node', 'remove', 'leaver', '--data-dir', ctl.dataDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /its sessions are closed, and its lease is released/);
    // With a controller serving the directory, the command goes through it: the session closed before it returned.
    assert.equal(closed, true, 'the session was closed by the time node remove returned');
    assert.equal(await withStore(ctl.dataDir, (s) => s.getLease('blue', 'leaver')), undefined);
    assert.match(ctl.output(), /session closed: the node was removed or its credentials rotated client=twill:blue:leaver node=leaver/);
    await assert.rejects(mqtt.connectAsync(ctl.url, { username: creds.username, password: creds.password, clientId: nodeClientId(DEFAULT_PREFIX, 'blue', 'leaver'), reconnectPeriod: 0 }));

    // node add --output writes the agent config (the password in it) readable by its owner only
    const file = join(ctl.dataDir, '..', 'filed.agent.json');
    const filed = await runTwill(['node', 'add', 'filed', '--network', 'blue', '--output', file, '--data-dir', ctl.dataDir]);
    assert.equal(filed.code, 0, filed.stderr);
    assert.equal(filed.stdout, '');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const filedConfig = JSON.parse(readFileSync(file, 'utf8')) as { node: string; broker: string };
    assert.equal(filedConfig.node, 'filed');
    // with no --broker, the one this controller serves (its port is not the default)
    assert.equal(filedConfig.broker, ctl.url);

    const old = await addNode(ctl.dataDir, 'rotor', 'blue', ctl.url);
    const o = await client(ctl.url, old.username, old.password);
    const again = await runTwill(['node', 'add', 'rotor', '--network', 'blue', '--data-dir', ctl.dataDir]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /node rotor already exists in network blue: .*add it again with --rotate/);
    assert.equal(o.c.connected, true, 'a refused add changed nothing');
    let oClosed = false;
    o.c.once('close', () => { oClosed = true; });
    const rotated = await runTwill(['node', 'add', 'rotor', '--network', 'blue', '--rotate', '--data-dir', ctl.dataDir]);
    assert.equal(rotated.code, 0, rotated.stderr);
    assert.equal(oClosed, true, 'the old session was closed by the time node add --rotate returned');
    await assert.rejects(mqtt.connectAsync(ctl.url, { username: old.username, password: old.password, clientId: nodeClientId(DEFAULT_PREFIX, 'blue', 'rotor'), reconnectPeriod: 0 }));
    const fresh = JSON.parse(rotated.stdout) as { username: string; password: string };
    const n = await client(ctl.url, fresh.username, fresh.password);
    await n.c.endAsync();
  });

  test('malformed and oversized messages are refused, change nothing, and the controller keeps serving', async () => {
    const creds = await addNode(ctl.dataDir, 'fuzzy', 'blue', ctl.url);
    const before = await withStore(ctl.dataDir, (s) => s.getNetwork('blue'));
    const f = await client(ctl.url, creds.username, creds.password);
    await f.c.subscribeAsync(topics.nodeLease('blue', 'fuzzy'), { qos: 1 });
    const hello = topics.nodeHello('blue', 'fuzzy');
    for (const bad of ['not json', '{}', JSON.stringify({ v: 2, agentVersion: 'x', publicIP: '999.1.1.1' }), JSON.stringify({ v: 3 }), JSON.stringify({ v: 2, agentVersion: 'x', publicIP: '127.0.0.5', previousSubnet: '10.20.0.7/24' })]) {
      await f.c.publishAsync(hello, bad, { qos: 1 });
    }
    await f.c.publishAsync(topics.nodeStatus('blue', 'fuzzy'), '{"v":2,"state":"confused"}', { qos: 1 });
    await waitFor('error on the node topic', () => f.seen.get(topics.nodeLease('blue', 'fuzzy'))?.includes('error'));
    const answer = JSON.parse(f.seen.get(topics.nodeLease('blue', 'fuzzy')) as string);
    assert.equal(answer.lease, null);
    assert.match(answer.error, /hello from fuzzy/);
    await waitFor('refusals logged', () => (ctl.output().match(/message refused/g) ?? []).length >= 6);
    assert.ok(!(await withStore(ctl.dataDir, (s) => s.getLease('blue', 'fuzzy'))));
    // oversized: refused by the broker before the controller sees it
    const closed = new Promise<void>((r) => f.c.once('close', () => r()));
    f.c.publish(hello, 'x'.repeat(64 * 1024), { qos: 1 });
    await closed;
    const afterNet = await withStore(ctl.dataDir, (s) => s.getNetwork('blue'));
    // (the revision moves with other agents' renewals; the leases must not)
    assert.equal(afterNet?.leaseCount, before?.leaseCount, 'no lease was created');
    assert.ok(!(await withStore(ctl.dataDir, (s) => s.getLease('blue', 'fuzzy'))));
    // still serving: a proper hello from the same node now gets a lease
    const g = await client(ctl.url, creds.username, creds.password);
    await g.c.subscribeAsync(topics.nodeLease('blue', 'fuzzy'), { qos: 1 });
    await g.c.publishAsync(hello, JSON.stringify({ v: 2, agentVersion: 'test', publicIP: '127.0.0.5' }), { qos: 1 });
    await waitFor('lease', () => JSON.parse(g.seen.get(topics.nodeLease('blue', 'fuzzy')) ?? '{}').lease?.subnet);
    await g.c.endAsync();
    await runTwill(['lease', 'release', 'blue', '--node', 'fuzzy', '--data-dir', ctl.dataDir]);
  });

  test('out of subnets is a clear error to that node only', async () => {
    const started: AgentProc[] = [];
    for (const n of ['t1', 't2', 't3']) {
      const a = await startAgent(dir, await addNode(ctl.dataDir, n, 'tiny', ctl.url), RENEW);
      agents.push(a);
      started.push(a);
    }
    for (const a of started) await subnetOf(a);
    const late = await startAgent(dir, await addNode(ctl.dataDir, 't4', 'tiny', ctl.url));
    agents.push(late);
    await waitFor('t4 reports the error', () => late.output().includes('network tiny has no free subnet'));
    const st = await waitFor('status carries the error', () =>
      withStore(ctl.dataDir, async (s) => (await s.listStatus()).find((r) => r.node === 't4' && r.status.errors.length > 0)),
    );
    assert.match(st.status.errors[0] as string, /all 3 \/24 subnets from 10\.30\.1\.0 to 10\.30\.3\.0 are leased/);
    assert.equal(late.child.exitCode, null, 'the agent keeps running and will ask again');
    assert.equal(ctl.child.exitCode, null);
  });

  test('/metrics on the API port exports the control plane: leases, free subnets, agents, messages, refusals, publishes; nothing secret', async () => {
    const text = await (await fetch(`${ctl.api}/metrics`)).text();
    const value = (series: string) => {
      const line = text.split('\n').find((l) => l.startsWith(`${series} `));
      assert.ok(line, `${series} in /metrics:\n${text}`);
      return Number(line.split(' ')[1]);
    };
    const leases = await withStore(ctl.dataDir, (s) => s.listLeases('blue'));
    assert.equal(value('twill_network_leases{network="blue"}'), leases.length);
    // 10.20.0.0/16 in /24s from SubnetMin 10.20.1.0 to SubnetMax 10.20.255.0: 255 subnets
    assert.equal(value('twill_network_subnets_free{network="blue",family="ipv4"}'), 255 - leases.length);
    const online = (await withStore(ctl.dataDir, (s) => s.listStatus())).filter((s) => s.network === 'blue' && s.status.state === 'online').length;
    assert.equal(value('twill_agents{network="blue",state="online"}'), online);
    assert.ok(value('twill_agent_messages_total{kind="hello",result="ok"}') >= 1, 'hellos counted');
    assert.ok(value('twill_agent_messages_total{kind="hello",result="refused_invalid"}') >= 1, 'the malformed hellos of an earlier test counted');
    assert.ok(value('twill_broker_refused_total{what="login"}') >= 1, 'refused logins counted');
    assert.ok(value('twill_publishes_total') >= 1);
    assert.ok(value('twill_publish_seconds_total') > 0);
    assert.match(text, /^# TYPE twill_network_leases gauge$/m);
    // Every series the Grafana dashboard in docs/ queries is one the controller exports (the route series: on cloud networks only).
    const dashboard = JSON.parse(readFileSync(join(import.meta.dirname, '../../docs/grafana-twill.json'), 'utf8')) as { panels: { targets: { expr: string }[] }[] };
    const queried = new Set(dashboard.panels.flatMap((p) => p.targets.flatMap((t) => t.expr.match(/twill_[a-z_]+/g) ?? [])));
    for (const name of queried) if (!['twill_route_states', 'twill_routes'].includes(name)) assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), `the dashboard queries ${name}`);
    for (const secret of ['sha256$', 'password', (await withStore(ctl.dataDir, (s) => s.listNodes()))[0]!.passwordHash]) assert.ok(!text.includes(secret), `no ${secret} in /metrics`);
  });

  test('a controller killed with SIGKILL comes back and republishes everything from the store', async () => {
    const alpha = agents[0] as AgentProc;
    const subnet = readSubnetEnv(alpha.subnetFile).FLANNEL_SUBNET;
    await ctl.kill();
    const port = ctl.port;
    ctl = await startController({
      dataDir: ctl.dataDir,
      port,
      networks: {},
      extra: TTL,
    });
    // A node reads every lease the store holds from the node API, at the
    // controller's new address, and the config retained on its topic.
    const creds = await addNode(ctl.dataDir, 'observer', 'blue', ctl.url);
    const snap = await snapshotAs(ctl.api, creds, 'blue');
    const stored = await withStore(ctl.dataDir, (s) => s.listLeases('blue'));
    assert.deepEqual(snap.leases.map((l) => l.node), stored.map((l) => l.node));
    const o = await client(ctl.url, creds.username, creds.password);
    await o.c.subscribeAsync(topics.netConfig('blue'), { qos: 1 });
    await waitFor('retained config', () => o.seen.has(topics.netConfig('blue')));
    const cfg = JSON.parse(o.seen.get(topics.netConfig('blue')) as string);
    assert.equal(cfg.config.Network, '10.20.0.0/16');
    await o.c.endAsync();
    // The agent reconnects on its own and keeps its subnet.
    await waitFor('alpha reconnected', async () => (await metric(alpha, 'twill_agent_mqtt_connected')) === 1, 30_000);
    assert.equal(readSubnetEnv(alpha.subnetFile).FLANNEL_SUBNET, subnet);
  });

  test('two agents with one node\'s config are named in the log as one identity used twice', async () => {
    const creds = await addNode(ctl.dataDir, 'twin', 'blue', ctl.url);
    const one = await startAgent(dir, creds, RENEW);
    agents.push(one);
    await subnetOf(one);
    const two = await startAgent(dir, creds, RENEW);
    agents.push(two);
    await waitFor('the twins named', () => /another process is using this node's identity: .*node=twin network=blue/.test(ctl.output()), 60_000);
    // and each agent says so itself: in its log and in the status it reports
    await waitFor('an agent says so', () => [one, two].some((a) => /another process may be using node twin's config/.test(a.output())), 60_000);
    await two.kill();
  });

  test('a second controller on the same data directory is refused, naming the first, and changes nothing', async () => {
    // (live agents renew meanwhile: what must not change is who holds which subnet)
    const held = () => withStore(ctl.dataDir, async (s) => (await s.listLeases('blue')).map((l) => `${l.node} ${l.subnet}`));
    const before = await held();
    const r = await runTwill(['controller', '--data-dir', ctl.dataDir, '--listen', '127.0.0.1:0']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`another twill controller \\(pid ${ctl.child.pid}\\) is serving the data directory ${ctl.dataDir.replaceAll('/', '\\/')}: stop it first`));
    assert.deepEqual(await held(), before);
    // the first one still serves
    assert.equal((await fetch(`${ctl.api}/v2/networks/blue/snapshot`)).status, 401);
  });

  test('changing a network\'s backend type once it has leases is refused', async () => {
    const vx = await writeNetConf(dir, 'vx', { Network: '10.20.0.0/16', Backend: { Type: 'vxlan' } });
    await ctl.kill();
    const p = await import('../helpers/procs.js');
    const r = p.startProc(['controller', '--data-dir', ctl.dataDir, '--listen', '127.0.0.1:0', '--network', `blue=${vx}`]);
    const code = await r.exited;
    assert.equal(code, 1);
    assert.match(r.output(), /network blue uses backend alloc and has \d+ lease\(s\): its backend type cannot change to vxlan/);
    assert.equal((await withStore(ctl.dataDir, (s) => s.getNetwork('blue')))?.config.Backend.Type, 'alloc');
  });
});
