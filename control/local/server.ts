// `twill controller`: the whole control plane in one process. The SQLite store
// under the data directory, an embedded MQTT broker (or a client of an
// external one), the controller logic on the hello and status topics, lease
// expiry, and a periodic sync that republishes what changed in the store.
import { randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import mqtt from 'mqtt';
import type { Aedes } from 'aedes';
import type { NetConf } from '../../core/config.js';
import { errorMessage, listenError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { Metrics } from '../../core/metrics.js';
import { Topics } from '../../core/topics.js';
import { backendTypesOf, type Cloud, type CloudKind } from '../routes/clouds/cloud.js';
import { createCloud, type CloudOptions } from '../routes/clouds/index.js';
import { MAX_BODY, encodeForClient, handleApi, refuseUnauthorized, type ApiDeps, type ApiResponse } from '../http/api.js';
import { BoundedCredentials, VerifiedCredentials } from '../auth/credentials.js';
import { dashboardAsset } from '../http/dashboard.js';
import { handleNodeApi, SnapshotCache, type NodeApiDeps } from '../http/node-api.js';
import { cleanRetained, type RetainedLister } from '../tasks/republish.js';
import { Sync } from '../tasks/sync.js';
import { Controller } from '../controller/controller.js';
import { reconcileNetwork, type ReconcileReport } from '../routes/routes.js';
import { AedesPublisher } from '../publish/aedes.js';
import { MqttPublisher } from '../publish/mqtt.js';
import { SqliteStore } from '../store/sqlite.js';
import { createBroker } from './broker.js';
import { guardPackets } from './packet-guard.js';
import { makePrivate } from './private-dir.js';
import { collectFabric, MeasuredPublisher } from '../metrics/prometheus.js';
import { lockDataDir } from './lock.js';
import { MAX_PAYLOAD_BYTES } from '../../core/messages.js';
import { KeyedQueue } from '../controller/inbox.js';
import { makeDirs } from '../../core/dirs.js';

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
 * (control/controller/rate-limit.ts) refuse the excess; this keeps a flood from
 * costing even the parse.
 */
const CONNECTION_PACE = { burst: 100, perSecond: 20 };

/** how much of a refused request's body is read and dropped before its connection is cut */
const DRAIN_BYTES = 1024 * 1024;

/**
 * Agents' messages handled at once: each is a few store reads and a write,
 * then waits for its change to be published, so this bounds how many joins
 * of a storm share one batch of changes.
 */
const MESSAGE_CONCURRENCY = 256;

export interface LocalControllerOptions {
  dataDir: string;
  /** host:port for the embedded broker; port 0 picks a free one */
  listen?: string;
  /** an external broker instead of the embedded one */
  brokerUrl?: string;
  brokerUsername?: string;
  brokerPassword?: string;
  prefix?: string;
  networks?: { name: string; config: NetConf }[];
  leaseTtlMs?: number;
  /** how often expired leases are removed and store changes republished */
  syncIntervalMs?: number;
  /** how often retained topics the store no longer backs are deleted from the broker; default 5 minutes */
  cleanIntervalMs?: number;
  /** run the route controller for the networks whose Backend.Type this cloud serves */
  cloud?: { kind: CloudKind; options?: CloudOptions };
  /** how often every cloud network is reconciled; default 30 s */
  reconcileIntervalMs?: number;
  /** host:port for Prometheus metrics (/metrics) and /healthz; port 0 picks a free one */
  metricsAddr?: string;
  /** host:port for the admin HTTP API (/v1/...), the one the CLI uses with --api */
  apiListen?: string;
  /** the admin token; created (0600) with a random token when missing. Default <data-dir>/admin-token */
  adminTokenFile?: string;
  log: Logger;
}

export interface LocalController {
  controller: Controller;
  store: SqliteStore;
  /** the URL agents connect to */
  url: string;
  sync(): Promise<void>;
  /** the cloud the route controller runs against, when one was asked for */
  cloud?: Cloud;
  /** reconciles every network of the cloud now, one after another; a run already going is joined */
  reconcileRoutes(): Promise<ReconcileReport[]>;
  /** what the broker retains (the embedded broker's store, or an external broker listed by subscribing) */
  retained: RetainedLister;
  metrics: Metrics;
  /** the metrics URL, when metricsAddr was given */
  metricsUrl?: string;
  /** the admin API URL, when apiListen was given */
  apiUrl?: string;
  close(): Promise<void>;
}

/** Reads the admin token, creating a random one (readable by the owner only) on first start. */
export function adminTokenOf(file: string): string {
  try {
    const t = readFileSync(file, 'utf8').trim();
    if (t) {
      // A token file outside the data directory is kept private too.
      if (statSync(file).mode & 0o077) chmodSync(file, 0o600);
      return t;
    }
  } catch {
    // first start
  }
  const token = randomBytes(32).toString('base64url');
  makeDirs(dirname(file));
  writeFileSync(file, token + '\n', { mode: 0o600 });
  return token;
}

function tooLarge(): ApiResponse {
  return { status: 413, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ error: `request body larger than ${MAX_BODY} bytes: nothing was changed` }) + '\n' };
}

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`listen address ${JSON.stringify(listen)} is not HOST:PORT (e.g. 127.0.0.1:1883)`);
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port };
}

/** a listing of an external broker's retained messages ends when none has come for this long... */
const RETAINED_QUIET_MS = 250;
/** ...or after this long in all */
const RETAINED_LIST_MS = 30_000;

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

export async function startLocalController(opts: LocalControllerOptions): Promise<LocalController> {
  const log = opts.log;
  const topics = new Topics(opts.prefix);
  for (const r of makePrivate(opts.dataDir)) {
    log.warn('data directory entry was readable by others: made private (it may hold secrets)', { path: r.path, was: r.was });
  }
  // Before anything is read or served: a second controller here is refused, naming the first.
  const lock = lockDataDir(opts.dataDir);
  let store: SqliteStore;
  try {
    store = new SqliteStore(join(opts.dataDir, 'twill.db'));
  } catch (e) {
    lock.release();
    throw e;
  }
  const cleanups: (() => Promise<void> | void)[] = [() => lock.release(), () => store.close()];
  const close = async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
  };

  try {
    const metrics = new Metrics();
    let url: string;
    let controller: Controller;
    let sync: Sync | undefined;
    /** ends the sessions of nodes removed or rotated since they logged in (the embedded broker only) */
    let revokeSessions: (() => Promise<string[]>) | undefined;
    /** what the broker retains, for the cleanup */
    let retained: RetainedLister;
    // One node's messages are handled in the order they came (its hello
    // before its status); different nodes' run side by side, up to a bound,
    // so a join storm is not one long line behind each publish to the broker
    // (and their changes leave in batches, Controller.publishChange).
    const inbox = new KeyedQueue(MESSAGE_CONCURRENCY);
    // The rate limit first: a flood's excess is dropped here, never queued.
    const handle = async (topic: string, payload: Buffer, client?: string) => {
      if (!controller.admit(topic, client)) return;
      await inbox.run(topic.slice(0, topic.lastIndexOf('/')), () => controller.handleMessage(topic, payload, client, true));
    };

    const serve = async (addr: string, flag: string, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> => {
      const { host, port } = parseListen(addr);
      const http = createHttpServer(handler);
      await new Promise<void>((resolve, reject) => {
        http.once('error', (e) => reject(listenError(e, addr, flag)));
        http.listen(port, host, () => resolve());
      });
      cleanups.push(() => new Promise<void>((r) => { http.closeAllConnections(); http.close(() => r()); }));
      const a = http.address();
      return `http://${host.includes(':') ? `[${host}]` : host}:${typeof a === 'object' && a ? a.port : port}`;
    };

    // /metrics: the counters as they stand and the fabric as the store has it now.
    const serveMetrics = (res: ServerResponse) => {
      collectFabric(store, metrics)
        .then(() => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metrics.render()))
        .catch((e) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${errorMessage(e)}\n`));
    };

    // The admin API the CLI uses with --api: the same router the serverless deployment runs.
    // It always runs: agents list their network there (protocol v2). Started
    // before anything is published, since every node's own topic names it.
    let apiUrl: string;
    const credentials = new BoundedCredentials(new VerifiedCredentials(store));
    {
      const adminToken = adminTokenOf(opts.adminTokenFile ?? join(opts.dataDir, 'admin-token'));
      // controller and url are set below, before the first request can matter.
      const deps = {
        store, get controller() { return controller; }, adminToken, get broker() { return url; }, prefix: opts.prefix, log: log.child('api'),
        revokeSessions: async () => revokeSessions?.(),
      } as ApiDeps;
      const nodeDeps: NodeApiDeps = { store, credentials, log: log.child('node-api'), cache: new SnapshotCache() };
      apiUrl = await serve(opts.apiListen ?? `${parseListen(opts.brokerUrl ? '127.0.0.1:0' : (opts.listen ?? '127.0.0.1:1883')).host}:0`, '--api-listen', (req, res) => {
        const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(',') : v]));
        const url = new URL(req.url ?? '/', 'http://api');
        // Prometheus can always scrape here, --metrics-addr or not: no secret and no node name is in it.
        if (url.pathname === '/metrics' && req.method === 'GET') {
          req.resume();
          return serveMetrics(res);
        }
        // Agents read their network's snapshot and changes here (protocol v2), with their own credentials.
        if (url.pathname.startsWith('/v2/')) {
          req.resume();
          handleNodeApi({ method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, headers }, nodeDeps)
            .then((r) => res.writeHead(r.status, r.headers).end(r.body))
            .catch(() => res.writeHead(500).end());
          return;
        }
        const path = url.pathname;
        const send = (r: ApiResponse) => res.writeHead(r.status, r.headers).end(r.body);
        // Refused before a byte of the body is held: without the right token,
        // or announcing more than the limit. The answer goes at once; what the
        // client still sends is read and dropped, and past DRAIN_BYTES the
        // connection is cut.
        const refuse = (r: ApiResponse) => {
          refused = true;
          // (Not Connection: close: Node would then close the socket under a
          // client still sending, whose kernel drops the answer on the reset.)
          res.writeHead(r.status, r.headers).end(r.body);
          let dropped = 0;
          req.removeAllListeners('data');
          req.on('data', (c: Buffer) => { if ((dropped += c.length) > DRAIN_BYTES) req.socket.destroy(); });
          req.resume();
        };
        // The dashboard's page and files: nothing secret, loaded before anyone has signed in.
        const page = req.method === 'GET' ? dashboardAsset(path) : undefined;
        if (page) {
          req.resume();
          return send(page);
        }
        let refused = false;
        const early = refuseUnauthorized({ method: req.method ?? 'GET', path, headers }, deps)
          ?? (Number(req.headers['content-length'] ?? 0) > MAX_BODY ? tooLarge() : undefined);
        if (early) return refuse(early);
        const chunks: Buffer[] = [];
        let size = 0;
        req.on('data', (c: Buffer) => {
          size += c.length;
          if (size <= MAX_BODY) chunks.push(c);
          else refuse(tooLarge()); // a chunked body past the limit
        });
        req.on('end', () => {
          if (refused) return;
          handleApi({ method: req.method ?? 'GET', path, headers, query: url.searchParams, body: chunks.length ? Buffer.concat(chunks).toString('utf8') : undefined }, deps)
            .then((r) => { const out = encodeForClient(r, headers['accept-encoding']); res.writeHead(r.status, out.headers).end(out.body); })
            .catch(() => res.writeHead(500).end());
        });
      });
    }

    // Every address is bound before anything is stored: a port in use stops the start with nothing changed.
    let metricsUrl: string | undefined;
    if (opts.metricsAddr) {
      metricsUrl = await serve(opts.metricsAddr, '--metrics-addr', (req, res) => {
        if (req.url === '/metrics') {
          serveMetrics(res);
        } else if (req.url === '/healthz') {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end('ok\n');
        } else {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('not found: try /metrics or /healthz\n');
        }
      });
    }

    if (opts.brokerUrl) {
      const client = await mqtt.connectAsync(opts.brokerUrl, {
        username: opts.brokerUsername,
        password: opts.brokerPassword,
        clientId: `twill-controller-${process.pid}-${Math.random().toString(16).slice(2, 8)}`,
        reconnectPeriod: 1000,
      });
      cleanups.push(() => client.endAsync());
      controller = new Controller(store, new MeasuredPublisher(new MqttPublisher(client), metrics), { topics, log, leaseTtlMs: opts.leaseTtlMs, metrics });
      controller.api = apiUrl;
      sync = new Sync(controller, store);
      for (const n of opts.networks ?? []) await controller.applyNetwork(n.name, n.config);
      await controller.publishOnStart();
      // An external broker keeps what it retains across controller restarts,
      // leases released while this was down included.
      retained = externalRetained(opts.brokerUrl, { username: opts.brokerUsername, password: opts.brokerPassword });
      await cleanRetained({ store, controller, broker: retained, log })
        .catch((e) => log.warn('retained cleanup failed: the broker may not let this user read everything under the prefix', { reason: errorMessage(e) }));
      client.on('message', (topic, payload, packet) => {
        // A hello a node left retained on the broker (the embedded broker and
        // IoT Core refuse it; Mosquitto keeps it) would be handled again at
        // every controller start: it is cleared, not handled.
        if (packet.retain && topics.parse(topic)?.kind === 'nodeHello') {
          log.warn('retained hello cleared, not handled: nodes may retain only their status', { topic });
          if (payload.length) void client.publishAsync(topic, '', { qos: 1, retain: true }).catch(() => {});
          return;
        }
        void handle(topic, payload);
      });
      await client.subscribeAsync([topics.allHellos(), topics.allStatus(), topics.legacyHellos()], { qos: 1 });
      url = opts.brokerUrl;
    } else {
      const embedded = await createBroker({ credentials, topics, log, metrics });
      const broker: Aedes = embedded.broker;
      retained = embedded.retained;
      revokeSessions = async () => {
        // One read of every node: a session lives only while its node does, with the password it logged in with.
        const nodes = new Map((await store.listNodes()).map((n) => [n.name, n]));
        return embedded.revoke((n) => { const now = nodes.get(n.name); return now !== undefined && now.network === n.network && now.passwordHash === n.passwordHash; });
      };
      cleanups.push(() => new Promise<void>((r) => broker.close(() => r())));
      controller = new Controller(store, new MeasuredPublisher(new AedesPublisher(broker), metrics), { topics, log, leaseTtlMs: opts.leaseTtlMs, metrics });
      controller.api = apiUrl;
      sync = new Sync(controller, store);
      const listen = opts.listen ?? '127.0.0.1:1883';
      const { host, port } = parseListen(listen);
      const CUT = ['twill_broker_connections_cut_total', 'connections closed at a packet header: too large or malformed'] as const;
      const SLOWED = ['twill_broker_connections_slowed_total', 'times a connection publishing faster than its pace was read more slowly (at most once a minute each)'] as const;
      for (const reason of ['too-large', 'malformed']) metrics.declare(...CUT, { reason });
      metrics.declare(...SLOWED);
      // Bound first (a port in use stops the start before anything is stored);
      // connections that come before the controller is subscribed wait.
      let accepting = false;
      const waiting: Socket[] = [];
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
      const server: Server = createServer((socket) => {
        if (accepting) return accept(socket);
        socket.on('error', () => {}); // a client gone before it was served
        waiting.push(socket);
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', (e) => reject(listenError(e, listen, '--listen')));
        server.listen(port, host, () => resolve());
      });
      // Not waited for: the broker's close ends the open connections.
      cleanups.push(() => { server.close(); });
      const addr = server.address();
      const bound = typeof addr === 'object' && addr ? addr.port : port;
      for (const n of opts.networks ?? []) await controller.applyNetwork(n.name, n.config);
      await controller.publishOnStart();
      for (const filter of [topics.allHellos(), topics.allStatus(), topics.legacyHellos()]) {
        await new Promise<void>((r) =>
          broker.subscribe(filter, (packet, cb) => { cb(); void handle(packet.topic, packet.payload as Buffer); }, r),
        );
      }
      accepting = true;
      for (const socket of waiting.splice(0)) if (!socket.destroyed) accept(socket);
      url = `mqtt://${host.includes(':') ? `[${host}]` : host}:${bound}`;
    }

    // Level-triggered: expire leases, republish what another writer wrote.
    const syncOnce = async () => { await (sync as Sync).run(); };
    let syncing = false;
    const timer = setInterval(() => {
      if (syncing) return;
      syncing = true;
      syncOnce()
        .catch((e) => log.error('sync failed', { reason: errorMessage(e) }))
        .finally(() => { syncing = false; });
    }, opts.syncIntervalMs ?? 10_000);
    cleanups.push(() => clearInterval(timer));
    // Retained topics the store no longer backs (a will published as a
    // removed node's agent went, a write that was never published): the
    // same cleanup the serverless schedule runs, on the same rule.
    let cleaning: Promise<unknown> | undefined;
    const cleaner = setInterval(() => {
      cleaning ??= cleanRetained({ store, controller, broker: retained, log })
        .catch((e) => log.error('retained cleanup failed', { reason: errorMessage(e) }))
        .finally(() => { cleaning = undefined; });
    }, opts.cleanIntervalMs ?? 5 * 60_000);
    cleanups.push(async () => { await cleaning; });
    cleanups.push(() => clearInterval(cleaner));
    cleanups.push(() => inbox.idle());
    // A node removed or rotated by a command that wrote the store directly
    // (twill node remove --data-dir) loses its sessions within a second;
    // through the admin API, at once.
    if (revokeSessions) {
      const revoke = revokeSessions;
      const revoker = setInterval(() => void revoke().catch((e) => log.error('session check failed', { reason: errorMessage(e) })), 1000);
      cleanups.push(() => clearInterval(revoker));
    }

    // The route controller: level-triggered, on a schedule. Runs never
    // overlap; a run asked for while one is going gets that run's result.
    let cloud: Cloud | undefined;
    let running: Promise<ReconcileReport[]> | undefined;
    const reconcileRoutes = (): Promise<ReconcileReport[]> => {
      if (!cloud) return Promise.resolve([]);
      const c = cloud;
      running ??= (async () => {
        const reports: ReconcileReport[] = [];
        try {
          for (const n of await store.listNetworks()) {
            if (!(backendTypesOf(c.kind) as readonly string[]).includes(n.config.Backend.Type)) continue;
            try {
              const r = await reconcileNetwork(n.name, { controller, store, cloud: c, log: log.child('routes'), metrics });
              reports.push(r);
              metrics.inc('twill_route_reconciles_total', 'route reconciles by network and result', 1, { network: n.name, result: 'ok' });
              const changed = r.joined + r.released + r.created + r.replaced + r.deleted + r.prepared;
              const fields = {
                network: n.name, instances: r.instances, routes: r.routes, created: r.created, replaced: r.replaced, deleted: r.deleted,
                joined: r.joined, released: r.released, pending: Object.keys(r.pending).length, errors: Object.keys(r.errors).length,
              };
              if (changed) log.info('network reconciled', fields);
              else log.debug('network reconciled', fields);
            } catch (e) {
              metrics.inc('twill_route_reconciles_total', 'route reconciles by network and result', 1, { network: n.name, result: 'error' });
              log.error('reconcile failed', { network: n.name, reason: errorMessage(e) });
            }
          }
        } finally {
          running = undefined;
        }
        return reports;
      })();
      return running;
    };
    if (opts.cloud) {
      cloud = await createCloud(opts.cloud.kind, { dataDir: opts.dataDir, ...opts.cloud.options });
      const c = cloud;
      cleanups.push(() => c.close?.());
      // Closed before the cloud, after a reconcile in flight has finished.
      const routeTimer = setInterval(() => void reconcileRoutes(), opts.reconcileIntervalMs ?? 30_000);
      cleanups.push(() => running?.then(() => {}));
      cleanups.push(() => clearInterval(routeTimer));
      void reconcileRoutes();
      log.info('route controller running', { cloud: c.kind, everyMs: opts.reconcileIntervalMs ?? 30_000 });
    }

    // With an external broker, agents on other hosts still list their
    // network from this process: a loopback node API is one they never reach.
    if (opts.brokerUrl && !opts.apiListen) {
      log.warn('the node API listens on loopback: agents on other hosts cannot list their network; set --api-listen HOST:PORT to an address they reach', { api: apiUrl });
    }
    // What `twill node add` writes into agent configs (cli/data-dir.ts servedBroker): the broker as served, not a guess.
    writeFileSync(join(opts.dataDir, 'endpoints.json'), JSON.stringify({ broker: url, api: apiUrl }) + '\n', { mode: 0o600 });
    log.info('controller ready', { broker: url, dataDir: opts.dataDir, ...(metricsUrl ? { metrics: metricsUrl } : {}), api: apiUrl, dashboard: `${apiUrl}/dashboard/` });
    return { controller, store, url, sync: syncOnce, cloud, reconcileRoutes, metrics, metricsUrl, apiUrl, retained, close };
  } catch (e) {
    await close();
    throw e;
  }
}
