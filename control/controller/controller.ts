// The controller: leases, allocation, expiry and everything published about
// them. The local controller and the serverless handlers both drive this class;
// neither holds logic of its own.
import { nodeConfig, subnetRanges, publicConfig, type NetConf, type SubnetRange } from '../../core/config.js';
import { fitsRange, pickSubnet, rangeSize } from '../../core/allocator.js';
import { formatIP, parseCidr } from '../../core/cidr.js';
import { ConflictError, NotFoundError, OutOfSubnetsError, TwillError, errorMessage } from '../../core/errors.js';
import type { Lease, NewLease } from '../../core/lease.js';
import { agentDataProblems } from '../../core/backends/index.js';
import { RateLimiter } from './rate-limit.js';
import { helloSchema, MAX_CHANGES_BYTES, MessageError, parseMessage, statusSchema, type Hello, type NodeLeaseMessage } from '../../core/messages.js';
import { checkName, LEGACY_PROTOCOL, PROTOCOL, type Topics } from '../../core/topics.js';
import { VERSION } from '../../core/version.js';
import type { Logger } from '../../core/log.js';
import type { Metrics } from '../../core/metrics.js';
import type { Publisher } from '../publish/publisher.js';
import type { Change, NetworkRecord, Store } from '../store/store.js';

export const DEFAULT_LEASE_TTL_MS = 24 * 3600 * 1000;
/** Conditional writes that lose a race are retried this many times with fresh reads. */
const WRITE_ATTEMPTS = 16;
/** how often an own-lease publish overtaken by a concurrent write is redone */
const PUBLISH_ROUNDS = 4;
/** a batch of changes stays under this (core/messages.ts MAX_CHANGES_BYTES, with room for the wrapper) */
const BATCH_BYTES = MAX_CHANGES_BYTES - 1024;
const BATCH_CHANGES = 1000;
/**
 * While other writes of the network are in flight (a storm of joins handled
 * side by side), a batch waits this long to gather theirs: a broker that
 * acknowledges at once (Mosquitto) would otherwise get one message per join.
 * A writer alone, or one that waits for its publish before its next write,
 * is never delayed.
 */
const BUSY_GATHER_MS = 250;

/** Changes of one network waiting for the publish in flight to finish. */
interface Outbox {
  waiting: { change: Change; done: (err?: unknown) => void }[];
  busy: boolean;
}

const MESSAGES = 'twill_agent_messages_total';
const MESSAGES_HELP = 'hellos and statuses from agents, by result (ok, refused_rate: over the node\'s rate limit, refused_invalid: refused with a reason)';

export interface ControllerOptions {
  topics: Topics;
  log: Logger;
  leaseTtlMs?: number;
  now?: () => number;
  random?: () => number;
  /** where joins and refused messages are counted (the local controller's /metrics) */
  metrics?: Metrics;
  /** The node API's URL, told to every node on its own topic (it lists its network there). */
  api?: string;
  /** who is told what this controller published (control/plane.ts wires the sync task's watermark here) */
  listeners?: ControllerListeners;
}

/** What a host may want to hear of a controller's publishes. */
export interface ControllerListeners {
  /**
   * Told of every write this controller has published: the write at revision
   * (or, with upTo, every write up to it, after a whole republish). The sync
   * task republishes what it was not told of (control/tasks/sync.ts).
   */
  published?(network: string, revision: number, upTo: boolean): void;
  /** Called when a network is removed (its revisions start again with a new one). */
  removed?(network: string): void;
}

/** The data a join carries, whoever asks: an agent's hello or a cloud instance. */
export interface JoinRequest {
  publicIP?: string;
  publicIPv6?: string;
  backendData?: Record<string, string | number | boolean>;
  /** a node's own hello: its backend data must be what its backend's agents publish (the route controller's is its own) */
  fromAgent?: boolean;
  previousSubnet?: string;
  previousIPv6Subnet?: string;
}

/** Whether a join changes nothing a peer uses (its addresses, backend and backend data). */
function samePeerView(lease: Lease, next: Pick<NewLease, 'publicIP' | 'publicIPv6' | 'backendType' | 'backendData'>): boolean {
  const data = (d: Record<string, unknown>) => JSON.stringify(Object.entries(d).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return lease.publicIP === next.publicIP && lease.publicIPv6 === next.publicIPv6 && lease.backendType === next.backendType && data(lease.backendData) === data(next.backendData);
}

function leaseFits(lease: Lease, config: NetConf, ranges: { v4?: SubnetRange; v6?: SubnetRange }): boolean {
  if (lease.backendType !== config.Backend.Type) return false;
  const v4ok = ranges.v4 ? fitsRange(ranges.v4, lease.subnet) : lease.subnet === null;
  const v6ok = ranges.v6 ? fitsRange(ranges.v6, lease.ipv6Subnet) : lease.ipv6Subnet === null;
  return v4ok && v6ok;
}

export class Controller {
  readonly topics: Topics;
  private readonly log: Logger;
  private readonly ttl: number;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly onPublished: (network: string, revision: number, upTo: boolean) => void;
  private readonly onRemoved: (network: string) => void;
  /** The node API's URL, told to every node on its own topic (it lists its network there). */
  readonly api?: string;
  private readonly outboxes = new Map<string, Outbox>();
  private readonly writers = new Map<string, number>();

  constructor(
    readonly store: Store,
    private readonly publisher: Publisher,
    opts: ControllerOptions,
  ) {
    this.topics = opts.topics;
    this.log = opts.log;
    this.ttl = opts.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.api = opts.api;
    this.onPublished = (network, revision, upTo) => opts.listeners?.published?.(network, revision, upTo);
    this.onRemoved = (network) => opts.listeners?.removed?.(network);
    this.limiter = new RateLimiter(undefined, this.now);
    this.metrics = opts.metrics;
    for (const kind of ['hello', 'status']) {
      for (const result of ['ok', 'refused_rate', 'refused_invalid']) this.metrics?.declare(MESSAGES, MESSAGES_HELP, { kind, result });
    }
  }

  private readonly metrics?: Metrics;

  private countMessage(kind: string, result: 'ok' | 'refused_rate' | 'refused_invalid'): void {
    this.metrics?.inc(MESSAGES, MESSAGES_HELP, 1, { kind, result });
  }

  /** one node's flood must not starve the others (control/controller/rate-limit.ts) */
  private readonly limiter: RateLimiter;
  /** messages refused for their node's rate, since start */
  refusedByRate = 0;

  /** How long a join makes a lease last: whoever renews leases decides when by it. */
  get leaseTtlMs(): number {
    return this.ttl;
  }

  // ---- networks ----

  /**
   * Stores a network's config and publishes it. The backend type is fixed once
   * the network has leases: every node's kernel state depends on it.
   */
  async applyNetwork(name: string, config: NetConf): Promise<NetworkRecord> {
    checkName('network', name);
    for (let attempt = 0; ; attempt++) {
      const cur = await this.store.getNetwork(name);
      if (cur && cur.leaseCount > 0 && cur.config.Backend.Type !== config.Backend.Type) {
        throw new TwillError(
          'BackendTypeLocked',
          `network ${name} uses backend ${cur.config.Backend.Type} and has ${cur.leaseCount} lease(s): its backend type cannot change to ${config.Backend.Type}; create a new network instead`,
        );
      }
      try {
        const rec = await this.store.putNetwork(name, config, cur?.revision);
        this.log.info('network stored', { network: name, backend: config.Backend.Type, revision: rec.revision });
        await this.publishNetwork(rec);
        return rec;
      } catch (e) {
        if (!(e instanceof ConflictError) || attempt >= WRITE_ATTEMPTS) throw e;
      }
    }
  }

  /**
   * Removes a network. Refused while it has leases or nodes, unless forced:
   * then every lease is released (each agent drops the peer, each node learns
   * it has none) and every node's credentials are deleted; the caller ends
   * their sessions. Last, what the broker keeps for the network is cleared
   * (an empty retained payload deletes a retained message, in MQTT and on
   * IoT Core), so a network of the same name later starts from nothing.
   */
  async removeNetwork(name: string, opts: { force?: boolean } = {}): Promise<{ released: number; nodes: string[] }> {
    const net = await this.requireNetwork(name);
    const leases = await this.store.listLeases(name);
    const nodes = (await this.store.listNodes()).filter((n) => n.network === name).map((n) => n.name);
    if (!opts.force && (leases.length > 0 || nodes.length > 0)) {
      throw new ConflictError(
        `network ${name} still has ${leases.length} lease(s) and ${nodes.length} node(s): release and remove them first, or force it (twill network remove ${name} --force), which releases every lease and removes every node of the network`,
      );
    }
    // Credentials first: an agent told its lease is gone asks again at once,
    // and a node that no longer exists is refused rather than leased anew.
    for (const n of nodes) await this.store.deleteNode(n);
    let released = 0;
    const gone = new Set(leases.map((l) => l.node));
    for (let attempt = 0; ; attempt++) {
      for (const l of await this.store.listLeases(name)) {
        gone.add(l.node);
        if (await this.release(name, l.node)) released++;
      }
      try {
        await this.store.deleteNetwork(name);
        break;
      } catch (e) {
        // a hello that passed its node check just before the node went got a lease meanwhile
        if (!(e instanceof ConflictError) || attempt >= WRITE_ATTEMPTS) throw e;
      }
    }
    await this.publisher.publish(this.topics.netConfig(name), '', true);
    for (const node of new Set([...gone, ...nodes])) await this.forgetNode(name, node);
    this.onRemoved(name);
    this.log.info('network removed', { network: name, backend: net.config.Backend.Type, released, nodes: nodes.length });
    return { released, nodes };
  }

  private async requireNetwork(name: string): Promise<NetworkRecord> {
    const net = await this.store.getNetwork(name);
    if (!net) throw new NotFoundError(`network ${name} does not exist`);
    return net;
  }

  // ---- leases ----

  /**
   * Gives the node a lease, following flannel: keep the one it holds if it still
   * fits the config, else its previous subnet if free, else a random pick among
   * the first free subnets. Renewing extends the expiry; reservations never expire.
   */
  async join(network: string, node: string, req: JoinRequest): Promise<Lease> {
    return this.writing(network, () => this.joinNow(network, node, req));
  }

  /**
   * Counts the writes of a network in flight: while others are writing it
   * (a storm of hellos handled side by side), its next batch of changes waits
   * a moment for theirs (flushChanges). A lone writer is never held up.
   */
  private async writing<T>(network: string, write: () => Promise<T>): Promise<T> {
    this.writers.set(network, (this.writers.get(network) ?? 0) + 1);
    try {
      return await write();
    } finally {
      const n = (this.writers.get(network) ?? 1) - 1;
      if (n > 0) this.writers.set(network, n);
      else this.writers.delete(network);
    }
  }

  private async joinNow(network: string, node: string, req: JoinRequest): Promise<Lease> {
    checkName('node', node);
    for (let attempt = 0; ; attempt++) {
      const net = await this.requireNetwork(network);
      const config = net.config;
      const ranges = subnetRanges(config);
      if (req.fromAgent) {
        // Only the keys the network's backend publishes, each as its rule
        // says: a node can neither grow its lease nor hand its peers a bad value.
        const problems = agentDataProblems(config.Backend.Type, req.backendData ?? {});
        if (problems.length) throw new TwillError('InvalidHello', `hello from ${node} refused: ${problems.join('; ')}`);
      }
      if (config.EnableIPv4 && !req.publicIP) throw new TwillError('InvalidHello', `node ${node} sent no publicIP: network ${network} has IPv4 enabled`);
      if (!config.EnableIPv4 && config.EnableIPv6 && !req.publicIPv6) {
        throw new TwillError('InvalidHello', `node ${node} sent no publicIPv6: network ${network} is IPv6 only`);
      }
      const existing = await this.store.getLease(network, node);
      const expiresAt = existing && existing.expiresAt === null ? null : new Date(this.now() + this.ttl).toISOString();
      const base = {
        network,
        node,
        publicIP: req.publicIP ?? null,
        publicIPv6: req.publicIPv6 ?? null,
        backendType: config.Backend.Type,
        // Merged, not replaced: on a cloud network the route controller records
        // the route target here, and the instance's own agent (which knows
        // nothing of it) says hello too; neither may erase the other's keys.
        backendData: { ...existing?.backendData, ...req.backendData },
        expiresAt,
      };
      let next: NewLease;
      if (existing && leaseFits(existing, config, ranges) && samePeerView(existing, base)) {
        // A renewal: nothing peers use changed, so neither does any revision,
        // and only the node's own topic hears of it (O(1) at any size).
        const renewed = expiresAt === null ? existing : await this.store.renewLease(network, node, existing.revision, expiresAt);
        if (!renewed) {
          // changed meanwhile: read again
          if (attempt >= WRITE_ATTEMPTS) throw new ConflictError(`lease of node ${node} in network ${network} kept changing while it renewed`);
          continue;
        }
        await this.publishOwn(renewed, config);
        return renewed;
      }
      if (existing && leaseFits(existing, config, ranges)) {
        next = { ...base, subnet: existing.subnet, ipv6Subnet: existing.ipv6Subnet, createdAt: existing.createdAt };
      } else {
        if (existing?.expiresAt === null) {
          throw new TwillError('ReservationMismatch', `node ${node} has a reservation (${existing.subnet ?? existing.ipv6Subnet}) that no longer fits network ${network}; release or change it`);
        }
        const taken = await this.store.takenSubnets(network);
        const own = (s: string | null | undefined) => (s ? parseCidr(s, true)?.ip : undefined);
        const without = (list: bigint[], v: bigint | undefined) => (v === undefined ? list : list.filter((x) => x !== v));
        const pick = (range: SubnetRange | undefined, list: bigint[], current: string | null | undefined, previous?: string) => {
          if (!range) return null;
          const free = without(list, own(current));
          const chosen = pickSubnet(range, free, current ?? previous, this.random) ?? pickSubnet(range, free, previous, this.random);
          if (!chosen) {
            const fam = range.network.family;
            throw new OutOfSubnetsError(
              network,
              `all ${rangeSize(range)} /${range.len} subnets from ${formatIP(fam, range.min)} to ${formatIP(fam, range.max)} are leased; widen the network or remove nodes that left`,
            );
          }
          return chosen;
        };
        next = {
          ...base,
          subnet: pick(ranges.v4, taken.v4, existing?.subnet, req.previousSubnet),
          ipv6Subnet: pick(ranges.v6, taken.v6, existing?.ipv6Subnet, req.previousIPv6Subnet),
          createdAt: new Date(this.now()).toISOString(),
        };
      }
      try {
        const lease = existing ? await this.store.replaceLease(next, existing.revision) : await this.store.createLease(next);
        if (!existing || existing.subnet !== lease.subnet || existing.ipv6Subnet !== lease.ipv6Subnet) {
          this.log.info('lease granted', { network, node, subnet: lease.subnet ?? undefined, ipv6Subnet: lease.ipv6Subnet ?? undefined });
          this.metrics?.inc('twill_leases_granted_total', 'subnets given to nodes (a join, or a node moved to a new subnet)', 1, { network });
        }
        await this.publishLease(lease, config);
        return lease;
      } catch (e) {
        if (!(e instanceof ConflictError) || attempt >= WRITE_ATTEMPTS) throw e;
      }
    }
  }

  /** A subnet held for a node forever and never given to another. */
  async reserve(network: string, node: string, subnet: string, publicIP?: string): Promise<Lease> {
    checkName('node', node);
    const net = await this.requireNetwork(network);
    const ranges = subnetRanges(net.config);
    const c = parseCidr(subnet, true);
    const range = c?.family === 6 ? ranges.v6 : ranges.v4;
    if (!c || !range || !fitsRange(range, subnet)) {
      throw new TwillError('InvalidReservation', `subnet ${subnet} is not a subnet of network ${network}: it must be a /${range?.len ?? '?'} between the network's SubnetMin and SubnetMax`);
    }
    const existing = await this.store.getLease(network, node);
    const next: NewLease = {
      network,
      node,
      subnet: c.family === 4 ? subnet : (existing?.subnet ?? null),
      ipv6Subnet: c.family === 6 ? subnet : (existing?.ipv6Subnet ?? null),
      publicIP: publicIP ?? existing?.publicIP ?? null,
      publicIPv6: existing?.publicIPv6 ?? null,
      backendType: net.config.Backend.Type,
      backendData: existing?.backendData ?? {},
      expiresAt: null,
      createdAt: existing?.createdAt ?? new Date(this.now()).toISOString(),
    };
    const lease = existing ? await this.store.replaceLease(next, existing.revision) : await this.store.createLease(next);
    this.log.info('subnet reserved', { network, node, subnet });
    await this.publishLease(lease, net.config);
    return lease;
  }

  /** Removes a node's lease (reservations included) and publishes the removal. */
  async release(network: string, node: string, expectedRevision?: number, expiredBy?: number): Promise<boolean> {
    return this.writing(network, () => this.releaseNow(network, node, expectedRevision, expiredBy));
  }

  private async releaseNow(network: string, node: string, expectedRevision?: number, expiredBy?: number): Promise<boolean> {
    const removed = await this.store.deleteLease(network, node, expectedRevision, expiredBy);
    if (!removed) return false;
    await this.publishRemoval(removed.lease, removed.revision);
    return true;
  }

  /** Removes every lease past its expiry; returns how many went. */
  async expire(): Promise<number> {
    let n = 0;
    const now = this.now();
    for (const lease of await this.store.listExpired(now)) {
      // Conditional on the revision read and on the expiry: a change or a renewal that lands meanwhile wins.
      if (await this.release(lease.network, lease.node, lease.revision, now)) {
        this.log.info('lease expired', { network: lease.network, node: lease.node, subnet: lease.subnet ?? lease.ipv6Subnet });
        n++;
      }
    }
    return n;
  }

  // ---- messages from agents ----

  /**
   * The node's rate limit on its hellos and statuses: false (counted, and
   * logged once a minute) when this message is over it. Cheap, before any
   * parse or store read; the local controller asks it before a message is
   * queued, so a flood never queues (handleMessage asks it otherwise).
   */
  admit(topic: string, client = 'unknown'): boolean {
    const t = this.topics.parse(topic);
    if (t?.kind !== 'nodeHello' && t?.kind !== 'nodeStatus') return true;
    const kind = t.kind === 'nodeHello' ? 'hello' : 'status';
    const taken = this.limiter.take(kind, `${t.network}/${t.node}`);
    if (taken.ok) return true;
    this.refusedByRate++;
    this.countMessage(kind, 'refused_rate');
    if (taken.report) this.log.warn(`${kind} messages of a node over its rate limit refused`, { network: t.network, node: t.node, client, refused: taken.report });
    return false;
  }

  /**
   * Entry point for every message an agent sends. Never throws: a bad message
   * is logged and answered, and changes nothing.
   */
  async handleMessage(topic: string, payload: Uint8Array, client = 'unknown', admitted = false): Promise<void> {
    if (!admitted && !this.admit(topic, client)) return;
    const t = this.topics.parse(topic);
    try {
      if (t?.kind === 'nodeHello') {
        await this.handleHello(t.network, t.node, payload);
        this.countMessage('hello', 'ok');
      } else if (t?.kind === 'nodeStatus') {
        // An empty retained payload deletes the retained status (a removed network's): no message.
        if (payload.length === 0) return;
        const status = parseMessage(statusSchema, payload, `status of ${t.node}`);
        await this.store.putStatus({ network: t.network, node: t.node, status, updatedAt: new Date(this.now()).toISOString() });
        this.countMessage('status', 'ok');
      } else if (t?.kind === 'legacyHello') {
        await this.announceUpgrade(t.network, t.node);
        this.log.warn('agent of an older protocol refused: it must be upgraded', { network: t.network, node: t.node, client });
      } else {
        this.log.warn('message on an unexpected topic ignored', { topic, client });
      }
    } catch (e) {
      if (t?.kind === 'nodeHello' || t?.kind === 'nodeStatus') this.countMessage(t.kind === 'nodeHello' ? 'hello' : 'status', 'refused_invalid');
      this.log.warn('message refused', { topic, client, reason: errorMessage(e) });
    }
  }

  /**
   * Tells an agent of the previous protocol, on the own-lease topic it reads,
   * that it must be upgraded (retained: it reads it on connect).
   */
  async announceUpgrade(network: string, node: string): Promise<void> {
    const error = `this control plane speaks twill protocol ${PROTOCOL} and this agent speaks ${LEGACY_PROTOCOL}: upgrade the agent to twill ${VERSION} or later`;
    await this.publisher.publish(this.topics.legacyNodeLease(network, node), JSON.stringify({ v: 1, lease: null, error }), true);
  }

  private async handleHello(network: string, node: string, payload: Uint8Array): Promise<void> {
    let hello: Hello;
    try {
      hello = parseMessage(helloSchema, payload, `hello from ${node}`);
      const rec = await this.store.getNode(node);
      if (!rec || rec.network !== network) {
        throw new TwillError('UnknownNode', `node ${node} is not registered in network ${network}: add it with twill node add ${node} --network ${network}`);
      }
      await this.join(network, node, { ...hello, fromAgent: true });
    } catch (e) {
      // The node learns why on its own topic; nobody else sees it. Only what
      // twill itself said: an internal failure (a store or cloud SDK error,
      // whose text can name the account, the role and the table) stays in
      // the control plane's log.
      const said = e instanceof TwillError || e instanceof MessageError ? errorMessage(e) : 'the control plane could not handle this hello (an internal error, in its log); the agent will send it again';
      await this.publishNodeError(network, node, said);
      throw e;
    }
  }

  // ---- publishing: everything is derived from the store ----
  //
  // Per network, a retained config topic, and a changes topic that carries
  // each peer-visible write once, with its revision (not retained: an agent
  // lists the network over the node API and then applies the changes newer
  // than its list; a gap in the revisions sends it back to the API). Per
  // node, a retained topic with its own lease and the full config.

  private async publishNodeError(network: string, node: string, error: string): Promise<void> {
    const lease = (await this.store.getLease(network, node)) ?? null;
    const msg: NodeLeaseMessage = { v: 2, lease, error, ...(this.api && { api: this.api }) };
    await this.publisher.publish(this.topics.nodeLease(network, node), JSON.stringify(msg), true);
  }

  /**
   * Publishes a change to every member of the network. A change written while
   * the previous one is still being published waits, and all that waited go
   * out together in one message: no delay at a trickle, and under a storm of
   * joins each member gets a message per batch instead of one per join (the
   * difference between N² and N²/100 deliveries for a fleet joining at once).
   */
  private publishChange(network: string, change: Change): Promise<void> {
    let box = this.outboxes.get(network);
    if (!box) this.outboxes.set(network, (box = { waiting: [], busy: false }));
    const b = box;
    return new Promise<void>((resolve, reject) => {
      b.waiting.push({ change, done: (err) => (err === undefined ? resolve() : reject(err)) });
      if (!b.busy) void this.flushChanges(network, b);
    });
  }

  private async flushChanges(network: string, box: Outbox): Promise<void> {
    box.busy = true;
    while (box.waiting.length) {
      // More writers of this network in flight than changes waiting: theirs are coming.
      if ((this.writers.get(network) ?? 0) > box.waiting.length) await new Promise((r) => setTimeout(r, BUSY_GATHER_MS));
      const batch: Outbox['waiting'] = [];
      let bytes = 0;
      for (const w of box.waiting) {
        const size = JSON.stringify(w.change).length + 1;
        if (batch.length && (bytes + size > BATCH_BYTES || batch.length >= BATCH_CHANGES)) break;
        batch.push(w);
        bytes += size;
      }
      box.waiting.splice(0, batch.length);
      const changes = batch.map((w) => w.change).sort((a, b) => a.revision - b.revision);
      const payload = changes.length === 1 ? { v: 2, ...changes[0] } : { v: 2, changes };
      try {
        await this.publisher.publish(this.topics.netChanges(network), JSON.stringify(payload), false);
        for (const w of batch) w.done();
      } catch (e) {
        for (const w of batch) w.done(e ?? new Error('publish failed'));
      }
    }
    box.busy = false;
  }

  /** The node's own topic: its lease (or none) and the config with the secrets its backend needs (never the cloud's keys). */
  private async publishOwn(lease: Lease, config: NetConf): Promise<void> {
    const own: NodeLeaseMessage = { v: 2, lease, config: nodeConfig(config), ...(this.api && { api: this.api }) };
    await this.publisher.publish(this.topics.nodeLease(lease.network, lease.node), JSON.stringify(own), true);
  }

  /**
   * The node holds no lease: its retained topic is deleted (a zero-byte
   * retained publish, which MQTT brokers and IoT Core delete on; a retained
   * "no lease" would stay on IoT Core for years and count against the
   * account's retained-message quota), then the news goes out live to the
   * agent if it listens. An agent that was away finds nothing retained and
   * says hello when it connects, as it always does.
   */
  private async clearOwn(network: string, node: string): Promise<void> {
    const topic = this.topics.nodeLease(network, node);
    await this.publisher.publish(topic, '', true);
    const own: NodeLeaseMessage = { v: 2, lease: null, ...(this.api && { api: this.api }) };
    await this.publisher.publish(topic, JSON.stringify(own), false);
  }

  /**
   * After a node is removed: what the broker retains for it goes (its own
   * topic, its status, the v1 upgrade notice), so nothing of a departed node
   * stays retained. Its lease was released first (release), which told it.
   */
  async forgetNode(network: string, node: string): Promise<void> {
    for (const topic of [this.topics.nodeLease(network, node), this.topics.nodeStatus(network, node), this.topics.legacyNodeLease(network, node)]) {
      await this.publisher.publish(topic, '', true);
    }
  }

  /** Deletes one retained message (control/tasks/republish.ts cleanRetained: the store no longer backs it). */
  async deleteRetained(topic: string): Promise<void> {
    await this.publisher.publish(topic, '', true);
  }

  /** Publishes a node's own lease again as the store has it, if it has one (a cleanup raced a join). */
  async republishNode(network: string, node: string): Promise<void> {
    const net = await this.store.getNetwork(network);
    const lease = net && (await this.store.getLease(network, node));
    if (net && lease) await this.publishOwn(lease, net.config);
  }

  /**
   * Publishes a node's write at `revision`: the change to every member, the
   * lease to the node's own topic. Publishing is not atomic with the store
   * write: another writer may write the same node in between and publish
   * first, and then this older own-lease message would stay retained. The
   * changes need no care (each carries its revision, and agents order them),
   * but the own topic is read again after the publish and published once more
   * until it agrees with the store.
   */
  private async publishNode(network: string, node: string, lease: Lease | null, revision: number, config: NetConf): Promise<void> {
    await this.publishChange(network, { revision, node, lease });
    this.onPublished(network, revision, false);
    let own = lease;
    for (let round = 0; round < PUBLISH_ROUNDS; round++) {
      if (own) await this.publishOwn(own, config);
      else await this.clearOwn(network, node);
      const now = (await this.store.getLease(network, node)) ?? null;
      if (now?.revision === own?.revision && now?.expiresAt === own?.expiresAt) return;
      own = now;
      config = (await this.store.getNetwork(network))?.config ?? config;
    }
  }

  private async publishLease(lease: Lease, config: NetConf): Promise<void> {
    await this.publishNode(lease.network, lease.node, lease, lease.revision, config);
  }

  private async publishRemoval(lease: Lease, revision: number): Promise<void> {
    const config = (await this.store.getNetwork(lease.network))?.config;
    if (config) await this.publishNode(lease.network, lease.node, null, revision, config);
    else await this.publishChange(lease.network, { revision, node: lease.node, lease: null });
  }

  /** Config (secrets masked) on the shared topic; each node's topic carries what its backend needs (nodeConfig). */
  private async publishNetwork(net: NetworkRecord): Promise<void> {
    await this.publishConfig(net);
    for (const lease of await this.store.listLeases(net.name)) await this.publishOwn(lease, net.config);
    await this.publishChange(net.name, { revision: net.revision, config: true });
    this.onPublished(net.name, net.revision, false);
  }

  private async publishConfig(net: NetworkRecord): Promise<void> {
    await this.publisher.publish(this.topics.netConfig(net.name), JSON.stringify({ v: 2, revision: net.revision, config: publicConfig(net.config) }), true);
  }

  /**
   * Catches the broker up with the store after writes this process did not
   * publish (the CLI writes releases and reservations straight to the store,
   * a function died between its write and its publish): the changes after
   * `after` from the store's change log, each once, and the own topics of
   * the nodes they touched. Returns false when the log no longer reaches back
   * (the agents' own gap rule then sends them to the node API).
   */
  async publishChangesSince(name: string, after: number, published: (revision: number) => boolean = () => false): Promise<boolean> {
    let from = after;
    for (;;) {
      const run = await this.store.changesSince(name, from, 1000);
      const net = await this.store.getNetwork(name);
      if (!run || !net) return false;
      for (const c of run.changes) {
        if (published(c.revision)) continue;
        await this.publishChange(name, c);
        if (c.config) {
          await this.publishConfig(net);
          for (const lease of await this.store.listLeases(name)) await this.publishOwn(lease, net.config);
        } else if (c.node) {
          const now = (await this.store.getLease(name, c.node)) ?? null;
          if (now) await this.publishOwn(now, net.config);
          else await this.clearOwn(name, c.node);
        }
      }
      const last = run.changes.length ? run.changes[run.changes.length - 1]!.revision : from;
      this.onPublished(name, last, true);
      if (!run.more) return true;
      from = last;
    }
  }

  /**
   * Rebuilds a network's retained messages from the store (on start: the
   * broker is only a cache): its config, and every node's own topic.
   */
  async republishNetwork(name: string): Promise<void> {
    let net = await this.store.getNetwork(name);
    if (!net) return;
    await this.publishConfig(net);
    for (const lease of await this.store.listLeases(name)) await this.publishOwn(lease, net.config);
    // A write landing meanwhile may have been overtaken by the older copy
    // read here: the nodes written since are published again as they are now.
    for (let round = 0; round < PUBLISH_ROUNDS; round++) {
      const now = await this.store.getNetwork(name);
      if (!now || now.revision === net.revision) break;
      const run = await this.store.changesSince(name, net.revision, 1000);
      const nodes = run ? new Set(run.changes.flatMap((c) => (c.node ? [c.node] : []))) : new Set((await this.store.listLeases(name)).map((l) => l.node));
      for (const node of nodes) {
        const lease = await this.store.getLease(name, node);
        if (lease) await this.publishOwn(lease, now.config);
        else await this.clearOwn(name, node);
      }
      net = now;
    }
    this.onPublished(name, net.revision, true);
  }

  async republishAll(): Promise<void> {
    for (const net of await this.store.listNetworks()) await this.republishNetwork(net.name);
  }

  /**
   * What a controller publishes when it starts: every network's retained
   * messages rebuilt from the store, and each registered node told on the
   * previous protocol's topic to upgrade (an agent of that protocol already
   * connected says no new hello until its renewal).
   */
  async publishOnStart(): Promise<void> {
    await this.republishAll();
    for (const n of await this.store.listNodes()) await this.announceUpgrade(n.network, n.name);
  }
}
