// A simulated VPC made of real networking, for end-to-end tests of the cloud
// backends (root only):
//
//   instance nss (i1 i2 ...)     eth0 172.31.0.N/20 (the sim's private IP)
//        |  |  |                   one veth each, no shared L2: every packet crosses the router
//   router ns:  p-i1 p-i2 ...      172.31.0.1 on each port, proxy ARP, a /32 to each instance
//               eth0 192.168.77.1  the VPN / Direct Connect link (the lab's underlay 0)
//        |
//   bare-metal ns (bm)             192.168.77.10, outside the VPC, not a sim instance
//
// The router stands for the VPC: it forwards pod traffic by the simulated
// cloud's route table (each route in the sim is a kernel route `via` its
// target instance's private IP, a blackhole while that instance is stopped or
// terminated, and gone when the sim deletes it) and enforces each instance's
// source/destination check on that instance's port, as EC2 does: with the
// check on, what the instance sends must come from its private IP and what it
// receives must go to it. The router follows the sim's SQLite file (sim.db in
// the controller's data directory) as it changes: on every write to it, and
// every 200 ms besides.
//
// The controller runs in the router namespace with --cloud sim, so the
// instances' agents reach it as they would reach the cloud's endpoint. The sim
// emits no instance events: the local controller learns of a change only at
// its next periodic reconcile (--reconcile-interval), and that is what
// reconciled() waits for, counted on the controller's own metric.
//
// Every namespace has rp_filter=1 (strict): the router, the instances, the
// bare-metal host and every pod. The instance namespaces carry their own
// "twl-<pid>-<random>" names, so a run that was killed is swept like any lab.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../agent/kernel/exec.js';
import type { Lease } from '../../core/lease.js';
import { simFile, simTable, SimVpc, type SimInstance, type SimRoute } from '../../control/routes/clouds/sim.js';
import { Cluster, type Node } from '../e2e/cluster.js';
import type { Host, Pod, Underlay } from './netns.js';
import { freePort, runTwill, START_BOUND_MS, waitFor } from './procs.js';

/** The sim's private addresses (172.31.0.10 on) lie in the default VPC's first /20 subnet; its router is .1, as in AWS. */
export const VPC_SUBNET = '172.31.0.0/20';
export const VPC_ROUTER = '172.31.0.1';
/** The link that stands for the VPN or Direct Connect: the bare-metal host and the controller's listener are on it. */
export const ONPREM_LINK = '192.168.77.0/24';
/** The routing protocol number the lab marks the route table's kernel routes with. */
const VPC_PROTO = '77';
const NETWORK = 'pods';

const myNamespaces = new Set<string>();
process.on('exit', () => {
  for (const ns of myNamespaces) {
    try {
      for (const pid of execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split(/\s+/).filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    } catch {
      // nothing more can be done at exit
    }
  }
});

const sysctls = async (ns: string, pairs: Record<string, string>) => {
  for (const [k, v] of Object.entries(pairs)) await run(['sysctl', '-qw', `${k}=${v}`], { netns: ns });
};
const STRICT_RP = { 'net.ipv4.conf.all.rp_filter': '1', 'net.ipv4.conf.default.rp_filter': '1' };

/** What the router's kernel must hold for one destination of the route table. */
export type RouterRoute = { via: string } | 'blackhole';

/**
 * The kernel routes the route table asks for: a route to a running
 * instance the lab has wired goes via its private IP; one to a stopped,
 * terminated or unknown instance is a blackhole (EC2's route state
 * "blackhole": the target is not available). Routes to other kinds of next
 * hop are not the VPC's to play here.
 */
export function routerRoutes(routes: SimRoute[], instances: SimInstance[], wired: ReadonlySet<string>): Map<string, RouterRoute> {
  const byId = new Map(instances.map((i) => [i.id, i]));
  const out = new Map<string, RouterRoute>();
  for (const r of routes) {
    if (r.hop !== 'instance') continue;
    const i = byId.get(r.target);
    out.set(r.destination, i && i.state === 'running' && wired.has(i.id) ? { via: i.privateIP } : 'blackhole');
  }
  return out;
}

interface Port {
  name: string;
  ip: string;
  /** the check as last written into nftables; undefined before the first sync */
  check?: boolean;
}

/** The VPC's router: its kernel follows the sim's route table and enforces each port's source/destination check. */
export class VpcRouter {
  private readonly ports = new Map<string, Port>();
  private tail: Promise<void> = Promise.resolve();
  private queued?: Promise<void>;
  private watcher?: FSWatcher;
  private timer?: NodeJS.Timeout;
  /** the last failure of a background sync, shown when a test fails */
  lastError?: string;
  /** syncs completed */
  syncs = 0;
  /** what the last completed sync applied, to skip the kernel when the sim has not changed */
  private applied?: string;

  constructor(readonly ns: string, readonly sim: SimVpc, readonly table: string) {}

  async setup(): Promise<void> {
    await sysctls(this.ns, { ...STRICT_RP, 'net.ipv4.ip_forward': '1', 'net.ipv4.conf.all.send_redirects': '0', 'net.ipv4.conf.default.send_redirects': '0' });
    // prerouting, so a spoofed source is dropped by the check (and counted) before the routing lookup
    await this.nft([
      'add table inet vpc',
      'add chain inet vpc from_ports { type filter hook prerouting priority -150 ; }',
      'add chain inet vpc to_ports { type filter hook forward priority 0 ; }',
    ]);
  }

  private async nft(lines: string[]): Promise<void> {
    await run(['nft', '-f', '-'], { netns: this.ns, input: lines.join('\n') + '\n' });
  }

  /** Wires an instance's port: the router's address on it, proxy ARP for the rest of the subnet, a /32 to the instance, its check chains. */
  async addPort(name: string, port: string, ip: string): Promise<void> {
    await run(['ip', 'addr', 'add', `${VPC_ROUTER}/32`, 'dev', port], { netns: this.ns });
    // A VPC answers ARP at once; the kernel's proxy ARP waits a random part of
    // proxy_delay (0.8 s) first, which a ping's first echoes between two
    // instances (the overlay's tunnel ends) would show as late.
    await sysctls(this.ns, { [`net.ipv4.conf.${port}.proxy_arp`]: '1', [`net.ipv4.conf.${port}.rp_filter`]: '1', [`net.ipv4.neigh.${port}.proxy_delay`]: '0' });
    await run(['ip', 'link', 'set', port, 'up'], { netns: this.ns });
    await run(['ip', 'route', 'add', `${ip}/32`, 'dev', port, 'scope', 'link'], { netns: this.ns });
    await this.nft([
      `add counter inet vpc drop-${port}`,
      `add chain inet vpc in-${port}`,
      `add chain inet vpc out-${port}`,
      `add rule inet vpc from_ports iifname "${port}" jump in-${port}`,
      `add rule inet vpc to_ports oifname "${port}" jump out-${port}`,
    ]);
    this.ports.set(name, { name: port, ip });
  }

  /** Packets the source/destination check dropped on an instance's port, both ways. */
  async drops(name: string): Promise<number> {
    const port = this.ports.get(name);
    if (!port) throw new Error(`no port for ${name}`);
    const out = (await run(['nft', '-j', 'list', 'counter', 'inet', 'vpc', `drop-${port.name}`], { netns: this.ns })).stdout;
    const items = (JSON.parse(out) as { nftables: { counter?: { packets: number } }[] }).nftables;
    return items.find((i) => i.counter)?.counter?.packets ?? 0;
  }

  /** The route table's routes in the kernel now, by destination. */
  async kernelRoutes(): Promise<Map<string, RouterRoute>> {
    const out = (await run(['ip', '-4', '-j', 'route', 'show', 'proto', VPC_PROTO], { netns: this.ns })).stdout;
    const rows = JSON.parse(out || '[]') as { dst: string; gateway?: string; type?: string }[];
    return new Map(rows.map((r) => [r.dst, r.type === 'blackhole' ? 'blackhole' : { via: r.gateway ?? '' }]));
  }

  /** Brings the kernel to the sim's state now; a sync asked for while one runs runs again after it, on what the sim holds then. */
  sync(): Promise<void> {
    if (!this.queued) {
      const next = this.tail.then(() => {
        this.queued = undefined;
        return this.syncNow();
      });
      this.queued = next;
      this.tail = next.catch(() => {});
    }
    return this.queued;
  }

  private async syncNow(): Promise<void> {
    const instances = this.sim.instances();
    const want = routerRoutes(this.sim.routes(this.table), instances, new Set(this.ports.keys()));
    // Nothing else writes the router's routes: when the sim has not changed since the last sync, neither has the kernel.
    const key = JSON.stringify([[...want], instances.map((i) => [i.id, i.sourceDestCheck]), [...this.ports.keys()]]);
    if (key === this.applied) {
      this.syncs++;
      return;
    }
    const have = await this.kernelRoutes();
    const lines: string[] = [];
    for (const [dst, r] of want) {
      const cur = have.get(dst);
      if (JSON.stringify(cur) === JSON.stringify(r)) continue;
      lines.push(r === 'blackhole' ? `route replace blackhole ${dst} proto ${VPC_PROTO}` : `route replace ${dst} via ${r.via} proto ${VPC_PROTO}`);
    }
    for (const dst of have.keys()) if (!want.has(dst)) lines.push(`route del ${dst} proto ${VPC_PROTO}`);
    if (lines.length) await run(['ip', '-force', '-batch', '-'], { netns: this.ns, input: lines.join('\n') + '\n' });
    const nft: string[] = [];
    for (const i of instances) {
      const port = this.ports.get(i.id);
      if (!port || port.check === i.sourceDestCheck) continue;
      nft.push(`flush chain inet vpc in-${port.name}`, `flush chain inet vpc out-${port.name}`);
      if (i.sourceDestCheck) {
        // EC2: with the check on, the instance must be the source of what it sends and the destination of what it receives.
        nft.push(`add rule inet vpc in-${port.name} ip saddr != ${port.ip} counter name "drop-${port.name}" drop`);
        nft.push(`add rule inet vpc out-${port.name} ip daddr != ${port.ip} counter name "drop-${port.name}" drop`);
      }
      port.check = i.sourceDestCheck;
    }
    if (nft.length) await this.nft(nft);
    this.applied = key;
    this.syncs++;
  }

  /** Follows the sim from now on: on every write to its file, and every 200 ms in case a write was missed. */
  follow(dataDir: string): void {
    const kick = () => void this.sync().then(() => { this.lastError = undefined; }, (e: Error) => { this.lastError = e.message; });
    this.watcher = watch(dataDir, (_event, file) => { if (file?.startsWith('sim.db')) kick(); });
    this.timer = setInterval(kick, 200);
    kick();
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    if (this.timer) clearInterval(this.timer);
    await this.tail;
  }
}

export interface Instance {
  name: string;
  node: Node;
  ip: string;
  port: string;
}

export interface VpcLabOptions {
  /** the network's net-conf.json: Backend.Type aws-vpc, with its RouteLimit */
  conf: Record<string, unknown>;
  /** the controller's --reconcile-interval (default 1s): how often it looks at the sim */
  reconcileInterval?: string;
  /** a bare-metal host "bm" on the VPN link, with an agent config (not started) */
  bareMetal?: boolean;
}

/** A controller with --cloud sim, a router that plays the VPC, instances with agents, and optionally a bare-metal host. */
export class VpcLab {
  readonly instances = new Map<string, Instance>();
  private readonly id = `twl-${process.pid}-${randomBytes(2).toString('hex')}`;
  private readonly namespaces: string[] = [];
  private constructor(readonly cluster: Cluster, readonly router: VpcRouter, readonly sim: SimVpc, private readonly metricsPort: number) {}

  static async create(o: VpcLabOptions): Promise<VpcLab> {
    const metricsPort = await freePort();
    const cluster = await Cluster.create({
      underlays: [ONPREM_LINK],
      hosts: o.bareMetal ? { bm: 0 } : {},
      conf: o.conf,
      agentArgs: ['--ip-masq'],
      controllerArgs: ['--cloud', 'sim', '--reconcile-interval', o.reconcileInterval ?? '1s', '--metrics-addr', `127.0.0.1:${metricsPort}`],
    });
    let sim: SimVpc | undefined;
    try {
      sim = new SimVpc(simFile(cluster.dataDir));
      const router = new VpcRouter(cluster.lab.routerNs, sim, simTable(NETWORK));
      const lab = new VpcLab(cluster, router, sim, metricsPort);
      await router.setup();
      await sysctls(cluster.lab.underlayNs, STRICT_RP);
      if (o.bareMetal) await sysctls(cluster.node('bm').host.ns, STRICT_RP);
      router.follow(cluster.dataDir);
      return lab;
    } catch (e) {
      sim?.close();
      await cluster.cleanup();
      throw e;
    }
  }

  get lab() {
    return this.cluster.lab;
  }

  /** twill sim, as an operator runs it beside the controller. */
  async simCli(...args: string[]): Promise<string> {
    const r = await runTwill(['sim', ...args, '--data-dir', this.cluster.dataDir]);
    if (r.code !== 0) throw new Error(`twill sim ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  }

  /**
   * Starts an instance in the sim (`twill sim instance start`), then its
   * "machine": a namespace with the private IP the sim gave it, wired to the
   * router, and its agent's config. The agent is started by startAgents.
   */
  async launch(name: string): Promise<Instance> {
    await this.simCli('instance', 'start', name, '--network', NETWORK);
    const inst = this.sim.instance(name);
    if (!inst) throw new Error(`the sim has no instance ${name} after starting it`);
    const ns = `${this.id}-${name}`;
    const port = `p-${name}`;
    await run(['ip', 'netns', 'add', ns]);
    myNamespaces.add(ns);
    this.namespaces.push(ns);
    await run(['ip', 'link', 'set', 'lo', 'up'], { netns: ns });
    await run(['ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', port, 'netns', this.lab.routerNs], { netns: ns });
    await run(['ip', 'addr', 'add', `${inst.privateIP}/${VPC_SUBNET.split('/')[1]}`, 'dev', 'eth0'], { netns: ns });
    await run(['ip', 'link', 'set', 'eth0', 'up'], { netns: ns });
    await run(['ip', 'route', 'add', 'default', 'via', VPC_ROUTER, 'dev', 'eth0'], { netns: ns });
    await sysctls(ns, { ...STRICT_RP, 'net.ipv4.ip_forward': '1' });
    await this.router.addPort(name, port, inst.privateIP);
    const underlay: Underlay = { index: -1, cidr: VPC_SUBNET, prefix: Number(VPC_SUBNET.split('/')[1]), bridge: '', gateway: VPC_ROUTER };
    const host: Host = { name, ns, iface: 'eth0', ip: inst.privateIP, underlay };
    const dir = this.lab.dir;
    const node: Node = { host, name, subnetFile: join(dir, `${name}.subnet.env`), stateDir: join(dir, `${name}.state`), configFile: join(dir, `${name}.agent.json`), pods: [] };
    writeFileSync(node.configFile, await this.cluster.addNode(name));
    this.cluster.nodes.set(name, node);
    const instance: Instance = { name, node, ip: inst.privateIP, port };
    this.instances.set(name, instance);
    await this.router.sync();
    return instance;
  }

  /** Starts the named nodes' agents and waits until each has written subnet.env (it holds its lease). */
  async startAgents(names: string[]): Promise<void> {
    for (const n of names) this.cluster.startAgent(n);
    for (const n of names) {
      await waitFor(`${n} subnet.env`, () => this.cluster.subnetEnv(n), START_BOUND_MS).catch((e: Error) => {
        throw new Error(`${e.message}\n${this.cluster.node(n).agent?.output().slice(-3000)}`);
      });
    }
  }

  /** A pod on a node, made by the CNI plugins from its subnet.env, with strict reverse-path filtering like every namespace here. */
  async addPod(name: string): Promise<Pod> {
    const pod = await this.cluster.addPod(name);
    await sysctls(pod.ns, STRICT_RP);
    return pod;
  }

  private async reconciles(): Promise<number> {
    const script = `fetch("http://127.0.0.1:${this.metricsPort}/metrics").then((r) => r.text()).then((t) => process.stdout.write(t), () => {})`;
    const text = (await this.lab.exec(this.lab.routerNs, [process.execPath, '-e', script], { timeoutMs: 30_000 })).stdout;
    const m = new RegExp(`^twill_route_reconciles_total\\{(?=[^}]*network="${NETWORK}")(?=[^}]*result="ok")[^}]*\\} (\\d+)`, 'm').exec(text);
    return Number(m?.[1] ?? 0);
  }

  /**
   * Returns once the controller has completed two more reconciles of the
   * network (its twill_route_reconciles_total): the sim sends no events, so
   * what the product promises is that the next periodic reconcile that
   * starts after a change acts on it; the one under way may have read the
   * sim before the change, the next cannot have. Then the router is synced.
   * The bound is only a hang's.
   */
  async reconciled(): Promise<void> {
    const start = await this.reconciles();
    await waitFor('two route reconciles', async () => (await this.reconciles()) >= start + 2, START_BOUND_MS, 200).catch((e: Error) => {
      throw new Error(`${e.message}\n${this.cluster.controller?.output().slice(-3000)}`);
    });
    await this.router.sync();
  }

  /** The route table as the sim holds it: destination -> target instance. */
  simRoutes(): Map<string, string> {
    return new Map(this.sim.routes(simTable(NETWORK)).map((r) => [r.destination, r.target]));
  }

  async lease(name: string): Promise<Lease | undefined> {
    return this.cluster.lease(name);
  }

  /** Terminates an instance as EC2 does: in the sim (`twill sim instance terminate`), and its machine goes (agent stopped, port down). */
  async terminate(name: string): Promise<void> {
    const inst = this.instances.get(name);
    if (!inst) throw new Error(`no instance ${name}`);
    await this.simCli('instance', 'terminate', name, '--network', NETWORK);
    await inst.node.agent?.stop();
    await run(['ip', 'link', 'set', inst.port, 'down'], { netns: this.lab.routerNs });
    await this.router.sync();
  }

  /** Deletes a node's route from the sim's table by hand (`twill sim route delete`), as another tool or a person would. */
  async deleteRouteByHand(name: string): Promise<string> {
    const subnet = (await this.lease(name))?.subnet;
    if (!subnet) throw new Error(`${name} has no subnet`);
    await this.simCli('route', 'delete', subnet, '--network', NETWORK);
    await this.router.sync();
    return subnet;
  }

  /** Whether a node's agent runs (one stopped by a signal has no exit code either). */
  agentRunning(name: string): boolean {
    const child = this.cluster.node(name).agent?.child;
    return !!child && child.exitCode === null && child.signalCode === null;
  }

  /** What to show beside a failure: the router's routes and checks, the controller's and agents' last lines. */
  async diagnose(): Promise<string> {
    const routes = (await run(['ip', '-4', 'route'], { netns: this.lab.routerNs, okCodes: [0, 1, 2] }).catch(() => ({ stdout: '' }))).stdout;
    const drops = await Promise.all([...this.instances.keys()].map(async (n) => `${n}: ${await this.router.drops(n).catch(() => '?')}`));
    return [
      `router routes:\n${routes}`, `check drops: ${drops.join(', ')}`, `router sync error: ${this.router.lastError ?? 'none'}`,
      `sim instances: ${JSON.stringify(this.sim.instances())}`,
      `controller:\n${this.cluster.controller?.output().slice(-2000)}`,
      ...(await Promise.all([...this.cluster.nodes.values()].filter((n) => this.agentRunning(n.name)).map(async (n) => {
        const peers = /^twill_agent_peers (\d+)/m.exec((await this.cluster.agentHttp(n.name, '/metrics').catch(() => ({ body: '' }))).body)?.[1];
        const ready = await this.cluster.agentHttp(n.name, '/readyz').catch((e: Error) => ({ status: 0, body: e.message }));
        return `agent ${n.name}: peers ${peers ?? '?'}, readyz ${ready.status} ${ready.body.trim()}\n${n.agent?.output().slice(-1200)}`;
      }))),
    ].join('\n');
  }

  async cleanup(): Promise<void> {
    const errors: string[] = [];
    await this.router.stop().catch((e: Error) => errors.push(e.message));
    this.sim.close();
    // The lab first: it stops the agents and removes the pods (CNI DEL runs in the instances' namespaces).
    await this.cluster.cleanup().catch((e: Error) => errors.push(e.message));
    for (const ns of this.namespaces) {
      try {
        if (!existsSync(`/run/netns/${ns}`)) continue;
        const pids = (await run(['ip', 'netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean).map(Number);
        for (const pid of pids) process.kill(pid, 'SIGKILL');
        await run(['ip', 'netns', 'del', ns]);
        myNamespaces.delete(ns);
      } catch (e) {
        errors.push(`netns del ${ns}: ${(e as Error).message}`);
      }
    }
    if (errors.length) throw new Error(`VPC lab cleanup: ${errors.join('; ')}`);
  }
}
