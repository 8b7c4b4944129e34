// A lab of "hosts" made of network namespaces, for end-to-end tests against
// the real kernel (root only).
//
//   underlay ns:  br0 (192.168.100.0/24)   br1 (192.168.101.0/24, optional)
//                  |  |  |                   |  |
//   host nss:     h1 h2 rt(.1)             rt(.1) h3 ...
//
// The underlay bridges live in a namespace of their own and the router
// namespace joins them with forwarding on, so the root namespace is never
// touched and nothing can reach beyond this machine: no namespace has a link
// out. Each host gets eth0 with an underlay address, lo up, forwarding on (a
// node routes for its pods) and a default route via the router. Pods are
// namespaces wired by the real CNI bridge + host-local plugins, configured
// from a subnet.env the way flannel's CNI plugin does it.
//
// Every name carries "twl-<pid>-<random>", so parallel runs never collide
// and a later run can tell (by the pid) that a leftover's owner is gone.
// Cleanup undoes everything: registered processes, CNI attachments,
// namespaces (and with them every link inside), temp dirs. It runs from the
// test's after() hook, and again synchronously at process exit for whatever
// a crash left behind.

import './procs.js'; // its signal handlers make a stopped test run the cleanup below
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatIP, parseCidr, parseIP } from '../../core/cidr.js';
import { run, type RunOptions, type RunResult } from '../../agent/kernel/exec.js';

export const CNI_PATH = '/usr/lib/cni';
const NETNS_DIR = '/run/netns';
const PREFIX = 'twl';
const LEFTOVER = new RegExp(`^${PREFIX}-(\\d+)-[0-9a-f]{4}-`);

const PACKAGES: Record<string, string> = { ip: 'iproute2', bridge: 'iproute2', ping: 'iputils-ping', sysctl: 'procps' };

/**
 * Why the lab cannot run here, or undefined when it can; tests skip with
 * this reason. ping and the CNI plugins are only needed by tests that use them.
 */
export function labUnavailable(needs: { ping?: boolean; cni?: boolean } = { ping: true, cni: true }): string | undefined {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespaces need root';
  const bins = ['ip', 'bridge', 'sysctl', ...(needs.ping ? ['ping'] : [])];
  for (const bin of bins) {
    try {
      execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
    } catch {
      return `${bin} is not installed (apt-get install ${PACKAGES[bin]})`;
    }
  }
  if (needs.cni && !existsSync(join(CNI_PATH, 'bridge'))) return `no CNI plugins in ${CNI_PATH} (apt-get install containernetworking-plugins)`;
  return undefined;
}

// ---- subnet.env and the CNI config flannel derives from it --------------------

// The fields are agent/subnet-env.ts's: the harness reads what the agent writes.
export type { SubnetEnv } from '../../agent/subnet-env.js';
import type { SubnetEnv } from '../../agent/subnet-env.js';

/** Reads subnet.env text the way flannel's CNI plugin does (net.ParseCIDR keeps the network). */
export function parseSubnetEnv(text: string): SubnetEnv {
  const vars: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z0-9_]+)=(.*?)\s*$/.exec(line);
    if (m) vars[m[1]!] = m[2]!;
  }
  const net = (name: string): string | undefined => {
    const v = vars[name];
    if (v === undefined) return undefined;
    const c = parseCidr(v);
    if (!c) throw new Error(`subnet.env: ${name}=${v} is not a CIDR`);
    return `${formatIP(c.family, c.ip)}/${c.prefix}`;
  };
  const mtu = Number(vars.FLANNEL_MTU);
  if (!Number.isInteger(mtu) || mtu <= 0) throw new Error(`subnet.env: FLANNEL_MTU=${vars.FLANNEL_MTU} is not an MTU`);
  const env: SubnetEnv = { mtu, ipMasq: vars.FLANNEL_IPMASQ === 'true' };
  const network = net('FLANNEL_NETWORK');
  const subnet = net('FLANNEL_SUBNET');
  const ipv6Network = net('FLANNEL_IPV6_NETWORK');
  const ipv6Subnet = net('FLANNEL_IPV6_SUBNET');
  if (network) env.network = network;
  if (subnet) env.subnet = subnet;
  if (ipv6Network) env.ipv6Network = ipv6Network;
  if (ipv6Subnet) env.ipv6Subnet = ipv6Subnet;
  if (!env.subnet && !env.ipv6Subnet) throw new Error('subnet.env: neither FLANNEL_SUBNET nor FLANNEL_IPV6_SUBNET is set');
  return env;
}

/** kube-flannel.yml's delegate settings, merged under what the plugin itself sets. */
export const KUBE_FLANNEL_DELEGATE = { hairpinMode: true, isDefaultGateway: true } as const;

/**
 * The bridge plugin config flannel's CNI plugin hands on (flannel-io/cni-plugin,
 * doCmdAdd and getDelegateIPAM): type bridge, isGateway, ipMasq when flannel
 * itself does not masquerade, the flannel MTU, host-local over the node's
 * subnet with a route to the whole network.
 */
export function flannelBridgeConfig(
  env: SubnetEnv,
  opts: { dataDir: string; name?: string; cniVersion?: string; delegate?: Record<string, unknown> },
): Record<string, unknown> {
  const ranges: { subnet: string }[][] = [];
  const routes: { dst: string }[] = [];
  if (env.subnet) ranges.push([{ subnet: env.subnet }]);
  if (env.ipv6Subnet) ranges.push([{ subnet: env.ipv6Subnet }]);
  if (env.network) routes.push({ dst: env.network });
  if (env.ipv6Network) routes.push({ dst: env.ipv6Network });
  const d: Record<string, unknown> = { ...KUBE_FLANNEL_DELEGATE, ...opts.delegate };
  return {
    cniVersion: opts.cniVersion ?? '0.3.1',
    name: opts.name ?? 'cbr0',
    type: 'bridge',
    bridge: 'cni0',
    ...d,
    isGateway: 'isGateway' in d ? d.isGateway : true,
    ipMasq: 'ipMasq' in d ? d.ipMasq : !env.ipMasq,
    mtu: 'mtu' in d ? d.mtu : env.mtu,
    ipam: { type: 'host-local', ranges, routes, dataDir: opts.dataDir },
  };
}

// ---- ping ------------------------------------------------------------------------

export interface PingOptions {
  count?: number;
  /** seconds between packets; below 0.2 needs root, which the lab has */
  interval?: number;
  /** seconds ping may run in all */
  deadline?: number;
}

export interface PingResult {
  transmitted: number;
  received: number;
  /** percent, 0-100 */
  loss: number;
  output: string;
}

export function parsePing(output: string): PingResult {
  const m = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(output);
  if (!m) throw new Error(`no ping summary in: ${output.trim() || '(no output)'}`);
  const transmitted = Number(m[1]);
  const received = Number(m[2]);
  const loss = transmitted === 0 ? 100 : Math.round((1000 * (transmitted - received)) / transmitted) / 10;
  return { transmitted, received, loss, output };
}

// ---- the lab -----------------------------------------------------------------------

export interface Underlay {
  index: number;
  cidr: string;
  prefix: number;
  bridge: string;
  /** the router's address on this underlay, every host's default gateway */
  gateway: string;
  /** with LabOptions.ipv6: the underlay's IPv6 prefix (fd00:1NN::/64) and the router's address on it */
  cidr6?: string;
  gateway6?: string;
}

export interface Host {
  name: string;
  ns: string;
  /** the underlay interface inside the host */
  iface: string;
  ip: string;
  /** the host's IPv6 underlay address, on a dual-stack underlay */
  ip6?: string;
  underlay: Underlay;
}

export interface Pod {
  name: string;
  ns: string;
  host: Host;
  ip: string;
  /** the pod's IPv6 address, when its subnet.env has an IPv6 subnet */
  ip6?: string;
  /** cni0's address, the pod's gateway */
  gateway: string;
  containerId: string;
  /** the CNI result, as the plugin printed it */
  result: Record<string, unknown>;
}

export interface LabProcess {
  child: ChildProcess;
  /** stdout and stderr so far */
  output(): string;
  /** resolves when the process has ended */
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

export interface LabOptions {
  /** underlay subnets (/24 or larger); default one, 192.168.100.0/24 */
  underlays?: string[];
  /** dual-stack underlays: underlay N also carries fd00:1NN::/64, the router at ::1, hosts from ::10 */
  ipv6?: boolean;
  /**
   * Directories each host has its own of, as a real host has (wireguard-go's
   * control sockets in /run/wireguard): every process the lab starts on a
   * host sees a directory of that host's bound over each. ip and bridge
   * talk only to the kernel and run without.
   */
  privateDirs?: string[];
}

interface PodRecord extends Pod {
  config: string;
}

const live = new Set<Lab>();
process.on('exit', () => {
  for (const lab of live) lab.cleanupSync();
});

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const list = (dir: string): string[] => {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
};

/** Deletes lab namespaces and temp dirs whose creating process no longer exists (a run that was killed). */
export function sweepLeftovers(): string[] {
  const removed: string[] = [];
  for (const ns of list(NETNS_DIR)) {
    const m = LEFTOVER.exec(ns);
    if (!m || pidAlive(Number(m[1]))) continue;
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      removed.push(ns);
    } catch {
      // someone else's sweep got there first
    }
  }
  for (const d of list(tmpdir())) {
    const m = LEFTOVER.exec(d);
    if (!m || pidAlive(Number(m[1]))) continue;
    rmSync(join(tmpdir(), d), { recursive: true, force: true });
    removed.push(join(tmpdir(), d));
  }
  return removed;
}

/** SIGKILLs every process whose network namespace is ns. */
async function killNsProcesses(ns: string): Promise<void> {
  if (!existsSync(join(NETNS_DIR, ns))) return;
  const pids = (await run(['ip', 'netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean).map(Number);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

export class Lab {
  readonly id: string;
  readonly dir: string;
  readonly underlayNs: string;
  readonly routerNs: string;
  readonly underlays: Underlay[] = [];
  readonly hosts = new Map<string, Host>();
  private readonly namespaces: string[] = [];
  private readonly pods: PodRecord[] = [];
  private readonly procs = new Set<LabProcess>();
  private nextHost = new Map<number, number>();
  private cleaned = false;
  private privateDirs: string[] = [];

  private constructor() {
    this.id = `${PREFIX}-${process.pid}-${randomBytes(2).toString('hex')}`;
    this.dir = mkdtempSync(join(tmpdir(), `${this.id}-`));
    this.underlayNs = this.ns('ul');
    this.routerNs = this.ns('rt');
  }

  static async create(opts: LabOptions = {}): Promise<Lab> {
    const why = labUnavailable({});
    if (why) throw new Error(`cannot build a netns lab: ${why}`);
    sweepLeftovers();
    const lab = new Lab();
    live.add(lab);
    lab.privateDirs = opts.privateDirs ?? [];
    try {
      await lab.build(opts.underlays ?? ['192.168.100.0/24'], opts.ipv6 ?? false);
    } catch (e) {
      await lab.cleanup();
      throw e;
    }
    return lab;
  }

  /** The full namespace name for a short one. */
  ns(short: string): string {
    return `${this.id}-${short}`;
  }

  private async addNs(short: string): Promise<string> {
    const ns = this.ns(short);
    await run(['ip', 'netns', 'add', ns]);
    this.namespaces.push(ns);
    await run(['ip', 'link', 'set', 'lo', 'up'], { netns: ns });
    return ns;
  }

  private async build(cidrs: string[], ipv6: boolean): Promise<void> {
    if (cidrs.length < 1 || cidrs.length > 8) throw new Error('a lab has from 1 to 8 underlays');
    await this.addNs('ul');
    await this.addNs('rt');
    await this.sysctl(this.routerNs, 'net.ipv4.ip_forward', '1');
    if (ipv6) await this.sysctl(this.routerNs, 'net.ipv6.conf.all.forwarding', '1');
    for (const [index, cidr] of cidrs.entries()) {
      const c = parseCidr(cidr, true);
      if (!c || c.family !== 4 || c.prefix > 24) throw new Error(`underlay ${cidr} must be an IPv4 network of /24 or larger`);
      const underlay: Underlay = {
        index,
        cidr,
        prefix: c.prefix,
        bridge: `br${index}`,
        gateway: formatIP(4, c.ip + 1n),
        ...(ipv6 && { cidr6: `fd00:${100 + index}::/64`, gateway6: `fd00:${100 + index}::1` }),
      };
      const ul = this.underlayNs;
      await run(['ip', 'link', 'add', underlay.bridge, 'type', 'bridge'], { netns: ul });
      await run(['ip', 'link', 'set', underlay.bridge, 'up'], { netns: ul });
      // the router's leg: ethN inside the router, rtN on the bridge
      await run(['ip', 'link', 'add', `eth${index}`, 'type', 'veth', 'peer', 'name', `rt${index}`, 'netns', ul], { netns: this.routerNs });
      await run(['ip', 'link', 'set', `rt${index}`, 'master', underlay.bridge, 'up'], { netns: ul });
      await run(['ip', 'addr', 'add', `${underlay.gateway}/${c.prefix}`, 'dev', `eth${index}`], { netns: this.routerNs });
      // nodad: a lab address is unique by construction, and waiting out DAD only slows every test
      if (underlay.gateway6) await run(['ip', '-6', 'addr', 'add', `${underlay.gateway6}/64`, 'dev', `eth${index}`, 'nodad'], { netns: this.routerNs });
      await run(['ip', 'link', 'set', `eth${index}`, 'up'], { netns: this.routerNs });
      this.underlays.push(underlay);
      this.nextHost.set(index, 10);
    }
  }

  /**
   * Adds a host on an underlay (default the first). name is short (up to 10
   * of [a-z0-9]) and unique in the lab; the address is the next free one
   * from .10 unless given.
   */
  async addHost(name: string, opts: { underlay?: number; ip?: string } = {}): Promise<Host> {
    if (!/^[a-z0-9]{1,10}$/.test(name) || name.startsWith('br') || name.startsWith('rt') || name === 'ul') {
      throw new Error(`host name "${name}" must be 1-10 of [a-z0-9] and not start with br or rt`);
    }
    if (this.hosts.has(name)) throw new Error(`host ${name} already exists`);
    const underlay = this.underlays[opts.underlay ?? 0];
    if (!underlay) throw new Error(`no underlay ${opts.underlay}`);
    let ip = opts.ip;
    if (!ip) {
      const n = this.nextHost.get(underlay.index)!;
      this.nextHost.set(underlay.index, n + 1);
      ip = formatIP(4, parseCidr(underlay.cidr)!.ip + BigInt(n));
    }
    const ns = await this.addNs(name);
    const peer = `v${name}`;
    await run(['ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', peer, 'netns', this.underlayNs], { netns: ns });
    await run(['ip', 'link', 'set', peer, 'master', underlay.bridge, 'up'], { netns: this.underlayNs });
    await run(['ip', 'addr', 'add', `${ip}/${underlay.prefix}`, 'dev', 'eth0'], { netns: ns });
    await run(['ip', 'link', 'set', 'eth0', 'up'], { netns: ns });
    await run(['ip', 'route', 'add', 'default', 'via', underlay.gateway, 'dev', 'eth0'], { netns: ns });
    await this.sysctl(ns, 'net.ipv4.ip_forward', '1');
    let ip6: string | undefined;
    if (underlay.cidr6 && underlay.gateway6) {
      ip6 = formatIP(6, parseCidr(underlay.cidr6)!.ip + (parseIP(ip)!.ip & 0xffn));
      await run(['ip', '-6', 'addr', 'add', `${ip6}/64`, 'dev', 'eth0', 'nodad'], { netns: ns });
      await run(['ip', '-6', 'route', 'add', 'default', 'via', underlay.gateway6, 'dev', 'eth0'], { netns: ns });
      await this.sysctl(ns, 'net.ipv6.conf.all.forwarding', '1');
    }
    const host: Host = { name, ns, iface: 'eth0', ip, ...(ip6 && { ip6 }), underlay };
    this.hosts.set(name, host);
    return host;
  }

  /**
   * Makes a pod on host with the real CNI bridge plugin, configured from a
   * subnet.env (its text, or the parsed form). Returns its address.
   */
  async addPod(host: Host, subnetEnv: string | SubnetEnv, opts: { name?: string; delegate?: Record<string, unknown> } = {}): Promise<Pod> {
    const env = typeof subnetEnv === 'string' ? parseSubnetEnv(subnetEnv) : subnetEnv;
    const name = opts.name ?? `${host.name}p${this.pods.filter((p) => p.host === host).length}`;
    if (!/^[a-z0-9]{1,14}$/.test(name)) throw new Error(`pod name "${name}" must be 1-14 of [a-z0-9]`);
    const ns = await this.addNs(name);
    const dataDir = join(this.dir, 'ipam', host.name);
    mkdirSync(dataDir, { recursive: true });
    const config = JSON.stringify(flannelBridgeConfig(env, { dataDir, delegate: opts.delegate }));
    const containerId = `${this.id}-${name}`;
    const res = await this.cni('ADD', host, ns, containerId, config);
    const result = JSON.parse(res.stdout) as { ips?: { address: string; gateway?: string }[] };
    const first = result.ips?.find((a) => !a.address.includes(':')) ?? result.ips?.[0];
    const v6 = result.ips?.find((a) => a.address.includes(':'));
    if (!first) throw new Error(`CNI ADD for pod ${name} returned no address: ${res.stdout}`);
    const pod: PodRecord = {
      name,
      ns,
      host,
      ip: first.address.split('/')[0]!,
      ...(v6 && { ip6: v6.address.split('/')[0]! }),
      gateway: first.gateway ?? '',
      containerId,
      result: result as Record<string, unknown>,
      config,
    };
    this.pods.push(pod);
    // An IPv6 address is tentative until duplicate address detection ends
    // (about a second); cni0's gateway address answers no neighbour
    // solicitation until then, so the pod could not reach its gateway yet.
    if (v6) await this.settled(host.ns, ns);
    return pod;
  }

  /** Waits until no IPv6 address in these namespaces is tentative. */
  private async settled(...namespaces: string[]): Promise<void> {
    const deadline = Date.now() + 15_000;
    for (const ns of namespaces) {
      while ((await run(['ip', '-6', 'addr', 'show', 'tentative'], { netns: ns })).stdout.trim() !== '') {
        if (Date.now() > deadline) throw new Error(`IPv6 addresses in ${ns} are still tentative after 15 s`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** CNI DEL for a pod, then its namespace goes. */
  async removePod(pod: Pod): Promise<void> {
    const i = this.pods.findIndex((p) => p.containerId === pod.containerId);
    if (i < 0) return;
    const [rec] = this.pods.splice(i, 1);
    await this.cni('DEL', rec!.host, rec!.ns, rec!.containerId, rec!.config);
    await this.delNs(rec!.ns);
  }

  private cni(command: 'ADD' | 'DEL', host: Host, podNs: string, containerId: string, config: string): Promise<RunResult> {
    const env = {
      ...process.env,
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: join(NETNS_DIR, podNs),
      CNI_IFNAME: 'eth0',
      CNI_PATH,
    };
    // The bridge plugin works on the namespace it runs in (cni0, iptables,
    // the host end of the veth): that must be the host, not the root namespace.
    return run([join(CNI_PATH, 'bridge')], { netns: host.ns, input: config, env, timeoutMs: 30_000 });
  }

  private async sysctl(ns: string, key: string, value: string): Promise<void> {
    await run(['sysctl', '-qw', `${key}=${value}`], { netns: ns });
  }

  /** A host's own copy of a private directory (LabOptions.privateDirs). */
  hostDir(host: Host, dir: string): string {
    return join(this.dir, 'private', host.name, dir.replace(/\//g, '_'));
  }

  /** argv as it must run in ns: on a host with private directories, inside a shell that binds them first. */
  private onHost(ns: string, argv: string[]): string[] {
    const host = [...this.hosts.values()].find((h) => h.ns === ns);
    if (!host || this.privateDirs.length === 0 || argv[0] === 'ip' || argv[0] === 'bridge') return argv;
    // `ip netns exec` gives each process a mount namespace of its own whose
    // mounts do not reach the host's: the binds last as long as the process
    // (and whatever it leaves running, a daemon that outlives its agent).
    const binds = this.privateDirs.map((d) => {
      const own = this.hostDir(host, d);
      mkdirSync(own, { recursive: true, mode: 0o700 });
      return `mkdir -p '${d}' && mount --bind '${own}' '${d}'`;
    });
    return ['sh', '-c', `${binds.join(' && ')} && exec "$@"`, 'sh', ...argv];
  }

  /** Runs argv inside ns; throws (with stderr) on a non-zero exit unless okCodes say otherwise. */
  exec(ns: string | Host | Pod, argv: string[], opts: Omit<RunOptions, 'netns'> = {}): Promise<RunResult> {
    const where = typeof ns === 'string' ? ns : ns.ns;
    return run(this.onHost(where, argv), { ...opts, netns: where });
  }

  /** Starts a long-running process in ns; cleanup stops it. */
  spawn(ns: string | Host | Pod, argv: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; stdin?: boolean } = {}): LabProcess {
    const where = typeof ns === 'string' ? ns : ns.ns;
    const child = spawn('ip', ['netns', 'exec', where, ...this.onHost(where, argv)], {
      stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      detached: true, // its own process group, so stop() reaches its children too
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => {
      child.on('close', (code) => resolve(code));
      child.on('error', () => resolve(null));
    });
    const proc: LabProcess = {
      child,
      output: () => out,
      exited,
      stop: async () => {
        this.procs.delete(proc);
        if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
        const signal = (s: NodeJS.Signals) => {
          try {
            process.kill(-child.pid!, s);
          } catch {
            // already gone
          }
        };
        signal('SIGTERM');
        const timer = setTimeout(() => signal('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      },
    };
    this.procs.add(proc);
    return proc;
  }

  async ping(from: string | Host | Pod, target: string, opts: PingOptions = {}): Promise<PingResult> {
    const count = opts.count ?? 3;
    const interval = opts.interval ?? 0.2;
    const deadline = opts.deadline ?? Math.ceil(count * interval + 2);
    // exit code 1 means "no reply", which is an answer, not an error
    const res = await this.exec(from, ['ping', '-n', '-q', '-c', String(count), '-i', String(interval), '-w', String(deadline), target], {
      okCodes: [0, 1],
      timeoutMs: (deadline + 5) * 1000,
    });
    return parsePing(res.stdout);
  }

  /** Namespaces and files of this lab that still exist (empty after cleanup). */
  leftovers(): string[] {
    const out: string[] = [];
    try {
      for (const ns of readdirSync(NETNS_DIR)) if (ns.startsWith(`${this.id}-`)) out.push(`netns ${ns}`);
    } catch {
      // no /run/netns at all: nothing left
    }
    if (existsSync(this.dir)) out.push(`dir ${this.dir}`);
    return out;
  }

  private async delNs(ns: string): Promise<void> {
    const i = this.namespaces.indexOf(ns);
    if (i >= 0) this.namespaces.splice(i, 1);
    if (existsSync(join(NETNS_DIR, ns))) await run(['ip', 'netns', 'del', ns]);
  }

  /** Undoes everything, continuing past errors; throws at the end if something could not be removed. */
  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    const errors: string[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (e) {
        errors.push(`${what}: ${(e as Error).message}`);
      }
    };
    await Promise.all([...this.procs].map((p) => attempt('stop process', () => p.stop())));
    // Daemons that outlive their agent on purpose (the ipsec backend's charon)
    // would keep a deleted namespace alive: end whatever still runs inside.
    for (const ns of this.namespaces) await attempt(`kill processes in ${ns}`, () => killNsProcesses(ns));
    for (const pod of [...this.pods].reverse()) {
      // DEL first, so host-local releases the address and the bridge plugin
      // removes its iptables rules, as a runtime would.
      await attempt(`CNI DEL ${pod.name}`, () => this.cni('DEL', pod.host, pod.ns, pod.containerId, pod.config));
    }
    this.pods.length = 0;
    // Deleting a namespace destroys every link in it, and a veth dies with either end.
    for (const ns of [...this.namespaces].reverse()) await attempt(`netns del ${ns}`, () => this.delNs(ns));
    rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
    const left = this.leftovers();
    if (left.length) errors.push(`still present: ${left.join(', ')}`);
    if (errors.length) throw new Error(`lab ${this.id} cleanup: ${errors.join('; ')}`);
  }

  /** Last resort at process exit: no awaiting, no CNI, just kill and delete. */
  cleanupSync(): void {
    if (this.cleaned) return;
    this.cleaned = true;
    for (const p of this.procs) {
      try {
        if (p.child.pid) process.kill(-p.child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const ns of this.namespaces) {
      try {
        for (const pid of execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).split(/\s+/).filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
      } catch {
        // nothing more can be done at exit
      }
    }
    for (const ns of [...this.namespaces].reverse()) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // nothing more can be done at exit
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
