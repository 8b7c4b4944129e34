// What the controller publishes, all of it derived from the store.
//
// Per network, a retained config topic, and a changes topic that carries
// each peer-visible write once, with its revision (not retained: an agent
// lists the network over the node API and then applies the changes newer
// than its list; a gap in the revisions sends it back to the API). Per
// node, a retained topic with its own lease and the full config. The
// changes go out through the outbox (outbox.ts); the retained topics are
// written and cleared here, and rebuilt from the store by catch-up.ts.
import { nodeConfig, publicConfig, type NetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import type { NodeLeaseMessage } from '../../core/messages.js';
import { LEGACY_PROTOCOL, PROTOCOL, type Topics } from '../../core/topics.js';
import { VERSION } from '../../core/version.js';
import type { Publisher } from '../publish/publisher.js';
import type { NetworkRecord, Store } from '../store/store.js';
import type { ChangeOutbox } from './outbox.js';

/** how often an own-lease publish (or a rebuild: catch-up.ts) overtaken by a concurrent write is redone */
export const PUBLISH_ROUNDS = 4;

export interface PublishingParts {
  store: Store;
  publisher: Publisher;
  topics: Topics;
  outbox: ChangeOutbox;
  /** The node API's URL, told to every node on its own topic. */
  api?: string;
  /** told of every write published: the write at revision, or with upTo every write up to it */
  published: (network: string, revision: number, upTo: boolean) => void;
}

export class RetainedPublisher {
  private readonly store: Store;
  private readonly publisher: Publisher;
  private readonly topics: Topics;
  private readonly outbox: ChangeOutbox;
  private readonly api?: string;
  private readonly published: PublishingParts['published'];

  constructor(parts: PublishingParts) {
    ({ store: this.store, publisher: this.publisher, topics: this.topics, outbox: this.outbox, api: this.api, published: this.published } = parts);
  }

  /** The node's own topic says why its message was refused, beside the lease it holds (if any). */
  async nodeError(network: string, node: string, error: string): Promise<void> {
    const lease = (await this.store.getLease(network, node)) ?? null;
    const msg: NodeLeaseMessage = { v: 2, lease, error, ...(this.api && { api: this.api }) };
    await this.publisher.publish(this.topics.nodeLease(network, node), JSON.stringify(msg), true);
  }

  /**
   * Tells an agent of the previous protocol, on the own-lease topic it reads,
   * that it must be upgraded (retained: it reads it on connect).
   */
  async announceUpgrade(network: string, node: string): Promise<void> {
    const error = `this control plane speaks twill protocol ${PROTOCOL} and this agent speaks ${LEGACY_PROTOCOL}: upgrade the agent to twill ${VERSION} or later`;
    await this.publisher.publish(this.topics.legacyNodeLease(network, node), JSON.stringify({ v: 1, lease: null, error }), true);
  }

  /** The node's own topic: its lease (or none) and the config with the secrets its backend needs (never the cloud's keys). */
  async own(lease: Lease, config: NetConf): Promise<void> {
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
  async clearOwn(network: string, node: string): Promise<void> {
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

  /** After a network is removed: its retained config goes (an empty retained payload deletes it). */
  async forgetNetwork(network: string): Promise<void> {
    await this.publisher.publish(this.topics.netConfig(network), '', true);
  }

  /** Deletes one retained message (control/tasks/republish.ts cleanRetained: the store no longer backs it). */
  async deleteRetained(topic: string): Promise<void> {
    await this.publisher.publish(topic, '', true);
  }

  /** Publishes a node's own lease again as the store has it, if it has one (a cleanup raced a join). */
  async republishNode(network: string, node: string): Promise<void> {
    const net = await this.store.getNetwork(network);
    const lease = net && (await this.store.getLease(network, node));
    if (net && lease) await this.own(lease, net.config);
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
  private async node(network: string, node: string, lease: Lease | null, revision: number, config: NetConf): Promise<void> {
    await this.outbox.publish(network, { revision, node, lease });
    this.published(network, revision, false);
    let own = lease;
    for (let round = 0; round < PUBLISH_ROUNDS; round++) {
      if (own) await this.own(own, config);
      else await this.clearOwn(network, node);
      const now = (await this.store.getLease(network, node)) ?? null;
      if (now?.revision === own?.revision && now?.expiresAt === own?.expiresAt) return;
      own = now;
      config = (await this.store.getNetwork(network))?.config ?? config;
    }
  }

  /** A lease written (a join or a reservation): to every member and to its node. */
  async lease(lease: Lease, config: NetConf): Promise<void> {
    await this.node(lease.network, lease.node, lease, lease.revision, config);
  }

  /** A lease removed at revision: to every member and, while its network exists, to its node. */
  async removal(lease: Lease, revision: number): Promise<void> {
    const config = (await this.store.getNetwork(lease.network))?.config;
    if (config) await this.node(lease.network, lease.node, null, revision, config);
    else await this.outbox.publish(lease.network, { revision, node: lease.node, lease: null });
  }

  /** Config (secrets masked) on the shared topic; each node's topic carries what its backend needs (nodeConfig). */
  async network(net: NetworkRecord): Promise<void> {
    await this.config(net);
    for (const lease of await this.store.listLeases(net.name)) await this.own(lease, net.config);
    await this.outbox.publish(net.name, { revision: net.revision, config: true });
    this.published(net.name, net.revision, false);
  }

  /** The network's config, secrets masked, on its retained config topic. */
  async config(net: NetworkRecord): Promise<void> {
    await this.publisher.publish(this.topics.netConfig(net.name), JSON.stringify({ v: 2, revision: net.revision, config: publicConfig(net.config) }), true);
  }
}
