// Message intake: what agents send (hellos and statuses), each admitted by
// its node's rate limit, parsed, acted on and counted. Anything a node sends
// is hostile until parsed: a bad message is logged and answered on the
// node's own topic, and changes nothing.
import { errorMessage, TwillError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { helloSchema, MessageError, parseMessage, statusSchema } from '../../core/messages.js';
import type { Metrics } from '../../core/metrics.js';
import type { TopicKind, Topics } from '../../core/topics.js';
import type { Store } from '../store/store.js';
import type { Leases } from './leases.js';
import type { RetainedPublisher } from './publishing.js';
import { RateLimiter } from './rate-limit.js';

const MESSAGES = 'twill_agent_messages_total';
const MESSAGES_HELP = 'hellos and statuses from agents, by result (ok, refused_rate: over the node\'s rate limit, refused_invalid: refused with a reason)';
type Result = 'ok' | 'refused_rate' | 'refused_invalid';

/**
 * The rate limit (control/controller/rate-limit.ts NODE_LIMITS) a message on
 * a node's topic is admitted by, for every topic a node may publish to
 * (core/acl.ts): its hello, its status, and the previous protocol's hello. A
 * v1 hello is a hello of the same node and takes from the same bucket as its
 * v2 hellos: speaking the old protocol is no way around the limit (each one
 * costs an upgrade notice and a log line). The other topics are the
 * controller's own, which no node may publish to.
 */
function limitOf(t: TopicKind): { kind: 'hello' | 'status'; network: string; node: string } | undefined {
  switch (t.kind) {
    case 'nodeHello':
    case 'legacyHello':
      return { kind: 'hello', network: t.network, node: t.node };
    case 'nodeStatus':
      return { kind: 'status', network: t.network, node: t.node };
    default:
      return undefined;
  }
}

export interface IntakeParts {
  store: Store;
  topics: Topics;
  leases: Leases;
  publishing: RetainedPublisher;
  log: Logger;
  metrics?: Metrics;
  now: () => number;
}

export class MessageIntake {
  /** one node's flood must not starve the others (control/controller/rate-limit.ts) */
  private readonly limiter: RateLimiter;
  /** messages refused for their node's rate, since start */
  refusedByRate = 0;

  constructor(private readonly parts: IntakeParts) {
    this.limiter = new RateLimiter(undefined, parts.now);
    for (const kind of ['hello', 'status']) {
      for (const result of ['ok', 'refused_rate', 'refused_invalid']) parts.metrics?.declare(MESSAGES, MESSAGES_HELP, { kind, result });
    }
  }

  private count(kind: string, result: Result): void {
    this.parts.metrics?.inc(MESSAGES, MESSAGES_HELP, 1, { kind, result });
  }

  /**
   * The node's rate limit on every topic it publishes to: false (counted, and
   * logged once a minute) when this message is over it. Cheap, before any
   * parse of the payload or store read; the local controller asks it before
   * a message is queued, so a flood never queues (handleMessage asks it
   * otherwise).
   */
  admit(topic: string, client = 'unknown'): boolean {
    const t = this.parts.topics.parse(topic);
    const limit = t && limitOf(t);
    if (!limit) return true;
    const { kind, network, node } = limit;
    const taken = this.limiter.take(kind, `${network}/${node}`);
    if (taken.ok) return true;
    this.refusedByRate++;
    this.count(kind, 'refused_rate');
    if (taken.report) this.parts.log.warn(`${kind} messages of a node over its rate limit refused`, { network, node, client, refused: taken.report });
    return false;
  }

  /**
   * Entry point for every message an agent sends. Never throws: a bad message
   * is logged and answered, and changes nothing.
   */
  async handle(topic: string, payload: Uint8Array, client = 'unknown', admitted = false): Promise<void> {
    if (!admitted && !this.admit(topic, client)) return;
    const { topics, store, log, publishing, now } = this.parts;
    const t = topics.parse(topic);
    try {
      if (t?.kind === 'nodeHello') {
        await this.hello(t.network, t.node, payload);
        this.count('hello', 'ok');
      } else if (t?.kind === 'nodeStatus') {
        // An empty retained payload deletes the retained status (a removed network's): no message.
        if (payload.length === 0) return;
        const status = parseMessage(statusSchema, payload, `status of ${t.node}`);
        await store.putStatus({ network: t.network, node: t.node, status, updatedAt: new Date(now()).toISOString() });
        this.count('status', 'ok');
      } else if (t?.kind === 'legacyHello') {
        await publishing.announceUpgrade(t.network, t.node);
        log.warn('agent of an older protocol refused: it must be upgraded', { network: t.network, node: t.node, client });
      } else {
        log.warn('message on an unexpected topic ignored', { topic, client });
      }
    } catch (e) {
      if (t?.kind === 'nodeHello' || t?.kind === 'nodeStatus') this.count(t.kind === 'nodeHello' ? 'hello' : 'status', 'refused_invalid');
      log.warn('message refused', { topic, client, reason: errorMessage(e) });
    }
  }

  private async hello(network: string, node: string, payload: Uint8Array): Promise<void> {
    try {
      const hello = parseMessage(helloSchema, payload, `hello from ${node}`);
      const rec = await this.parts.store.getNode(node);
      if (!rec || rec.network !== network) {
        throw new TwillError('UnknownNode', `node ${node} is not registered in network ${network}: add it with twill node add ${node} --network ${network}`);
      }
      await this.parts.leases.join(network, node, { ...hello, fromAgent: true });
    } catch (e) {
      // The node learns why on its own topic; nobody else sees it. Only what
      // twill itself said: an internal failure (a store or cloud SDK error,
      // whose text can name the account, the role and the table) stays in
      // the control plane's log.
      const said = e instanceof TwillError || e instanceof MessageError ? errorMessage(e) : 'the control plane could not handle this hello (an internal error, in its log); the agent will send it again';
      await this.parts.publishing.nodeError(network, node, said);
      throw e;
    }
  }
}
