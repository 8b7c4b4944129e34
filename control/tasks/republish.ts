// The backstop for publishes that never reached the broker, for a controller
// that keeps no memory between runs (the serverless one).
//
// Under protocol v2 most of that repairs itself: a change message lost after
// its store write shows up as a gap in the revisions the next change (or the
// agent's periodic poll of the node API) reveals, and the agent fetches what
// it missed from the store; an own-lease message lost after a join is asked
// for again by the agent's unanswered hello. What nobody asks for again is a
// retained network config: so the scheduled task compares each network's
// retained config with the store's, one read per network, and publishes it
// again where it is missing or different.
//
// Its dual, cleanRetained, deletes what the broker retains and the store no
// longer backs. IoT Core keeps a retained message up to three years and
// limits how many an account holds; past that limit every retained publish
// of the account with a payload is throttled ("Using MQTT retained
// messages", IoT Core developer guide: retained message limits), so a
// fabric that left a topic behind per departed node would one day stop
// publishing leases altogether. The controller deletes a released or removed
// node's topics as it goes; this catches the rest (a function that died
// between its store write and its delete, a will published as a removed node
// went, what a previous version left).
import { publicConfig } from '../../core/config.js';
import { errorMessage } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { netConfigSchema, nodeLeaseSchema } from '../../core/messages.js';
import type { Topics } from '../../core/topics.js';
import { NAME_RE } from '../../core/topics.js';
import type { Controller } from '../controller/controller.js';
import type { Store } from '../store/store.js';

/** What a broker must answer about its retained messages (IotPublisher does). */
export interface RetainedBroker {
  /** the retained payload on a topic; undefined when there is none */
  retained(topic: string): Promise<string | undefined>;
}

export interface RepublishDeps {
  store: Store;
  controller: Controller;
  broker: RetainedBroker;
  log: Logger;
}

export interface RepublishReport {
  checked: number;
  republished: string[];
  /** networks whose check or republish failed, with why */
  failed: Record<string, string>;
}

/** Why the broker's retained config differs from the store's, or undefined when it does not. */
function behind(config: unknown, payload: string | undefined): string | undefined {
  if (payload === undefined || payload === '') return 'no retained config';
  try {
    const m = netConfigSchema.parse(JSON.parse(payload));
    return JSON.stringify(m.config) === JSON.stringify(config) ? undefined : 'retained config differs from the store\'s';
  } catch {
    return 'retained config is unreadable';
  }
}

export async function republishStale(deps: RepublishDeps): Promise<RepublishReport> {
  const { store, controller, broker, log } = deps;
  const report: RepublishReport = { checked: 0, republished: [], failed: {} };
  for (const net of await store.listNetworks()) {
    report.checked++;
    try {
      const reason = behind(publicConfig(net.config), await broker.retained(controller.topics.netConfig(net.name)));
      if (!reason) continue;
      await controller.republishNetwork(net.name);
      report.republished.push(net.name);
      log.info('network republished: the broker was behind the store', { network: net.name, reason });
    } catch (e) {
      report.failed[net.name] = errorMessage(e);
      log.warn('republish failed', { network: net.name, reason: errorMessage(e) });
    }
  }
  return report;
}

// ---- retained topics the store no longer backs ----

/** What a broker must answer for a cleanup (IotPublisher does; the local controller's brokers too). */
export interface RetainedLister extends RetainedBroker {
  /** the retained topics under a prefix */
  listRetained(prefix: string): Promise<{ topic: string }[]>;
}

/**
 * Which store record a retained topic of this deployment stands for:
 *   config  the network's config            (the network)
 *   lease   a node's own topic              (its lease; or, for a node without
 *                                             one, an error it was told)
 *   node    a node's status, or the v1 upgrade notice (the node, in that network)
 *   never   a topic nothing retains (changes, hellos, v1 statuses)
 * undefined: not one of twill's shapes, left alone: under a prefix "app"
 * live the topics of a deployment "app/<stage>" too, and those never parse
 * as this deployment's (their next level is v1 or v2, never net or node).
 */
export type RetainedShape =
  | { kind: 'config'; network: string }
  | { kind: 'lease' | 'node'; network: string; node: string }
  | { kind: 'never' };

export function retainedShape(topics: Topics, topic: string): RetainedShape | undefined {
  const t = topics.parse(topic);
  if (t?.kind === 'netConfig') return { kind: 'config', network: t.network };
  if (t?.kind === 'nodeLease') return { kind: 'lease', network: t.network, node: t.node };
  if (t?.kind === 'nodeStatus') return { kind: 'node', network: t.network, node: t.node };
  if (t) return { kind: 'never' };
  const legacy = `${topics.legacyRoot}/node/`;
  if (!topic.startsWith(legacy)) return undefined;
  const [network, node, what, ...rest] = topic.slice(legacy.length).split('/');
  if (rest.length || !network || !node || !NAME_RE.test(network) || !NAME_RE.test(node)) return undefined;
  if (what === 'lease') return { kind: 'node', network, node };
  if (what === 'status') return { kind: 'never' };
  return undefined;
}

/** What backs retained topics, read from the store at one time. */
export interface Backing {
  networks: ReadonlySet<string>;
  /** node name -> its network */
  nodes: ReadonlyMap<string, string>;
  /** "network/node" of every lease */
  leases: ReadonlySet<string>;
}

/**
 * Whether the store backs a retained topic: 'payload' when that depends on
 * what the topic holds (a node without a lease: its own topic may hold an
 * error it was told, never a lease nor a bare "no lease").
 */
export function isBacked(shape: RetainedShape, b: Backing): boolean | 'payload' {
  switch (shape.kind) {
    case 'config': return b.networks.has(shape.network);
    case 'lease': return b.leases.has(`${shape.network}/${shape.node}`) || (b.nodes.get(shape.node) === shape.network && 'payload');
    case 'node': return b.nodes.get(shape.node) === shape.network;
    case 'never': return false;
  }
}

/** A node's own topic without a lease is backed only by an error it was told (Controller.publishNodeError). */
function isErrorOnly(payload: string | undefined): boolean {
  if (!payload) return false;
  try {
    const m = nodeLeaseSchema.parse(JSON.parse(payload));
    return m.lease === null && m.error !== undefined;
  } catch {
    return false;
  }
}

async function readBacking(store: Store): Promise<Backing> {
  const networks = await store.listNetworks();
  const leases = new Set<string>();
  for (const n of networks) for (const l of await store.listLeases(n.name)) leases.add(`${l.network}/${l.node}`);
  return { networks: new Set(networks.map((n) => n.name)), nodes: new Map((await store.listNodes()).map((n) => [n.name, n.network])), leases };
}

/** The same question for one topic, asked of the store now (a write may have landed since readBacking). */
async function backedNow(store: Store, shape: RetainedShape): Promise<boolean | 'payload'> {
  if (shape.kind === 'never') return false;
  if (shape.kind === 'config') return (await store.getNetwork(shape.network)) !== undefined;
  if (shape.kind === 'lease' && (await store.getLease(shape.network, shape.node))) return true;
  const registered = (await store.getNode(shape.node))?.network === shape.network;
  return registered && (shape.kind === 'lease' ? 'payload' : true);
}

export interface CleanDeps {
  store: Store;
  controller: Pick<Controller, 'topics' | 'deleteRetained' | 'republishNode' | 'republishNetwork'>;
  broker: RetainedLister;
  log: Logger;
}

export interface CleanReport {
  /** retained topics of this deployment's shapes */
  checked: number;
  deleted: string[];
  /** topics whose delete failed, with why */
  failed: Record<string, string>;
}

/**
 * Deletes the retained topics of this deployment that the store does not
 * back. The broker is listed before the store is read, so a topic written
 * for a record created meanwhile is seen as backed; each one about to go is
 * asked about again, and once more after its delete, when a write that
 * landed in between is published again.
 */
export async function cleanRetained(deps: CleanDeps): Promise<CleanReport> {
  const { store, controller, broker, log } = deps;
  const topics = controller.topics;
  const report: CleanReport = { checked: 0, deleted: [], failed: {} };
  const listed = await broker.listRetained(`${topics.prefix}/`);
  const candidates = listed.flatMap(({ topic }) => {
    const shape = retainedShape(topics, topic);
    return shape ? [{ topic, shape }] : [];
  });
  report.checked = candidates.length;
  if (!candidates.length) return report;
  const backing = await readBacking(store);
  for (const { topic, shape } of candidates) {
    const backed = isBacked(shape, backing);
    if (backed === true) continue;
    try {
      const now = await backedNow(store, shape);
      if (now === true) continue;
      if (now === 'payload' && isErrorOnly(await broker.retained(topic))) continue;
      await controller.deleteRetained(topic);
      report.deleted.push(topic);
      if ((await backedNow(store, shape)) === true) {
        if (shape.kind === 'lease') await controller.republishNode(shape.network, shape.node);
        else if (shape.kind === 'config') await controller.republishNetwork(shape.network);
      }
    } catch (e) {
      report.failed[topic] = errorMessage(e);
    }
  }
  if (report.deleted.length) log.info('retained topics the store no longer backs deleted', { count: report.deleted.length, first: report.deleted[0] });
  for (const [topic, why] of Object.entries(report.failed)) log.warn('retained topic not deleted', { topic, reason: why });
  return report;
}
