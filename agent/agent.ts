// The agent: joins its network over MQTT, holds a lease, writes subnet.env and
// keeps the kernel matching every peer's lease through its backend. It never
// tears anything down when the broker goes away: the data plane does not
// depend on the control plane being up.
//
// Its parts: the watch (agent/watch/: the view, the broker session, the
// node API client and the hello schedule) brings the lease, the
// config and the network's view, and tells the agent through WatchOwner; the
// backend (agent/backends) programs the kernel; readiness (agent/readiness.ts),
// the retained status (agent/status.ts) and /healthz, /readyz and /metrics
// (agent/health.ts) say how it is doing.
import type { Server } from 'node:http';
import type { NetConf } from '../core/config.js';
import { TwillError, errorMessage } from '../core/errors.js';
import type { Lease } from '../core/lease.js';
import type { Hello, Status } from '../core/messages.js';
import { parseNetConf } from '../core/config.js';
import { backendSpec } from '../core/backends/index.js';
import type { Logger } from '../core/log.js';
import { Topics } from '../core/topics.js';
import { nodeClientId } from '../core/acl.js';
import { VERSION } from '../core/version.js';
import { formatHostPort } from '../core/host-port.js';
import { backendFactory } from './backends/index.js';
import type { Backend } from './backends/backend.js';
import { findExternal, type External, type IfaceOptions } from './iface.js';
import { Metrics } from '../core/metrics.js';
import { StateDir } from './state.js';
import { previousSubnets, writeSubnetEnv } from './subnet-env.js';
import { HostRules, removeUnwanted } from './rules.js';
import { iproute2, type KernelIO } from './kernel/io.js';
import { iptables, type IptablesIO } from './iptables.js';
import type { HostIO } from './reverse-path.js';
import { NftRules, nft, type NftIO } from './nftables.js';
import { serveHealth, type HealthFlag } from './health.js';
import { familyGaps, readiness, type Readiness } from './readiness.js';
import { StatusReport } from './status.js';
import { within } from './timing.js';
import type { ChangedPeers } from './watch/view.js';
import { Watch, type WatchOwner } from './watch/watch.js';

export type { Readiness } from './readiness.js';

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
  /** the host's sysctls and policy rules (a cloud network's overlay keeps some); default this host's */
  host?: HostIO;
}

/** how long each step of stop() may take before it is abandoned */
const STOP_STEP_MS = 2_000;
const DEFAULT_POLL_MS = 5 * 60_000;
const CONNECTED_METRIC = ['twill_agent_mqtt_connected', '1 while connected to the broker'] as const;

/** The network's config, in the two copies that reach the agent. */
interface NetworkConfig {
  /**
   * The copy on the network's shared topic, which every member reads: its
   * secrets masked. It picks the backend, shapes the hello and the status,
   * and is saved so the next start has a data plane before the broker answers.
   */
  shared?: NetConf;
  /** The copy on this node's own topic, with the secrets (an ipsec PSK): what the kernel is programmed with once it came. */
  withSecrets?: NetConf;
}

/**
 * The peers whose leases changed since the last kernel pass: the next pass
 * looks at just those, or at every peer once something broader moved (a
 * list, the config, the own lease, the periodic resync, a failed pass).
 */
class PendingPeers {
  private every = true;
  private readonly some = new Set<string>();

  add(changed: ChangedPeers): void {
    if (changed === 'every peer') this.every = true;
    else if (!this.every) for (const p of changed) this.some.add(p);
  }

  /** What the next pass looks at; nothing is pending after. */
  take(): ChangedPeers {
    const taken: ChangedPeers = this.every ? 'every peer' : new Set(this.some);
    this.every = false;
    this.some.clear();
    return taken;
  }
}

export class Agent {
  private readonly state: StateDir;
  private readonly kernel: KernelIO;
  private readonly iptables: IptablesIO;
  private readonly rules: HostRules;
  readonly metrics = new Metrics();
  private watch?: Watch;
  /** the --metrics-addr server, whose address the command logs */
  private metricsServer?: Server;
  /** every HTTP server the agent runs (--metrics-addr, --healthz-port), closed on stop */
  private readonly servers: Server[] = [];
  /** the subnets an existing subnet.env names, asked for when the state directory holds no lease */
  private inherited: { subnet?: string; ipv6Subnet?: string } = {};
  private external?: External;
  private backend?: Backend;
  private readonly config: NetworkConfig = {};
  /** the view revision the last kernel pass applied (0: none yet) */
  private appliedRevision = 0;
  private readonly status: StatusReport;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly pending = new PendingPeers();
  /** a pass is queued and has not begun: what changes meanwhile joins it */
  private reconcileQueued = false;
  /** the pass running or queued last; stop() waits for it */
  private reconciling: Promise<void> = Promise.resolve();
  /** the backend data a hello was said for and the lease does not carry yet */
  private newsSaid?: string;
  /** rules found missing after the first pass are drift, and said so */
  private rulesLogged = false;
  private stopped = false;
  private fail!: (e: Error) => void;
  private failed = false;
  /** Rejects when the agent cannot run at all (a backend that refuses this host): the process should exit. */
  readonly fatal = new Promise<never>((_, reject) => (this.fail = (e) => { this.failed = true; reject(e); }));

  constructor(readonly opts: AgentOptions) {
    this.state = new StateDir(opts.stateDir);
    this.kernel = opts.kernel ?? iproute2();
    this.iptables = opts.iptables ?? iptables;
    this.rules = new HostRules(this.iptables, new NftRules(opts.nft ?? nft()), this.state);
    this.status = new StatusReport(opts.log, () => this.composeStatus());
    this.metrics.set('twill_agent_info', 'twill agent version and identity', 1, { version: VERSION, network: opts.network, node: opts.node });
    this.metrics.set(...CONNECTED_METRIC, 0);
    this.metrics.declare('twill_agent_reconciles_total', 'reconciles of the kernel state');
    this.metrics.declare('twill_agent_reconcile_errors_total', 'reconciles that reported errors');
  }

  private get log(): Logger {
    return this.opts.log;
  }

  get address(): string | undefined {
    const a = this.metricsServer?.address();
    return a && typeof a === 'object' ? formatHostPort(a.address, a.port) : undefined;
  }

  /** Ready, or the first step not reached yet (agent/readiness.ts). */
  readiness(): Readiness {
    const view = this.watch?.view();
    return readiness({
      view,
      sessionDown: this.watch?.connected ? undefined : this.status.problem('session'),
      applied: this.appliedRevision,
      gaps: familyGaps(this.config.shared, view?.lease, this.external?.iface.name),
    });
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
    const savedConfig = this.state.lastConfig(this.opts.network, process.env);
    if (savedConfig) await this.useSharedConfig(savedConfig);
    if (this.opts.metricsAddr) this.metricsServer = await this.serve(this.opts.metricsAddr, '--metrics-addr');
    if (this.opts.healthzAddr) await this.serve(this.opts.healthzAddr, '--healthz-port');
    // A backend that refused this host ends the agent: no session to open.
    if (this.stopped || this.failed) return;

    const topics = new Topics(this.opts.prefix);
    this.watch = new Watch(
      {
        ...this.opts,
        clientId: nodeClientId(topics.prefix, this.opts.network, this.opts.node),
        topics,
        pollMs: this.opts.pollMs ?? DEFAULT_POLL_MS,
        will: offline(),
        previous: previous ?? undefined,
      },
      this.watchOwner(),
    );
    this.watch.start();
    this.timers.push(setInterval(() => this.scheduleReconcile('every peer'), this.opts.resyncIntervalMs));
    this.timers.push(setInterval(() => this.metrics.set(...CONNECTED_METRIC, this.watch?.connected ? 1 : 0), 1000));
  }

  /** What the watch tells the agent, and the one thing it asks (what a hello says). */
  private watchOwner(): WatchOwner {
    return {
      hello: (previous) => this.hello(previous),
      sharedConfig: (config) => {
        try {
          // the shared topic's copy: its secrets are masked (the full config comes with our own lease)
          void this.useSharedConfig(parseNetConf(config, process.env, { masked: true }));
        } catch (e) {
          this.log.warn('network config refused', { reason: errorMessage(e) });
        }
      },
      own: (m) => this.onOwn(m),
      viewChanged: (changed) => {
        this.metrics.set('twill_agent_peers', 'peer leases known', this.watch?.view().peers.size ?? 0);
        this.scheduleReconcile(changed);
      },
      problem: (kind, problem) => {
        this.status.setProblem(kind, problem);
        this.metrics.set(...CONNECTED_METRIC, this.watch?.connected ? 1 : 0);
        void this.publishStatus();
      },
    };
  }

  private async serve(addr: string, flag: HealthFlag): Promise<Server> {
    const server = await serveHealth(addr, flag, this);
    this.servers.push(server);
    return server;
  }

  private async useSharedConfig(config: NetConf): Promise<void> {
    const changedType = this.config.shared?.Backend.Type !== config.Backend.Type;
    this.config.shared = config;
    this.state.saveConfig(this.opts.network, config);
    if (!changedType && this.backend) return this.scheduleReconcile('every peer');
    try {
      // Another backend takes over: the old one takes out what only it needs
      // (a failure there is said, and must not stop the new one).
      await this.backend?.retire?.().catch((e: unknown) => this.log.warn('the previous backend could not take out all it added', { reason: errorMessage(e) }));
      await this.backend?.close();
      this.backend = await backendFactory(config.Backend.Type)({
        config,
        external: this.external as External,
        state: this.state,
        log: this.log.child(config.Backend.Type),
        metrics: this.metrics,
        kernel: this.kernel,
        blackholeRoute: this.opts.blackholeRoute,
        iptables: this.iptables,
        host: this.opts.host,
      });
      if (this.carriesPodTraffic() && !config.EnableNFTables) await removeUnwanted(this.iptables, { ipMasq: this.opts.ipMasq, forwardRules: this.opts.forwardRules });
      this.metrics.clear('twill_agent_info');
      this.metrics.set('twill_agent_info', 'twill agent version and identity', 1, { version: VERSION, network: this.opts.network, node: this.opts.node, backend: config.Backend.Type });
      this.watch?.sayHello();
    } catch (e) {
      this.backend = undefined;
      this.reportErrors([errorMessage(e)]);
      // A backend that refuses this host (NAT under host-gw, a device that is not
      // ours) will refuse it again: stop with the reason rather than limp on.
      if (e instanceof TwillError) this.fail(e);
    }
  }

  /** Backends that carry pods' traffic get forward and masquerade rules (their spec says; alloc carries none). */
  private carriesPodTraffic(): boolean {
    const type = this.config.shared?.Backend.Type;
    return type !== undefined && backendSpec(type).podTraffic;
  }

  private onOwn(m: { lease: Lease | null; config?: Record<string, unknown>; error?: string }): void {
    if (m.config) {
      try {
        this.config.withSecrets = parseNetConf(m.config);
      } catch (e) {
        this.log.warn('config on the own topic refused', { reason: errorMessage(e) });
      }
    }
    if (m.error) {
      this.status.setProblem('controller', m.error);
      this.log.error('controller refused this node', { reason: m.error });
      void this.publishStatus();
      return;
    }
    this.status.setProblem('controller', undefined);
    if (!m.lease) return;
    const old = this.state.lastLease(this.opts.network, this.opts.node);
    if (old?.subnet !== m.lease.subnet || old?.ipv6Subnet !== m.lease.ipv6Subnet) {
      this.log.info('lease acquired', { subnet: m.lease.subnet ?? undefined, ipv6Subnet: m.lease.ipv6Subnet ?? undefined, expires: m.lease.expiresAt ?? 'never' });
    }
    this.state.saveLease(m.lease);
    this.metrics.set('twill_agent_lease_expiry_timestamp_seconds', 'when the lease expires (0: a reservation)', m.lease.expiresAt ? Date.parse(m.lease.expiresAt) / 1000 : 0);
    this.scheduleReconcile('every peer');
  }

  private hello(last?: Lease): Hello | undefined {
    if (!this.backend || !this.external) return undefined;
    const ext = this.external;
    const cfg = this.config.shared;
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
  private scheduleReconcile(changed: ChangedPeers): void {
    this.pending.add(changed);
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
    const config = this.config.withSecrets ?? this.config.shared;
    if (!view || !lease || !backend || !config) return;
    const errors: string[] = [];
    let confirm = false;
    const changed = this.pending.take();
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
        const every = changed === 'every peer';
        const report = await backend.reconcile(config, lease, view.peers, every ? undefined : changed);
        errors.push(...report.errors);
        confirm = report.confirm === true;
        this.publishNews(lease, backend);
        if (every && this.carriesPodTraffic()) {
          const repaired = await this.rules.ensure(config, lease, { ipMasq: this.opts.ipMasq, forwardRules: this.opts.forwardRules, randomFully: this.opts.masqRandomFully });
          if (repaired.length && this.rulesLogged) this.log.warn(`${config.EnableNFTables ? 'nftables' : 'iptables'} rules were missing and are restored`, { chains: repaired.join(',') });
          this.rulesLogged = true;
        }
        // A pass over some peers brings the kernel to the view only once a pass over every peer has.
        if (every || this.appliedRevision > 0) this.appliedRevision = revision;
      } else {
        this.pending.add('every peer');
      }
    } catch (e) {
      errors.push(errorMessage(e));
      this.pending.add('every peer');
    }
    this.metrics.inc('twill_agent_reconciles_total', 'reconciles of the kernel state');
    if (errors.length) this.metrics.inc('twill_agent_reconcile_errors_total', 'reconciles that reported errors');
    this.metrics.set('twill_agent_applied_revision', 'the network revision last applied', this.appliedRevision);
    this.metrics.set('twill_agent_ready', '1 when the agent holds its lease and has applied a complete view', this.isReady() ? 1 : 0);
    this.reportErrors(errors, confirm && this.appliedRevision > 0);
  }

  /**
   * Says hello when the backend publishes what the lease does not carry yet
   * (wireguard's new public key after a rotation): level-triggered, once
   * per value; the hello schedule asks again while it goes unanswered.
   */
  private publishNews(lease: Lease, backend: Backend): void {
    const data = backend.backendData();
    if (Object.entries(data).every(([k, v]) => lease.backendData[k] === v)) {
      this.newsSaid = undefined;
      return;
    }
    const text = JSON.stringify(data);
    if (this.newsSaid === text) return;
    this.newsSaid = text;
    this.log.info('saying hello: the lease does not carry what the backend publishes', { keys: Object.keys(data).join(',') });
    this.watch?.sayHello();
  }

  private reportErrors(errors: string[], now = false): void {
    this.status.setErrors(errors);
    void this.publishStatus(now);
  }

  /** now: the applied revision is news a controller waits on (BackendReport.confirm) */
  private publishStatus(now = false): Promise<void> {
    return this.status.publish(this.watch, now);
  }

  /** The retained status as it stands (its errors are StatusReport's). */
  private composeStatus(): Omit<Status, 'errors'> {
    const view = this.watch?.view();
    return {
      v: 2,
      state: 'online',
      agentVersion: VERSION,
      backend: this.config.shared?.Backend.Type,
      subnet: view?.lease?.subnet ?? null,
      ipv6Subnet: view?.lease?.ipv6Subnet ?? null,
      revision: this.appliedRevision,
      inSync: this.isReady() && view?.state === 'in-sync',
      peers: view?.peers.size ?? 0,
      ...(view?.lease && this.backend?.status?.(view.lease)),
    };
  }

  /** Leaves the kernel and subnet.env as they are; tells the broker we are going. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.status.stop();
    // Every step is bounded: a broker that never acknowledges, or a reconcile
    // stuck on a wedged command, must not keep the process from exiting.
    await within(STOP_STEP_MS, this.reconciling.catch(() => {}));
    await this.watch?.stop(offline());
    await this.backend?.close();
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

/** The status the broker keeps while the agent is gone (its last will, and its last word). */
function offline(): Status {
  return { v: 2, state: 'offline', agentVersion: VERSION, errors: [] };
}
