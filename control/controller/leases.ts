// Allocation: a node's lease given, renewed, reserved, released and expired,
// following flannel's rules; the subnet itself is chosen by a pure function
// (core/allocator.ts chooseSubnet).
import { chooseSubnet, fitsRange } from '../../core/allocator.js';
import { parseCidr } from '../../core/cidr.js';
import { subnetRanges, type NetConf, type SubnetRange } from '../../core/config.js';
import { ConflictError, NotFoundError, TwillError } from '../../core/errors.js';
import { backendHasKeys, type Lease, type NewLease } from '../../core/lease.js';
import type { Reach } from '../../core/backends/overlay.js';
import type { Logger } from '../../core/log.js';
import type { Metrics } from '../../core/metrics.js';
import { agentDataProblems } from '../../core/backends/index.js';
import { checkName } from '../../core/topics.js';
import type { Store } from '../store/store.js';
import { requireNetwork, WRITE_ATTEMPTS } from './networks.js';
import type { ChangeOutbox } from './outbox.js';
import type { RetainedPublisher } from './publishing.js';

/** The data a join carries, whoever asks: an agent's hello or a cloud instance. */
export interface JoinRequest {
  publicIP?: string;
  publicIPv6?: string;
  backendData?: Record<string, string | number | boolean>;
  /** a node's own hello: its backend data must be what its backend's agents publish (the route controller's is its own) */
  fromAgent?: boolean;
  previousSubnet?: string;
  previousIPv6Subnet?: string;
  /** the route controller's: how the node is reached, written with the lease (never from a node: a hello cannot carry it) */
  reach?: Reach;
}

/** Whether a join changes nothing a peer uses (its addresses, backend and backend data). */
function samePeerView(lease: Lease, next: Pick<NewLease, 'publicIP' | 'publicIPv6' | 'backendType' | 'backendData'>): boolean {
  const data = (d: Record<string, unknown>) => JSON.stringify(Object.entries(d).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return lease.publicIP === next.publicIP && lease.publicIPv6 === next.publicIPv6 && lease.backendType === next.backendType && data(lease.backendData) === data(next.backendData);
}

/**
 * A rotation asked of the node stays on its lease through every rewrite
 * (a new address, a new key, a new subnet, a reservation) until another
 * replaces it: the node honours each token once, whenever it next applies
 * its lease, and a rewrite in between must not take the request back.
 */
function keptRotation(lease: Lease | undefined): Pick<NewLease, 'rotateKey'> {
  return lease?.rotateKey !== undefined ? { rotateKey: lease.rotateKey } : {};
}

/**
 * How the node is reached (Lease.reach) is the route controller's to write
 * (setReach) and stays through every other rewrite of the lease while its
 * subnet stays: a route is for one subnet, so a lease that moves to another
 * has none confirmed (absent reach: overlay) until the route controller says so.
 */
function keptReach(lease: Lease | undefined, subnet: string | null): Pick<NewLease, 'reach'> {
  return lease?.reach !== undefined && lease.subnet === subnet ? { reach: lease.reach } : {};
}

function leaseFits(lease: Lease, config: NetConf, ranges: { v4?: SubnetRange; v6?: SubnetRange }): boolean {
  if (lease.backendType !== config.Backend.Type) return false;
  const v4ok = ranges.v4 ? fitsRange(ranges.v4, lease.subnet) : lease.subnet === null;
  const v6ok = ranges.v6 ? fitsRange(ranges.v6, lease.ipv6Subnet) : lease.ipv6Subnet === null;
  return v4ok && v6ok;
}

/** What a join asks that its network must allow, checked before any lease is read. */
function checkJoin(network: string, node: string, config: NetConf, req: JoinRequest): void {
  if (req.fromAgent && req.reach !== undefined) throw new TwillError('InvalidHello', `hello from ${node} refused: how a node is reached is the route controller's to say`);
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
}

export interface LeaseParts {
  store: Store;
  outbox: ChangeOutbox;
  publishing: RetainedPublisher;
  log: Logger;
  metrics?: Metrics;
  ttlMs: number;
  now: () => number;
  random: () => number;
}

export class Leases {
  private readonly store: Store;
  private readonly publishing: RetainedPublisher;
  private readonly log: Logger;

  constructor(private readonly parts: LeaseParts) {
    ({ store: this.store, publishing: this.publishing, log: this.log } = parts);
  }

  /**
   * Gives the node a lease, following flannel: keep the one it holds if it still
   * fits the config, else its previous subnet if free, else a random pick among
   * the first free subnets. Renewing extends the expiry; reservations never expire.
   */
  async join(network: string, node: string, req: JoinRequest): Promise<Lease> {
    return this.parts.outbox.writing(network, () => this.joinNow(network, node, req));
  }

  private async joinNow(network: string, node: string, req: JoinRequest): Promise<Lease> {
    checkName('node', node);
    const { now, ttlMs } = this.parts;
    for (let attempt = 0; ; attempt++) {
      const config = (await requireNetwork(this.store, network)).config;
      const ranges = subnetRanges(config);
      checkJoin(network, node, config, req);
      const existing = await this.store.getLease(network, node);
      const expiresAt = existing && existing.expiresAt === null ? null : new Date(now() + ttlMs).toISOString();
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
      const fits = !!existing && leaseFits(existing, config, ranges);
      if (existing && fits && samePeerView(existing, base)) {
        // A renewal: nothing peers use changed, so neither does any revision,
        // and only the node's own topic hears of it (O(1) at any size).
        const renewed = expiresAt === null ? existing : await this.store.renewLease(network, node, existing.revision, expiresAt);
        if (!renewed) {
          // changed meanwhile: read again
          if (attempt >= WRITE_ATTEMPTS) throw new ConflictError(`lease of node ${node} in network ${network} kept changing while it renewed`);
          continue;
        }
        await this.publishing.own(renewed, config);
        return renewed;
      }
      let next: NewLease;
      if (existing && fits) {
        next = { ...base, subnet: existing.subnet, ipv6Subnet: existing.ipv6Subnet, createdAt: existing.createdAt, ...keptRotation(existing), ...keptReach(existing, existing.subnet) };
        if (req.reach) next.reach = req.reach;
      } else {
        if (existing?.expiresAt === null) {
          throw new TwillError('ReservationMismatch', `node ${node} has a reservation (${existing.subnet ?? existing.ipv6Subnet}) that no longer fits network ${network}; release or change it`);
        }
        const taken = await this.store.takenSubnets(network);
        next = {
          ...base,
          subnet: chooseSubnet(network, ranges.v4, taken.v4, existing?.subnet, req.previousSubnet, this.parts.random),
          ipv6Subnet: chooseSubnet(network, ranges.v6, taken.v6, existing?.ipv6Subnet, req.previousIPv6Subnet, this.parts.random),
          createdAt: new Date(now()).toISOString(),
          ...keptRotation(existing),
          ...(req.reach && { reach: req.reach }),
        };
      }
      try {
        return await this.write(next, existing, config);
      } catch (e) {
        if (!(e instanceof ConflictError) || attempt >= WRITE_ATTEMPTS) throw e;
      }
    }
  }

  /** Writes a joining node's lease, conditional on the one read (if any), and publishes it. */
  private async write(next: NewLease, existing: Lease | undefined, config: NetConf): Promise<Lease> {
    const { network, node } = next;
    const lease = existing ? await this.store.replaceLease(next, existing.revision) : await this.store.createLease(next);
    if (!existing || existing.subnet !== lease.subnet || existing.ipv6Subnet !== lease.ipv6Subnet) {
      this.log.info('lease granted', { network, node, subnet: lease.subnet ?? undefined, ipv6Subnet: lease.ipv6Subnet ?? undefined });
      this.parts.metrics?.inc('twill_leases_granted_total', 'subnets given to nodes (a join, or a node moved to a new subnet)', 1, { network });
    }
    await this.publishing.lease(lease, config);
    return lease;
  }

  /**
   * Asks the node for a new key pair: its lease carries `token` from now on
   * (a change at the next revision, to the node on its own topic and to
   * every peer). Refused, changing nothing, on a network whose backend has
   * no keys and for a node without a lease there.
   */
  async rotateKey(network: string, node: string, token: string): Promise<Lease> {
    checkName('node', node);
    return this.parts.outbox.writing(network, async () => {
      for (let attempt = 0; ; attempt++) {
        const config = (await requireNetwork(this.store, network)).config;
        const type = config.Backend.Type;
        if (!backendHasKeys(type)) {
          throw new TwillError('NoKeys', `network ${network} uses the ${type} backend, whose nodes hold no key pair to rotate: only a wireguard network's nodes do`);
        }
        const existing = await this.store.getLease(network, node);
        if (!existing) {
          throw new NotFoundError(`node ${node} holds no lease in network ${network}: it makes its key pair when its agent joins, so there is no key to rotate yet`);
        }
        const { revision, ...rest } = existing;
        try {
          // No renewal: the lease keeps the expiry it has at the write, a renewal landing meanwhile included.
          const lease = await this.store.replaceLease({ ...rest, rotateKey: token }, revision, { keepExpiry: true });
          this.log.info('key rotation asked', { network, node, revision: lease.revision });
          await this.publishing.lease(lease, config);
          return lease;
        } catch (e) {
          // A hello or a renewal got in between: read again.
          if (!(e instanceof ConflictError) || attempt >= WRITE_ATTEMPTS) throw e;
        }
      }
    });
  }

  /**
   * Writes how the node is reached (the route controller's decision), at the
   * next revision so every member receives it, only while the lease is still
   * at expectedRevision: a decision made on a lease that changed meanwhile
   * is made again by the next reconcile. Returns the lease written, or
   * undefined when it changed (or went). The expiry is the one the lease has
   * at the write: no renewal.
   */
  async setReach(network: string, node: string, reach: Reach, expectedRevision: number): Promise<Lease | undefined> {
    checkName('node', node);
    return this.parts.outbox.writing(network, async () => {
      const config = (await requireNetwork(this.store, network)).config;
      const existing = await this.store.getLease(network, node);
      if (!existing || existing.revision !== expectedRevision) return undefined;
      const { revision, ...rest } = existing;
      let lease: Lease;
      try {
        lease = await this.store.replaceLease({ ...rest, reach }, revision, { keepExpiry: true });
      } catch (e) {
        if (e instanceof ConflictError) return undefined;
        throw e;
      }
      this.log.info('reach changed', { network, node, via: reach.via, why: reach.via === 'overlay' ? reach.why : undefined, revision: lease.revision });
      await this.publishing.lease(lease, config);
      return lease;
    });
  }

  /** A subnet held for a node forever and never given to another. */
  async reserve(network: string, node: string, subnet: string, publicIP?: string): Promise<Lease> {
    checkName('node', node);
    const net = await requireNetwork(this.store, network);
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
      createdAt: existing?.createdAt ?? new Date(this.parts.now()).toISOString(),
      ...keptRotation(existing),
    };
    Object.assign(next, keptReach(existing, next.subnet));
    const lease = existing ? await this.store.replaceLease(next, existing.revision) : await this.store.createLease(next);
    this.log.info('subnet reserved', { network, node, subnet });
    await this.publishing.lease(lease, net.config);
    return lease;
  }

  /** Removes a node's lease (reservations included) and publishes the removal. */
  async release(network: string, node: string, expectedRevision?: number, expiredBy?: number): Promise<boolean> {
    return this.parts.outbox.writing(network, async () => {
      const removed = await this.store.deleteLease(network, node, expectedRevision, expiredBy);
      if (!removed) return false;
      await this.publishing.removal(removed.lease, removed.revision);
      return true;
    });
  }

  /** Removes every lease past its expiry; returns how many went. */
  async expire(): Promise<number> {
    let n = 0;
    const now = this.parts.now();
    for (const lease of await this.store.listExpired(now)) {
      // Conditional on the revision read and on the expiry: a change or a renewal that lands meanwhile wins.
      if (await this.release(lease.network, lease.node, lease.revision, now)) {
        this.log.info('lease expired', { network: lease.network, node: lease.node, subnet: lease.subnet ?? lease.ipv6Subnet });
        n++;
      }
    }
    return n;
  }
}
