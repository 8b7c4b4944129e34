// A twill cluster in a netns lab: the controller runs in the router
// namespace (every host reaches it through its default gateway), an agent
// runs in each host namespace, and pods are made by the real CNI plugins from
// each host's subnet.env, as a container runtime would make them.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SqliteStore } from '../../functions/store/sqlite.js';
import { Lab, type Host, type LabProcess, type Pod } from '../helpers/netns.js';
import { freePort, runTwill, TWILL, waitFor } from '../helpers/procs.js';

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
  controller?: LabProcess;
  readonly dataDir: string;
  readonly url: string;

  private constructor(
    readonly lab: Lab,
    readonly network: string,
    readonly netconf: string,
    readonly agentArgs: string[],
    readonly port: number,
  ) {
    this.dataDir = join(lab.dir, 'controller');
    this.url = `mqtt://${lab.underlays[0]?.gateway}:${port}`;
  }

  /** hosts: name -> underlay index. */
  static async create(opts: { underlays?: string[]; hosts: Record<string, number>; conf: unknown; agentArgs?: string[]; leaseTtl?: string }): Promise<Cluster> {
    const lab = await Lab.create({ underlays: opts.underlays });
    try {
      const netconf = join(lab.dir, 'net.json');
      writeFileSync(netconf, JSON.stringify(opts.conf));
      const c = new Cluster(lab, 'pods', netconf, opts.agentArgs ?? [], await freePort());
      await c.startController(opts.leaseTtl);
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
        const r = await runTwill(['node', 'add', name, '--network', c.network, '--data-dir', c.dataDir, '--broker', c.url]);
        if (r.code !== 0) throw new Error(`node add: ${r.stderr}`);
        writeFileSync(node.configFile, r.stdout);
        c.nodes.set(name, node);
      }
      return c;
    } catch (e) {
      await lab.cleanup();
      throw e;
    }
  }

  async startController(leaseTtl = '24h'): Promise<void> {
    const listen = `${this.lab.underlays[0]?.gateway}:${this.port}`;
    this.controller = this.lab.spawn(this.lab.routerNs, [
      process.execPath, TWILL, 'controller', '--data-dir', this.dataDir, '--listen', listen,
      '--network', `${this.network}=${this.netconf}`, '--sync-interval', '300ms', '--lease-ttl', leaseTtl,
    ]);
    await waitFor('controller ready', () => this.controller?.output().includes('controller ready') || (this.controller?.child.exitCode !== null && Promise.reject(new Error(this.controller?.output()))));
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
    ]);
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
    }, 120_000, 250).catch((e: Error) => {
      throw new Error(`${e.message} (last /readyz: ${last})\n${this.node(name).agent?.output().slice(-3000)}`);
    });
  }

  subnetEnv(name: string): string | undefined {
    try {
      const text = readFileSync(this.node(name).subnetFile, 'utf8');
      return text.includes('FLANNEL_SUBNET=') ? text : undefined;
    } catch {
      return undefined;
    }
  }

  /** Starts every agent and waits until each has written subnet.env and reports the full snapshot applied. */
  async startAll(): Promise<void> {
    for (const name of this.nodes.keys()) this.startAgent(name);
    for (const name of this.nodes.keys()) await waitFor(`${name} subnet.env`, () => this.subnetEnv(name), 30_000);
    await this.waitPeers(this.nodes.size - 1);
  }

  /**
   * Every agent named holds `peers` peers and says it is ready (its own
   * metrics and /readyz: the status it publishes reports a change of peers
   * at most once a minute, by design).
   */
  async waitPeers(peers: number, names = [...this.nodes.keys()]): Promise<void> {
    await waitFor(`agents see ${peers} peers`, async () => {
      for (const n of names) {
        const m = await this.agentHttp(n, '/metrics');
        if (Number(/^twill_agent_peers (\d+)/m.exec(m.body)?.[1]) !== peers) return false;
        if ((await this.agentHttp(n, '/readyz')).status !== 200) return false;
      }
      return true;
    }, 60_000, 250);
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
    return (await this.withStore((s) => s.getLease(this.network, name)))?.subnet;
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
