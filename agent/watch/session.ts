// The agent's MQTT session: one connection to the broker that carries what
// the agent reads (its network's config and changes, its own lease: exact
// topics, so brokers that send no retained message to a wildcard
// subscription, AWS IoT Core, serve it as well as any other) and what it
// says (its hello, its retained status, and a last will saying it is
// offline). It reconnects forever, with backoff, and notices when another
// process seems to be using this node's identity. Messages are parsed here,
// at the edge; agent/watch/watch.ts gets them typed.
import mqtt from 'mqtt';
import { errorMessage } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import {
  changesIn, changesMessageSchema, MAX_CHANGES_BYTES, netConfigSchema, nodeLeaseSchema, parseMessage,
  type ChangeMessage, type Hello, type Status,
} from '../../core/messages.js';
import type { Topics } from '../../core/topics.js';
import { brokerConnection, type BrokerOptions } from '../connect.js';
import { jitter, within } from '../timing.js';

export interface SessionOptions extends BrokerOptions {
  network: string;
  node: string;
  clientId: string;
  topics: Topics;
  log: Logger;
  /** the retained status the broker sets when the session dies */
  will: Status;
}

export type OwnMessage = ReturnType<typeof nodeLeaseSchema.parse>;
export type SessionProblem = 'session' | 'identity';

/** What the session reports: the only way it calls out. */
export interface SessionEvents {
  /** connected and subscribed: from now on the session brings every change, and can carry a hello */
  subscribed(): void;
  /** the network's shared config (secrets masked), with the network revision it was published at */
  config(config: Record<string, unknown>, revision: number): void;
  /** changes on the network's changes topic, in the order the message held them */
  changes(changes: ChangeMessage[]): void;
  /** the node's own topic: its lease, the config with its secrets, the node API's address, or why it has none */
  own(msg: OwnMessage): void;
  /** a problem the operator should see, or undefined when it is over */
  problem(kind: SessionProblem, problem: string | undefined): void;
}

const MAX_BACKOFF_MS = 30_000;
/** at least this long between two CONNECTs of this client id (reconnectDelay) */
const MIN_CONNECT_GAP_MS = 1000;
/** a session that ends sooner than this after it began is a short one... */
const SHORT_SESSION_MS = 10_000;
/** ...and this many short ones within a minute suggest a second process with this node's config */
const IDENTITY_SUSPECT = 3;
const IDENTITY_WINDOW_MS = 60_000;

/**
 * A session the broker ends soon after it began, again and again, is what
 * another process logging in with this node's config does (each login takes
 * over the other's session): said in the status while it lasts, and in the
 * log once a minute. Pure: the clock is a parameter.
 */
export class ShortSessions {
  /** when the current session began (undefined: none, or its end is counted) */
  private beganAt?: number;
  private recent: number[] = [];
  private loggedAt = -Infinity;

  constructor(private readonly node: string) {}

  began(now: number): void {
    this.beganAt = now;
  }

  /** The session ended: the problem to report when this looks like a shared identity, and whether to log it too. */
  ended(now: number): { problem: string; log: boolean } | undefined {
    if (this.beganAt === undefined) return undefined;
    const lived = now - this.beganAt;
    this.beganAt = undefined;
    if (lived > SHORT_SESSION_MS) return undefined;
    this.recent = [...this.recent.filter((t) => now - t < IDENTITY_WINDOW_MS), now];
    if (this.recent.length < IDENTITY_SUSPECT) return undefined;
    const problem = `the broker ended this node's session ${this.recent.length} times within a minute, each soon after it began: another process may be using node ${this.node}'s config`;
    const log = now - this.loggedAt >= IDENTITY_WINDOW_MS;
    if (log) this.loggedAt = now;
    return { problem, log };
  }

  /** The session that began at `at` has lived a whole window: true when it is still on and short ones had been counted (the suspicion is over). */
  outlived(at: number): boolean {
    if (this.beganAt !== at || !this.recent.length) return false;
    this.recent = [];
    return true;
  }
}

/**
 * How long after a connection closed to send the next CONNECT: at least
 * MIN_CONNECT_GAP_MS, then exponential backoff with jitter, so a fleet does
 * not reconnect in lockstep. IoT Core takes one CONNECT a second per client
 * id and throttles the rest (quotas page: "Connect requests per second per
 * client ID", 1, not adjustable; CloudWatch counts them as
 * Connect.ClientIDThrottle). Counted from the close, which comes after IoT
 * Core had the last CONNECT, however long each TLS handshake took: a refused
 * login or a session cut at once is never retried inside that second.
 */
export function reconnectDelay(attempt: number): number {
  const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(attempt, 10));
  return MIN_CONNECT_GAP_MS + jitter(base);
}

export class BrokerSession {
  private client?: mqtt.MqttClient;
  private reconnectAttempt = 0;
  private readonly shortSessions: ShortSessions;
  private identityTimer?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly opts: SessionOptions,
    private readonly events: SessionEvents,
  ) {
    this.shortSessions = new ShortSessions(opts.node);
  }

  get connected(): boolean {
    return this.client?.connected ?? false;
  }

  start(): void {
    const o = this.opts;
    const conn = brokerConnection(o, {
      clientId: o.clientId,
      clean: true,
      reconnectPeriod: 1000,
      // A refused login (a rotated password, a broker not yet told of the
      // node) is tried again with the same backoff, never given up on.
      reconnectOnConnackError: true,
      connectTimeout: 10_000,
      will: { topic: o.topics.nodeStatus(o.network, o.node), payload: Buffer.from(JSON.stringify(o.will)), qos: 1, retain: true },
    });
    const client = mqtt.connect(conn.url, conn.options);
    this.client = client;
    client.on('connect', () => void this.onConnect());
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    // Ahead of mqtt.js's own 'close' listener, which arms the reconnect
    // timer with reconnectPeriod as it stands: set after it, each delay
    // would apply one reconnect late.
    client.prependListener('close', () => {
      if (!this.stopped) this.noteEnd();
      client.options.reconnectPeriod = reconnectDelay(this.reconnectAttempt++);
    });
    client.on('error', (e) => {
      o.log.warn('broker connection error', { reason: e.message });
      this.events.problem('session', `broker: ${e.message}`);
    });
  }

  private noteEnd(): void {
    const suspect = this.shortSessions.ended(Date.now());
    if (!suspect) return;
    this.events.problem('identity', suspect.problem);
    if (suspect.log) this.opts.log.warn(suspect.problem, { node: this.opts.node });
  }

  private async onConnect(): Promise<void> {
    const client = this.client;
    if (!client || this.stopped) return void client?.end(true);
    this.reconnectAttempt = 0;
    const at = Date.now();
    this.shortSessions.began(at);
    // A session that lasts a whole window: whoever shared the identity has stopped.
    clearTimeout(this.identityTimer);
    this.identityTimer = setTimeout(() => {
      if (this.shortSessions.outlived(at)) this.events.problem('identity', undefined);
    }, IDENTITY_WINDOW_MS);
    this.identityTimer.unref();
    const o = this.opts;
    o.log.info('connected to broker', { broker: o.broker });
    try {
      // One SUBSCRIBE, exact topics: within IoT Core's 8 filters per SUBSCRIBE and 50 per connection.
      await client.subscribeAsync(o.topics.agentTopics(o.network, o.node), { qos: 1 });
      this.events.problem('session', undefined);
    } catch (e) {
      // A refused subscription (granted 128) means the credentials are not for this node and network.
      this.events.problem('session', `broker refused the subscriptions (${errorMessage(e)}): check network and node in the agent config`);
      return;
    }
    this.events.subscribed();
  }

  private onMessage(topic: string, payload: Buffer): void {
    const o = this.opts;
    const t = o.topics.parse(topic);
    if (!t || t.network !== o.network) return;
    // A zero-byte message is a retained one being deleted (MQTT 3.1.1
    // §3.3.1.3): the controller clears a released lease's topic that way and
    // says "no lease" in a message of its own.
    if (payload.length === 0) return;
    try {
      if (t.kind === 'netConfig') {
        const msg = parseMessage(netConfigSchema, payload, 'network config');
        this.events.config(msg.config, msg.revision);
      } else if (t.kind === 'netChanges') {
        this.events.changes(changesIn(parseMessage(changesMessageSchema, payload, 'changes', MAX_CHANGES_BYTES)));
      } else if (t.kind === 'nodeLease' && t.node === o.node) {
        this.events.own(parseMessage(nodeLeaseSchema, payload, 'own lease'));
      }
    } catch (e) {
      o.log.warn('message refused', { topic, reason: errorMessage(e) });
    }
  }

  /** Says hello; false when there is no session to say it on. */
  publishHello(hello: Hello): boolean {
    const client = this.client;
    if (!client?.connected || this.stopped) return false;
    client.publish(this.opts.topics.nodeHello(this.opts.network, this.opts.node), JSON.stringify(hello), { qos: 1 }, (err) => {
      if (err) this.opts.log.warn('hello not sent', { reason: err.message });
    });
    return true;
  }

  async publishStatus(status: Status): Promise<void> {
    const client = this.client;
    if (!client?.connected) return;
    await client.publishAsync(this.opts.topics.nodeStatus(this.opts.network, this.opts.node), JSON.stringify(status), { qos: 1, retain: true }).catch(() => {});
  }

  /** Ends the session, each step bounded, saying `final` first when connected. */
  async stop(final?: Status): Promise<void> {
    this.stopped = true;
    clearTimeout(this.identityTimer);
    const client = this.client;
    if (final && client?.connected) await within(2000, this.publishStatus(final));
    await within(2000, client?.endAsync().catch(() => {}));
    // end() while the connection was still being made does not stop mqtt.js from completing it
    client?.end(true);
  }
}
