// A twill cluster in a netns lab: the control plane runs in the router
// namespace (every host reaches it through its default gateway), an agent
// runs in each host namespace, and pods are made by the real CNI plugins from
// each host's subnet.env, as a container runtime would make them.
//
// The control plane is one of the three an agent meets: the controller with
// its embedded broker (the default), the controller with Mosquitto beside it
// (Debian's package, its defaults), or AWS IoT Core's stand-in with the
// serverless world behind it (test/e2e/iot-world.ts, a process of its own).
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Lease } from '../../core/lease.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { MOSQUITTO } from '../helpers/mosquitto.js';
import { Lab, type Host, type LabProcess, type Pod } from '../helpers/netns.js';
import { freePort, ROOT, runTwill, START_BOUND_MS, TWILL, waitFor, waitForStart } from '../helpers/procs.js';

export type Broker = 'embedded' | 'mosquitto' | 'iot';

/** How test/e2e/iot-world.ts tags the lines it answers on. */
export const WORLD_TAG = '@@iot-world ';

export interface Node {
  host: Host;
  name: string;
  subnetFile: string;
  stateDir: string;
  configFile: string;
  agent?: LabProcess;
  pods: Pod[];
}

export class Cluster {
  readonly nodes = new Map<string, Node>();
  /** the controller, or on IoT Core the stand-in's world */
  controller?: LabProcess;
  mosquitto?: LabProcess;
  readonly dataDir: string;
  /** the broker agents are given */
  url: string;
  /** what every agent's environment adds (on IoT Core: the CA that signed the endpoint's certificate) */
  private agentEnv: NodeJS.ProcessEnv = {};
  private world?: { next: number; waiting: Map<number, { resolve(v: unknown): void; reject(e: Error): void }> };

  private constructor(
    readonly lab: Lab,
    readonly network: string,
    readonly netconf: string,
    readonly agentArgs: string[],
    readonly port: number,
    readonly broker: Broker,
  ) {
    this.dataDir = join(lab.dir, 'controller');
    this.url = `mqtt://${lab.underlays[0]?.gateway}:${port}`;
  }

  /** hosts: name -> underlay index; controllerArgs: the controller's flags besides the lab's (e.g. --cloud sim), on every start. */
  static async create(opts: { underlays?: string[]; hosts: Record<string, number>; conf: unknown; agentArgs?: string[]; leaseTtl?: string; broker?: Broker; ipv6?: boolean; privateDirs?: string[]; controllerArgs?: string[] }): Promise<Cluster> {
    const lab = await Lab.create({ underlays: opts.underlays, ipv6: opts.ipv6, privateDirs: opts.privateDirs });
    try {
      const netconf = join(lab.dir, 'net.json');
      writeFileSync(netconf, JSON.stringify(opts.conf));
      const c = new Cluster(lab, 'pods', netconf, opts.agentArgs ?? [], await freePort(), opts.broker ?? 'embedded');
      c.controllerArgs = opts.controllerArgs ?? [];
      if (c.broker === 'iot') {
        await c.startWorld();
      } else {
        if (c.broker === 'mosquitto') await c.startMosquitto();
        await c.startController(opts.leaseTtl);
      }
      for (const [name, underlay] of Object.entries(opts.hosts)) {
        const host = await lab.addHost(name, { underlay });
        const node: Node = {
          host,
          name,
          subnetFile: join(lab.dir, `${name}.subnet.env`),
          stateDir: join(lab.dir, `${name}.state`),
          configFile: join(lab.dir, `${name}.agent.json`),
          pods: [],
        };
        writeFileSync(node.configFile, await c.addNode(name));
        c.nodes.set(name, node);
      }
      return c;
    } catch (e) {
      await lab.cleanup();
      throw e;
    }
  }

  private get gateway(): string {
    return this.lab.underlays[0]?.gateway as string;
  }

  private leaseTtl = '24h';
  private controllerArgs: string[] = [];

  async startController(leaseTtl = this.leaseTtl): Promise<void> {
    this.leaseTtl = leaseTtl;
    const listen = `${this.gateway}:${this.port}`;
    const controller = this.lab.spawn(this.lab.routerNs, [
      process.execPath, TWILL, 'controller', '--data-dir', this.dataDir, '--listen', listen,
      '--network', `${this.network}=${this.netconf}`, '--sync-interval', '300ms', '--lease-ttl', leaseTtl,
      // beside Mosquitto, agents reach the node API only where it is told to listen
      ...(this.broker === 'mosquitto' ? ['--broker', this.url, '--api-listen', `${this.gateway}:0`] : []),
      ...this.controllerArgs,
    ]);
    this.controller = controller;
    // The controller either says it is ready or exits saying why; how long a
    // start takes on a busy machine (several times longer inside UML) is not
    // something it promises, so the bound only catches a hang.
    await waitForStart('controller ready', controller, (out) => out.includes('controller ready'));
  }

  /** Mosquitto on the router's address, as Debian ships it (defaults but the listener). */
  private async startMosquitto(): Promise<void> {
    const port = await freePort();
    const conf = join(this.lab.dir, 'mosquitto.conf');
    writeFileSync(conf, `listener ${port} ${this.gateway}\nallow_anonymous true\npersistence false\nlog_dest stderr\n`);
    const m = this.lab.spawn(this.lab.routerNs, [MOSQUITTO, '-c', conf]);
    this.mosquitto = m;
    this.url = `mqtt://${this.gateway}:${port}`;
    await waitForStart('mosquitto listening', m, (out) => / running$/m.test(out));
  }

  /** IoT Core's stand-in and the serverless world, on the router's address. */
  private async startWorld(): Promise<void> {
    mkdirSync(join(this.lab.dir, 'iot'));
    const p = this.lab.spawn(
      this.lab.routerNs,
      [process.execPath, '--import', 'tsx', join(ROOT, 'test/e2e/iot-world.ts'), join(this.lab.dir, 'iot'), this.gateway, this.network, this.netconf],
      { stdin: true, cwd: ROOT, env: { ...process.env, TWILL_LOG_LEVEL: 'error' } },
    );
    this.controller = p;
    const world = { next: 1, waiting: new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>() };
    this.world = world;
    let ready: { broker: string; ca: string } | undefined;
    let buf = '';
    p.child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!line.startsWith(WORLD_TAG)) continue;
        const msg = JSON.parse(line.slice(WORLD_TAG.length)) as { ready?: { broker: string; ca: string }; id?: number; result?: unknown; error?: string };
        if (msg.ready) ready = msg.ready;
        const w = msg.id === undefined ? undefined : world.waiting.get(msg.id);
        if (!w) continue;
        world.waiting.delete(msg.id as number);
        if (msg.error !== undefined) w.reject(new Error(msg.error));
        else w.resolve(msg.result);
      }
    });
    await waitFor('IoT Core stand-in ready', () => ready ?? (p.child.exitCode !== null && Promise.reject(new Error(p.output()))), 60_000);
    this.url = ready!.broker;
    this.agentEnv = { NODE_EXTRA_CA_CERTS: ready!.ca };
  }

  /** One request to the IoT world (test/e2e/iot-world.ts says which). */
  private ask<T>(op: string, node?: string): Promise<T> {
    const world = this.world;
    if (!world || !this.controller) throw new Error('no IoT world');
    const id = world.next++;
    return new Promise<T>((resolve, reject) => {
      world.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.controller!.child.stdin!.write(`${JSON.stringify({ id, op, node })}\n`);
    });
  }

  /** A node's agent config, as `twill node add` prints it. */
  async addNode(name: string): Promise<string> {
    if (this.broker === 'iot') return this.ask<string>('addNode', name);
    const r = await runTwill(['node', 'add', name, '--network', this.network, '--data-dir', this.dataDir, '--broker', this.url]);
    if (r.code !== 0) throw new Error(`node add: ${r.stderr}`);
    return r.stdout;
  }

  async lease(name: string): Promise<Lease | undefined> {
    if (this.broker === 'iot') return (await this.ask<Lease | null>('lease', name)) ?? undefined;
    return this.withStore((s) => s.getLease(this.network, name));
  }

  /**
   * Removes a node's lease as an operator does: `twill lease release` on the
   * controller's data directory (a write the running controller did not
   * make), or the release function on IoT Core.
   */
  async release(name: string): Promise<void> {
    if (this.broker === 'iot') {
      if (!(await this.ask<boolean>('release', name))) throw new Error(`${name} had no lease`);
      return;
    }
    const r = await runTwill(['lease', 'release', this.network, '--node', name, '--data-dir', this.dataDir]);
    if (r.code !== 0) throw new Error(`lease release: ${r.stderr}`);
  }

  /**
   * Restarts the control plane: the controller process (with the embedded
   * broker, the broker too), or on IoT Core every Lambda container new and
   * what a start publishes (there is no process to restart).
   */
  async restartController(): Promise<void> {
    if (this.broker === 'iot') {
      await this.ask('restart');
      return;
    }
    await this.controller?.stop();
    await this.startController();
  }

  /** What the agents did that IoT Core refused (empty on the other brokers). */
  async refusals(): Promise<string[]> {
    if (this.broker !== 'iot') return [];
    const r = await this.ask<{ refusals: string[]; ruleErrors: string[] }>('refusals');
    return [...r.refusals, ...r.ruleErrors];
  }

  node(name: string): Node {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  startAgent(name: string, extra: string[] = []): LabProcess {
    const n = this.node(name);
    n.agent = this.lab.spawn(n.host, [
      process.execPath, TWILL, 'agent', '--config', n.configFile, '--iface', n.host.iface,
      '--subnet-file', n.subnetFile, '--state-dir', n.stateDir, '--metrics-addr', '127.0.0.1:9464',
      '--resync-interval', '1s', ...this.agentArgs, ...extra,
    ], { env: { ...process.env, ...this.agentEnv } });
    return n.agent;
  }

  /** GET path from the agent's HTTP server inside its host's namespace. */
  async agentHttp(name: string, path: string): Promise<{ status: number; body: string }> {
    const script = `fetch("http://127.0.0.1:9464${path}").then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })), () => process.stdout.write("null"))`;
    const out = (await this.lab.exec(this.node(name).host, [process.execPath, '-e', script], { timeoutMs: 30_000 })).stdout;
    return (JSON.parse(out || 'null') as { status: number; body: string } | null) ?? { status: 0, body: 'no answer' };
  }

  /**
   * Waits until the agent says it is ready (/readyz): it holds its lease and
   * has applied a complete view of the network. The bound only keeps a hung
   * agent from hanging the test: how long a process takes to start on a
   * busy machine (several times longer inside user-mode-linux) is not
   * something the agent promises; what it has done once ready is.
   */
  async waitReady(name: string): Promise<void> {
    let last = '';
    await waitFor(`${name} ready`, async () => {
      const r = await this.agentHttp(name, '/readyz');
      last = r.body.trim();
      return r.status === 200;
    }, START_BOUND_MS, 250).catch((e: Error) => {
      throw new Error(`${e.message} (last /readyz: ${last})\n${this.node(name).agent?.output().slice(-3000)}`);
    });
  }

  subnetEnv(name: string): string | undefined {
    try {
      const text = readFileSync(this.node(name).subnetFile, 'utf8');
      return /^FLANNEL_(IPV6_)?SUBNET=/m.test(text) ? text : undefined;
    } catch {
      return undefined;
    }
  }

  /** Starts every agent and waits until each has written subnet.env and reports the full snapshot applied. */
  async startAll(): Promise<void> {
    for (const name of this.nodes.keys()) this.startAgent(name);
    for (const name of this.nodes.keys()) {
      await waitFor(`${name} subnet.env`, () => this.subnetEnv(name), START_BOUND_MS).catch((e: Error) => {
        throw new Error(`${e.message}\n${this.node(name).agent?.output().slice(-3000)}`);
      });
    }
    await this.waitPeers(this.nodes.size - 1);
  }

  /**
   * Every agent named holds `peers` peers and says it is ready (its own
   * metrics and /readyz: the status it publishes reports a change of peers
   * at most once a minute, by design). After a controller restart this
   * includes the agents' reconnect backoff (up to 30 s, agent/watch/session.ts) and
   * a resync; inside a starved UML the whole restart test has taken 175 s, so the bound is
   * only a hang's.
   */
  async waitPeers(peers: number, names = [...this.nodes.keys()]): Promise<void> {
    await waitFor(`agents see ${peers} peers`, async () => {
      for (const n of names) {
        const m = await this.agentHttp(n, '/metrics');
        if (Number(/^twill_agent_peers (\d+)/m.exec(m.body)?.[1]) !== peers) return false;
        if ((await this.agentHttp(n, '/readyz')).status !== 200) return false;
      }
      return true;
    }, 2 * START_BOUND_MS, 250);
  }

  async addPod(name: string): Promise<Pod> {
    const n = this.node(name);
    const env = this.subnetEnv(name);
    if (!env) throw new Error(`${name} has no subnet.env yet`);
    const pod = await this.lab.addPod(n.host, env, { name: `${name}p${n.pods.length}` });
    n.pods.push(pod);
    return pod;
  }

  async withStore<T>(fn: (s: SqliteStore) => Promise<T>): Promise<T> {
    const s = new SqliteStore(join(this.dataDir, 'twill.db'));
    try {
      return await fn(s);
    } finally {
      await s.close();
    }
  }

  async subnetOf(name: string): Promise<string | null | undefined> {
    return (await this.lease(name))?.subnet;
  }

  async ip(host: string, args: string[]): Promise<string> {
    return (await this.lab.exec(this.node(host).host, ['ip', ...args])).stdout;
  }

  async cleanup(): Promise<void> {
    await this.lab.cleanup();
  }
}

/** "10.244.3.0/24" -> "10.244.3.0" */
export function base(subnet: string): string {
  return subnet.split('/')[0] as string;
}
