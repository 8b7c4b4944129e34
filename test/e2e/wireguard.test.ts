// wireguard end to end, on wireguard-go (this kernel has no WireGuard):
// hosts as namespaces, each with its own /run/wireguard (where wireguard-go
// keeps its control socket) as a real host has, CNI pods, and the scenario
// every backend passes (test/e2e/scenario.ts: pings across, drift back within
// one resync, kill -9 without a lost packet, a controller restart, removals)
// on IPv4, dual stack and IPv6 only. Besides: the underlay sees only
// WireGuard; a private key is on its own host only; a rotation loses no
// ping and breaks no TCP stream; a device of our name that is not ours is
// reported and left alone.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../agent/kernel/exec.js';
import { parseDump, pskDigest, type WgDump } from '../../agent/wireguard/wg.js';
import { metaFilePath } from '../../agent/wireguard/keys.js';
import type { LabProcess } from '../helpers/netns.js';
import { START_BOUND_MS, waitFor } from '../helpers/procs.js';
import { Cluster } from './cluster.js';
import { overlayScenario, passesLater, skipKernel, type ScenarioOptions } from './scenario.js';
import { askRotation, keyStatus, logMarks, rotateKey, swapDelays, Traffic } from './wg-traffic.js';

const RUN_WIREGUARD = '/run/wireguard';
const PSK = 'QN8KhA3Z870TmXcmu4KsyxRxdP0LTY9D/kXgV4A6rZU=';
const V4 = { Network: '10.246.0.0/16' };
const DUAL = { Network: '10.246.0.0/16', EnableIPv6: true, IPv6Network: 'fd76:cac2:6151::/56' };
const V6_ONLY = { EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd76:cac2:6151::/56' };
const HOSTS = { h1: 0, h2: 0, h3: 0 };

type Device = readonly [name: string, family: 4 | 6];

async function wgDump(c: Cluster, on: string, device: string): Promise<WgDump | undefined> {
  const r = await c.lab.exec(c.node(on).host, ['wg', 'show', device, 'dump'], { okCodes: [0, 1] });
  return r.code === 0 ? parseDump(r.stdout) : undefined;
}

const text = (v: unknown) => (typeof v === 'string' ? v : '');

/** Host `on` has peer on device as its lease says (key, endpoint, subnet, PSK), and routes the pod network into the device. */
async function hasPeer(c: Cluster, on: string, peer: string, [device, family]: Device, psk?: string): Promise<boolean> {
  const lease = await c.lease(peer);
  const d = await wgDump(c, on, device);
  const p = d?.peers.find((x) => x.publicKey === lease?.backendData.PublicKey);
  const subnet = family === 4 ? lease?.subnet : lease?.ipv6Subnet;
  const endpoint = family === 4 ? `${lease?.publicIP}:51820` : `[${lease?.publicIPv6}]:51821`;
  if (!p || !subnet || !p.allowedIps.includes(subnet) || p.endpoint !== endpoint) return false;
  if (p.pskDigest !== (psk === undefined ? undefined : pskDigest(psk))) return false;
  const routes = JSON.parse((await c.ip(on, [`-${family}`, '-j', 'route', 'show', 'dev', device, 'proto', '122'])) || '[]') as { dst: string }[];
  return routes.length === 1;
}

function scenario(name: string, conf: Record<string, unknown>, devices: Device[], o: Partial<ScenarioOptions> = {}): void {
  const psk = (conf.Backend as { PSK?: string }).PSK;
  overlayScenario({
    name,
    conf,
    hosts: HOSTS,
    device: devices.find(([, f]) => f === 4)?.[0],
    device6: devices.find(([, f]) => f === 6)?.[0],
    privateDirs: [RUN_WIREGUARD],
    present: async (c, on, peer) => {
      for (const d of devices) if (!(await hasPeer(c, on, peer, d, psk))) return false;
      return true;
    },
    absent: async (c, on, subnet) => {
      for (const [device] of devices) if ((await wgDump(c, on, device))?.peers.some((p) => p.allowedIps.includes(subnet))) return false;
      return true;
    },
    // by hand: the peer's entry removed from every device, and the routes into them deleted
    drift: async (c, on, peer) => {
      const key = text((await c.lease(peer))?.backendData.PublicKey);
      for (const [device, family] of devices) {
        await c.lab.exec(c.node(on).host, ['wg', 'set', device, 'peer', key, 'remove']);
        await c.ip(on, [`-${family}`, 'route', 'del', family === 4 ? DUAL.Network : DUAL.IPv6Network, 'dev', device]);
      }
    },
    ...o,
  });
}

/** The wireguard-go processes running on a host, by pid. */
async function wireguardGo(c: Cluster, host: string): Promise<number[]> {
  const pids = (await run(['ip', 'netns', 'pids', c.node(host).host.ns])).stdout.split(/\s+/).filter(Boolean).map(Number);
  return pids.filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'wireguard-go';
    } catch {
      return false;
    }
  });
}

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    const st = statSync(p);
    return st.isDirectory() ? files(p) : st.isFile() ? [p] : [];
  });
}

/** Where a key may be found in bytes: whole, or either half (a TCP segment may split it, never both halves). */
function holds(bytes: Buffer, key: string): boolean {
  return [key, key.slice(0, 22), key.slice(22)].some((k) => bytes.includes(k));
}

const keyOf = (c: Cluster, host: string) => readFileSync(join(c.node(host).stateDir, 'wgkey'), 'utf8').trim();

/**
 * Tests of the IPv4 network that only wireguard has: which device runs, the
 * underlay, repairs of the device's own state, kill -9 with the device
 * taken over, rotations, and where the keys are.
 */
function ipv4Extras(get: () => Cluster): void {
  /** every private key any host held during these tests */
  const privateKeys = new Set<string>();
  /** agents that ran and were replaced: their logs are checked too */
  const pastAgents: LabProcess[] = [];
  let capture: LabProcess | undefined;
  const captureFile = () => join(get().lab.dir, 'control-plane.pcap');

  test('each host runs wireguard-go (it says so), keyed by the key it published, the device 60 below the underlay', async () => {
    const c = get();
    for (const h of Object.keys(HOSTS)) {
      privateKeys.add(keyOf(c, h));
      const lease = await c.lease(h);
      const d = await wgDump(c, h, 'flannel-wg');
      assert.equal(d?.publicKey, lease?.backendData.PublicKey);
      assert.equal(d?.listenPort, 51820);
      assert.equal(statSync(join(c.node(h).stateDir, 'wgkey')).mode & 0o777, 0o600);
      const [link] = JSON.parse(await c.ip(h, ['-j', '-d', 'link', 'show', 'flannel-wg'])) as { mtu: number; linkinfo: { info_kind: string } }[];
      assert.equal(link?.linkinfo.info_kind, 'tun');
      assert.equal(link?.mtu, 1440);
      assert.match(c.subnetEnv(h) ?? '', /^FLANNEL_MTU=1440$/m);
      assert.match((await c.agentHttp(h, '/metrics')).body, /^twill_wireguard_device_info\{device="flannel-wg",implementation="wireguard-go"\} 1$/m);
      assert.match(c.node(h).agent?.output() ?? '', /wireguard device device=flannel-wg implementation=wireguard-go/);
      assert.equal((await wireguardGo(c, h)).length, 1);
    }
    // what happens from here on between the agents and the control plane, on the wire
    capture = c.lab.spawn(c.lab.routerNs, ['tcpdump', '-i', 'any', '-U', '-n', '-s', '0', '-w', captureFile(), 'tcp']);
    await waitFor('tcpdump listening', () => capture!.output().includes('listening on'), START_BOUND_MS, 50);
  });

  test("the underlay carries only WireGuard between the hosts (UDP 51820 both ends), never the pods' packets", async () => {
    const c = get();
    const [a, b] = [c.node('h1').host.ip, c.node('h2').host.ip];
    const dump = c.lab.spawn(c.lab.underlayNs, ['tcpdump', '-i', 'vh1', '-nn', '-l', '-p', `host ${a} and host ${b}`]);
    await waitFor('tcpdump listening', () => dump.output().includes('listening on'), START_BOUND_MS, 50);
    for (const [from, to] of [['h1', 'h2'], ['h2', 'h1']] as const) {
      const r = await c.lab.ping(c.node(from).pods[0]!, c.node(to).pods[0]!.ip, { count: 20, interval: 0.05, deadline: 10 });
      assert.equal(r.received, 20, r.output);
    }
    await dump.stop();
    const lines = dump.output().split('\n').filter((l) => /^\d\d:\d\d/.test(l));
    const udp = lines.filter((l) => new RegExp(`IP ${a.replaceAll('.', '\\.')}\\.51820 > ${b.replaceAll('.', '\\.')}\\.51820: UDP|IP ${b.replaceAll('.', '\\.')}\\.51820 > ${a.replaceAll('.', '\\.')}\\.51820: UDP`).test(l));
    assert.ok(udp.length >= 40, `expected WireGuard for 40 pings, saw ${udp.length} of ${lines.length} packets:\n${lines.slice(0, 20).join('\n')}`);
    const pods = [...c.nodes.values()].flatMap((n) => n.pods.map((p) => p.ip));
    assert.deepEqual(lines.filter((l) => /ICMP/.test(l) || pods.some((ip) => l.includes(` ${ip}`))), [], 'pod traffic in the clear on the underlay');
    // ARP is the underlay finding its neighbours: not IP, nothing of the pods'
    assert.deepEqual(lines.filter((l) => !udp.includes(l) && !/ ARP, /.test(l)), [], 'packets other than WireGuard between the hosts');
  });

  test('by hand: a peer removed, a wrong endpoint and a wrong PSK on the device are repaired within one resync', async () => {
    const c = get();
    const key = async (h: string) => text((await c.lease(h))?.backendData.PublicKey);
    await c.lab.exec(c.node('h1').host, ['wg', 'set', 'flannel-wg', 'peer', await key('h3'), 'remove']);
    const otherPsk = (await c.lab.exec(c.node('h1').host, ['wg', 'genpsk'])).stdout;
    await c.lab.exec(c.node('h1').host, ['sh', '-s'], { input: `wg set flannel-wg peer '${await key('h2')}' endpoint 192.0.2.1:9 preshared-key /dev/fd/3 3<<'E'\n${otherPsk.trim()}\nE\n` });
    assert.equal(await hasPeer(c, 'h1', 'h2', ['flannel-wg', 4], PSK), false);
    await passesLater(c, 'h1');
    assert.ok(await hasPeer(c, 'h1', 'h2', ['flannel-wg', 4], PSK), 'h2 as its lease says again');
    assert.ok(await hasPeer(c, 'h1', 'h3', ['flannel-wg', 4], PSK), 'h3 back');
    assert.match(c.node('h1').agent?.output() ?? '', /repaired wireguard drift/);
  });

  test('kill -9 of an agent: its wireguard-go goes on carrying a running ping, and the next agent takes it over as it is', async () => {
    const c = get();
    const before = await wireguardGo(c, 'h2');
    assert.equal(before.length, 1);
    const ping = c.lab.spawn(c.node('h1').pods[0]!, ['ping', '-c', '60', '-i', '0.05', '-W', '1', c.node('h2').pods[0]!.ip]);
    await new Promise((r) => setTimeout(r, 500));
    const old = c.node('h2').agent!;
    old.child.kill('SIGKILL');
    await old.exited;
    pastAgents.push(old);
    const agent = c.startAgent('h2');
    await c.waitReady('h2');
    await ping.exited;
    assert.match(ping.output(), / 0% packet loss/, ping.output());
    assert.deepEqual(await wireguardGo(c, 'h2'), before, 'the same wireguard-go');
    assert.doesNotMatch(agent.output(), /started wireguard-go/);
    assert.match(agent.output(), /wireguard device device=flannel-wg implementation=wireguard-go/);
  });

  test('a rotation asked of a node: a new key pair on it, swapped for the old one on every peer; a ping every 10 ms each way loses nothing and a TCP stream from it goes on whole', async (t) => {
    const c = get();
    const [p1, p2] = [c.node('h1').pods[0]!, c.node('h2').pods[0]!];
    const traffic = await Traffic.start(c, p1, p2);
    const marks = logMarks(c);
    const { old, token } = await rotateKey(c, 'h1');
    const fresh = await waitFor('h1 publishes a new key', async () => {
      const k = text((await c.lease('h1'))?.backendData.PublicKey);
      return k !== old && k;
    }, START_BOUND_MS, 100);
    await waitFor('h2 and h3 hold the new key, and not the old one', async () => {
      for (const h of ['h2', 'h3']) {
        const keys = (await wgDump(c, h, 'flannel-wg'))?.peers.map((p) => p.publicKey) ?? [];
        if (!keys.includes(fresh) || keys.includes(old)) return false;
      }
      return true;
    }, START_BOUND_MS, 100);
    await traffic.flowing(100);
    const r = await traffic.stop();
    t.diagnostic(`rotation: ${JSON.stringify({ ...r, swappedAfterMs: swapDelays(c, 'h1', ['h2', 'h3'], marks) })}`);
    for (const p of r.pings) assert.equal(p.lost, 0, `${p.from} -> ${p.to}: ${p.lost} of ${p.sent} pings lost`);
    assert.ok(r.tcp?.whole, `the TCP stream: ${JSON.stringify(r.tcp)}`);
    assert.ok(r.tcp.received > 0);
    assert.equal((await wgDump(c, 'h1', 'flannel-wg'))?.publicKey, fresh);
    assert.equal([...(c.node('h1').agent?.output() ?? '').slice(marks.get('h1')).matchAll(/made a new key pair/g)].length, 1, 'one key pair for the token');
    privateKeys.add(keyOf(c, 'h1'));
    assert.ok(readFileSync(metaFilePath(join(c.node('h1').stateDir, 'wgkey')), 'utf8').includes(`"honoured":"${token}"`));
    // The operator sees it done, in the node's own status: the new key, and what runs its device.
    const seen = await waitFor('twill status says the rotation is done', async () => {
      const k = await keyStatus(c, 'h1');
      return k?.rotation === 'done' && k;
    }, START_BOUND_MS, 250);
    assert.deepEqual(seen, { publicKey: fresh, rotation: 'done', token, implementation: 'wireguard-go' });
    // The same token again asks nothing: one key pair per token.
    await askRotation(c, 'h1', token);
    await passesLater(c, 'h1');
    await passesLater(c, 'h1');
    assert.equal(text((await c.lease('h1'))?.backendData.PublicKey), fresh);
  });

  test('a rotation with traffic one way only (the rotating node pings, its peer sends nothing of its own): the peer starts the handshake itself, and no ping is lost', async (t) => {
    const c = get();
    const traffic = await Traffic.start(c, c.node('h3').pods[0]!, c.node('h1').pods[0]!, { stream: 'none', pings: 'a to b' });
    const marks = logMarks(c);
    const old = await askRotation(c, 'h3', 'e2e-one-way');
    await waitFor('h1 holds h3\'s new key, and not the old one', async () => {
      const fresh = text((await c.lease('h3'))?.backendData.PublicKey);
      const keys = (await wgDump(c, 'h1', 'flannel-wg'))?.peers.map((p) => p.publicKey) ?? [];
      return fresh !== old && keys.includes(fresh) && !keys.includes(old);
    }, START_BOUND_MS, 100);
    await traffic.flowing(100);
    const r = await traffic.stop();
    t.diagnostic(`one-way rotation: ${JSON.stringify({ ...r, swappedAfterMs: swapDelays(c, 'h3', ['h1'], marks) })}`);
    assert.equal(r.pings[0]?.lost, 0, `${r.pings[0]?.lost} of ${r.pings[0]?.sent} pings lost`);
    privateKeys.add(keyOf(c, 'h3'));
  });

  test('KeyRotation: a key older than the period is replaced when its agent next looks, and the pods reach each other again', async () => {
    const c = get();
    const old = text((await c.lease('h3'))?.backendData.PublicKey);
    const agent = c.node('h3').agent!;
    agent.child.kill('SIGKILL');
    await agent.exited;
    pastAgents.push(agent);
    const meta = metaFilePath(join(c.node('h3').stateDir, 'wgkey'));
    const record = JSON.parse(readFileSync(meta, 'utf8')) as { madeAt: string };
    writeFileSync(meta, JSON.stringify({ ...record, madeAt: new Date(Date.now() - 31 * 24 * 3_600_000).toISOString() }), { mode: 0o600 });
    c.startAgent('h3');
    const fresh = await waitFor('h3 publishes a new key', async () => {
      const k = text((await c.lease('h3'))?.backendData.PublicKey);
      return k !== old && k;
    }, START_BOUND_MS, 100);
    privateKeys.add(keyOf(c, 'h3'));
    await waitFor('h1 and h2 have h3 again', async () => (await hasPeer(c, 'h1', 'h3', ['flannel-wg', 4], PSK)) && (await hasPeer(c, 'h2', 'h3', ['flannel-wg', 4], PSK)), START_BOUND_MS, 200);
    assert.equal((await wgDump(c, 'h3', 'flannel-wg'))?.publicKey, fresh);
    const r = await c.lab.ping(c.node('h1').pods[0]!, c.node('h3').pods[0]!.ip, { count: 5, interval: 0.1, deadline: 10 });
    assert.equal(r.received, 5, r.output);
  });

  test("a host's private key is in its key file only: not in the store, any message or answer of the control plane, any log, or another host's state", async () => {
    const c = get();
    await capture?.stop();
    const wire = readFileSync(captureFile());
    assert.ok(wire.length > 10_000, 'the capture saw the control plane at work');
    const store = files(c.dataDir).map((f) => ({ f, bytes: readFileSync(f) }));
    const logs = [c.controller, ...pastAgents, ...[...c.nodes.values()].map((n) => n.agent)].map((p) => p?.output() ?? '');
    const metrics = await Promise.all([...c.nodes.keys()].map(async (h) => (await c.agentHttp(h, '/metrics')).body));
    for (const key of privateKeys) {
      assert.ok(!holds(wire, key), 'a private key crossed the wire to or from the control plane');
      for (const { f, bytes } of store) assert.ok(!holds(bytes, key), `a private key is in ${f}`);
    }
    // The PSK is the network's: the store holds it and each node gets it on its own topic, and nowhere else.
    for (const key of [...privateKeys, PSK]) for (const l of [...logs, ...metrics]) assert.ok(!l.includes(key), `${key === PSK ? 'the PSK' : 'a private key'} was logged or served`);
    for (const h of c.nodes.keys()) {
      const own = keyOf(c, h);
      for (const n of c.nodes.values()) {
        for (const f of files(n.stateDir)) {
          if (n.name === h && f === join(n.stateDir, 'wgkey')) continue;
          const bytes = readFileSync(f);
          assert.ok(!holds(bytes, own), `${h}'s private key is in ${f}`);
          assert.ok(!holds(bytes, PSK), `the PSK is in ${f}`);
        }
      }
    }
  });
}

describe('wireguard', () => {
  scenario('wireguard', { ...V4, Backend: { Type: 'wireguard', PSK, KeyRotation: '720h' } }, [['flannel-wg', 4]], { extra: ipv4Extras });

  scenario('wireguard dual stack', { ...DUAL, Backend: { Type: 'wireguard' } }, [['flannel-wg', 4], ['flannel-wg-v6', 6]], {
    ipv6: 'dual',
    extra: (get) => {
      test('flannel-wg over IPv4 and flannel-wg-v6 over IPv6 (port 51821), one key pair; pods get the smaller MTU', async () => {
        const c = get();
        const [v4, v6] = [await wgDump(c, 'h1', 'flannel-wg'), await wgDump(c, 'h1', 'flannel-wg-v6')];
        assert.equal(v4?.publicKey, (await c.lease('h1'))?.backendData.PublicKey);
        assert.equal(v6?.publicKey, v4?.publicKey);
        assert.equal(v6?.listenPort, 51821);
        const mtu = async (d: string) => (JSON.parse(await c.ip('h1', ['-j', 'link', 'show', d])) as { mtu: number }[])[0]?.mtu;
        assert.equal(await mtu('flannel-wg'), 1440);
        assert.equal(await mtu('flannel-wg-v6'), 1420);
        assert.match(c.subnetEnv('h1') ?? '', /^FLANNEL_MTU=1420$/m);
      });
    },
  });

  scenario('wireguard IPv6-only', { ...V6_ONLY, Backend: { Type: 'wireguard' } }, [['flannel-wg-v6', 6]], { ipv6: 'only' });

  describe('wireguard Mode ipv6: one flannel-wg carries both families over IPv6', { skip: skipKernel }, () => {
    let c: Cluster;
    before(async () => {
      c = await Cluster.create({ hosts: { m1: 0, m2: 0 }, conf: { ...DUAL, Backend: { Type: 'wireguard', Mode: 'ipv6' } }, agentArgs: ['--ip-masq'], ipv6: true, privateDirs: [RUN_WIREGUARD] });
      await c.startAll();
      await c.addPod('m1');
      await c.addPod('m2');
    });
    after(async () => {
      await c?.cleanup();
    });

    test('the peer is its public IPv6 address on ListenPort with both subnets; pods ping across on both families', async () => {
      const lease = await c.lease('m2');
      const d = await waitFor('m1 has m2', async () => (await wgDump(c, 'm1', 'flannel-wg'))?.peers.find((p) => p.publicKey === lease?.backendData.PublicKey), START_BOUND_MS, 200);
      assert.equal(d.endpoint, `[${lease?.publicIPv6}]:51820`);
      assert.deepEqual(d.allowedIps, [lease?.subnet, lease?.ipv6Subnet].sort());
      assert.equal((await wgDump(c, 'm1', 'flannel-wg-v6')), undefined);
      const [p1, p2] = [c.node('m1').pods[0]!, c.node('m2').pods[0]!];
      for (const ip of [p2.ip, p2.ip6!]) {
        const r = await c.lab.ping(p1, ip, { count: 3, interval: 0.2, deadline: 10 });
        assert.equal(r.received, 3, r.output);
      }
      assert.match(c.subnetEnv('m1') ?? '', /^FLANNEL_MTU=1420$/m);
    });
  });

  describe('wireguard: a device of its name that is not WireGuard is reported and left alone', { skip: skipKernel }, () => {
    let c: Cluster;
    before(async () => {
      c = await Cluster.create({ hosts: { f1: 0 }, conf: { ...V4, Backend: { Type: 'wireguard' } }, privateDirs: [RUN_WIREGUARD] });
      await c.ip('f1', ['link', 'add', 'flannel-wg', 'type', 'bridge']);
      await c.startAll();
    });
    after(async () => {
      await c?.cleanup();
    });

    const kind = async () => (JSON.parse(await c.ip('f1', ['-j', '-d', 'link', 'show', 'flannel-wg'])) as { linkinfo?: { info_kind: string; info_data?: { persist?: boolean } } }[])[0]?.linkinfo;

    test('a bridge, then a TUN with no WireGuard behind it: each reported, neither replaced; once gone, twill makes its own', async () => {
      await waitFor('the conflict reported', () => /a bridge device named flannel-wg exists and is not WireGuard/.test(c.node('f1').agent?.output() ?? ''), START_BOUND_MS, 100);
      await passesLater(c, 'f1');
      assert.equal((await kind())?.info_kind, 'bridge');
      await c.ip('f1', ['link', 'del', 'flannel-wg']);
      await c.ip('f1', ['tuntap', 'add', 'dev', 'flannel-wg', 'mode', 'tun']);
      await waitFor('the TUN reported', () => /a TUN device named flannel-wg exists and no WireGuard answers for it/.test(c.node('f1').agent?.output() ?? ''), START_BOUND_MS, 100);
      await passesLater(c, 'f1');
      assert.equal((await kind())?.info_data?.persist, true, 'the TUN is as it was');
      await c.ip('f1', ['tuntap', 'del', 'dev', 'flannel-wg', 'mode', 'tun']);
      await waitFor('twill makes its own device', async () => (await wgDump(c, 'f1', 'flannel-wg')) !== undefined, START_BOUND_MS, 100);
      assert.match((await c.agentHttp('f1', '/metrics')).body, /implementation="wireguard-go"/);
    });
  });
});
