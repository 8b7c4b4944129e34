// The end-to-end scenario every routed backend must pass, as flannel's own
// e2e tests prove theirs: hosts, real pods, pings across; drift repaired
// within one resync; kill -9 and restart without a lost packet; removal of a
// departed peer everywhere, including on a host that was down when it left.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { labUnavailable } from '../helpers/netns.js';
import { ROOT, START_BOUND_MS, waitFor, waitForStart } from '../helpers/procs.js';
import { base, Cluster, type Broker } from './cluster.js';

export interface ScenarioOptions {
  name: string;
  conf: Record<string, unknown>;
  underlays?: string[];
  /** host -> underlay index */
  hosts: Record<string, number>;
  /** what a peer costs on a host: which entries to check (when present is not given) */
  entries?(c: Cluster, on: string, peer: string): Promise<{ route: boolean; neighbour?: boolean; fdb?: boolean }>;
  /** whether host `on` has everything it needs to reach peer (default: the entries above) */
  present?(c: Cluster, on: string, peer: string): Promise<boolean>;
  /** whether host `on` has nothing left of a peer that held subnet (default: no route to it, no neighbour for it) */
  absent?(c: Cluster, on: string, subnet: string): Promise<boolean>;
  /** what the drift test deletes by hand on `on` for peer (default: its route, neighbour and fdb entry) */
  drift?(c: Cluster, on: string, peer: string): Promise<void>;
  /**
   * What kill -9 and restart of an agent may cost a running ping: nothing
   * (default: the kernel keeps forwarding), or, for a data plane that lives
   * in the agent (udp), a gap that must close within resumeWithinMs of the
   * new agent saying it forwards again (`forwarding`, a line of its log).
   * Measured from that line, not from the process's start: how long a node
   * process takes to start on a busy machine is not what the agent promises.
   */
  restart?: { resumeWithinMs: number; forwarding: string };
  /** the device the backend owns, when it has one */
  device?: string;
  golden?: string;
  extra?: (get: () => Cluster) => void;
  /** what to show beside a failure on host `on`, besides its agent's log (a daemon's own log) */
  diagnose?(c: Cluster, on: string): string;
  /** the control plane the agents meet (default the controller's embedded broker) */
  broker?: Broker;
  /**
   * Pods of both families on dual-stack underlays ('dual'), or of IPv6 only
   * ('only'); the checks, the drift and the pings then cover IPv6 too, and
   * device6 names the backend's IPv6 device.
   */
  ipv6?: 'dual' | 'only';
  device6?: string;
  /** directories each host has its own of (test/helpers/netns.ts LabOptions.privateDirs) */
  privateDirs?: string[];
}

const BROKER_NAMES: Record<Broker, string> = { embedded: 'the embedded broker', mosquitto: 'Mosquitto', iot: 'AWS IoT Core (stand-in)' };

// In CI the kernel tests run as root and must run: a missing tool is a failure there.
export const skipKernel = process.env.CI ? false : (labUnavailable() ?? false);

/** Every address of every pod, each pinged from every pod on another host. */
/** diagnose: what to show beside a failure on a host (ScenarioOptions.diagnose) */
async function pingAll(c: Cluster, diagnose?: (c: Cluster, on: string) => string): Promise<void> {
  const pods = [...c.nodes.values()].flatMap((n) => n.pods);
  for (const from of pods) {
    for (const to of pods) {
      if (from.host.name === to.host.name) continue;
      for (const ip of [to.ip, to.ip6].filter((a, i, all): a is string => !!a && all.indexOf(a) === i)) {
        const r = await c.lab.ping(from, ip, { count: 2, interval: 0.2, deadline: 8 });
        if (r.received === r.transmitted) continue;
        const hosts = [...new Set([from.host.name, to.host.name])].filter((h) => c.nodes.has(h));
        assert.fail(`${from.name} -> ${to.name} (${ip}): ${r.output}\n${diagnose ? hosts.map((h) => diagnose(c, h)).join('\n') : ''}`);
      }
    }
  }
}

/** What host `on` holds of peer in one family: its route, and on device its neighbour and fdb entry. */
export async function peerState(c: Cluster, on: string, peer: string, device?: string, family: 4 | 6 = 4) {
  const lease = await c.lease(peer);
  const subnet = (family === 4 ? lease?.subnet : lease?.ipv6Subnet) as string;
  const publicIP = family === 4 ? lease?.publicIP : lease?.publicIPv6;
  const routes = JSON.parse((await c.ip(on, [`-${family}`, '-j', 'route', 'show', subnet])) || '[]') as { dst: string; gateway?: string; dev: string }[];
  let neighbours: { dst: string; lladdr?: string }[] = [];
  let fdb: { mac: string; dst?: string }[] = [];
  if (device) {
    neighbours = (JSON.parse((await c.ip(on, ['-j', 'neigh', 'show', 'dev', device])) || '[]') as { dst: string; lladdr?: string }[]).filter((n) => n.dst === base(subnet));
    const out = (await c.lab.exec(c.node(on).host, ['bridge', '-j', 'fdb', 'show', 'dev', device])).stdout;
    fdb = (JSON.parse(out || '[]') as { mac: string; dst?: string }[]).filter((f) => f.dst === publicIP);
  }
  const mac = lease?.backendData[family === 4 ? 'VtepMAC' : 'VtepMACv6'] as string | undefined;
  return { subnet, routes, neighbours, fdb, mac, publicIP };
}

/**
 * Returns once the agent on host has completed two more kernel passes (its
 * twill_agent_reconciles_total): one resync, whatever the pass under way
 * had already read.
 */
export async function passesLater(c: Cluster, host: string): Promise<void> {
  const passes = async () => Number(/^twill_agent_reconciles_total (\d+)/m.exec((await c.agentHttp(host, '/metrics')).body)?.[1] ?? Number.NaN);
  const start = await passes();
  assert.ok(Number.isFinite(start), `the agent on ${host} reports its kernel passes`);
  // A bound for a hung agent only: a pass runs every second.
  await waitFor(`two kernel passes on ${host}`, async () => (await passes()) >= start + 2, 120_000, 100);
}

export function overlayScenario(o: ScenarioOptions): void {
  const on = o.broker && o.broker !== 'embedded' ? ` on ${BROKER_NAMES[o.broker]}` : '';
  describe(`${o.name}: pods across hosts${on}`, { skip: skipKernel }, () => {
    let c: Cluster;
    const names = Object.keys(o.hosts);
    const [h1, h2, h3] = names as [string, string, string];

    before(async () => {
      c = await Cluster.create({ underlays: o.underlays, hosts: o.hosts, conf: o.conf, agentArgs: ['--ip-masq'], broker: o.broker, ipv6: o.ipv6 !== undefined, privateDirs: o.privateDirs });
      await c.startAll();
      for (const n of names) await c.addPod(n);
      await c.addPod(h1);
    });
    after(async () => {
      const refused = await c?.refusals().catch((e: Error) => [e.message]);
      await c?.cleanup();
      assert.deepEqual(refused ?? [], [], 'the agents stayed within their IoT policy and IoT Core\'s limits');
    });

    /** the families the pods have, with the backend's device for each */
    const families = [...(o.ipv6 === 'only' ? [] : [[4, o.device] as const]), ...(o.ipv6 ? [[6, o.device6] as const] : [])];
    const check = async (on: string, peer: string) => {
      if (o.present) return o.present(c, on, peer);
      if (!o.entries) throw new Error('a scenario needs entries() or present()');
      const want = await o.entries(c, on, peer);
      for (const [family, device] of families) {
        const s = await peerState(c, on, peer, device, family);
        const ok =
          s.routes.length === (want.route ? 1 : 0) &&
          (want.neighbour === undefined || s.neighbours.length === (want.neighbour ? 1 : 0)) &&
          (want.fdb === undefined || s.fdb.length === (want.fdb ? 1 : 0));
        if (!ok) return false;
      }
      return true;
    };
    const allInPlace = async () => {
      for (const on of names) for (const peer of names) if (on !== peer && !(await check(on, peer))) return false;
      return true;
    };

    test('every pod pings every pod on another host, both ways', async () => {
      // startAll waited until every agent applied every peer; the bound is
      // only a hang's (inside a starved user-mode-linux a pass takes seconds).
      await waitFor('entries everywhere', allInPlace, START_BOUND_MS, 200);
      await pingAll(c, o.diagnose);
    });

    const twoPassesLater = (host: string) => passesLater(c, host);

    test('drift: entries and the device deleted by hand come back within one resync', async () => {
      if (o.drift) {
        await o.drift(c, h1, h2);
      } else {
        // the last family's entries: IPv6 ones on a network that has IPv6
        const [family, device] = families.at(-1)!;
        const s = await peerState(c, h1, h2, device, family);
        await c.lab.exec(c.node(h1).host, ['ip', `-${family}`, 'route', 'del', s.subnet]);
        if (device && s.neighbours.length) await c.lab.exec(c.node(h1).host, ['ip', 'neigh', 'del', base(s.subnet), 'dev', device]);
        if (device && s.fdb.length) await c.lab.exec(c.node(h1).host, ['bridge', 'fdb', 'del', s.mac as string, 'dev', device, 'dst', s.publicIP as string, 'self']);
      }
      // The promise is one resync: once two passes have completed since the
      // deletion (the one under way may have read the kernel before it, the
      // next one cannot have), the entries are back. Counted in passes, not
      // seconds: inside user-mode-linux on a busy machine a pass of its own,
      // and each look at the kernel, take several seconds.
      await twoPassesLater(h1);
      assert.ok(await check(h1, h2), 'the entries deleted by hand are back after one resync');
      const lastDevice = families.at(-1)?.[1];
      if (lastDevice) {
        await c.lab.exec(c.node(h1).host, ['ip', 'link', 'del', lastDevice]);
        await twoPassesLater(h1);
        for (const peer of names) if (peer !== h1) assert.ok(await check(h1, peer), `the device and its entries for ${peer} are back after one resync`);
      }
      await pingAll(c, o.diagnose);
    });

    // Backend-specific checks run while every host is still in the network.
    o.extra?.(() => c);

    const killTitle = o.restart
      ? `kill -9 and restart of an agent while a ping runs: replies resume within ${o.restart.resumeWithinMs} ms of the restart, same subnet, no duplicates`
      : 'kill -9 and restart of an agent while a ping runs: no packet lost, same subnet, no duplicates';
    test(killTitle, async () => {
      const from = c.node(h2).pods[0];
      const to = c.node(h1).pods[0];
      assert.ok(from && to);
      const before = c.subnetEnv(h1);
      // -D stamps every reply, so the gap after the restart can be measured.
      // With a data plane in the agent, the ping runs until the new agent
      // forwards again (up to 10 minutes: only a hang's bound), then stops.
      const count = o.restart ? '12000' : '60';
      const ping = c.lab.spawn(from, ['ping', '-D', '-c', count, '-i', '0.05', '-W', '1', to.ip]);
      // on a dual-stack network, the other family at the same time
      const ping6 = to.ip6 && to.ip6 !== to.ip ? c.lab.spawn(from, ['ping', '-D', '-c', '60', '-i', '0.05', '-W', '1', to.ip6]) : undefined;
      await new Promise((r) => setTimeout(r, 500));
      c.node(h1).agent?.child.kill('SIGKILL');
      await c.node(h1).agent?.exited;
      const agent = c.startAgent(h1);
      if (o.restart) {
        const { forwarding, resumeWithinMs } = o.restart;
        await waitForStart(`the restarted agent on ${h1} forwarding`, agent, (text) => text.includes(forwarding));
        const forwardingAt = Date.now();
        const stamps = () => [...ping.output().matchAll(/^\[(\d+\.\d+)\] \d+ bytes from/gm)].map((m) => Number(m[1]) * 1000);
        // Replies that come back at all after the agent forwards again; the bound is a hang's.
        await waitFor('a reply once the agent forwards again', () => stamps().some((t) => t > forwardingAt) || undefined, START_BOUND_MS).catch((e: Error) => {
          throw new Error(`${e.message}\n${ping.output().slice(-2000)}\n${agent.output().slice(-3000)}`);
        });
        await ping.stop();
        const first = stamps().find((t) => t > forwardingAt)!;
        assert.ok(first - forwardingAt <= resumeWithinMs, `first reply ${Math.round(first - forwardingAt)} ms after the agent said it forwards:\n${ping.output().slice(-2000)}\n${agent.output().slice(-3000)}`);
      } else {
        await ping.exited;
        const out = ping.output();
        assert.match(out, / 0% packet loss/, `${out}\n${h1}'s new agent:\n${agent.output().slice(-3000)}\n${o.diagnose?.(c, h1) ?? ''}`);
      }
      if (ping6) {
        await ping6.exited;
        assert.match(ping6.output(), / 0% packet loss/, ping6.output());
      }
      await c.waitPeers(names.length - 1, [h1]);
      assert.equal(c.subnetEnv(h1), before);
      for (const peer of names) {
        if (peer === h1) continue;
        for (const [family, device] of families) {
          const s = await peerState(c, h1, peer, device, family);
          assert.ok(s.routes.length <= 1 && s.neighbours.length <= 1 && s.fdb.length <= 1, `no duplicate IPv${family} entries for ${peer}: ${JSON.stringify(s)}`);
        }
        assert.ok(await check(h1, peer));
      }
    });

    test('controller restart: no packet lost, no subnet changed, and every agent still follows the network', async () => {
      const envs = names.map((n) => c.subnetEnv(n));
      const from = c.node(h2).pods[0];
      const to = c.node(h1).pods[0];
      assert.ok(from && to);
      // The kernel forwards while the control plane is away: an agent that
      // loses its broker keeps everything it built.
      const ping = c.lab.spawn(from, ['ping', '-c', '40', '-i', '0.05', '-W', '1', to.ip]);
      await new Promise((r) => setTimeout(r, 300));
      await c.restartController();
      await ping.exited;
      assert.match(ping.output(), / 0% packet loss/, ping.output());
      await c.waitPeers(names.length - 1);
      assert.deepEqual(names.map((n) => c.subnetEnv(n)), envs);
      // (the removal below is a change made after the restart: every agent must see it)
      await pingAll(c, o.diagnose);
    });

    test('removal: a departed peer is dropped everywhere, also by a host that was down when it left', async () => {
      // h3 leaves while everyone is up
      const subnetsOf = async (n: string) => {
        const l = await c.lease(n);
        return [l?.subnet, l?.ipv6Subnet].filter((x): x is string => !!x);
      };
      const subnet3 = await subnetsOf(h3);
      assert.ok(subnet3.length > 0);
      await c.node(h3).agent?.stop();
      await c.release(h3);
      /** nothing of the peer that held these subnets is left on host `on`: no route, no neighbour */
      const gone = async (on: string, subnets: string[]) => {
        for (const subnet of subnets) {
          if (o.absent) {
            if (!(await o.absent(c, on, subnet))) return false;
            continue;
          }
          const v6 = subnet.includes(':');
          const device = v6 ? o.device6 : o.device;
          const routes = JSON.parse((await c.ip(on, [v6 ? '-6' : '-4', '-j', 'route', 'show', subnet])) || '[]') as unknown[];
          const neigh = device ? JSON.parse((await c.ip(on, ['-j', 'neigh', 'show', 'dev', device])) || '[]') as { dst: string }[] : [];
          if (routes.length !== 0 || neigh.some((n) => n.dst === base(subnet))) return false;
        }
        return true;
      };
      // The promise: once an agent's view has lost the peer, its next kernel pass removes it.
      await c.waitPeers(names.length - 2, [h1, h2]);
      for (const on of [h1, h2]) await twoPassesLater(on);
      for (const on of [h1, h2]) assert.equal(await gone(on, subnet3), true, `${on} dropped h3 from its view and still has it after a kernel pass`);

      // h3 comes back; then h2 is down while h3 leaves again; h2 cleans up at start-up
      c.startAgent(h3);
      await c.waitPeers(names.length - 1);
      const subnet3b = await subnetsOf(h3);
      await twoPassesLater(h2);
      assert.ok(await check(h2, h3), 'h2 has h3 again');
      c.node(h2).agent?.child.kill('SIGKILL');
      await c.node(h2).agent?.exited;
      await c.node(h3).agent?.stop();
      await c.release(h3);
      await c.waitPeers(names.length - 2, [h1]);
      await twoPassesLater(h1);
      assert.equal(await gone(h1, subnet3b), true, 'h1 dropped h3 from its view and still has it after a kernel pass');
      assert.equal(await gone(h2, subnet3b), false, 'h2 was down and still has h3');
      c.startAgent(h2);
      // Ready means a complete view of the network applied: from then on a
      // peer that left while the agent was down must be gone.
      await c.waitReady(h2);
      assert.equal(await gone(h2, subnet3b), true, `h2 is ready and still has h3:\n${c.node(h2).agent?.output().slice(-3000)}`);
      await c.waitPeers(names.length - 2, [h1, h2]);
      const pods = [c.node(h1).pods[0], c.node(h2).pods[0]];
      for (const ip of [pods[1]!.ip, pods[1]!.ip6].filter((a): a is string => !!a)) {
        // h2 came back with a fresh process: on ipsec a fresh charon, whose
        // first packet to h1 waits for the key exchange (retransmitted after
        // 4 s, 7 s, ... by charon's own timers, slower in a starved UML). The
        // promise is that the pods reach each other again, so ask until they
        // do; the bound is only a hang's.
        let last = '';
        await waitFor(`h1's pod reaches h2's at ${ip}`, async () => {
          const p = await c.lab.ping(pods[0]!, ip, { count: 2, interval: 0.2, deadline: 8 });
          last = p.output;
          return p.received === 2;
        }, START_BOUND_MS, 0).catch((e: Error) => { throw new Error(`${e.message}\n${last}`); });
      }
    });

    if (o.golden) {
      test('masquerade and forward rules match the golden copy, and are restored when deleted', async () => {
        const golden = readFileSync(join(ROOT, 'test/golden', o.golden as string), 'utf8');
        const rules = async () => {
          const save = (await c.lab.exec(c.node(h1).host, ['iptables-save'])).stdout;
          const subnet = (await c.subnetOf(h1)) as string;
          return save.split('\n').filter((l) => l.includes('TWILL-')).join('\n').replaceAll(subnet, '<POD_SUBNET>') + '\n';
        };
        assert.equal(await rules(), golden);
        await c.lab.exec(c.node(h1).host, ['iptables', '-t', 'nat', '-D', 'TWILL-POSTRTG', '1']);
        await c.lab.exec(c.node(h1).host, ['iptables', '-D', 'FORWARD', '1']);
        await waitFor('rules restored', async () => (await rules()) === golden, 5_000, 200).catch((e: Error) => {
          throw new Error(`${e.message}\n${c.node(h1).agent?.output().slice(-3000)}`);
        });
      });
    }
  });
}
