// The netns lab itself: hosts reach each other over the underlay (directly
// and through the router), a pod wired by the real CNI bridge plugin from a
// subnet.env gets an address in FLANNEL_SUBNET and reaches cni0, and cleanup
// leaves nothing behind.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { Lab, flannelBridgeConfig, labUnavailable, parsePing, parseSubnetEnv, type Host } from '../helpers/netns.js';
import { containsIP, parseCidr, parseIP } from '../../core/cidr.js';

// In CI the kernel tests run as root and must run: a missing tool fails there rather than skipping.
const skip = process.env.CI ? false : (labUnavailable() ?? false);

const SUBNET_ENV = `FLANNEL_NETWORK=10.244.0.0/16
FLANNEL_SUBNET=10.244.1.1/24
FLANNEL_MTU=1450
FLANNEL_IPMASQ=true
`;

describe('subnet.env to CNI config (no root needed)', () => {
  test('follows flannel: network kept, subnet as its network, ipMasq inverted', () => {
    const env = parseSubnetEnv(SUBNET_ENV);
    assert.deepEqual(env, { network: '10.244.0.0/16', subnet: '10.244.1.0/24', mtu: 1450, ipMasq: true });
    const c = flannelBridgeConfig(env, { dataDir: '/tmp/x' });
    assert.equal(c.type, 'bridge');
    assert.equal(c.bridge, 'cni0');
    assert.equal(c.isGateway, true);
    assert.equal(c.ipMasq, false);
    assert.equal(c.mtu, 1450);
    assert.deepEqual(c.ipam, {
      type: 'host-local',
      ranges: [[{ subnet: '10.244.1.0/24' }]],
      routes: [{ dst: '10.244.0.0/16' }],
      dataDir: '/tmp/x',
    });
    assert.equal(flannelBridgeConfig({ ...env, ipMasq: false }, { dataDir: '/tmp/x' }).ipMasq, true);
  });

  test('parses ping summaries', () => {
    const out = '--- 10.0.0.1 ping statistics ---\n5 packets transmitted, 4 received, 20% packet loss, time 804ms\n';
    assert.deepEqual({ ...parsePing(out), output: '' }, { transmitted: 5, received: 4, loss: 20, output: '' });
    assert.equal(parsePing('3 packets transmitted, 0 received, +3 errors, 100% packet loss').loss, 100);
  });
});

describe('netns lab', { skip }, () => {
  let lab: Lab;
  let h1: Host;
  let h2: Host;
  let h3: Host;

  before(async () => {
    lab = await Lab.create({ underlays: ['192.168.100.0/24', '192.168.101.0/24'] });
    h1 = await lab.addHost('h1');
    h2 = await lab.addHost('h2');
    h3 = await lab.addHost('h3', { underlay: 1 });
  });
  after(async () => {
    await lab?.cleanup();
  });

  test('hosts on one underlay ping each other', async () => {
    assert.equal(h1.ip, '192.168.100.10');
    assert.equal(h2.ip, '192.168.100.11');
    const r = await lab.ping(h1, h2.ip, { count: 3, interval: 0.05 });
    assert.equal(r.loss, 0, r.output);
    assert.equal((await lab.ping(h2, h1.ip, { count: 3, interval: 0.05 })).received, 3);
  });

  test('a host on the other underlay is reached through the router, not on-link', async () => {
    assert.equal(h3.ip, '192.168.101.10');
    const r = await lab.ping(h1, h3.ip, { count: 3, interval: 0.05 });
    assert.equal(r.loss, 0, r.output);
    const route = await lab.exec(h1, ['ip', 'route', 'get', h3.ip]);
    assert.match(route.stdout, new RegExp(`via ${h1.underlay.gateway.replace(/\./g, '\\.')} dev eth0`));
  });

  test('nothing outside the lab is reachable', async () => {
    const r = await lab.exec(h1, ['ip', 'route', 'get', '1.1.1.1']);
    // the only way out is the router, and the router has no way out
    assert.match(r.stdout, /via 192\.168\.100\.1/);
    const rt = await lab.exec(lab.routerNs, ['ip', '-j', 'route', 'show']);
    assert.ok(!JSON.parse(rt.stdout).some((x: { dst: string }) => x.dst === 'default'));
  });

  test('a CNI bridge pod gets an address in FLANNEL_SUBNET and pings cni0', async () => {
    const pod = await lab.addPod(h1, SUBNET_ENV);
    const ip = parseIP(pod.ip)!;
    assert.ok(containsIP(parseCidr('10.244.1.0/24')!, ip.family, ip.ip), `${pod.ip} is not in 10.244.1.0/24`);
    assert.equal(pod.gateway, '10.244.1.1');
    const cni0 = await lab.exec(h1, ['ip', '-j', 'addr', 'show', 'dev', 'cni0']);
    const addrs = JSON.parse(cni0.stdout)[0].addr_info.map((a: { local: string }) => a.local);
    assert.ok(addrs.includes('10.244.1.1'), `cni0 has ${addrs}`);
    const mtu = await lab.exec(pod, ['ip', '-j', 'link', 'show', 'dev', 'eth0']);
    assert.equal(JSON.parse(mtu.stdout)[0].mtu, 1450);
    const routes = await lab.exec(pod, ['ip', '-j', 'route', 'show']);
    assert.ok(JSON.parse(routes.stdout).some((r: { dst: string; gateway?: string }) => r.dst === '10.244.0.0/16' && r.gateway === '10.244.1.1'));
    const r = await lab.ping(pod, pod.gateway, { count: 3, interval: 0.05 });
    assert.equal(r.loss, 0, r.output);
    // and back: the host reaches its pod over cni0
    assert.equal((await lab.ping(h1, pod.ip, { count: 2, interval: 0.05 })).loss, 0);
  });

  test('without FLANNEL_IPMASQ the plugin masquerades; a second pod gets the next address; removePod undoes it', async () => {
    const env = SUBNET_ENV.replace('10.244.1.1/24', '10.244.2.1/24').replace('IPMASQ=true', 'IPMASQ=false');
    const a = await lab.addPod(h2, env);
    const b = await lab.addPod(h2, env);
    assert.notEqual(a.ip, b.ip);
    assert.equal((await lab.ping(a, b.ip, { count: 2, interval: 0.05 })).loss, 0);
    const nat = async () => (await lab.exec(h2, ['iptables', '-t', 'nat', '-S', 'POSTROUTING'])).stdout;
    assert.match(await nat(), new RegExp(`-s ${b.ip}/32 .*-j CNI-`));
    await lab.removePod(b);
    assert.doesNotMatch(await nat(), new RegExp(`-s ${b.ip}/32`));
    const links = await lab.exec(h2, ['ip', '-j', 'link', 'show', 'type', 'veth']);
    assert.equal(JSON.parse(links.stdout).length, 2, 'one pod veth plus the underlay eth0 remain');
  });

  test('spawned processes run inside the namespace and are stopped at cleanup', async () => {
    const p = lab.spawn(h2, ['sleep', '300']);
    await new Promise((r) => setTimeout(r, 100));
    const netns = execFileSync('ip', ['netns', 'identify', String(p.child.pid)]).toString().trim();
    assert.equal(netns, h2.ns);
    await p.stop();
    assert.notEqual(p.child.signalCode ?? p.child.exitCode, null);
  });

  test('cleanup removes every namespace, link and file of the run', async () => {
    const other = await Lab.create();
    const h = await other.addHost('x1');
    await other.addPod(h, SUBNET_ENV);
    other.spawn(h, ['sleep', '300']);
    const rootLinksBefore = execFileSync('ip', ['-o', 'link', 'show']).toString();
    assert.ok(other.leftovers().length > 0);
    await other.cleanup();
    assert.deepEqual(other.leftovers(), []);
    const netns = execFileSync('ip', ['netns', 'list']).toString();
    assert.ok(!netns.includes(other.id), netns);
    // the lab never created anything in the root namespace
    assert.equal(execFileSync('ip', ['-o', 'link', 'show']).toString(), rootLinksBefore);
    // and the first lab is untouched by the second one's cleanup
    assert.equal((await lab.ping(h1, h2.ip, { count: 1 })).received, 1);
  });
});
