// What a node may do on a broker, in one place: the embedded broker checks
// each publish and subscribe against it (nodeAcl), and IoT Core's custom
// authorizer turns the same grants into a policy document. A node publishes
// only its own hello and status, and reads only its network's topics and its
// own lease, by exact topic; only the controller writes leases and config.
import { createHash } from 'node:crypto';
import type { Topics } from './topics.js';

export interface NodeIdentity {
  name: string;
  network: string;
}

export interface NodeGrants {
  /** the MQTT client id the node connects with */
  clientId: string;
  /**
   * The id an agent of twill 0.1 connects with (LEGACY_CLIENT_ID_NOTE), still
   * let in during an upgrade; undefined once that is dropped.
   */
  legacyClientId?: string;
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

// ---- client ids ----
//
// A broker holds one session per client id, and a new CONNECT with an id in
// use drops the old connection (MQTT 3.1.1 §3.1.4; IoT Core does the same,
// "AWS IoT differences from MQTT specifications"). IoT Core's ids are shared
// by every deployment in an account and region, so an agent's id names its
// deployment too:
//
//     <prefix>:<network>:<node>        e.g.  twill/prod:blue:edge-1
//
// The prefix is the deployment's topic prefix (app/stage). ':' is in no
// prefix, network or node name (core/topics.ts: names are letters, digits,
// '.', '_' and '-'; a prefix also '/'), so the three parts come back apart
// unambiguously: network "a-b" with node "c" is "P:a-b:c", network "a" with
// node "b-c" is "P:a:b-c". Every id of a deployment starts with "<prefix>:",
// which no other deployment's does (a prefix holds no ':'), so IAM can grant
// DeleteConnection on exactly one stage's agents (client/<prefix>:*).
//
// IoT Core takes ids of at most 128 characters (its quotas page, and the
// data-plane API's clientId pattern); the longest prefix (100) with the
// longest names (63 each) is 228. An id that would be longer keeps the
// prefix and replaces "<network>:<node>" by a hash of it:
//
//     <prefix>:h<26 hex digits of SHA-256("<network>:<node>")>
//
// (one ':' where the readable form has two, so neither form can be the
// other; 104 bits, so two nodes of a deployment never share one). Mosquitto,
// EMQX and the embedded broker take ids far longer than 128 under MQTT 3.1.1.
//
// LEGACY_CLIENT_ID_NOTE: twill 0.1 agents connect as "twill-<network>-<node>".
// The control plane is upgraded first and the agents host by host after it,
// so a control plane that refused them would cut every agent off the
// broker until its host is upgraded: each keeps its routes (the data plane
// never depends on the control plane) but would learn of no new node. So
// the embedded broker and IoT Core's authorizer still let an agent in under
// the 0.1 id of the node it authenticated as, and log, on each such login,
// that the agent must be upgraded. What an agent on the 0.1 id keeps until
// then is what 0.1 had: a same-named node of another deployment on the same
// broker, or the other half of an ambiguous pair, can take over its session;
// and on IoT Core, DeleteConnection (granted on this stage's ids only) does
// not reach it, so a removed node on a 0.1 agent stays connected until the
// authorizer's next refresh refuses it (refreshAfterInSeconds, an hour).
// An agent of this version never uses the 0.1 id.

/** IoT Core's limit on a client id (quotas page: "Client ID size"). */
export const MAX_CLIENT_ID_LENGTH = 128;
const CLIENT_ID_SEPARATOR = ':';
const HASH_DIGITS = 26;

/** The agent's client id in the deployment whose topic prefix is `prefix` (scheme above). */
export function nodeClientId(prefix: string, network: string, node: string): string {
  const readable = [prefix, network, node].join(CLIENT_ID_SEPARATOR);
  if (readable.length <= MAX_CLIENT_ID_LENGTH) return readable;
  const digest = createHash('sha256').update(`${network}${CLIENT_ID_SEPARATOR}${node}`).digest('hex').slice(0, HASH_DIGITS);
  return `${prefix}${CLIENT_ID_SEPARATOR}h${digest}`;
}

/** What every client id of the deployment starts with (what DeleteConnection is granted on). */
export function clientIdPrefix(prefix: string): string {
  return `${prefix}${CLIENT_ID_SEPARATOR}`;
}

/** The id twill 0.1 agents connect with (LEGACY_CLIENT_ID_NOTE): the same in every deployment. */
export function legacyClientId(network: string, node: string): string {
  return `twill-${network}-${node}`.slice(0, MAX_CLIENT_ID_LENGTH);
}

export function nodeGrants(topics: Topics, node: NodeIdentity): NodeGrants {
  const status = topics.nodeStatus(node.network, node.name);
  return {
    clientId: nodeClientId(topics.prefix, node.network, node.name),
    legacyClientId: legacyClientId(node.network, node.name),
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
function legacyGrants(topics: Topics, node: NodeIdentity): Pick<NodeGrants, 'publish' | 'read'> {
  const base = `${topics.legacyRoot}/node/${node.network}/${node.name}`;
  return { publish: [`${base}/hello`, `${base}/status`], read: [`${base}/lease`] };
}

/**
 * Whether a CONNECT's client id is the node's: 'current', 'legacy' (a 0.1
 * agent's, let in with a warning: LEGACY_CLIENT_ID_NOTE), or undefined (refused).
 */
export function clientIdOf(g: Pick<NodeGrants, 'clientId' | 'legacyClientId'>, id: string): 'current' | 'legacy' | undefined {
  if (id === g.clientId) return 'current';
  if (g.legacyClientId !== undefined && id === g.legacyClientId) return 'legacy';
  return undefined;
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
