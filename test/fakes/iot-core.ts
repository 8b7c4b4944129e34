// A stand-in for AWS IoT Core's device side, on loopback, so an agent can be
// tested with exactly the connection it would open to IoT Core:
//   - MQTT over TLS that requires the ALPN protocol "mqtt" (what IoT Core
//     requires for custom authentication on 443) and records the SNI name;
//   - MQTT over WebSocket over TLS on the path /mqtt;
//   - a custom authorizer: every CONNECT becomes the event IoT Core sends
//     (protocols, protocolData.tls/mqtt/http, connectionMetadata; the
//     password base64-encoded) and the given authorizer's answer decides;
//     the authorizer must be named (username query string, or the WebSocket
//     URL's query string) and must be the one configured;
//   - the returned policy enforced on connect (iot:Connect on the client
//     id), publish, retained publish, subscribe and receive, with IoT
//     policy wildcards ('*' any characters, '?' one);
//   - topic rules: a publish matching a rule's filter invokes it with what
//     `SELECT topic() AS topic, clientid() AS clientId, encode(*, 'base64')
//     AS payload` gives;
//   - a plain, unauthenticated listener for the fake data plane
//     (test/fakes/iot-data.ts) to publish through, as IoT Core's HTTP
//     Publish does behind the scenes.
//   - IoT Core's own rules where they differ from MQTT or set a limit, each
//     enforced as IoT Core does or stricter (developer guide: "MQTT", its
//     "AWS IoT differences from MQTT specifications", "Using
//     connectAttributes", and the IoT Core quotas page):
//       * a retained message goes only to a subscription whose filter is
//         exactly its topic, never to a filter with '+' or '#';
//       * at most 50 subscriptions per connection and 8 topic filters per
//         SUBSCRIBE (past either, the connection is closed);
//       * a publish larger than 128 KB is refused and the connection closed;
//       * at most 100 publishes a second are delivered to one connection
//         (IoT Core throttles; here the excess is dropped and counted);
//       * a CONNECT with a last will needs the policy's iot:Connect to grant
//         iot:ConnectAttributes LastWill;
//       * an authorizer answer with a policy document over 2,048 characters,
//         or more than 10 documents, refuses the connection;
//       * at most 1 CONNECT a second per client id ("Connect requests per
//         second per client ID", quotas page: 1, not adjustable); past it the
//         CONNECT is throttled (CloudWatch's Connect.ClientIDThrottle): the
//         connection is closed with no CONNACK, and the attempt is recorded.
//         It runs on real time, whatever the time scale below.
//   - custom authentication's clock ("Custom authentication" / "Defining your
//     Lambda function", developer guide):
//       * the authorizer has 5 seconds ("The Lambda function timeout limit
//         for custom authorizer is 5 seconds"): a slower answer refuses the
//         CONNECT, and ends a connection at a refresh;
//       * its answer is checked: principalId [a-zA-Z0-9]{1,128},
//         refreshAfterInSeconds and disconnectAfterInSeconds whole numbers
//         from 300 to 86,400; anything else refuses the connection;
//       * every refreshAfterInSeconds IoT Core "invokes the Lambda function to
//         allow for policy refreshes", and "if failures occur during custom
//         authentication, AWS IoT Core terminates the connection": a refusal,
//         an error, a late answer or a policy no longer allowing iot:Connect
//         closes it, and an accepted answer's policy replaces the old one;
//       * a connection "open for longer than the value specified in the
//         disconnectAfterInSeconds parameter" is terminated (counted from the
//         CONNECT; a refresh's answer may shorten it, never lengthen it);
//       * a connection IoT Core terminates publishes its last will, as any
//         end without DISCONNECT does (MQTT 3.1.1 §3.1.2.5).
//     timeScale shortens that clock for tests (0.001: an hour lasts 3.6 s);
//     the numbers stay the authorizer's own.
//   - retained messages ("Using MQTT retained messages", developer guide):
//     every retained publish of the account, from devices, wills and the
//     data plane, is kept in one place (retained, which the data-plane
//     stand-in lists and reads), and the account's quota ("Maximum number of
//     retained messages per account", quotas page; retainedQuota here, so a
//     test can make it small) applies to all: at it, a retained publish with
//     a payload is throttled until some are deleted. A device's is refused
//     and its connection closed (MQTT 3.1.1 has no negative PUBACK); a will
//     is not published.
// aedes does the MQTT. The TLS certificate is made by the caller.
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import type { IoTCustomAuthorizerEvent, IoTCustomAuthorizerResult } from 'aws-lambda';
import { WebSocketServer, createWebSocketStream } from 'ws';
import { createRequire } from 'node:module';
import type { AedesPersistence } from 'aedes-persistence';
import { RetainedMessages } from './iot-data.js';

// CommonJS, module.exports = factory (its types declare an ES default export instead).
const memoryPersistence = createRequire(import.meta.url)('aedes-persistence') as () => AedesPersistence;
type RetainedPacket = { topic: string; payload: Buffer | string; qos?: number };

export interface IotRule {
  /** MQTT topic filter, as in the rule's FROM */
  filter: string;
  invoke(event: { topic: string; clientId: string; payload: string }): Promise<void>;
}

export interface FakeIotCoreOptions {
  cert: string;
  key: string;
  authorizerName: string;
  /** where the authorizer's policy ARNs point */
  region: string;
  accountId: string;
  authorize(event: IoTCustomAuthorizerEvent): Promise<IoTCustomAuthorizerResult>;
  rules?: IotRule[];
  /**
   * The address every listener binds (default 127.0.0.1); the certificate
   * must name it. The end-to-end tests serve hosts in network namespaces
   * from their router's address.
   */
  host?: string;
  /** real seconds per second of the authorizer's refresh and disconnect clock (default 1) */
  timeScale?: number;
  /** the account's "Maximum number of retained messages per account" (default 500,000) */
  retainedQuota?: number;
  /** told as the stand-in ends a connection on its own, before the client sees it go */
  onEnded?(e: ConnectionEnded): void;
}

/** What the stand-in did to a live connection on its own. */
export interface ConnectionEnded {
  clientId: string;
  reason: 'disconnectAfterInSeconds' | 'refresh refused';
  detail?: string;
}

export interface ConnectionSeen {
  transport: 'mqtts' | 'wss';
  sni?: string;
  alpn?: string | false | null;
  username?: string;
  clientId: string;
  authorizer?: string;
  accepted: boolean;
  reason?: string;
}

export interface FakeIotCore {
  /** mqtts://localhost:PORT (or the host given) */
  mqttsUrl: string;
  /** wss://localhost:PORT/mqtt */
  wssUrl: string;
  /** mqtt://127.0.0.1:PORT, unauthenticated: for the data-plane fake only */
  internalUrl: string;
  readonly connections: ConnectionSeen[];
  /** publishes and subscriptions the policy refused */
  readonly refusals: string[];
  /** rule invocations that failed */
  readonly ruleErrors: string[];
  /** deliveries dropped by the per-connection publish rate */
  readonly throttled: number;
  /** retained messages withheld from wildcard subscriptions */
  readonly withheldRetained: number;
  /** CONNECTs throttled for coming within a second of the client id's last one */
  readonly connectThrottled: number;
  /** the authorizer called again on live connections, and whether the connection stayed */
  readonly refreshes: { clientId: string; accepted: boolean; reason?: string }[];
  /** connections the stand-in closed: at disconnectAfterInSeconds, or on a refused refresh */
  readonly ended: ConnectionEnded[];
  /** the account's retained messages, with its quota */
  readonly retained: RetainedMessages;
  /** what the data plane's Publish does inside IoT Core: deliver, and retain when asked */
  publish(topic: string, payload: Buffer, qos: 0 | 1, retain: boolean): Promise<void>;
  /**
   * What the data plane's DeleteConnection does: closes the client's
   * connection, dropping its session when cleanSession and its last will
   * when preventWillMessage; false when no such client is connected.
   */
  disconnect(clientId: string, o: { cleanSession: boolean; preventWillMessage: boolean }): boolean;
  close(): Promise<void>;
}

const AUTHORIZER_QUERY = 'x-amz-customauthorizer-name';

/** IoT policy resource pattern -> RegExp ('*' any run of characters, '?' exactly one). */
function policyRegex(pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

function allowed(result: IoTCustomAuthorizerResult, action: string, resource: string): boolean {
  let allow = false;
  for (const doc of result.policyDocuments) {
    for (const st of doc.Statement) {
      const actions = ([] as string[]).concat((st as { Action?: string | string[] }).Action ?? []);
      const resources = ([] as string[]).concat((st as { Resource?: string | string[] }).Resource ?? []);
      if (!actions.some((a) => policyRegex(a).test(action))) continue;
      if (!resources.some((r) => policyRegex(r).test(resource))) continue;
      if (st.Effect === 'Deny') return false;
      allow = true;
    }
  }
  return allow;
}

/** MQTT filter matching, '+' one level and '#' the rest. */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/** IoT Core's limits (the quotas page, and "Defining your Lambda function" for the authorizer's). */
export const IOT_LIMITS = {
  subscriptionsPerConnection: 50, filtersPerSubscribe: 8, payloadBytes: 128 * 1024, outboundPerSecond: 100, policyChars: 2048, policyDocuments: 10,
  connectIntervalPerClientIdMs: 1000, authorizerDeadlineMs: 5000, minAuthorizerSeconds: 300, maxAuthorizerSeconds: 86_400,
};

/** Why IoT Core would not take this authorizer answer, if it would not. */
function answerProblem(r: IoTCustomAuthorizerResult): string | undefined {
  if (typeof r?.isAuthenticated !== 'boolean') return 'isAuthenticated is not a boolean';
  if (!r.isAuthenticated) return undefined;
  if (typeof r.principalId !== 'string' || !/^[a-zA-Z0-9]{1,128}$/.test(r.principalId)) return `principalId ${JSON.stringify(r.principalId)} is not [a-zA-Z0-9]{1,128}`;
  for (const f of ['refreshAfterInSeconds', 'disconnectAfterInSeconds'] as const) {
    const v = r[f];
    if (!Number.isInteger(v) || v < IOT_LIMITS.minAuthorizerSeconds || v > IOT_LIMITS.maxAuthorizerSeconds) return `${f} ${v} is not a whole number from ${IOT_LIMITS.minAuthorizerSeconds} to ${IOT_LIMITS.maxAuthorizerSeconds}`;
  }
  if (!Array.isArray(r.policyDocuments)) return 'policyDocuments is not a list';
  if (r.policyDocuments.length > IOT_LIMITS.policyDocuments) return `the authorizer returned ${r.policyDocuments.length} policy documents (at most ${IOT_LIMITS.policyDocuments})`;
  for (const d of r.policyDocuments) {
    if (JSON.stringify(d).length > IOT_LIMITS.policyChars) return `a policy document of ${JSON.stringify(d).length} characters (at most ${IOT_LIMITS.policyChars})`;
  }
  return undefined;
}

/** The authorizer's answer, or a rejection once IoT Core's deadline has passed. */
function withinDeadline<T>(p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the authorizer did not answer within ${IOT_LIMITS.authorizerDeadlineMs / 1000} s`)), IOT_LIMITS.authorizerDeadlineMs);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** The connect attributes a CONNECT uses, and whether the policy's iot:Connect grants them all. */
function connectAttributesAllowed(result: IoTCustomAuthorizerResult, clientArn: string, used: string[]): boolean {
  if (used.length === 0) return true;
  for (const doc of result.policyDocuments) {
    for (const st of doc.Statement as { Effect: string; Action?: string | string[]; Resource?: string | string[]; Condition?: Record<string, Record<string, string[]>> }[]) {
      const actions = ([] as string[]).concat(st.Action ?? []);
      const resources = ([] as string[]).concat(st.Resource ?? []);
      if (st.Effect !== 'Allow' || !actions.some((a) => policyRegex(a).test('iot:Connect')) || !resources.some((r) => policyRegex(r).test(clientArn))) continue;
      const granted = st.Condition?.['ForAllValues:StringEquals']?.['iot:ConnectAttributes'] ?? [];
      if (used.every((u) => granted.includes(u))) return true;
    }
  }
  return false;
}

function authError(message: string, code: 4 | 5): AuthenticateError {
  return Object.assign(new Error(message), { returnCode: code }) as AuthenticateError;
}

function listen(server: NetServer | TlsServer | HttpsServer, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve((server.address() as AddressInfo).port));
  });
}

export async function startFakeIotCore(opts: FakeIotCoreOptions): Promise<FakeIotCore> {
  const connections: ConnectionSeen[] = [];
  const refusals: string[] = [];
  const ruleErrors: string[] = [];
  const trusted = new WeakSet<object>();
  const policies = new WeakMap<Client, IoTCustomAuthorizerResult>();
  const connectPackets = new WeakMap<Client, { will: boolean; clean: boolean }>();
  const subscriptions = new WeakMap<Client, Set<string>>();
  const rate = new WeakMap<Client, { second: number; count: number }>();
  let throttled = 0;
  let withheldRetained = 0;
  const arnPrefix = `arn:aws:iot:${opts.region}:${opts.accountId}:`;
  let nextConnection = 1;
  const scale = opts.timeScale ?? 1;
  if (!(scale > 0)) throw new Error(`timeScale ${scale} must be above 0`);
  const retained = new RetainedMessages(opts.retainedQuota);
  const lastConnect = new Map<string, number>();
  let connectThrottled = 0;
  const refreshes: FakeIotCore['refreshes'] = [];
  const ended: ConnectionEnded[] = [];
  /** each live custom-auth connection's refresh and lifetime timers */
  const clocks = new Map<Client, { refresh?: NodeJS.Timeout; end?: NodeJS.Timeout; endsAt: number }>();
  const stopClock = (client: Client) => {
    const c = clocks.get(client);
    clearTimeout(c?.refresh);
    clearTimeout(c?.end);
    clocks.delete(client);
  };
  const clientArn = (client: Client) => `${arnPrefix}client/${client.id}`;
  const endConnection = (client: Client, reason: ConnectionEnded['reason'], detail?: string) => {
    if (!clocks.has(client)) return;
    stopClock(client);
    if (client.closed) return;
    const e: ConnectionEnded = { clientId: client.id, reason, ...(detail ? { detail } : {}) };
    ended.push(e);
    opts.onEnded?.(e);
    client.close();
  };
  /** The connection's clock from an accepted answer: the next refresh, and its end (never later than set before). */
  const runClock = (client: Client, event: IoTCustomAuthorizerEvent, result: IoTCustomAuthorizerResult) => {
    const c = clocks.get(client) ?? { endsAt: Infinity };
    clocks.set(client, c);
    const endsAt = Math.min(c.endsAt, Date.now() + result.disconnectAfterInSeconds * 1000 * scale);
    if (endsAt !== c.endsAt) {
      clearTimeout(c.end);
      c.endsAt = endsAt;
      c.end = setTimeout(() => endConnection(client, 'disconnectAfterInSeconds'), endsAt - Date.now()).unref();
    }
    clearTimeout(c.refresh);
    c.refresh = setTimeout(() => {
      withinDeadline(opts.authorize(event))
        .then((r) => {
          if (!clocks.has(client) || client.closed) return stopClock(client);
          const problem = answerProblem(r) ?? (r.isAuthenticated ? undefined : 'the authorizer refused the connection');
          const connect = !problem && allowed(r, 'iot:Connect', clientArn(client)) ? undefined : problem ?? `the policy no longer allows iot:Connect for client ${client.id}`;
          refreshes.push({ clientId: client.id, accepted: !connect, ...(connect ? { reason: connect } : {}) });
          if (connect) return endConnection(client, 'refresh refused', connect);
          policies.set(client, r);
          runClock(client, event, r);
        })
        .catch((e: Error) => {
          if (!clocks.has(client)) return;
          refreshes.push({ clientId: client.id, accepted: false, reason: e.message });
          endConnection(client, 'refresh refused', e.message);
        });
    }, result.refreshAfterInSeconds * 1000 * scale).unref();
  };

  // aedes' in-memory persistence, with every retained message the broker
  // stores counted in the account's (the data plane lists and reads them).
  const persistence = memoryPersistence();
  const storeRetained = persistence.storeRetained.bind(persistence) as (packet: RetainedPacket, cb?: (err?: Error | null) => void) => unknown;
  (persistence as { storeRetained: unknown }).storeRetained = (packet: RetainedPacket, cb?: (err?: Error | null) => void) => {
    retained.put(packet.topic, Buffer.from(packet.payload), packet.qos === 1 ? 1 : 0);
    return storeRetained(packet, cb);
  };

  const broker = await Aedes.createBroker({
    persistence,
    preConnect(client, packet, done) {
      if (!trusted.has(client.conn)) {
        const id = (packet as { clientId?: string }).clientId ?? '';
        const now = Date.now();
        const last = lastConnect.get(id);
        if (last !== undefined && now - last < IOT_LIMITS.connectIntervalPerClientIdMs) {
          connectThrottled++;
          connections.push({ transport: client.req ? 'wss' : 'mqtts', clientId: id, accepted: false, reason: 'throttled: more than 1 CONNECT a second for this client id' });
          return done(new Error('CONNECT throttled for this client id'), false);
        }
        lastConnect.set(id, now);
      }
      connectPackets.set(client, { will: !!(packet as { will?: unknown }).will, clean: (packet as { clean?: boolean }).clean !== false });
      // One SUBSCRIBE of more than 8 filters closes the connection (seen before aedes handles it).
      (client as unknown as { _parser: { prependListener(e: string, f: (p: { cmd: string; subscriptions?: unknown[] }) => void): void } })._parser.prependListener('packet', (p) => {
        if (p.cmd === 'subscribe' && (p.subscriptions?.length ?? 0) > IOT_LIMITS.filtersPerSubscribe && !trusted.has(client.conn)) {
          refusals.push(`subscribe ${client.id}: ${p.subscriptions?.length} filters in one SUBSCRIBE (at most ${IOT_LIMITS.filtersPerSubscribe})`);
          client.close();
        }
      });
      done(null, true);
    },
    authenticate(client, username, password, done) {
      if (trusted.has(client.conn)) return done(null, true);
      const tls = (client.req ? (client.req.socket as TLSSocket) : (client.conn as TLSSocket));
      const wsUrl = client.req ? new URL(client.req.url ?? '/', 'https://localhost') : undefined;
      const seen: ConnectionSeen = {
        transport: client.req ? 'wss' : 'mqtts',
        sni: (tls as TLSSocket & { servername?: string }).servername || undefined,
        alpn: tls.alpnProtocol,
        username,
        clientId: client.id,
        accepted: false,
      };
      connections.push(seen);
      const refuse = (reason: string, code: 4 | 5 = 5) => {
        seen.reason = reason;
        done(authError(reason, code), false);
      };
      const q = username?.indexOf('?') ?? -1;
      const fromUsername = username && q >= 0 ? new URLSearchParams(username.slice(q + 1)).get(AUTHORIZER_QUERY) ?? undefined : undefined;
      seen.authorizer = fromUsername ?? wsUrl?.searchParams.get(AUTHORIZER_QUERY) ?? undefined;
      if (!seen.authorizer) return refuse('no authorizer named and no default authorizer');
      if (seen.authorizer !== opts.authorizerName) return refuse(`authorizer ${seen.authorizer} does not exist`);
      const event: IoTCustomAuthorizerEvent = {
        signatureVerified: false,
        protocols: client.req ? ['tls', 'http', 'mqtt'] : ['tls', 'mqtt'],
        protocolData: {
          tls: { serverName: seen.sni ?? '' },
          ...(client.req
            ? { http: { headers: Object.fromEntries(Object.entries(client.req.headers).map(([k, v]) => [k, String(v)])), queryString: wsUrl?.search.slice(1) ?? '' } }
            : {}),
          mqtt: { username: username as string, password: password ? password.toString('base64') : (undefined as unknown as string), clientId: client.id },
        },
        connectionMetadata: { id: `fake-connection-${nextConnection++}` },
      };
      withinDeadline(opts.authorize(event))
        .then((result) => {
          const problem = answerProblem(result);
          if (problem) return refuse(problem);
          if (!result.isAuthenticated) return refuse('authorizer refused the connection', 4);
          if (!allowed(result, 'iot:Connect', clientArn(client))) return refuse(`policy does not allow iot:Connect for client ${client.id}`);
          const cp = connectPackets.get(client);
          const used = [...(cp?.will ? ['LastWill'] : []), ...(cp && !cp.clean ? ['PersistentConnect'] : [])];
          if (!connectAttributesAllowed(result, `${arnPrefix}client/${client.id}`, used)) return refuse(`policy does not grant iot:ConnectAttributes ${used.join(', ')} for client ${client.id}`);
          // A client gone while the authorizer thought gets no clock.
          if (client.closed) return refuse('the client closed the connection');
          policies.set(client, result);
          runClock(client, event, result);
          seen.accepted = true;
          done(null, true);
        })
        .catch((e: Error) => refuse(`authorizer failed: ${e.message}`, 5));
    },
    authorizePublish(client, packet, done) {
      if (!client || trusted.has(client.conn)) return done(null);
      if (Buffer.byteLength(packet.payload as Buffer) > IOT_LIMITS.payloadBytes) {
        refusals.push(`publish ${client.id} ${packet.topic}: ${Buffer.byteLength(packet.payload as Buffer)} bytes (at most ${IOT_LIMITS.payloadBytes})`);
        return done(new Error('payload too large'));
      }
      const p = policies.get(client);
      const topicArn = `${arnPrefix}topic/${packet.topic}`;
      if (!p || !allowed(p, 'iot:Publish', topicArn) || (packet.retain && !allowed(p, 'iot:RetainPublish', topicArn))) {
        refusals.push(`publish ${client.id} ${packet.topic}${packet.retain ? ' (retained)' : ''}`);
        return done(new Error('not authorized'));
      }
      if (packet.retain && retained.throttles(Buffer.byteLength(packet.payload as Buffer))) {
        refusals.push(`publish ${client.id} ${packet.topic} (retained): the account is at its ${retained.quota} retained messages`);
        return done(new Error('retained message quota reached'));
      }
      done(null);
    },
    authorizeSubscribe(client, sub, done) {
      if (trusted.has(client.conn)) return done(null, sub);
      const p = policies.get(client);
      if (!p || !allowed(p, 'iot:Subscribe', `${arnPrefix}topicfilter/${sub.topic}`)) {
        refusals.push(`subscribe ${client.id} ${sub.topic}`);
        return done(null, null);
      }
      const subs = subscriptions.get(client) ?? new Set<string>();
      subscriptions.set(client, subs);
      subs.add(sub.topic);
      if (subs.size > IOT_LIMITS.subscriptionsPerConnection) {
        refusals.push(`subscribe ${client.id}: more than ${IOT_LIMITS.subscriptionsPerConnection} subscriptions`);
        client.close();
        return done(null, null);
      }
      done(null, sub);
    },
    authorizeForward(client, packet) {
      if (trusted.has(client.conn)) return packet;
      const p = policies.get(client);
      if (!p || !allowed(p, 'iot:Receive', `${arnPrefix}topic/${packet.topic}`)) return null;
      // A retained message only to an exact-topic subscription, never through a wildcard.
      if (packet.retain && !subscriptions.get(client)?.has(packet.topic)) {
        withheldRetained++;
        return null;
      }
      const second = Math.floor(Date.now() / 1000);
      const r = rate.get(client);
      if (!r || r.second !== second) rate.set(client, { second, count: 1 });
      else if (++r.count > IOT_LIMITS.outboundPerSecond) {
        throttled++;
        return null;
      }
      return packet;
    },
  });

  broker.on('clientDisconnect', (client) => stopClock(client));

  // Topic rules: on publishes from devices, as IoT Core runs them. Those in
  // flight are waited for on close, and none starts after it (a will
  // published as the last agent goes must not reach a store already closed).
  const running = new Set<Promise<void>>();
  let closing = false;
  broker.on('publish', (packet, client) => {
    if (!client || trusted.has(client.conn) || closing) return;
    for (const rule of opts.rules ?? []) {
      if (!topicMatches(rule.filter, packet.topic)) continue;
      const run = rule
        .invoke({ topic: packet.topic, clientId: client.id, payload: Buffer.from(packet.payload).toString('base64') })
        .catch((e: Error) => { ruleErrors.push(`${rule.filter}: ${e.message}`); });
      running.add(run);
      void run.finally(() => running.delete(run));
    }
  });

  const tlsServer = createTlsServer({ cert: opts.cert, key: opts.key, ALPNProtocols: ['mqtt'] }, (socket) => {
    // IoT Core closes a custom-auth connection on 443 that did not negotiate "mqtt".
    if (socket.alpnProtocol !== 'mqtt') {
      connections.push({ transport: 'mqtts', sni: (socket as TLSSocket & { servername?: string }).servername, alpn: socket.alpnProtocol, clientId: '', accepted: false, reason: 'no ALPN mqtt' });
      socket.destroy();
      return;
    }
    broker.handle(socket);
  });
  const https: HttpsServer = createHttpsServer({ cert: opts.cert, key: opts.key });
  const wss = new WebSocketServer({ server: https, path: '/mqtt' });
  wss.on('connection', (ws, req: IncomingMessage) => broker.handle(createWebSocketStream(ws), req));
  const internal: NetServer = createNetServer((socket: Socket) => {
    trusted.add(socket);
    broker.handle(socket);
  });

  const host = opts.host ?? '127.0.0.1';
  const name = opts.host ?? 'localhost';
  const tlsPort = await listen(tlsServer, host);
  const httpsPort = await listen(https, host);
  const internalPort = await listen(internal, '127.0.0.1');

  return {
    mqttsUrl: `mqtts://${name}:${tlsPort}`,
    wssUrl: `wss://${name}:${httpsPort}/mqtt`,
    internalUrl: `mqtt://127.0.0.1:${internalPort}`,
    connections,
    refusals,
    ruleErrors,
    get throttled() { return throttled; },
    get withheldRetained() { return withheldRetained; },
    get connectThrottled() { return connectThrottled; },
    refreshes,
    ended,
    retained,
    publish(topic, payload, qos, retain) {
      return new Promise<void>((resolve, reject) => {
        broker.publish({ cmd: 'publish', topic, payload, qos, retain, dup: false }, (err) => (err ? reject(err) : resolve()));
      });
    },
    disconnect(clientId, o) {
      const client = (broker as unknown as { clients: Record<string, Client | undefined> }).clients[clientId];
      if (!client || trusted.has(client.conn)) return false;
      if (o.preventWillMessage) (client as unknown as { will: unknown }).will = null;
      if (o.cleanSession) (client as unknown as { clean: boolean }).clean = true;
      client.close();
      return true;
    },
    async close() {
      closing = true;
      for (const client of [...clocks.keys()]) stopClock(client);
      await Promise.all([...running]);
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => broker.close(() => r()));
      for (const s of [tlsServer, internal] as NetServer[]) await new Promise<void>((r) => s.close(() => r()));
      https.closeAllConnections();
      await new Promise<void>((r) => wss.close(() => r()));
      await new Promise<void>((r) => https.close(() => r()));
    },
  };
}
