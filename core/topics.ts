// MQTT topic names, versioned. Kept within AWS IoT Core's limits (at most 7
// slashes, 256 bytes) so the same names work on the embedded broker, Mosquitto
// and IoT Core. The prefix is one or two segments (app, or app/stage).

import { TwillError } from './errors.js';

export const PROTOCOL = 'v2';
/** The protocol before list-then-watch; its agents are told to upgrade (Controller.handleMessage). */
export const LEGACY_PROTOCOL = 'v1';
export const NAME_RE = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const PREFIX_RE = /^[A-Za-z0-9_-]{1,64}(?:\/[A-Za-z0-9_-]{1,64})?$/;
export const DEFAULT_PREFIX = 'twill';

export function checkName(kind: string, name: string): string {
  if (!NAME_RE.test(name)) {
    throw new TwillError(
      'InvalidName',
      `${kind} name ${JSON.stringify(name)} is not valid: use 1 to 63 letters, digits, '.', '_' or '-', starting and ending with a letter or digit`,
    );
  }
  return name;
}

/**
 * The longest topic is the prefix plus 143 bytes (".../v1/node/<63>/<63>/status"),
 * so a prefix of at most 100 keeps every topic under IoT Core's 256 bytes.
 */
export const MAX_PREFIX_LENGTH = 100;

function checkPrefix(prefix: string): string {
  if (!PREFIX_RE.test(prefix) || prefix.length > MAX_PREFIX_LENGTH) {
    throw new TwillError(
      'InvalidPrefix',
      `topic prefix ${JSON.stringify(prefix)} is not valid: one or two segments of letters, digits, '_' or '-', joined by '/', at most ${MAX_PREFIX_LENGTH} characters in all`,
    );
  }
  return prefix;
}

export type TopicKind =
  | { kind: 'netConfig'; network: string }
  | { kind: 'netChanges'; network: string }
  | { kind: 'nodeHello'; network: string; node: string }
  | { kind: 'legacyHello'; network: string; node: string }
  | { kind: 'nodeLease'; network: string; node: string }
  | { kind: 'nodeStatus'; network: string; node: string };

export class Topics {
  readonly root: string;
  /** where agents of the previous protocol say hello */
  readonly legacyRoot: string;
  constructor(readonly prefix: string = DEFAULT_PREFIX) {
    this.root = `${checkPrefix(prefix)}/${PROTOCOL}`;
    this.legacyRoot = `${prefix}/${LEGACY_PROTOCOL}`;
  }
  /** retained: the network's config, secrets masked */
  netConfig(network: string): string { return `${this.root}/net/${network}/config`; }
  /** not retained: one message per change of the network, each with its revision */
  netChanges(network: string): string { return `${this.root}/net/${network}/changes`; }
  nodeBase(network: string, node: string): string { return `${this.root}/node/${network}/${node}`; }
  nodeHello(network: string, node: string): string { return `${this.nodeBase(network, node)}/hello`; }
  /** retained: the node's lease and the full config, read by that node alone */
  nodeLease(network: string, node: string): string { return `${this.nodeBase(network, node)}/lease`; }
  nodeStatus(network: string, node: string): string { return `${this.nodeBase(network, node)}/status`; }
  /** What an agent subscribes to: exact topics only, since IoT Core sends retained messages to no wildcard. */
  agentTopics(network: string, node: string): string[] {
    return [this.netConfig(network), this.netChanges(network), this.nodeLease(network, node)];
  }
  /** Filters the controller subscribes to. */
  allHellos(): string { return `${this.root}/node/+/+/hello`; }
  allStatus(): string { return `${this.root}/node/+/+/status`; }
  legacyHellos(): string { return `${this.legacyRoot}/node/+/+/hello`; }
  /** The previous protocol's own-lease topic, where a legacy agent reads why it is refused. */
  legacyNodeLease(network: string, node: string): string { return `${this.legacyRoot}/node/${network}/${node}/lease`; }

  parse(topic: string): TopicKind | undefined {
    const valid = (s: string | undefined): s is string => s !== undefined && NAME_RE.test(s);
    if (topic.startsWith(this.legacyRoot + '/')) {
      const [scope, network, node, what, ...rest] = topic.slice(this.legacyRoot.length + 1).split('/');
      return scope === 'node' && valid(network) && valid(node) && what === 'hello' && rest.length === 0 ? { kind: 'legacyHello', network, node } : undefined;
    }
    if (!topic.startsWith(this.root + '/')) return undefined;
    const parts = topic.slice(this.root.length + 1).split('/');
    const [scope, network, a, b] = parts;
    if (!valid(network)) return undefined;
    if (scope === 'net') {
      if (parts.length === 3 && a === 'config') return { kind: 'netConfig', network };
      if (parts.length === 3 && a === 'changes') return { kind: 'netChanges', network };
    } else if (scope === 'node' && parts.length === 4 && valid(a)) {
      if (b === 'hello') return { kind: 'nodeHello', network, node: a };
      if (b === 'lease') return { kind: 'nodeLease', network, node: a };
      if (b === 'status') return { kind: 'nodeStatus', network, node: a };
    }
    return undefined;
  }
}
