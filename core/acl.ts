// What a node may do on a broker, in one place: the embedded broker checks
// each publish and subscribe against it (nodeAcl), and IoT Core's custom
// authorizer turns the same grants into a policy document. A node publishes
// only its own hello and status, and reads only its network's topics and its
// own lease, by exact topic; only the controller writes leases and config.
import type { Topics } from './topics.js';

export interface NodeIdentity {
  name: string;
  network: string;
}

export interface NodeGrants {
  /** the MQTT client id the node connects with */
  clientId: string;
  /** exact topics the node may publish to */
  publish: string[];
  /** the subset it may publish retained: its status, which its last will also sets */
  retain: string[];
  /**
   * Exact topics the node may subscribe to and receive: its network's config
   * and changes, its own lease. No wildcard is needed (and on IoT Core a
   * wildcard subscription would get no retained message).
   */
  read: string[];
}

/** The agent's client id; IoT Core holds one connection per client id. */
export function nodeClientId(network: string, node: string): string {
  return `twill-${network}-${node}`.slice(0, 128);
}

export function nodeGrants(topics: Topics, node: NodeIdentity): NodeGrants {
  const status = topics.nodeStatus(node.network, node.name);
  return {
    clientId: nodeClientId(node.network, node.name),
    publish: [topics.nodeHello(node.network, node.name), status],
    retain: [status],
    read: topics.agentTopics(node.network, node.name),
  };
}

/**
 * What an agent of the previous protocol may still do on the embedded
 * broker, so that it hears why it is refused: say hello and its status, and
 * read its own lease topic, where the controller tells it to upgrade.
 */
export function legacyGrants(topics: Topics, node: NodeIdentity): Pick<NodeGrants, 'publish' | 'read'> {
  const base = `${topics.legacyRoot}/node/${node.network}/${node.name}`;
  return { publish: [`${base}/hello`, `${base}/status`], read: [`${base}/lease`] };
}

/** The embedded broker's checks, from the same grants. */
export function nodeAcl(topics: Topics, node: NodeIdentity) {
  const g = nodeGrants(topics, node);
  const legacy = legacyGrants(topics, node);
  return {
    canPublish: (topic: string) => g.publish.includes(topic) || legacy.publish.includes(topic),
    canRetain: (topic: string) => g.retain.includes(topic),
    canSubscribe: (filter: string) => g.read.includes(filter) || legacy.read.includes(filter),
  };
}
