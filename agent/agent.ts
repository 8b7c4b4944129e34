// The agent: joins its network over MQTT, holds a lease, writes subnet.env and
// keeps the kernel matching every peer's lease through its backend. It never
// tears anything down when the broker goes away: the data plane does not
// depend on the control plane being up.
import { createServer, type Server } from 'node:http';
import type { NetConf } from '../core/config.js';
import { TwillError, errorMessage, listenError } from '../core/errors.js';
import type { Lease } from '../core/lease.js';
import type { Hello, Status } from '../core/messages.js';
import { parseNetConf } from '../core/config.js';
import { backendSpec } from '../core/backends/index.js';
import type { Logger } from '../core/log.js';
import { Topics } from '../core/topics.js';
import { nodeClientId } from '../core/acl.js';
import { VERSION } from '../core/version.js';
import { backendFactory } from './backends/index.js';
import type { Backend } from './backends/backend.js';
import { findExternal, type External, type IfaceOptions } from './iface.js';
import { Metrics } from '../core/metrics.js';
import { StateDir } from './state.js';
import { previousSubnets, writeSubnetEnv } from './subnet-env.js';
import { HostRules, removeUnwanted } from './rules.js';
import { iproute2, type KernelIO } from './kernel/io.js';
import { iptables, type IptablesIO } from './iptables.js';
import { NftRules, nft, type NftIO } from './nftables.js';
import { Watch, within } from './watch.js';

export interface AgentOptions extends IfaceOptions {
  broker: string;
  network: string;
  node: string;
  username?: string;
  password?: string;
  /** AWS IoT Core custom authorizer name, when the broker is IoT Core */
  authorizer?: string;
  prefix?: string;
  subnetFile: string;
  stateDir: string;
  /** host:port for /healthz, /readyz and /metrics; empty to disable */
  metricsAddr: string;
  ipMasq: boolean;
  /** MASQUERADE --random-fully where iptables has it (flanneld's default) */
  masqRandomFully?: boolean;
  /** flanneld's --ip-blackhole-route: a blackhole route for the node's own subnet */
  blackholeRoute?: boolean;
  /** flanneld's --healthz-ip:--healthz-port: /healthz and /readyz there too */
  healthzAddr?: string;
  /** flannel's forward rules (on by default), so pod traffic passes a FORWARD policy of DROP */
  forwardRules: boolean;
  resyncIntervalMs: number;
  /** renew when less than this is left of the lease (flannel renews an hour before expiry) */
  renewMarginMs: number;
  /** ask again when a hello gets no answer in this time */
  helloRetryMs: number;
  /** how often the agent asks the node API for changes it may have missed; default 5 min */
  pollMs?: number;
  log: Logger;
  /** the kernel and iptables the agent programs; default this host's (tests hand in fakes) */
  kernel?: KernelIO;
  iptables?: IptablesIO;
  nft?: NftIO;
}

/** how long each step of stop() may take before it is abandoned */
const STOP_STEP_MS = 2_000;
/** the state file holding the network's last shared config */
const CONFIG_STATE = 'config.json';
/**
 * A status whose only news is a newer applied revision (a peer came or went)
 * is sent at most this often: each membership change would otherwise cost
 * every member a status, N messages, rule runs and store writes per change
 * (bench/fanout). Falling behind and catching up change the status's meaning
 * (inSync), and those are sent at once; `twill status` shows them.
 */
const REVISION_STATUS_MS = 10 * 60_000;

/**
 * Readiness, one state at a time: the agent is ready when it holds its lease
 * and has applied a complete view of its network (agent/watch.ts).
 */
export type Readiness = 'starting' | 'no lease yet' | `no lease yet: ${string}` | `login refused: ${string}` | 'listing the network' | 'applying' | `IPv${4 | 6} not carried: ${string}` | 'ready';

export class Agent {
  private readonly topics: Topics;
  private readonly log: Logger;
  private readonly state: StateDir;
  private readonly kernel: KernelIO;
  private readonly iptables: IptablesIO;
  private readonly rules: HostRules;
  readonly metrics = new Metrics();
  private watch?: Watch;
  private http?: Server;
  /** the subnets an existing subnet.env names, asked for when the state directory holds no lease */
  private inherited: { subnet?: string; ipv6Subnet?: string } = {};
  /** every HTTP server the agent runs (--metrics-addr, --healthz-port), closed on stop */
  private readonly servers: Server[] = [];
  private external?: External;
  private backend?: Backend;
  private sharedConfig?: NetConf;
  private fullConfig?: NetConf;
  /** the view revision the last pass applied (0: none yet) */
  private appliedRevision = 0;
  private lastStatus?: Status;
  private lastStatusAt = 0;
  private statusTimer?: NodeJS.Timeout;
  private lastErrors: string[] = [];
  private problems = new Map<string, string>();
  private timers: NodeJS.Timeout[] = [];
  private reconcileQueued = false;
  /** peers changed since the last pass; 'all' asks the backend to compare everything with the kernel */
  private changed: Set<string> | 'all' = 'all';
  private rulesLogged = false;
  private reconciling: Promise<void> = Promise.resolve();
  private stopped = false;
  private fail!: (e: Error) => void;
  private failed = false;
  /** Rejects when the agent cannot run at all (a backend that refuses this host): the process should exit. */
  readonly fatal = new Promise<never>((_, reject) => (this.fail = (e) => { this.failed = true; reject(e); }));

  constructor(readonly opts: AgentOptions) {
    this.topics = new Topics(opts.prefix);
    this.log = opts.log;
    this.state = new StateDir(opts.stateDir);
    this.kernel = opts.kernel ?? iproute2();
    this.iptables = opts.iptables ?? iptables;
    this.rules = new HostRules(this.iptables, new NftRules(opts.nft ?? nft()), this.state);
    this.metrics.set('twill_agent_info', 'twill agent version and identity', 1, { version: VERSION, network: opts.network, node: opts.node });
    this.metrics.set('twill_agent_mqtt_connected', '1 while connected to the broker', 0);
    this.metrics.declare('twill_agent_reconciles_total', 'reconciles of the kernel state');
    this.metrics.declare('twill_agent_reconcile_errors_total', 'reconciles that reported errors');
  }

  get address(): string | undefined {
    const a = this.http?.address();
    return a && typeof a === 'object' ? `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}` : undefined;
  }

  readiness(): Readiness {
    const v = this.watch?.view();
    if (!v) return 'starting';
    // A broker that refuses our credentials (removed, rotated) will never
    // let us renew: not ready, whatever the kernel holds, and say so. One
    // that is merely away leaves a ready agent ready: the data plane runs on.
    const session = this.watch?.connected ? undefined : this.problems.get('session');
    if (session && /Connection refused: (Bad username or password|Not authorized)/.test(session)) return `login refused: ${session} (retrying)`;
    if (!v.lease) return session ? `no lease yet: ${session} (retrying)` : 'no lease yet';
    if (v.revision === 0) return 'listing the network';
    if (this.appliedRevision === 0) return 'applying';
    // Pods get an address of every family the network enables (subnet.env
    // says so): the agent is not ready until it carries each of them.
    const gap = this.familyGaps()[0];
    if (gap) return gap;
    return 'ready';
  }

  /** Each family the network enables that this node does not carry, with why. */
  private familyGaps(): `IPv${4 | 6} not carried: ${string}`[] {
    const config = this.sharedConfig;
    const lease = this.watch?.view().lease;
    if (!config || !lease) return [];
    const gaps: `IPv${4 | 6} not carried: ${string}`[] = [];
    if (config.EnableIPv4 && !lease.subnet) gaps.push('IPv4 not carried: the lease has no IPv4 subnet');
    if (config.EnableIPv6 && !lease.ipv6Subnet) gaps.push('IPv6 not carried: the lease has no IPv6 subnet');
    const kernel = backendSpec(config.Backend.Type).programsKernel;
    if (kernel && config.EnableIPv4 && !lease.publicIP) gaps.push(`IPv4 not carried: no public IPv4 address (on ${this.external?.iface.name ?? 'the interface'}, or --public-ip)`);
    if (kernel && config.EnableIPv6 && !lease.publicIPv6) gaps.push(`IPv6 not carried: no public IPv6 address (on ${this.external?.iface.name ?? 'the interface'}, or --public-ipv6)`);
    return gaps;
  }

  isReady(): boolean {
    return this.readiness() === 'ready';
  }

  async start(): Promise<void> {
    this.external = await findExternal(this.opts, this.kernel);
    this.log.info('external interface', { iface: this.external.iface.name, publicIP: this.external.publicIP, publicIPv6: this.external.publicIPv6, mtu: this.external.iface.mtu });
    const previous = this.state.lastLease(this.opts.network, this.opts.node);
    if (previous) this.log.info('previous lease from state', { subnet: previous.subnet ?? previous.ipv6Subnet });
    else {
      // A host moving from flannel (or whose state directory was lost) asks
      // for the subnet its subnet.env names, as flanneld does, so that its
      // pods keep their addresses when the subnet is free.
      this.inherited = previousSubnets(this.opts.subnetFile);
      if (this.inherited.subnet || this.inherited.ipv6Subnet) this.log.info('asking for the subnet the existing subnet.env names', { file: this.opts.subnetFile, ...this.inherited });
    }
    // The backend starts from the last config it ran with, before the broker
    // answers: a data plane that lives in this process (udp) forwards again
    // at once after a restart, and whether the broker is up or not.
    const savedConfig = this.savedConfig();
    if (savedConfig) await this.onConfig(savedConfig);
    if (this.opts.metricsAddr) this.http = await this.startHttp(this.opts.metricsAddr, '--metrics-addr');
    if (this.opts.healthzAddr) await this.startHttp(this.opts.healthzAddr, '--healthz-port');
    // A backend that refused this host ends the agent: no session to open.
    if (this.stopped || this.failed) return;

    const offline: Status = { v: 2, state: 'offline', agentVersion: VERSION, errors: [] };
    this.watch = new Watch(
      {
        ...this.opts,
        clientId: nodeClientId(this.topics.prefix, this.opts.network, this.opts.node),
        topics: this.topics,
        pollMs: this.opts.pollMs ?? 5 * 60_000,
        will: offline,
        previous: previous ?? undefined,
        hello: (last) => this.hello(last),
      },
      {
        onConfig: (config) => {
          try {
            // the shared topic's copy: its secrets are masked (the full config comes with our own lease)
            void this.onConfig(parseNetConf(config, process.env, { masked: true }));
          } catch (e) {
            this.log.warn('network config refused', { reason: errorMessage(e) });
          }
        },
        onOwn: (m) => this.onOwn(m),
        onView: (changed) => {
          this.metrics.set('twill_agent_peers', 'peer leases known', this.watch?.view().peers.size ?? 0);
          this.scheduleReconcile(changed === 'all' ? 'all' : changed);
        },
        onProblem: (kind, problem) => {
          if (problem) this.problems.set(kind, problem);
          else this.problems.delete(kind);
          this.metrics.set('twill_agent_mqtt_connected', '1 while connected to the broker', this.watch?.connected ? 1 : 0);
          void this.publishStatus();
        },
      },
    );
    this.watch.start();
    this.timers.push(setInterval(() => this.scheduleReconcile('all'), this.opts.resyncIntervalMs));
    this.timers.push(setInterval(() => this.metrics.set('twill_agent_mqtt_connected', '1 while connected to the broker', this.watch?.connected ? 1 : 0), 1000));
  }

  /** The network's config as last received (the shared one: it holds no secrets). */
  private savedConfig(): NetConf | undefined {
    const text = this.state.get(CONFIG_STATE);
    if (!text) return undefined;
    try {
      const saved = JSON.parse(text) as { network?: string; config?: unknown };
      return saved.network === this.opts.network ? parseNetConf(saved.config, process.env, { masked: true }) : undefined;
    } catch {
      return undefined;
    }
  }

  private async onConfig(config: NetConf): Promise<void> {
    const changedType = this.sharedConfig?.Backend.Type !== config.Backend.Type;
    this.sharedConfig = config;
    const text = JSON.stringify({ network: this.opts.network, config });
    if (this.state.get(CONFIG_STATE) !== text) this.state.set(CONFIG_STATE, text);
    if (!changedType && this.backend) return this.scheduleReconcile('all');
    try {
      await this.backend?.close();
      this.backend = await backendFactory(config.Backend.Type)({
        config,
        external: this.external as External,
        state: this.state,
        log: this.log.child(config.Backend.Type),
        metrics: this.metrics,
        kernel: this.kernel,
        blackholeRoute: this.opts.blackholeRoute,
      });
      if (this.kernelBackends() && !config.EnableNFTables) await removeUnwanted(this.iptables, { ipMasq: this.opts.ipMasq, forwardRules: this.opts.forwardRules });
      this.metrics.clear('twill_agent_info');
      this.metrics.set('twill_agent_info', 'twill agent version and identity', 1, { version: VERSION, network: this.opts.network, node: this.opts.node, backend: config.Backend.Type });
      this.watch?.sendHello();
    } catch (e) {
      this.backend = undefined;
      this.reportErrors([errorMessage(e)]);
      // A backend that refuses this host (NAT under host-gw, a device that is not
      // ours) will refuse it again: stop with the reason rather than limp on.
      if (e instanceof TwillError) this.fail(e);
    }
  }

  /** Backends that carry pods' traffic get forward and masquerade rules (their spec says; alloc carries none). */
  private kernelBackends(): boolean {
    const type = this.sharedConfig?.Backend.Type;
    return type !== undefined && backendSpec(type).podTraffic;
  }

  private onOwn(m: { lease: Lease | null; config?: Record<string, unknown>; error?: string }): void {
    if (m.config) {
      try {
        this.fullConfig = parseNetConf(m.config);
      } catch (e) {
        this.log.warn('config on the own topic refused', { reason: errorMessage(e) });
      }
    }
    if (m.error) {
      this.problems.set('controller', m.error);
      this.log.error('controller refused this node', { reason: m.error });
      void this.publishStatus();
      return;
    }
    this.problems.delete('controller');
    if (!m.lease) return;
    const old = this.state.lastLease(this.opts.network, this.opts.node);
    if (old?.subnet !== m.lease.subnet || old?.ipv6Subnet !== m.lease.ipv6Subnet) {
      this.log.info('lease acquired', { subnet: m.lease.subnet ?? undefined, ipv6Subnet: m.lease.ipv6Subnet ?? undefined, expires: m.lease.expiresAt ?? 'never' });
    }
    this.state.saveLease(m.lease);
    this.metrics.set('twill_agent_lease_expiry_timestamp_seconds', 'when the lease expires (0: a reservation)', m.lease.expiresAt ? Date.parse(m.lease.expiresAt) / 1000 : 0);
    this.scheduleReconcile('all');
  }

  private hello(last?: Lease): Hello | undefined {
    if (!this.backend || !this.external) return undefined;
    const ext = this.external;
    const cfg = this.sharedConfig;
    return {
      v: 2,
      agentVersion: VERSION,
      publicIP: cfg?.EnableIPv4 === false ? undefined : ext.publicIP,
      publicIPv6: cfg?.EnableIPv6 ? ext.publicIPv6 : undefined,
      backendType: cfg?.Backend.Type,
      backendData: this.backend.backendData(),
      previousSubnet: last?.subnet ?? this.inherited.subnet,
      previousIPv6Subnet: last?.ipv6Subnet ?? this.inherited.ipv6Subnet,
    };
  }

  /** Coalesces bursts (a snapshot of thousands of leases) into one reconcile. */
  private scheduleReconcile(peers?: ReadonlySet<string> | 'all'): void {
    if (peers === 'all') this.changed = 'all';
    else if (peers !== undefined && this.changed !== 'all') for (const p of peers) this.changed.add(p);
    if (this.reconcileQueued || this.stopped) return;
    this.reconcileQueued = true;
    this.reconciling = this.reconciling.then(async () => {
      await new Promise((r) => setImmediate(r));
      this.reconcileQueued = false;
      await this.reconcile();
    });
  }

  private async reconcile(): Promise<void> {
    const view = this.watch?.view();
    const lease = view?.lease;
    const backend = this.backend;
    const config = this.fullConfig ?? this.sharedConfig;
    if (!view || !lease || !backend || !config) return;
    const errors: string[] = [];
    const changed = this.changed;
    this.changed = new Set();
    try {
      writeSubnetEnv(this.opts.subnetFile, {
        network: config.EnableIPv4 ? config.Network : undefined,
        subnet: lease.subnet ?? undefined,
        ipv6Network: config.EnableIPv6 ? config.IPv6Network : undefined,
        ipv6Subnet: lease.ipv6Subnet ?? undefined,
        mtu: backend.mtu(),
        ipMasq: this.opts.ipMasq,
      });
      // Until the view is complete the kernel is left as it is: a partial
      // view would delete the entries of peers not yet listed (an agent
      // restarting must not drop a packet). The watch never hands over a
      // partial view, so there is nothing to wait out.
      if (view.revision > 0) {
        const revision = view.revision;
        const report = await backend.reconcile(config, lease, view.peers, changed === 'all' ? undefined : changed);
        errors.push(...report.errors);
        if (changed === 'all' && this.kernelBackends()) {
          const repaired = await this.rules.ensure(config, lease, { ipMasq: this.opts.ipMasq, forwardRules: this.opts.forwardRules, randomFully: this.opts.masqRandomFully });
          if (repaired.length && this.rulesLogged) this.log.warn(`${config.EnableNFTables ? 'nftables' : 'iptables'} rules were missing and are restored`, { chains: repaired.join(',') });
          this.rulesLogged = true;
        }
        if (changed === 'all' || this.appliedRevision > 0) this.appliedRevision = revision;
      } else {
        this.changed = 'all';
      }
    } catch (e) {
      errors.push(errorMessage(e));
      this.changed = 'all';
    }
    this.metrics.inc('twill_agent_reconciles_total', 'reconciles of the kernel state');
    if (errors.length) this.metrics.inc('twill_agent_reconcile_errors_total', 'reconciles that reported errors');
    this.metrics.set('twill_agent_applied_revision', 'the network revision last applied', this.appliedRevision);
    this.metrics.set('twill_agent_ready', '1 when the agent holds its lease and has applied a complete view', this.isReady() ? 1 : 0);
    this.reportErrors(errors);
  }

  private reportErrors(errors: string[]): void {
    const fresh = errors.filter((e) => !this.lastErrors.includes(e));
    for (const e of fresh) this.log.error('agent error', { reason: e });
    this.lastErrors = errors;
    void this.publishStatus();
  }

  /**
   * The retained status, sent when its meaning changes (online, in sync or
   * not, errors, subnet); a newer applied revision alone is sent at most
   * every REVISION_STATUS_MS, so a busy network costs each agent O(1) status messages.
   */
  private async publishStatus(): Promise<void> {
    const watch = this.watch;
    if (!watch?.connected) return;
    const view = watch.view();
    const status: Status = {
      v: 2,
      state: 'online',
      agentVersion: VERSION,
      backend: this.sharedConfig?.Backend.Type,
      subnet: view.lease?.subnet ?? null,
      ipv6Subnet: view.lease?.ipv6Subnet ?? null,
      revision: this.appliedRevision,
      inSync: this.isReady() && view.state === 'in-sync',
      peers: view.peers.size,
      errors: [...this.problems.values(), ...this.lastErrors].slice(0, 32).map((e) => e.slice(0, 1024)),
    };
    const last = this.lastStatus;
    const meaning = (x: Status | undefined) => JSON.stringify(x && { ...x, revision: undefined, peers: undefined });
    if (last && meaning(last) === meaning(status)) {
      if (last.revision === status.revision && last.peers === status.peers) return;
      // only the revision moved: at most every REVISION_STATUS_MS
      const wait = this.lastStatusAt + REVISION_STATUS_MS - Date.now();
      if (wait > 0) {
        this.statusTimer ??= setTimeout(() => { this.statusTimer = undefined; void this.publishStatus(); }, wait);
        return;
      }
    }
    this.lastStatus = status;
    this.lastStatusAt = Date.now();
    await watch.publishStatus(status);
  }

  /** Serves /healthz and /readyz at addr, and /metrics unless this is flanneld's --healthz-port. */
  private async startHttp(addr: string, flag: '--metrics-addr' | '--healthz-port'): Promise<Server> {
    const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(addr);
    if (!m) throw new Error(`${flag} address ${JSON.stringify(addr)} is not HOST:PORT`);
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (path === '/readyz') {
        const r = this.readiness();
        res.writeHead(r === 'ready' ? 200 : 503, { 'content-type': 'text/plain' }).end(r === 'ready' ? 'ready\n' : `not ready: ${r}\n`);
      } else if (path === '/metrics' && flag === '--metrics-addr') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(this.metrics.render());
      } else {
        res.writeHead(404).end();
      }
    });
    this.servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(listenError(e, addr, flag)));
      server.listen(Number(m[3]), m[1] ?? m[2] ?? '127.0.0.1', () => resolve());
    });
    return server;
  }

  /** Leaves the kernel and subnet.env as they are; tells the broker we are going. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    if (this.statusTimer) clearTimeout(this.statusTimer);
    // Every step is bounded: a broker that never acknowledges, or a reconcile
    // stuck on a wedged command, must not keep the process from exiting.
    await within(STOP_STEP_MS, this.reconciling.catch(() => {}));
    await this.watch?.stop({ v: 2, state: 'offline', agentVersion: VERSION, errors: [] });
    await this.backend?.close();
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}
