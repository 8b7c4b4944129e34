// The agent: joins its network over MQTT, holds a lease, writes subnet.env and
// keeps the kernel matching every peer's lease through its backend. It never
// tears anything down when the broker goes away: the data plane does not
// depend on the control plane being up.
import { createServer, type Server } from 'node:http';
import mqtt from 'mqtt';
import type { NetConf } from '../core/config.js';
import { TwillError, errorMessage } from '../core/errors.js';
import { leaseDigest, digestHex, type Lease } from '../core/lease.js';
import {
  leaseSchema,
  manifestSchema,
  netConfigSchema,
  nodeLeaseSchema,
  parseMessage,
  type Hello,
  type Manifest,
  type Status,
} from '../core/messages.js';
import { parseNetConf } from '../core/config.js';
import type { Logger } from '../core/log.js';
import { Topics } from '../core/topics.js';
import { VERSION } from '../core/version.js';
import { backendFactory } from './backends/index.js';
import { brokerConnection } from './connect.js';
import type { Backend } from './backends/backend.js';
import { findExternal, type External, type IfaceOptions } from './iface.js';
import { Metrics } from '../core/metrics.js';
import { StateDir } from './state.js';
import { writeSubnetEnv } from './subnet-env.js';
import { ensureRules, removeUnwanted } from './rules.js';
import { iproute2, type KernelIO } from './kernel/io.js';
import { iptables, type IptablesIO } from './iptables.js';

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
  /** flannel's forward rules (on by default), so pod traffic passes a FORWARD policy of DROP */
  forwardRules: boolean;
  resyncIntervalMs: number;
  /** renew when less than this is left of the lease (flannel renews an hour before expiry) */
  renewMarginMs: number;
  /** ask again when a hello gets no answer in this time */
  helloRetryMs: number;
  log: Logger;
  /** the kernel and iptables the agent programs; default this host's (tests hand in fakes) */
  kernel?: KernelIO;
  iptables?: IptablesIO;
}

const MAX_BACKOFF_MS = 30_000;
/**
 * After a (re)connect the kernel is left alone until the retained snapshot is
 * complete; if the manifest never matches (a broker that lost messages), the
 * agent goes ahead after this long rather than stop repairing drift forever.
 */
const SNAPSHOT_GRACE_MS = 30_000;
/** how long each step of stop() may take before it is abandoned */
const STOP_STEP_MS = 2_000;

async function within(ms: number, p: Promise<unknown> | undefined): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

/** the state file holding the network's last shared config */
const CONFIG_STATE = 'config.json';

export class Agent {
  private readonly topics: Topics;
  private readonly log: Logger;
  private readonly state: StateDir;
  private readonly kernel: KernelIO;
  private readonly iptables: IptablesIO;
  readonly metrics = new Metrics();
  private client?: mqtt.MqttClient;
  private http?: Server;
  private external?: External;
  private backend?: Backend;
  private sharedConfig?: NetConf;
  private fullConfig?: NetConf;
  private lease?: Lease;
  private readonly peers = new Map<string, Lease>();
  /** XOR digest of every lease seen on the network topic (self included), compared with the manifest */
  private seenHash = 0n;
  private manifest?: Manifest;
  private complete = false;
  private everComplete = false;
  /** the snapshot has been complete at least once since the last connect */
  private synced = false;
  private connectedAt = 0;
  private applied = false;
  private lastStatus = '';
  private lastErrors: string[] = [];
  private helloTimer?: NodeJS.Timeout;
  private renewJitter = Math.random() / 2;
  private helloBackoff: number;
  private timers: NodeJS.Timeout[] = [];
  private reconcileQueued = false;
  /** peers changed since the last pass; 'all' asks the backend to compare everything with the kernel */
  private changed: Set<string> | 'all' = 'all';
  private rulesLogged = false;
  private reconciling: Promise<void> = Promise.resolve();
  private reconnectAttempt = 0;
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
    this.helloBackoff = opts.helloRetryMs;
    this.metrics.set('twill_agent_info', 'twill agent version and identity', 1, { version: VERSION, network: opts.network, node: opts.node });
    this.metrics.set('twill_agent_mqtt_connected', '1 while connected to the broker', 0);
    this.metrics.declare('twill_agent_reconciles_total', 'reconciles of the kernel state');
    this.metrics.declare('twill_agent_reconcile_errors_total', 'reconciles that reported errors');
    this.metrics.declare('twill_agent_messages_refused_total', 'messages from the broker that failed to parse');
  }

  get address(): string | undefined {
    const a = this.http?.address();
    return a && typeof a === 'object' ? `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}` : undefined;
  }

  isReady(): boolean {
    return this.applied && this.complete;
  }

  async start(): Promise<void> {
    this.external = await findExternal(this.opts, this.kernel);
    this.log.info('external interface', { iface: this.external.iface.name, publicIP: this.external.publicIP, publicIPv6: this.external.publicIPv6, mtu: this.external.iface.mtu });
    const last = this.state.lastLease(this.opts.network, this.opts.node);
    if (last) this.log.info('previous lease from state', { subnet: last.subnet ?? last.ipv6Subnet });
    // The backend starts from the last config it ran with, before the broker
    // answers: a data plane that lives in this process (udp) forwards again
    // at once after a restart, and whether the broker is up or not.
    const savedConfig = this.savedConfig();
    if (savedConfig) await this.onConfig(savedConfig);
    if (this.opts.metricsAddr) await this.startHttp(this.opts.metricsAddr);
    // A backend that refused this host ends the agent: no session to open.
    if (this.stopped || this.failed) return;

    const offline: Status = { v: 1, state: 'offline', agentVersion: VERSION, errors: [] };
    // The broker's address and credentials (IoT Core's authorizer included) come from agent/connect.ts.
    const conn = brokerConnection(this.opts, {
      clientId: `twill-${this.opts.network}-${this.opts.node}`.slice(0, 128),
      clean: true,
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      will: { topic: this.topics.nodeStatus(this.opts.network, this.opts.node), payload: Buffer.from(JSON.stringify(offline)), qos: 1, retain: true },
    });
    const client = mqtt.connect(conn.url, conn.options);
    this.client = client;
    client.on('connect', () => void this.onConnect());
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    client.on('close', () => {
      this.metrics.set('twill_agent_mqtt_connected', '1 while connected to the broker', 0);
      // Exponential backoff with jitter, so a fleet does not reconnect in lockstep
      // after the broker comes back.
      const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(this.reconnectAttempt++, 10));
      client.options.reconnectPeriod = Math.round(base / 2 + Math.random() * (base / 2));
    });
    client.on('error', (e) => this.log.warn('broker connection error', { reason: e.message }));

    this.timers.push(setInterval(() => this.scheduleReconcile('all'), this.opts.resyncIntervalMs));
    this.timers.push(setInterval(() => this.maybeRenew(), Math.max(250, Math.min(60_000, this.opts.renewMarginMs / 4))));
  }

  private async onConnect(): Promise<void> {
    const client = this.client;
    if (!client) return;
    // end() while the connection was still being made does not stop mqtt.js from completing it
    if (this.stopped) return void client.end(true);
    this.reconnectAttempt = 0;
    this.metrics.set('twill_agent_mqtt_connected', '1 while connected to the broker', 1);
    // A clean session replays every retained lease, but a lease removed while we
    // were away simply is not among them: rebuild the view from scratch. The
    // kernel keeps the old state until the new snapshot is complete.
    this.peers.clear();
    this.ownSeen = undefined;
    this.seenHash = 0n;
    this.manifest = undefined;
    this.complete = false;
    this.synced = false;
    this.connectedAt = Date.now();
    this.changed = 'all';
    this.log.info('connected to broker', { broker: this.opts.broker });
    try {
      await client.subscribeAsync([this.topics.netAll(this.opts.network), this.topics.nodeLease(this.opts.network, this.opts.node)], { qos: 1 }).catch((e: Error) => {
        // A refused subscription (granted 128) means the credentials are not for this node and network.
        this.reportErrors([`broker refused the subscriptions (${e.message}): check network and node in the agent config`]);
      });
      this.lastStatus = '';
      await this.publishStatus();
      if (this.backend) this.sendHello();
    } catch (e) {
      this.log.warn('subscribe failed', { reason: errorMessage(e) });
    }
  }

  private onMessage(topic: string, payload: Buffer): void {
    const t = this.topics.parse(topic);
    if (!t || t.network !== this.opts.network) return;
    try {
      if (t.kind === 'netConfig') {
        const msg = parseMessage(netConfigSchema, payload, 'network config');
        // the shared topic's copy: its secrets are masked (the full config comes with our own lease)
        void this.onConfig(parseNetConf(msg.config, process.env, { masked: true }));
      } else if (t.kind === 'netManifest') {
        const m = parseMessage(manifestSchema, payload, 'manifest');
        // A broker may hand out a retained copy after a newer live message (aedes
        // does, right after a subscribe): never go back to an older revision.
        if (this.manifest && m.revision < this.manifest.revision) return;
        this.manifest = m;
        this.checkComplete();
      } else if (t.kind === 'netLease') {
        this.onPeer(t.node, payload);
      } else if (t.kind === 'nodeLease' && t.node === this.opts.node) {
        this.onOwn(payload);
      }
    } catch (e) {
      this.metrics.inc('twill_agent_messages_refused_total', 'messages from the broker that failed to parse');
      this.log.warn('message refused', { topic, reason: errorMessage(e) });
    }
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
      });
      if (this.kernelBackends()) await removeUnwanted(this.iptables, { ipMasq: this.opts.ipMasq, forwardRules: this.opts.forwardRules });
      this.metrics.clear('twill_agent_info');
      this.metrics.set('twill_agent_info', 'twill agent version and identity', 1, { version: VERSION, network: this.opts.network, node: this.opts.node, backend: config.Backend.Type });
      this.sendHello();
    } catch (e) {
      this.backend = undefined;
      this.reportErrors([errorMessage(e)]);
      // A backend that refuses this host (NAT under host-gw, a device that is not
      // ours) will refuse it again: stop with the reason rather than limp on.
      if (e instanceof TwillError) this.fail(e);
    }
  }

  private onPeer(node: string, payload: Buffer): void {
    const old = this.peers.get(node) ?? (node === this.opts.node ? this.ownSeen : undefined);
    const lease = payload.length === 0 ? undefined : (parseMessage(leaseSchema, payload, `lease of ${node}`) as Lease);
    // An older copy arriving after a newer one (a retained copy delivered late) is dropped.
    if (lease && old && lease.revision < old.revision) return;
    if (old) this.seenHash ^= leaseDigest(old.node, old.revision);
    if (!lease) {
      this.peers.delete(node);
      if (node === this.opts.node) this.ownSeen = undefined;
    } else {
      if (lease.node !== node || lease.network !== this.opts.network) throw new Error(`lease on the topic of ${node} names ${lease.network}/${lease.node}`);
      this.seenHash ^= leaseDigest(lease.node, lease.revision);
      // Our own lease is in the network snapshot too; the backend gets it from the node topic.
      if (node === this.opts.node) this.ownSeen = lease;
      else this.peers.set(node, lease);
    }
    this.metrics.set('twill_agent_peers', 'peer leases known', this.peers.size);
    this.checkComplete();
    if (node !== this.opts.node) this.scheduleReconcile(node);
  }
  private ownSeen?: Lease;

  private checkComplete(): void {
    const m = this.manifest;
    const count = this.peers.size + (this.ownSeen ? 1 : 0);
    const complete = !!m && m.count === count && m.hash === digestHex(this.seenHash);
    if (complete && !this.complete) {
      const fields = { revision: m?.revision, leases: count };
      // Every change passes through a brief incomplete state; only the first snapshot is news.
      if (this.everComplete) this.log.debug('network snapshot complete', fields);
      else this.log.info('network snapshot complete', fields);
      this.everComplete = true;
    }
    this.complete = complete;
    if (complete) this.synced = true;
    this.metrics.set('twill_agent_snapshot_complete', '1 when every lease in the manifest has arrived', complete ? 1 : 0);
    if (complete) this.scheduleReconcile();
  }

  /** Backends that program the kernel get forward and masquerade rules; alloc has no traffic of its own. */
  private kernelBackends(): boolean {
    return this.sharedConfig?.Backend.Type !== 'alloc';
  }

  private onOwn(payload: Buffer): void {
    const msg = parseMessage(nodeLeaseSchema, payload, 'own lease');
    this.clearHelloTimer();
    if (msg.config) this.fullConfig = parseNetConf(msg.config);
    if (msg.error) {
      this.reportErrors([msg.error]);
      this.log.error('controller refused this node', { reason: msg.error });
      // Ask again later: the operator may fix the cause (add the node, free a subnet).
      this.armHelloRetry(Math.max(this.opts.helloRetryMs, 10_000));
      return;
    }
    if (!msg.lease) {
      if (this.lease) this.log.warn('lease removed by the controller: asking for a new one', { subnet: this.lease.subnet });
      this.lease = undefined;
      this.sendHello();
      return;
    }
    const lease = msg.lease as Lease;
    if (lease.node !== this.opts.node) return;
    if (this.lease && lease.revision < this.lease.revision) return; // a late older copy
    if (!this.lease || this.lease.subnet !== lease.subnet || this.lease.ipv6Subnet !== lease.ipv6Subnet) {
      this.log.info('lease acquired', { subnet: lease.subnet ?? undefined, ipv6Subnet: lease.ipv6Subnet ?? undefined, expires: lease.expiresAt ?? 'never' });
    }
    if (lease.expiresAt !== this.lease?.expiresAt) this.renewJitter = Math.random() / 2;
    this.lease = lease;
    this.helloBackoff = this.opts.helloRetryMs;
    this.state.saveLease(lease);
    this.metrics.set('twill_agent_lease_expiry_timestamp_seconds', 'when the lease expires (0: a reservation)', lease.expiresAt ? Date.parse(lease.expiresAt) / 1000 : 0);
    this.scheduleReconcile('all');
  }

  private hello(): Hello {
    const last = this.lease ?? this.state.lastLease(this.opts.network, this.opts.node);
    const ext = this.external as External;
    const cfg = this.sharedConfig;
    return {
      v: 1,
      agentVersion: VERSION,
      publicIP: cfg?.EnableIPv4 === false ? undefined : ext.publicIP,
      publicIPv6: cfg?.EnableIPv6 ? ext.publicIPv6 : undefined,
      backendType: cfg?.Backend.Type,
      backendData: this.backend?.backendData() ?? {},
      previousSubnet: last?.subnet ?? undefined,
      previousIPv6Subnet: last?.ipv6Subnet ?? undefined,
    };
  }

  private sendHello(): void {
    const client = this.client;
    if (!client?.connected || !this.backend || this.stopped) return;
    client.publish(this.topics.nodeHello(this.opts.network, this.opts.node), JSON.stringify(this.hello()), { qos: 1 }, (err) => {
      if (err) this.log.warn('hello not sent', { reason: err.message });
    });
    this.armHelloRetry(this.helloBackoff);
    this.helloBackoff = Math.min(this.helloBackoff * 2, 60_000);
  }

  private armHelloRetry(ms: number): void {
    this.clearHelloTimer();
    this.helloTimer = setTimeout(() => this.sendHello(), ms);
  }

  private clearHelloTimer(): void {
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = undefined;
  }

  private maybeRenew(): void {
    const exp = this.lease?.expiresAt;
    if (!exp || this.helloTimer) return;
    // Up to half the margin earlier, drawn per lease: a fleet whose leases were
    // granted in one storm does not renew in the same minute a day later.
    if (Date.parse(exp) - Date.now() < this.opts.renewMarginMs * (1 + this.renewJitter)) {
      this.log.info('renewing lease', { expires: exp });
      this.sendHello();
    }
  }

  /** Coalesces bursts (a snapshot of thousands of leases) into one reconcile. */
  private scheduleReconcile(peer?: string | 'all'): void {
    if (peer === 'all') this.changed = 'all';
    else if (peer !== undefined && this.changed !== 'all') this.changed.add(peer);
    if (this.reconcileQueued || this.stopped) return;
    this.reconcileQueued = true;
    this.reconciling = this.reconciling.then(async () => {
      await new Promise((r) => setImmediate(r));
      this.reconcileQueued = false;
      await this.reconcile();
    });
  }

  private async reconcile(): Promise<void> {
    const lease = this.lease;
    const backend = this.backend;
    const config = this.fullConfig ?? this.sharedConfig;
    if (!lease || !backend || !config) return;
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
      // Until every peer lease of the snapshot has arrived, the kernel is left as
      // it is: reconciling a partial view would delete the entries of peers not
      // yet received (an agent restarting must not drop a packet). Once synced,
      // the brief incompleteness of ordinary churn does not hold changes back.
      const graceOver = this.connectedAt > 0 && Date.now() - this.connectedAt > SNAPSHOT_GRACE_MS;
      if (!this.complete && graceOver) {
        const m = this.manifest;
        errors.push(`network snapshot incomplete: the manifest lists ${m?.count ?? '?'} leases, ${this.peers.size + (this.ownSeen ? 1 : 0)} received (revision ${m?.revision ?? '?'})`);
      }
      if (this.synced || graceOver) {
        const report = await backend.reconcile(config, lease, this.peers, changed === 'all' ? undefined : changed);
        errors.push(...report.errors);
        if (changed === 'all' && this.kernelBackends()) {
          const repaired = await ensureRules(this.iptables, config, lease, { ipMasq: this.opts.ipMasq, forwardRules: this.opts.forwardRules });
          if (repaired.length && this.rulesLogged) this.log.warn('iptables rules were missing and are restored', { chains: repaired.join(',') });
          this.rulesLogged = true;
        }
        this.applied = true;
      } else {
        this.changed = 'all';
      }
    } catch (e) {
      errors.push(errorMessage(e));
    }
    this.metrics.inc('twill_agent_reconciles_total', 'reconciles of the kernel state');
    if (errors.length) this.metrics.inc('twill_agent_reconcile_errors_total', 'reconciles that reported errors');
    this.metrics.set('twill_agent_applied_revision', 'the network revision last applied', this.appliedRevision());
    this.reportErrors(errors);
  }

  private appliedRevision(): number {
    return Math.max(this.lease?.revision ?? 0, this.complete && this.manifest ? this.manifest.revision : 0);
  }

  private reportErrors(errors: string[]): void {
    const fresh = errors.filter((e) => !this.lastErrors.includes(e));
    for (const e of fresh) this.log.error('agent error', { reason: e });
    this.lastErrors = errors;
    void this.publishStatus();
  }

  private async publishStatus(): Promise<void> {
    const client = this.client;
    if (!client?.connected) return;
    const status: Status = {
      v: 1,
      state: 'online',
      agentVersion: VERSION,
      backend: this.sharedConfig?.Backend.Type,
      subnet: this.lease?.subnet ?? null,
      ipv6Subnet: this.lease?.ipv6Subnet ?? null,
      appliedRevision: this.appliedRevision(),
      peers: this.peers.size,
      errors: this.lastErrors.slice(0, 32).map((e) => e.slice(0, 1024)),
    };
    const text = JSON.stringify(status);
    if (text === this.lastStatus) return;
    this.lastStatus = text;
    await client.publishAsync(this.topics.nodeStatus(this.opts.network, this.opts.node), text, { qos: 1, retain: true }).catch(() => {});
  }

  private async startHttp(addr: string): Promise<void> {
    const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(addr);
    if (!m) throw new Error(`metrics address ${JSON.stringify(addr)} is not HOST:PORT`);
    this.http = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (path === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      } else if (path === '/readyz') {
        const ready = this.isReady();
        res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ready\n' : `not ready: ${!this.lease ? 'no lease yet' : !this.complete ? 'network snapshot incomplete' : 'not applied yet'}\n`);
      } else if (path === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(this.metrics.render());
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve, reject) => {
      this.http?.once('error', reject);
      this.http?.listen(Number(m[3]), m[1] ?? m[2] ?? '127.0.0.1', () => resolve());
    });
  }

  /** Leaves the kernel and subnet.env as they are; tells the broker we are going. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.clearHelloTimer();
    for (const t of this.timers) clearInterval(t);
    // Every step is bounded: a broker that never acknowledges, or a reconcile
    // stuck on a wedged command, must not keep the process from exiting.
    await within(STOP_STEP_MS, this.reconciling.catch(() => {}));
    const client = this.client;
    if (client?.connected) {
      const offline: Status = { v: 1, state: 'offline', agentVersion: VERSION, errors: [] };
      await within(STOP_STEP_MS, client.publishAsync(this.topics.nodeStatus(this.opts.network, this.opts.node), JSON.stringify(offline), { qos: 1, retain: true }).catch(() => {}));
    }
    await within(STOP_STEP_MS, client?.endAsync().catch(() => {}));
    client?.end(true);
    await this.backend?.close();
    await new Promise<void>((r) => (this.http ? this.http.close(() => r()) : r()));
  }
}
