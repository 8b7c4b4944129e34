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
//         or more than 10 documents, refuses the connection.
// aedes does the MQTT. The TLS certificate is made by the caller.
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import type { IoTCustomAuthorizerEvent, IoTCustomAuthorizerResult } from 'aws-lambda';
import { WebSocketServer, createWebSocketStream } from 'ws';

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

/** IoT Core's limits (the quotas page). */
export const IOT_LIMITS = { subscriptionsPerConnection: 50, filtersPerSubscribe: 8, payloadBytes: 128 * 1024, outboundPerSecond: 100, policyChars: 2048, policyDocuments: 10 };

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

  const broker = await Aedes.createBroker({
    preConnect(client, packet, done) {
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
      opts
        .authorize(event)
        .then((result) => {
          if (!result.isAuthenticated) return refuse('authorizer refused the connection', 4);
          if (result.policyDocuments.length > IOT_LIMITS.policyDocuments) return refuse(`the authorizer returned ${result.policyDocuments.length} policy documents (at most ${IOT_LIMITS.policyDocuments})`);
          for (const d of result.policyDocuments) {
            if (JSON.stringify(d).length > IOT_LIMITS.policyChars) return refuse(`a policy document of ${JSON.stringify(d).length} characters (at most ${IOT_LIMITS.policyChars})`);
          }
          if (!allowed(result, 'iot:Connect', `${arnPrefix}client/${client.id}`)) return refuse(`policy does not allow iot:Connect for client ${client.id}`);
          const cp = connectPackets.get(client);
          const used = [...(cp?.will ? ['LastWill'] : []), ...(cp && !cp.clean ? ['PersistentConnect'] : [])];
          if (!connectAttributesAllowed(result, `${arnPrefix}client/${client.id}`, used)) return refuse(`policy does not grant iot:ConnectAttributes ${used.join(', ')} for client ${client.id}`);
          policies.set(client, result);
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
