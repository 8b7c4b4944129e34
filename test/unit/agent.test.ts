// The agent's loop in one process, without root: the real local controller
// (SQLite, the embedded broker over TCP on a free port) and real agents whose
// kernel and iptables are the in-memory fakes (test/fakes/kernel.ts,
// iptables.ts). Joins, peers in every kernel, a departure, drift, a restart
// that finds a peer gone, and a broker that delivers an older copy after a
// newer one; agents on a cloud network with an overlay. The same flows run as
// processes against the real kernel in test/e2e.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNetConf } from '../../core/config.js';
import { macAddress } from '../../core/mac.js';
import type { Lease } from '../../core/lease.js';
import { createLogger, silentLogger } from '../../core/log.js';
import { Agent, type AgentOptions } from '../../agent/agent.js';
import { addNode } from '../../control/http/admin.js';
import { startLocalController, type LocalController } from '../../control/local/server.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { FakeHost } from '../fakes/host.js';
import { FakeIptables } from '../fakes/iptables.js';
import { FakeKernel } from '../fakes/kernel.js';
import { waitFor } from '../helpers/procs.js';

const dirs: string[] = [];
const tmp = (p: string) => {
  const d = mkdtempSync(join(tmpdir(), p));
  dirs.push(d);
  return d;
};
after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

interface Host { name: string; agent: Agent; kernel: FakeKernel; iptables: FakeIptables; dir: string; logs: string[]; opts: AgentOptions }

function agentOptions(h: { name: string; dir: string; kernel: FakeKernel; iptables: FakeIptables; logs: string[] }, creds: { broker: string; username: string; password: string }, network: string): AgentOptions {
  return {
    broker: creds.broker, network, node: h.name, username: creds.username, password: creds.password,
    subnetFile: join(h.dir, 'subnet.env'), stateDir: join(h.dir, 'state'), metricsAddr: '',
    ipMasq: true, forwardRules: true, resyncIntervalMs: 200, renewMarginMs: 3600_000, helloRetryMs: 2000, pollMs: 3600_000,
    iface: ['eth0'], log: createLogger(h.name, 'debug', (l) => h.logs.push(l)), kernel: h.kernel, iptables: h.iptables,
  };
}

describe('the agent loop against the local controller, on in-memory kernels', () => {
  let lc: LocalController;
  const hosts = new Map<string, Host>();
  let n = 0;

  before(async () => {
    lc = await startLocalController({
      dataDir: tmp('twill-agent-unit-'), listen: '127.0.0.1:0', syncIntervalMs: 200, log: silentLogger,
      networks: [{ name: 'net', config: parseNetConf({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }, {}) }],
    });
  });
  after(async () => {
    for (const h of hosts.values()) await h.agent.stop();
    await lc?.close();
  });

  async function start(name: string, existing?: Host): Promise<Host> {
    const i = ++n;
    const base = existing ?? { name, dir: tmp(`twill-${name}-`), kernel: FakeKernel.host({ cidr: `192.168.1.${i}/24`, gateway: '192.168.1.254' }), iptables: new FakeIptables(), logs: [] };
    const opts = existing?.opts ?? agentOptions(base, await addNode(lc.store, { name, network: 'net', broker: lc.url }), 'net');
    const h: Host = { ...base, opts, agent: new Agent(opts) };
    await h.agent.start();
    hosts.set(name, h);
    return h;
  }
  const lease = (name: string) => lc.store.getLease('net', name) as Promise<Lease | undefined>;
  /** h's kernel holds a route, a neighbour and an fdb entry for each of peers, and nothing for anyone else */
  async function holds(h: Host, peers: string[]): Promise<boolean> {
    const want = await Promise.all(peers.map(lease));
    const routes = h.kernel.routesVia('flannel.1').map((r) => r.dst).sort();
    return want.every((l) => !!l) &&
      JSON.stringify(routes) === JSON.stringify(want.map((l) => l!.subnet).sort()) &&
      h.kernel.neighbours.length === peers.length && h.kernel.fdb.length === peers.length;
  }

  test('agents join: each writes subnet.env, holds every peer in its kernel, keeps its rules, and is ready', async () => {
    const a = await start('a');
    const b = await start('b');
    await waitFor('both ready', () => a.agent.isReady() && b.agent.isReady());
    await waitFor('a holds b and b holds a', async () => (await holds(a, ['b'])) && (await holds(b, ['a'])));
    const la = await lease('a');
    const env = readFileSync(a.opts.subnetFile, 'utf8');
    assert.match(env, /^FLANNEL_NETWORK=10\.244\.0\.0\/16$/m);
    assert.match(env, new RegExp(`^FLANNEL_SUBNET=${la!.subnet!.replace('.0/', '.1/').replaceAll('.', '\\.')}$`, 'm'));
    assert.match(env, /^FLANNEL_MTU=1450$/m);
    assert.match(env, /^FLANNEL_IPMASQ=true$/m);
    const nat = await a.iptables.save(4, 'nat');
    assert.match(nat, /^-A POSTROUTING -m comment --comment "twill masq" -j TWILL-POSTRTG$/m);
    assert.match(nat, new RegExp(`^-A TWILL-POSTRTG -s ${la!.subnet!.replaceAll('.', '\\.')} -d 10\\.244\\.0\\.0/16 `, 'm'));
    assert.match(await a.iptables.save(4, 'filter'), /^-A FORWARD -m comment --comment "twill forward" -j TWILL-FWD$/m);
  });

  test('a peer that leaves is dropped from every kernel', async () => {
    const c = await start('c');
    const [a, b] = [hosts.get('a')!, hosts.get('b')!];
    await waitFor('everyone holds c', async () => (await holds(a, ['b', 'c'])) && (await holds(b, ['a', 'c'])) && c.agent.isReady());
    await c.agent.stop();
    hosts.delete('c');
    assert.equal(await lc.controller.release('net', 'c'), true);
    await waitFor('a and b drop c', async () => (await holds(a, ['b'])) && (await holds(b, ['a'])));
  });

  test('a route and a masquerade rule deleted by hand come back by the periodic resync', async () => {
    const a = hosts.get('a')!;
    const lb = await lease('b');
    a.kernel.deleteRoute(lb!.subnet!);
    a.iptables.deleteRule(4, 'nat', 'TWILL-POSTRTG', 0);
    await waitFor('route and rules restored', async () => (await holds(a, ['b'])) && (await a.iptables.save(4, 'nat')).split('\n').filter((l) => l.startsWith('-A TWILL-POSTRTG')).length === 6);
    await waitFor('drift logged', () => a.logs.some((l) => /repaired kernel drift/.test(l)) && a.logs.some((l) => /iptables rules were missing and are restored/.test(l)));
  });

  test('a restarted agent is ready only once the peer that left while it was down is gone from its kernel', async () => {
    const b = hosts.get('b')!;
    const d = await start('d');
    await waitFor('b holds d', async () => (await holds(b, ['a', 'd'])) && d.agent.isReady());
    await b.agent.stop();
    await d.agent.stop();
    hosts.delete('d');
    await lc.controller.release('net', 'd');
    // the kernel and the state directory are as the old process left them
    const again = await start('b', b);
    await waitFor('b ready again', () => again.agent.isReady(), 30_000);
    assert.equal(await holds(again, ['a']), true, JSON.stringify(again.kernel.routesVia()));
  });

  test('a rotated password: the session is cut, the agent says so in /readyz and keeps retrying with backoff, and the new password works', async () => {
    const r = await start('r');
    await waitFor('r ready', () => r.agent.isReady(), 30_000);
    const rotated = await addNode(lc.store, { name: 'r', network: 'net', broker: lc.url, rotate: true });
    await waitFor('login refused', () => /^login refused: broker: Connection refused: Bad username or password \(retrying\)$/.test(r.agent.readiness()), 15_000);
    const refusals = () => r.logs.filter((l) => /broker connection error reason="Connection refused/.test(l)).length;
    await waitFor('tried again', () => refusals() >= 2, 15_000);
    await r.agent.stop();
    hosts.delete('r');
    const back = await start('r', { ...r, opts: { ...r.opts, password: rotated.password } });
    await waitFor('r ready with the new password', () => back.agent.isReady(), 30_000);
  });
});

describe('the agent\'s view when the broker loses a change, or peers join faster than it takes their changes', () => {
  let lc: LocalController;
  let dir: string;
  before(async () => {
    dir = tmp('twill-agent-gap-');
    // No sync pass during the test: the lost change must be found by the agent alone.
    lc = await startLocalController({
      dataDir: dir, listen: '127.0.0.1:0', syncIntervalMs: 3600_000, log: silentLogger,
      networks: [{ name: 'net', config: parseNetConf({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }, {}) }],
    });
  });
  after(async () => { await lc?.close(); });

  test('a change that skips a revision is held, and what the broker never brought is fetched from the node API', async () => {
    const h = { name: 'me', dir: tmp('twill-gap-'), kernel: FakeKernel.host({ cidr: '192.168.1.1/24', gateway: '192.168.1.254' }), iptables: new FakeIptables(), logs: [] as string[] };
    const agent = new Agent(agentOptions(h, await addNode(lc.store, { name: 'me', network: 'net', broker: lc.url }), 'net'));
    const cli = new SqliteStore(join(dir, 'twill.db'));
    try {
      await agent.start();
      await lc.controller.join('net', 'p1', { publicIP: '192.168.1.21', backendData: { VtepMAC: '0a:00:00:00:00:21' } });
      await waitFor('ready with p1', () => agent.isReady() && h.kernel.fdb.some((f) => f.dst === '192.168.1.21'));
      // A write nobody publishes (as if its message were lost), then one that is published.
      const p1 = await cli.getLease('net', 'p1');
      await cli.replaceLease({ ...p1!, publicIP: '192.168.1.31' }, p1!.revision);
      await lc.controller.join('net', 'p2', { publicIP: '192.168.1.22', backendData: { VtepMAC: '0a:00:00:00:00:22' } });
      await waitFor('p1 moved and p2 arrived', () => h.kernel.fdb.some((f) => f.dst === '192.168.1.31') && h.kernel.fdb.some((f) => f.dst === '192.168.1.22'));
      assert.equal(h.kernel.fdb.some((f) => f.dst === '192.168.1.21'), false);
      // (no sync pass published the lost write, and the agent's poll is an hour away: only the gap rule fetched it)
      await waitFor('ready again', () => agent.isReady());
    } finally {
      await agent.stop();
      await cli.close();
    }
  });

  test('40 peers joining at once (their changes batched) all reach the kernel', async () => {
    const h = { name: 'me2', dir: tmp('twill-batch-'), kernel: FakeKernel.host({ cidr: '192.168.1.2/24', gateway: '192.168.1.254' }), iptables: new FakeIptables(), logs: [] as string[] };
    const agent = new Agent(agentOptions(h, await addNode(lc.store, { name: 'me2', network: 'net', broker: lc.url }), 'net'));
    try {
      await agent.start();
      await waitFor('ready alone', () => agent.isReady());
      const hex = (i: number) => i.toString(16).padStart(2, '0');
      await Promise.all(Array.from({ length: 40 }, (_, i) => lc.controller.join('net', `p${i}`, { publicIP: `192.168.1.${100 + i}`, backendData: { VtepMAC: `0a:00:00:00:01:${hex(i)}` } })));
      await waitFor('every peer in the fdb', () => Array.from({ length: 40 }, (_, i) => `192.168.1.${100 + i}`).every((ip) => h.kernel.fdb.some((f) => f.dst === ip)));
      await waitFor('ready', () => agent.isReady());
    } finally {
      await agent.stop();
    }
  });
});

describe('an agent of protocol v1', () => {
  test('is told, on the v1 topic it reads, that the control plane speaks v2 and it must be upgraded', async () => {
    const lc = await startLocalController({
      dataDir: tmp('twill-v1-'), listen: '127.0.0.1:0', log: silentLogger,
      networks: [{ name: 'net', config: parseNetConf({ Network: '10.244.0.0/16', Backend: { Type: 'alloc' } }, {}) }],
    });
    const creds = await addNode(lc.store, { name: 'old', network: 'net', broker: lc.url });
    const { default: mqtt } = await import('mqtt');
    const c = await mqtt.connectAsync(lc.url, { username: creds.username, password: creds.password, clientId: 'twill-net-old', reconnectPeriod: 0 });
    try {
      const seen = new Map<string, string>();
      c.on('message', (t, p) => seen.set(t, p.toString()));
      // what a v1 agent does: its own lease topic, then a v1 hello
      await c.subscribeAsync('twill/v1/node/net/old/lease', { qos: 1 });
      await c.publishAsync('twill/v1/node/net/old/hello', JSON.stringify({ v: 1, agentVersion: '0.1.0', publicIP: '192.0.2.5' }), { qos: 1 });
      const msg = await waitFor('the answer', () => seen.get('twill/v1/node/net/old/lease'));
      const parsed = JSON.parse(msg) as { v: number; lease: null; error: string };
      assert.equal(parsed.v, 1);
      assert.equal(parsed.lease, null);
      assert.match(parsed.error, /this control plane speaks twill protocol v2 and this agent speaks v1: upgrade the agent to twill \S+ or later/);
      assert.equal(await lc.store.getLease('net', 'old'), undefined, 'a v1 hello allocates nothing');
    } finally {
      await c.endAsync();
      await lc.close();
    }
  });
});

// Agents on a cloud network with an overlay: each publishes its VtepMAC
// through its hello (the controller takes it for an aws-vpc lease), writes
// the overlay's MTU in subnet.env, and, its peers judged by no route
// controller yet (nodes added by hand: overlay, as the contract says), holds
// every peer over the overlay.
describe('agents on an aws-vpc network with Backend.Overlay', () => {
  let lc: LocalController;
  const agents: Agent[] = [];

  before(async () => {
    lc = await startLocalController({
      dataDir: tmp('twill-cloud-agent-'), listen: '127.0.0.1:0', syncIntervalMs: 200, log: silentLogger,
      networks: [{ name: 'net', config: parseNetConf({ Network: '10.60.0.0/16', Backend: { Type: 'aws-vpc', Overlay: { Type: 'vxlan' } } }, {}) }],
    });
  });
  after(async () => {
    for (const a of agents) await a.stop();
    await lc?.close();
  });

  test('publish their VtepMAC, write the overlay MTU, and hold each other over the overlay', async () => {
    const hosts = [];
    for (const [i, name] of ['a', 'b'].entries()) {
      const kernel = FakeKernel.host({ cidr: `192.168.1.${i + 1}/24`, gateway: '192.168.1.254' });
      const dir = tmp(`twill-${name}-`);
      const logs: string[] = [];
      const creds = await addNode(lc.store, { name, network: 'net', broker: lc.url });
      const agent = new Agent({
        broker: creds.broker, network: 'net', node: name, username: creds.username, password: creds.password,
        subnetFile: join(dir, 'subnet.env'), stateDir: join(dir, 'state'), metricsAddr: '',
        ipMasq: true, forwardRules: true, resyncIntervalMs: 200, renewMarginMs: 3600_000, helloRetryMs: 2000, pollMs: 3600_000,
        iface: ['eth0'], log: createLogger(name, 'debug', (l) => logs.push(l)), kernel, iptables: new FakeIptables(), host: new FakeHost(kernel),
      });
      agents.push(agent);
      await agent.start();
      hosts.push({ name, kernel, dir, agent, logs });
    }
    const [a, b] = hosts as [(typeof hosts)[0], (typeof hosts)[0]];
    await waitFor('both ready', () => a.agent.isReady() && b.agent.isReady());
    await waitFor('each holds the other over flannel.1', () => a.kernel.routesVia('flannel.1').length === 1 && b.kernel.routesVia('flannel.1').length === 1);
    const lb = await lc.store.getLease('net', 'b');
    assert.equal(lb?.backendType, 'aws-vpc');
    assert.equal(macAddress(lb?.backendData.VtepMAC), undefined, `b's lease carries a VtepMAC: ${JSON.stringify(lb?.backendData)}`);
    assert.equal(a.kernel.fdb[0]?.mac, lb?.backendData.VtepMAC);
    assert.deepEqual(a.kernel.routesVia('flannel.1').map((r) => r.dst), [lb?.subnet]);
    assert.match(readFileSync(join(a.dir, 'subnet.env'), 'utf8'), /^FLANNEL_MTU=1450$/m);
  });
});
