// The broker the local controller publishes through and hears nodes on:
// the embedded one (aedes behind a TCP listener, control/local/broker.ts) or
// a client of an external one (Mosquitto, EMQX). Either way the host gets
// the same few things: a publisher and what the broker retains for the
// plane, and a way to start hearing the nodes once the plane is ready.
import { randomBytes } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import mqtt from 'mqtt';
import { listenError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { MAX_PAYLOAD_BYTES } from '../../core/messages.js';
import type { Metrics } from '../../core/metrics.js';
import type { Topics } from '../../core/topics.js';
import type { CredentialCheck } from '../auth/credentials.js';
import { AedesPublisher } from '../publish/aedes.js';
import { MqttPublisher } from '../publish/mqtt.js';
import type { Publisher } from '../publish/publisher.js';
import type { NodeRecord } from '../store/store.js';
import type { RetainedLister } from '../tasks/republish.js';
import { createBroker } from './broker.js';
import { authority, parseListen } from './http.js';
import { guardPackets } from './packet-guard.js';

/**
 * The largest MQTT packet the embedded broker takes: a payload at its limit
 * and room for the topic, a will and MQTT's own fields. A larger one closes
 * the connection before its body is read (packet-guard.ts).
 */
const MAX_PACKET_BYTES = MAX_PAYLOAD_BYTES + 16 * 1024;

/**
 * How fast one connection may publish before it is read more slowly. An
 * agent publishes a hello per session and renewal and a status when its
 * meaning changes: a handful a minute. The controller's per-node limits
 * (control/controller/rate-limit.ts) refuse the excess; this keeps a flood
 * from costing even the parse.
 */
const CONNECTION_PACE = { burst: 100, perSecond: 20 };

/** a listing of an external broker's retained messages ends when none has come for this long... */
const RETAINED_QUIET_MS = 250;
/** ...or after this long in all */
const RETAINED_LIST_MS = 30_000;

export type NodeMessage = (topic: string, payload: Buffer, client?: string) => void;

export interface HostedBroker {
  /** the URL agents connect to */
  url: string;
  publisher: Publisher;
  retained: RetainedLister;
  /** an external broker keeps what it retains across restarts: worth a cleanup at start */
  outlivesController: boolean;
  /**
   * Ends the sessions of nodes no longer current (removed, or their password
   * rotated); the embedded broker only. Returns the nodes cut off.
   */
  revoke?: (current: (node: NodeRecord) => boolean) => string[];
  /** Starts handing over the nodes' hellos and statuses (and, embedded, accepting connections). */
  start(onMessage: NodeMessage): Promise<void>;
  close(): Promise<void>;
}

export interface BrokerDeps {
  topics: Topics;
  log: Logger;
  metrics: Metrics;
  credentials: CredentialCheck;
}

/** The topics the controller hears nodes on. */
const filters = (topics: Topics) => [topics.allHellos(), topics.allStatus(), topics.legacyHellos()];

/** The embedded broker, bound at once (a port in use stops the start before anything is stored); connections wait for start. */
export async function embeddedBroker(listen: string, deps: BrokerDeps): Promise<HostedBroker> {
  const { log, metrics } = deps;
  const embedded = await createBroker(deps);
  const broker = embedded.broker;
  const CUT = ['twill_broker_connections_cut_total', 'connections closed at a packet header: too large or malformed'] as const;
  const SLOWED = ['twill_broker_connections_slowed_total', 'times a connection publishing faster than its pace was read more slowly (at most once a minute each)'] as const;
  for (const reason of ['too-large', 'malformed']) metrics.declare(...CUT, { reason });
  metrics.declare(...SLOWED);
  const accept = (socket: Socket) => {
    // Each message is a small write that someone waits for: no Nagle delay.
    socket.setNoDelay(true);
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    const conn = guardPackets(socket, MAX_PACKET_BYTES, (p) => {
      metrics.inc(...CUT, 1, { reason: p.kind });
      log.warn('connection closed before reading a packet', {
        remote,
        reason: p.kind === 'too-large' ? `packet of ${p.length} bytes is larger than ${MAX_PACKET_BYTES}` : p.why,
      });
    }, {
      ...CONNECTION_PACE,
      onSlowed: (held) => {
        metrics.inc(...SLOWED);
        log.warn('connection publishing too fast: read more slowly', { remote, held, perSecond: CONNECTION_PACE.perSecond });
      },
    });
    // Where it comes from, for the broker's log (aedes sees only the stream).
    broker.handle(Object.assign(conn, { remoteAddress: socket.remoteAddress }));
  };
  // Connections that come before the controller hears the nodes wait.
  let accepting = false;
  const waiting: Socket[] = [];
  const server = createServer((socket) => {
    if (accepting) return accept(socket);
    socket.on('error', () => {}); // a client gone before it was served
    waiting.push(socket);
  });
  const { host, port } = parseListen(listen);
  const closeBroker = () => new Promise<void>((r) => broker.close(() => r()));
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(listenError(e, listen, '--listen')));
      server.listen(port, host, () => resolve());
    });
  } catch (e) {
    await closeBroker();
    throw e;
  }
  const addr = server.address();
  return {
    url: `mqtt://${authority(host, typeof addr === 'object' && addr ? addr.port : port)}`,
    publisher: new AedesPublisher(broker),
    retained: embedded.retained,
    outlivesController: false,
    revoke: (current) => embedded.revoke(current),
    async start(onMessage) {
      for (const filter of filters(deps.topics)) {
        await new Promise<void>((r) => broker.subscribe(filter, (packet, cb) => { cb(); onMessage(packet.topic, packet.payload as Buffer); }, r));
      }
      accepting = true;
      for (const socket of waiting.splice(0)) if (!socket.destroyed) accept(socket);
    },
    async close() {
      // Not waited for: the broker's close ends the open connections.
      server.close();
      await closeBroker();
    },
  };
}

export interface ExternalBrokerOptions {
  url: string;
  username?: string;
  password?: string;
}

/** A client of an external broker, connected at once. */
export async function externalBroker(o: ExternalBrokerOptions, deps: Pick<BrokerDeps, 'topics' | 'log'>): Promise<HostedBroker> {
  const { topics, log } = deps;
  const auth = { username: o.username, password: o.password };
  const client = await mqtt.connectAsync(o.url, {
    ...auth,
    clientId: `twill-controller-${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
    reconnectPeriod: 1000,
  });
  return {
    url: o.url,
    publisher: new MqttPublisher(client),
    retained: externalRetained(o.url, auth),
    outlivesController: true,
    async start(onMessage) {
      client.on('message', (topic, payload, packet) => {
        // A hello a node left retained on the broker (the embedded broker and
        // IoT Core refuse it; Mosquitto keeps it) would be handled again at
        // every controller start: it is cleared, not handled.
        if (packet.retain && topics.parse(topic)?.kind === 'nodeHello') {
          log.warn('retained hello cleared, not handled: nodes may retain only their status', { topic });
          if (payload.length) void client.publishAsync(topic, '', { qos: 1, retain: true }).catch(() => {});
          return;
        }
        onMessage(topic, payload);
      });
      await client.subscribeAsync(filters(topics), { qos: 1 });
    },
    close: () => client.endAsync(),
  };
}

/**
 * What an external broker retains, for the cleanup (control/tasks/republish.ts):
 * listed over a connection of its own (the controller's would hand every
 * retained status and lease to the message handler), by subscribing to the
 * prefix and collecting the retained messages the broker sends until they
 * stop coming.
 */
function externalRetained(url: string, opts: mqtt.IClientOptions): RetainedLister {
  let seen = new Map<string, string>();
  return {
    async listRetained(prefix: string) {
      seen = new Map();
      const c = await mqtt.connectAsync(url, { ...opts, clientId: `twill-controller-list-${process.pid}-${randomBytes(3).toString('hex')}`, reconnectPeriod: 0, clean: true });
      try {
        let last = Date.now();
        c.on('message', (topic, payload, packet) => {
          if (!packet.retain || !topic.startsWith(prefix)) return;
          seen.set(topic, payload.toString('utf8'));
          last = Date.now();
        });
        const start = Date.now();
        await c.subscribeAsync(`${prefix}#`, { qos: 0 });
        last = Date.now();
        while (Date.now() - last < RETAINED_QUIET_MS && Date.now() - start < RETAINED_LIST_MS) await new Promise((r) => setTimeout(r, RETAINED_QUIET_MS / 5));
      } finally {
        await c.endAsync().catch(() => {});
      }
      return [...seen.keys()].map((topic) => ({ topic }));
    },
    async retained(topic: string) {
      return seen.get(topic);
    },
  };
}
