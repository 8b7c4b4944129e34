// What a node may do on a broker, in one place: the embedded broker checks
// each publish and subscribe against it (nodeAcl), and IoT Core's custom
// authorizer turns the same grants into a policy document. A node publishes
// only its own hello and status, and reads only its network's topics and its
// own node topics; only the controller writes leases and config.
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
   * Topic prefixes, each ending in '/', under which the node may subscribe and
   * receive. A filter is allowed only when its fixed leading part pins it
   * inside one of them, so wildcards can only narrow it further.
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
    read: [`${topics.root}/net/${node.network}/`, `${topics.nodeBase(node.network, node.name)}/`],
  };
}

/** The embedded broker's checks, from the same grants. */
export function nodeAcl(topics: Topics, node: NodeIdentity) {
  const g = nodeGrants(topics, node);
  return {
    canPublish: (topic: string) => g.publish.includes(topic),
    canSubscribe: (filter: string) => g.read.some((prefix) => filter.startsWith(prefix)),
  };
}
