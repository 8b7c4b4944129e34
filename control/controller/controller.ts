// The controller: leases, allocation, expiry and everything published about
// them. The local controller and the serverless handlers both drive this class
// (through control/plane.ts); neither holds logic of its own. It is a facade
// over its parts, each in its own file:
//   networks.ts    a network stored, published and removed
//   leases.ts      allocation: join, renew, reserve, release, expire
//   intake.ts      agents' messages: rate limit, parsing, metrics
//   outbox.ts      each network's changes, batched onto its changes topic
//   publishing.ts  the retained topics, written and cleared
//   catch-up.ts    the broker caught up with the store: what this process
//                  did not publish, and every retained message on start
import { randomBytes } from 'node:crypto';
import type { NetConf } from '../../core/config.js';
import type { Reach } from '../../core/backends/overlay.js';
import type { Lease } from '../../core/lease.js';
import type { Logger } from '../../core/log.js';
import type { Metrics } from '../../core/metrics.js';
import type { Topics } from '../../core/topics.js';
import type { Publisher } from '../publish/publisher.js';
import type { NetworkRecord, Store } from '../store/store.js';
import { CatchUp } from './catch-up.js';
import { MessageIntake } from './intake.js';
import { Leases, type JoinRequest } from './leases.js';
import { Networks } from './networks.js';
import { ChangeOutbox } from './outbox.js';
import { RetainedPublisher } from './publishing.js';

export type { JoinRequest } from './leases.js';

const DEFAULT_LEASE_TTL_MS = 24 * 3600 * 1000;

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

export class Controller {
  readonly topics: Topics;
  /** The node API's URL, told to every node on its own topic (it lists its network there). */
  readonly api?: string;
  private readonly ttl: number;
  private readonly networks: Networks;
  private readonly leases: Leases;
  private readonly intake: MessageIntake;
  private readonly publishing: RetainedPublisher;
  private readonly catchUp: CatchUp;

  constructor(
    readonly store: Store,
    publisher: Publisher,
    opts: ControllerOptions,
  ) {
    const { topics, log, metrics, listeners } = opts;
    this.topics = topics;
    this.api = opts.api;
    this.ttl = opts.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
    const now = opts.now ?? Date.now;
    const outbox = new ChangeOutbox(publisher, topics);
    const published = (network: string, revision: number, upTo: boolean) => listeners?.published?.(network, revision, upTo);
    this.publishing = new RetainedPublisher({ store, publisher, topics, outbox, api: opts.api, published });
    this.catchUp = new CatchUp({ store, outbox, publishing: this.publishing, published });
    this.leases = new Leases({ store, outbox, publishing: this.publishing, log, metrics, ttlMs: this.ttl, now, random: opts.random ?? Math.random });
    this.networks = new Networks({
      store, publishing: this.publishing, log,
      release: (network, node) => this.leases.release(network, node),
      removed: (network) => listeners?.removed?.(network),
    });
    this.intake = new MessageIntake({ store, topics, leases: this.leases, publishing: this.publishing, log, metrics, now });
  }

  /** How long a join makes a lease last: whoever renews leases decides when by it. */
  get leaseTtlMs(): number {
    return this.ttl;
  }

  /** messages refused for their node's rate, since start */
  get refusedByRate(): number {
    return this.intake.refusedByRate;
  }

  // ---- networks (networks.ts) ----

  /** Stores a network's config and publishes it; its backend type is fixed once it has leases. */
  applyNetwork(name: string, config: NetConf): Promise<NetworkRecord> {
    return this.networks.apply(name, config);
  }

  /** Removes a network: refused while it has leases or nodes, unless forced. */
  removeNetwork(name: string, opts: { force?: boolean } = {}): Promise<{ released: number; nodes: string[] }> {
    return this.networks.remove(name, opts);
  }

  // ---- leases (leases.ts) ----

  /** Gives the node a lease, or renews the one it holds. */
  join(network: string, node: string, req: JoinRequest): Promise<Lease> {
    return this.leases.join(network, node, req);
  }

  /**
   * Asks a node of a network with keys (wireguard) for a new key pair: a
   * fresh token on its lease, which its agent honours once.
   */
  rotateKey(network: string, node: string): Promise<Lease> {
    return this.leases.rotateKey(network, node, randomBytes(12).toString('base64url'));
  }

  /**
   * How a node of a cloud network with an overlay is reached: the route
   * controller's write, at the next revision, only while the lease is still
   * at expectedRevision (undefined: it changed, decide again).
   */
  setReach(network: string, node: string, reach: Reach, expectedRevision: number): Promise<Lease | undefined> {
    return this.leases.setReach(network, node, reach, expectedRevision);
  }

  /** A subnet held for a node forever and never given to another. */
  reserve(network: string, node: string, subnet: string, publicIP?: string): Promise<Lease> {
    return this.leases.reserve(network, node, subnet, publicIP);
  }

  /** Removes a node's lease (reservations included) and publishes the removal. */
  release(network: string, node: string, expectedRevision?: number, expiredBy?: number): Promise<boolean> {
    return this.leases.release(network, node, expectedRevision, expiredBy);
  }

  /** Removes every lease past its expiry; returns how many went. */
  expire(): Promise<number> {
    return this.leases.expire();
  }

  // ---- messages from agents (intake.ts) ----

  /** The node's rate limit: false when this message is over it (asked before a message is queued). */
  admit(topic: string, client?: string): boolean {
    return this.intake.admit(topic, client);
  }

  /** Entry point for every message an agent sends. Never throws. */
  handleMessage(topic: string, payload: Uint8Array, client?: string, admitted = false): Promise<void> {
    return this.intake.handle(topic, payload, client, admitted);
  }

  // ---- retained topics (publishing.ts, catch-up.ts) ----

  /** Tells an agent of the previous protocol that it must be upgraded. */
  announceUpgrade(network: string, node: string): Promise<void> {
    return this.publishing.announceUpgrade(network, node);
  }

  /** After a node is removed: what the broker retains for it goes. */
  forgetNode(network: string, node: string): Promise<void> {
    return this.publishing.forgetNode(network, node);
  }

  /** Deletes one retained message the store no longer backs. */
  deleteRetained(topic: string): Promise<void> {
    return this.publishing.deleteRetained(topic);
  }

  /** Publishes a node's own lease again as the store has it, if it has one. */
  republishNode(network: string, node: string): Promise<void> {
    return this.publishing.republishNode(network, node);
  }

  /** Catches the broker up with the store's change log after `after`; false when the log no longer reaches back. */
  publishChangesSince(name: string, after: number, published?: (revision: number) => boolean): Promise<boolean> {
    return this.catchUp.changesSince(name, after, published);
  }

  /** Rebuilds a network's retained messages from the store. */
  republishNetwork(name: string): Promise<void> {
    return this.catchUp.republishNetwork(name);
  }

  republishAll(): Promise<void> {
    return this.catchUp.republishAll();
  }

  /** What a controller publishes when it starts: every retained message rebuilt, and v1 agents told to upgrade. */
  publishOnStart(): Promise<void> {
    return this.catchUp.onStart();
  }
}
