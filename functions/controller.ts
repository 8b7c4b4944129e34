// The controller: leases, allocation, expiry and everything published about
// them. The local controller and the serverless handlers both drive this class;
// neither holds logic of its own.
import { subnetRanges, publicConfig, type NetConf, type SubnetRange } from '../core/config.js';
import { fitsRange, pickSubnet, rangeSize } from '../core/allocator.js';
import { formatIP, parseCidr } from '../core/cidr.js';
import { ConflictError, NotFoundError, OutOfSubnetsError, TwillError, errorMessage } from '../core/errors.js';
import type { Lease, NewLease } from '../core/lease.js';
import { helloSchema, parseMessage, statusSchema, type Hello, type NodeLeaseMessage } from '../core/messages.js';
import { checkName, type Topics } from '../core/topics.js';
import type { Logger } from '../core/log.js';
import type { Publisher } from './publish/publisher.js';
import type { NetworkRecord, Store } from './store/store.js';

export const DEFAULT_LEASE_TTL_MS = 24 * 3600 * 1000;
/** Conditional writes that lose a race are retried this many times with fresh reads. */
const WRITE_ATTEMPTS = 16;
/** how often a publish overtaken by a concurrent write is redone before the sync loop is left to it */
const PUBLISH_ROUNDS = 4;

export interface ControllerOptions {
  topics: Topics;
  log: Logger;
  leaseTtlMs?: number;
  now?: () => number;
  random?: () => number;
}

/** The data a join carries, whoever asks: an agent's hello or a cloud instance. */
export interface JoinRequest {
  publicIP?: string;
  publicIPv6?: string;
  backendData?: Record<string, string | number | boolean>;
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
  /** Per network, the nodes whose lease topics this controller has published, so a republish can clear the ones that went. */
  private readonly publishedNodes = new Map<string, Set<string>>();
  /**
   * Told of every write this controller has published: the write at revision
   * (or, with upTo, every write up to it, after a whole republish). The sync
   * loop republishes what it was not told of (functions/sync.ts).
   */
  onPublished: (network: string, revision: number, upTo: boolean) => void = () => {};

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
  }

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
    checkName('node', node);
    for (let attempt = 0; ; attempt++) {
      const net = await this.requireNetwork(network);
      const config = net.config;
      const ranges = subnetRanges(config);
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
   * Entry point for every message an agent sends. Never throws: a bad message
   * is logged and answered, and changes nothing.
   */
  async handleMessage(topic: string, payload: Uint8Array, client = 'unknown'): Promise<void> {
    const t = this.topics.parse(topic);
    try {
      if (t?.kind === 'nodeHello') {
        await this.handleHello(t.network, t.node, payload);
      } else if (t?.kind === 'nodeStatus') {
        const status = parseMessage(statusSchema, payload, `status of ${t.node}`);
        await this.store.putStatus({ network: t.network, node: t.node, status, updatedAt: new Date(this.now()).toISOString() });
      } else {
        this.log.warn('message on an unexpected topic ignored', { topic, client });
      }
    } catch (e) {
      this.log.warn('message refused', { topic, client, reason: errorMessage(e) });
    }
  }

  private async handleHello(network: string, node: string, payload: Uint8Array): Promise<void> {
    let hello: Hello;
    try {
      hello = parseMessage(helloSchema, payload, `hello from ${node}`);
      const rec = await this.store.getNode(node);
      if (!rec || rec.network !== network) {
        throw new TwillError('UnknownNode', `node ${node} is not registered in network ${network}: add it with twill node add ${node} --network ${network}`);
      }
      await this.join(network, node, hello);
    } catch (e) {
      // The node learns why on its own topic; nobody else sees it.
      await this.publishNodeError(network, node, errorMessage(e));
      throw e;
    }
  }

  // ---- publishing: everything is derived from the store ----

  private async publishNodeError(network: string, node: string, error: string): Promise<void> {
    const lease = (await this.store.getLease(network, node)) ?? null;
    const msg: NodeLeaseMessage = { v: 1, lease, error };
    await this.publisher.publish(this.topics.nodeLease(network, node), JSON.stringify(msg), true);
  }

  /** Returns the network as it was read for the manifest. */
  private async publishManifest(network: string): Promise<NetworkRecord | undefined> {
    const net = await this.store.getNetwork(network);
    if (!net) return undefined;
    const manifest = { v: 1, revision: net.revision, count: net.leaseCount, hash: net.leaseHash };
    await this.publisher.publish(this.topics.netManifest(network), JSON.stringify(manifest), true);
    return net;
  }

  private published(network: string): Set<string> {
    let set = this.publishedNodes.get(network);
    if (!set) {
      set = new Set();
      this.publishedNodes.set(network, set);
    }
    return set;
  }

  private async publishLeaseOnly(lease: Lease, config: NetConf): Promise<void> {
    this.published(lease.network).add(lease.node);
    await this.publisher.publish(this.topics.netLease(lease.network, lease.node), JSON.stringify(lease), true);
    await this.publishOwn(lease, config);
  }

  /** The node's own topic: its lease and the full config. */
  private async publishOwn(lease: Lease, config: NetConf): Promise<void> {
    const own: NodeLeaseMessage = { v: 1, lease, config };
    await this.publisher.publish(this.topics.nodeLease(lease.network, lease.node), JSON.stringify(own), true);
  }

  /**
   * Publishes a node's lease (or its removal, for null) as of `revision`, then
   * the manifest. Publishing is not atomic with the store write: another
   * writer (a sync, a renewal, another function) may write the same node in
   * between and publish first, and then this older message would stay
   * retained, behind a manifest that already counts the newer one. Every
   * write bumps the network's revision, so a revision past ours after the
   * publish means the node may have moved: its lease is read again and
   * published once more until the two agree.
   */
  private async publishNode(network: string, node: string, lease: Lease | null, revision: number, config?: NetConf): Promise<void> {
    // the write whose publication this round completes; unknown for a removal found on a re-read
    let written: number | undefined = revision;
    for (let round = 0; round < PUBLISH_ROUNDS; round++) {
      // (config comes with every lease: from the caller, then from the network read below)
      if (lease && config) await this.publishLeaseOnly(lease, config);
      else await this.clearLeaseTopics(network, node);
      if (written !== undefined) this.onPublished(network, written, false);
      const net = await this.publishManifest(network);
      if (!net || net.revision === revision) return;
      const now = (await this.store.getLease(network, node)) ?? null;
      if (now?.revision === lease?.revision) return;
      lease = now;
      written = now?.revision;
      revision = net.revision;
      config = net.config;
    }
  }

  private async publishLease(lease: Lease, config: NetConf): Promise<void> {
    await this.publishNode(lease.network, lease.node, lease, lease.revision, config);
  }

  private async publishRemoval(lease: Lease, revision: number): Promise<void> {
    await this.publishNode(lease.network, lease.node, null, revision);
  }

  private async clearLeaseTopics(network: string, node: string): Promise<void> {
    this.published(network).delete(node);
    await this.publisher.publish(this.topics.netLease(network, node), '', true);
    const own: NodeLeaseMessage = { v: 1, lease: null };
    await this.publisher.publish(this.topics.nodeLease(network, node), JSON.stringify(own), true);
  }

  /** Config (secrets removed) on the shared topic; each node's topic carries its full config. */
  private async publishNetwork(net: NetworkRecord): Promise<void> {
    await this.publisher.publish(this.topics.netConfig(net.name), JSON.stringify({ v: 1, config: publicConfig(net.config) }), true);
    for (const lease of await this.store.listLeases(net.name)) {
      const own: NodeLeaseMessage = { v: 1, lease, config: net.config };
      await this.publisher.publish(this.topics.nodeLease(net.name, lease.node), JSON.stringify(own), true);
    }
    this.onPublished(net.name, net.revision, false);
    await this.publishManifest(net.name);
  }

  /**
   * Rebuilds a network's retained messages from the store: the broker is only
   * a cache. A write landing while this runs may be overtaken by the older
   * copy read here (see publishNode), so a network whose revision moved
   * meanwhile is rebuilt again.
   */
  async republishNetwork(name: string): Promise<void> {
    for (let round = 0; round < PUBLISH_ROUNDS; round++) {
      const net = await this.store.getNetwork(name);
      if (!net) return;
      await this.publisher.publish(this.topics.netConfig(net.name), JSON.stringify({ v: 1, config: publicConfig(net.config) }), true);
      const leases = await this.store.listLeases(net.name);
      const present = new Set(leases.map((l) => l.node));
      // Leases another writer removed (the CLI, or a peer controller) leave retained topics behind.
      for (const node of [...this.published(net.name)]) if (!present.has(node)) await this.clearLeaseTopics(net.name, node);
      for (const lease of leases) await this.publishLeaseOnly(lease, net.config);
      const after = await this.publishManifest(net.name);
      if (!after || after.revision === net.revision) {
        this.onPublished(net.name, net.revision, true);
        return;
      }
    }
  }

  async republishAll(): Promise<void> {
    for (const net of await this.store.listNetworks()) await this.republishNetwork(net.name);
  }

  /**
   * Clears retained lease topics the store does not back (an external broker
   * keeps them across controller restarts, including leases that expired while
   * the controller was down).
   */
  async clearStale(retained: Map<string, string>): Promise<number> {
    let n = 0;
    const none = JSON.stringify({ v: 1, lease: null } satisfies NodeLeaseMessage);
    for (const [topic, payload] of retained) {
      const t = this.topics.parse(topic);
      if (!t || (t.kind !== 'netLease' && t.kind !== 'nodeLease')) continue;
      if (payload === '' || payload === none || (await this.store.getLease(t.network, t.node))) continue;
      await this.publisher.publish(topic, t.kind === 'netLease' ? '' : none, true);
      n++;
    }
    return n;
  }
}
