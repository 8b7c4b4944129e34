// The embedded MQTT broker, with authentication on by default. A node may
// publish only its own hello and status, and read only its network's topics
// and its own node topics; only the controller (in-process, no client) writes
// leases and config. Every refusal is logged with the client id.
import { Readable } from 'node:stream';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import { createRequire } from 'node:module';
import type { AedesPersistence } from 'aedes-persistence';
import { MAX_PAYLOAD_BYTES } from '../../core/messages.js';
import type { Logger } from '../../core/log.js';
import type { Metrics } from '../../core/metrics.js';
import type { Topics } from '../../core/topics.js';
import { clientIdOf, nodeAcl, nodeGrants } from '../../core/acl.js';
import { CredentialsBusyError, type CredentialCheck } from '../auth/credentials.js';
import type { RetainedLister } from '../tasks/republish.js';
import type { NodeRecord } from '../store/store.js';

// The ACL itself lives in core/acl.ts, shared with IoT Core's custom authorizer.
export { nodeAcl };

export interface BrokerOptions {
  topics: Topics;
  log: Logger;
  /** the node API's too: a password verified on one is not hashed again on the other */
  credentials: CredentialCheck;
  /** where refusals and sessions are counted */
  metrics?: Metrics;
}

/** takeovers of one node's session within this window... */
const TAKEOVER_WINDOW_MS = 60_000;
/** ...from the same address, past which it is two processes, not a reconnect */
const TAKEOVERS_SUSPECT = 3;

/** how long a refused login waits for its CONNACK */
const REFUSAL_DELAY_MS = 1000;

function authError(message: string, returnCode: 3 | 4 | 5): AuthenticateError {
  return Object.assign(new Error(message), { returnCode }) as AuthenticateError;
}

/**
 * aedes' in-memory persistence, with retained messages found by topic when a
 * SUBSCRIBE names exact topics (as every agent's does). Its own lookup tests
 * every retained message against every filter: with a retained own lease
 * and status per node, each agent's subscribe cost O(N), and a fleet
 * reconnecting at once O(N²), most of the controller's CPU in bench/storm.
 */
// CommonJS, module.exports = factory (its types declare an ES default export instead).
const memoryPersistence = createRequire(import.meta.url)('aedes-persistence') as () => AedesPersistence;
type Packet = { topic: string; payload: Buffer };

/** The persistence, and what it retains (what the controller's cleanup lists: control/tasks/republish.ts). */
export type RetainedPersistence = AedesPersistence & RetainedLister;

export function retainedByTopic(): RetainedPersistence {
  const p = memoryPersistence();
  const byTopic = new Map<string, Packet>();
  const store = p.storeRetained.bind(p) as (packet: Packet, cb?: (err?: Error | null) => void) => unknown;
  (p as { storeRetained: unknown }).storeRetained = (packet: Packet, cb?: (err?: Error | null) => void) => {
    if (packet.payload.length === 0) byTopic.delete(packet.topic);
    else byTopic.set(packet.topic, { ...packet });
    return store(packet, cb);
  };
  const combi = p.createRetainedStreamCombi.bind(p);
  p.createRetainedStreamCombi = (patterns: string[]) =>
    patterns.some((t) => t.includes('+') || t.includes('#'))
      ? combi(patterns)
      : Readable.from(patterns.flatMap((t) => { const r = byTopic.get(t); return r ? [r] : []; }), { objectMode: true });
  return Object.assign(p, {
    listRetained: async (prefix: string) => [...byTopic.keys()].filter((t) => t.startsWith(prefix)).map((topic) => ({ topic })),
    retained: async (topic: string) => byTopic.get(topic)?.payload.toString('utf8'),
  });
}

/** The embedded broker, and a way to end the sessions of nodes whose credentials are gone. */
export interface EmbeddedBroker {
  broker: Aedes;
  /** what the broker retains */
  retained: RetainedLister;
  /**
   * Closes every session whose node is no longer current (removed, or its
   * password rotated: current answers from the store); returns the nodes cut off.
   */
  revoke(current: (node: NodeRecord) => boolean): string[];
}

export async function createBroker(opts: BrokerOptions): Promise<EmbeddedBroker> {
  const { credentials, topics, log, metrics } = opts;
  const REFUSED = 'twill_broker_refused_total';
  const REFUSED_HELP = 'what the embedded broker refused: logins, publishes and subscriptions';
  for (const what of ['login', 'publish', 'subscribe']) metrics?.declare(REFUSED, REFUSED_HELP, { what });
  metrics?.declare('twill_broker_session_takeovers_total', 'logins that took over a live session of the same node');
  // Who each connection logged in as, with its grants worked out once (not on every publish).
  const identities = new WeakMap<Client, { node: NodeRecord; acl: ReturnType<typeof nodeAcl> }>();

  // A login with the client id of a live session takes that session over
  // (MQTT 3.1.1 §3.1.4). One now and then is an agent reconnecting before the
  // broker noticed its old connection die. From another address, or again and
  // again, it is two processes with one node's config, each kicking the other
  // off: said in the log (once a minute per node, with the count) and counted.
  const takeovers = new Map<string, { at: number[]; reportedAt: number; unreported: number }>();
  const remoteOf = (c: Client) => (c.conn as { remoteAddress?: string }).remoteAddress ?? 'unknown';
  const noteTakeover = (client: Client, node: NodeRecord) => {
    const live = (broker as unknown as { clients: Record<string, Client | undefined> }).clients[client.id];
    if (!live || live === client || !live.connected) return;
    const now = Date.now();
    const t = takeovers.get(client.id) ?? { at: [], reportedAt: -Infinity, unreported: 0 };
    if (!takeovers.has(client.id) && takeovers.size >= 10_000) takeovers.delete(takeovers.keys().next().value as string);
    takeovers.set(client.id, t);
    t.at = [...t.at.filter((x) => now - x < TAKEOVER_WINDOW_MS), now];
    t.unreported++;
    metrics?.inc('twill_broker_session_takeovers_total', 'logins that took over a live session of the same node');
    const from = remoteOf(live);
    const to = remoteOf(client);
    if (from === to && t.at.length < TAKEOVERS_SUSPECT) return;
    if (now - t.reportedAt < TAKEOVER_WINDOW_MS) return;
    log.warn('another process is using this node\'s identity: each login takes over the other\'s session; give each host its own node (twill node add)', {
      node: node.name, network: node.network, from, to, takeovers: t.unreported,
    });
    t.reportedAt = now;
    t.unreported = 0;
  };

  const persistence = retainedByTopic();
  const broker = await Aedes.createBroker({
    persistence,
    authenticate(client, username, password, done) {
      // 4: bad username or password; 3: server unavailable (MQTT 3.1.1 §3.2.2.3), which agents retry with backoff.
      const refuse = (reason: string, returnCode: 3 | 4 = 4) => {
        log.warn('connection refused', { client: client.id, username, reason });
        metrics?.inc(REFUSED, REFUSED_HELP, 1, { what: 'login' });
        // A refused login is answered after a pause (the same for every
        // reason and name): a client guessing or flooding waits on each
        // attempt, instead of making the broker answer as fast as it can.
        setTimeout(() => done(authError(reason, returnCode), false), REFUSAL_DELAY_MS).unref();
      };
      if (!username || !password) return refuse('no username or password');
      credentials
        .check(username, password.toString('utf8'))
        .then((node) => {
          if (!node) return refuse('bad username or password');
          // The client id is the node's, as IoT Core's authorizer binds it:
          // checked before aedes lets this connection take over a session of
          // that id, so no node can kick another off, set off its last will
          // or receive its queued messages.
          const grants = nodeGrants(topics, node);
          const kind = clientIdOf(grants, client.id);
          if (!kind) return refuse(`client id ${JSON.stringify(client.id)} is not node ${node.name}'s: it connects as ${grants.clientId}`);
          if (kind === 'legacy') {
            log.warn('agent connected with the client id of twill 0.1 agents: upgrade it (until then a same-named node of another deployment on this broker can take over its session)', {
              client: client.id, node: node.name, network: node.network, upgradedId: grants.clientId,
            });
          }
          identities.set(client, { node, acl: nodeAcl(topics, node) });
          noteTakeover(client, node);
          done(null, true);
        })
        .catch((e) => refuse(e instanceof CredentialsBusyError ? e.message : `credential check failed: ${(e as Error).message}`, 3));
    },
    authorizePublish(client, packet, done) {
      if (!client) return done(null); // the controller itself, in-process
      const id = identities.get(client);
      const node = id?.node;
      const size = packet.payload.length;
      let reason: string | undefined;
      if (!id || !node) reason = 'not authenticated';
      else if (!id.acl.canPublish(packet.topic)) reason = `node ${node.name} may not publish to this topic`;
      // Only a status may be retained (its last will sets it too): a retained
      // hello would be handled again by every controller that subscribes.
      else if (packet.retain && !id.acl.canRetain(packet.topic)) reason = `node ${node.name} may not publish retained to this topic: only its status is retained`;
      else if (size > MAX_PAYLOAD_BYTES) reason = `payload of ${size} bytes is larger than ${MAX_PAYLOAD_BYTES}`;
      if (reason) {
        log.warn('publish refused', { client: client.id, node: node?.name, topic: packet.topic, reason });
        metrics?.inc(REFUSED, REFUSED_HELP, 1, { what: 'publish' });
        return done(new Error(reason));
      }
      done(null);
    },
    authorizeSubscribe(client, sub, done) {
      const id = identities.get(client);
      if (!id || !id.acl.canSubscribe(sub.topic)) {
        log.warn('subscribe refused', { client: client.id, node: id?.node.name, topic: sub.topic });
        metrics?.inc(REFUSED, REFUSED_HELP, 1, { what: 'subscribe' });
        return done(null, null);
      }
      done(null, sub);
    },
  });
  broker.on('clientError', (client, err) => log.debug('client error', { client: client.id, reason: err.message }));
  // The sessions that are live, with the node each logged in as.
  const sessions = new Map<Client, NodeRecord>();
  const countSessions = () => metrics?.set('twill_broker_sessions', 'live node sessions on the embedded broker', sessions.size);
  countSessions();
  broker.on('clientReady', (client) => {
    const id = identities.get(client);
    if (id) sessions.set(client, id.node);
    countSessions();
  });
  broker.on('clientDisconnect', (client) => {
    sessions.delete(client);
    countSessions();
  });
  const revoke = (current: (node: NodeRecord) => boolean): string[] => {
    const cut: string[] = [];
    for (const [client, node] of sessions) {
      if (current(node)) continue;
      identities.delete(client);
      sessions.delete(client);
      cut.push(node.name);
      log.warn('session closed: the node was removed or its credentials rotated', { client: client.id, node: node.name });
      client.close();
    }
    return cut;
  };
  return { broker, revoke, retained: persistence };
}
