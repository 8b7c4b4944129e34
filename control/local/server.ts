// `twill controller`: the whole control plane in one process. The host of
// the plane (control/plane.ts): the SQLite store under the data directory,
// the HTTP listeners (admin API, node API, dashboard, /metrics), an embedded
// MQTT broker (or a client of an external one) whose hellos and statuses go
// to the plane, and the timers that run the plane's periodic tasks: lease
// expiry and publishing what another writer wrote, the retained cleanup, the
// cloud route reconcile, and ending the sessions of removed nodes.
import { randomBytes } from 'node:crypto';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { NetConf } from '../../core/config.js';
import { makeDirs } from '../../core/dirs.js';
import { errorMessage } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { Metrics } from '../../core/metrics.js';
import { Topics } from '../../core/topics.js';
import { BoundedCredentials, VerifiedCredentials } from '../auth/credentials.js';
import type { Controller } from '../controller/controller.js';
import type { Surface } from '../http/router.js';
import { MeasuredPublisher } from '../metrics/prometheus.js';
import { createControlPlane, type ControlPlane } from '../plane.js';
import { cloudServing, type Cloud, type CloudKind } from '../routes/clouds/cloud.js';
import { createCloud, type CloudOptions } from '../routes/clouds/index.js';
import { SqliteStore } from '../store/sqlite.js';
import type { RetainedLister } from '../tasks/republish.js';
import { embeddedBroker, externalBroker, type HostedBroker } from './hosted-broker.js';
import { listenHttp, parseListen } from './http.js';
import { lockDataDir } from './lock.js';
import { makePrivate } from './private-dir.js';

/** What each listener serves: the API address everything but /healthz, --metrics-addr only what a scraper reads. */
const API_SURFACES: ReadonlySet<Surface> = new Set(['admin', 'node', 'metrics']);
const METRICS_SURFACES: ReadonlySet<Surface> = new Set(['metrics', 'health']);

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
  plane: ControlPlane;
  controller: Controller;
  store: SqliteStore;
  /** the URL agents connect to */
  url: string;
  /** the cloud the route controller runs against, when one was asked for */
  cloud?: Cloud;
  /** what the broker retains (the embedded broker's store, or an external broker listed by subscribing) */
  retained: RetainedLister;
  metrics: Metrics;
  /** the metrics URL, when metricsAddr was given */
  metricsUrl?: string;
  /** the admin API URL */
  apiUrl: string;
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

/**
 * Runs task every ms, never two at once; a failure is logged. Returns the
 * stop, which waits for a run in flight.
 */
function every(ms: number, task: () => Promise<unknown>, failed: (e: unknown) => void): () => Promise<void> {
  let running: Promise<unknown> | undefined;
  const timer = setInterval(() => {
    running ??= task().catch(failed).finally(() => { running = undefined; });
  }, ms);
  return async () => {
    clearInterval(timer);
    await running;
  };
}

/** A promise and its resolve and reject: what the listeners bound before the plane wait on. */
function later<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

export async function startLocalController(opts: LocalControllerOptions): Promise<LocalController> {
  const log = opts.log;
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
  // The listeners are bound before the plane is built; what comes meanwhile waits for it.
  const ready = later<ControlPlane>();
  try {
    const metrics = new Metrics();
    const topics = new Topics(opts.prefix);
    const credentials = new BoundedCredentials(new VerifiedCredentials(store));
    const adminToken = adminTokenOf(opts.adminTokenFile ?? join(opts.dataDir, 'admin-token'));
    // Every address is bound before anything is stored: a port in use stops the start with nothing changed.
    // The API always runs: agents list their network there (protocol v2), and every node's own topic names it.
    const apiAddr = opts.apiListen ?? `${parseListen(opts.brokerUrl ? '127.0.0.1:0' : (opts.listen ?? '127.0.0.1:1883')).host}:0`;
    const api = await listenHttp(apiAddr, '--api-listen', ready.promise.then((p) => (req) => p.http(req, API_SURFACES)));
    cleanups.push(() => api.close());
    const metricsListener = opts.metricsAddr ? await listenHttp(opts.metricsAddr, '--metrics-addr', ready.promise.then((p) => (req) => p.http(req, METRICS_SURFACES))) : undefined;
    if (metricsListener) cleanups.push(() => metricsListener.close());
    const broker: HostedBroker = opts.brokerUrl
      ? await externalBroker({ url: opts.brokerUrl, username: opts.brokerUsername, password: opts.brokerPassword }, { topics, log })
      : await embeddedBroker(opts.listen ?? '127.0.0.1:1883', { topics, log, metrics, credentials });
    cleanups.push(() => broker.close());
    const cloud = opts.cloud && (await createCloud(opts.cloud.kind, { dataDir: opts.dataDir, ...opts.cloud.options }));
    if (cloud) cleanups.push(() => cloud.close?.());
    const revoke = broker.revoke;
    // One read of every node: a session lives only while its node does, with the password it logged in with.
    const revokeSessions = revoke && (async () => {
      const nodes = new Map((await store.listNodes()).map((n) => [n.name, n]));
      return revoke((n) => { const now = nodes.get(n.name); return now !== undefined && now.network === n.network && now.passwordHash === n.passwordHash; });
    });
    const plane = createControlPlane({
      store, publisher: new MeasuredPublisher(broker.publisher, metrics), topics, log, metrics, leaseTtlMs: opts.leaseTtlMs,
      nodeApiUrl: api.url, retained: broker.retained, remembersPublished: true, credentials,
      clouds: cloud && { kindOf: (type) => cloudServing(type, [cloud.kind]), get: async () => cloud },
      admin: { token: adminToken, broker: broker.url, prefix: opts.prefix, revokeSessions },
    });
    await plane.start(opts.networks);
    // An external broker keeps what it retains across controller restarts, leases released while this was down included.
    if (broker.outlivesController) {
      await plane.tasks.clean()
        .catch((e) => log.warn('retained cleanup failed: the broker may not let this user read everything under the prefix', { reason: errorMessage(e) }));
    }
    await broker.start((topic, payload, client) => void plane.nodeMessage(topic, payload, client));
    ready.resolve(plane);
    startTimers(plane, opts, revokeSessions, cleanups);
    cleanups.push(() => plane.idle());
    if (cloud) log.info('route controller running', { cloud: cloud.kind, everyMs: opts.reconcileIntervalMs ?? 30_000 });

    // With an external broker, agents on other hosts still list their
    // network from this process: a loopback node API is one they never reach.
    if (opts.brokerUrl && !opts.apiListen) {
      log.warn('the node API listens on loopback: agents on other hosts cannot list their network; set --api-listen HOST:PORT to an address they reach', { api: api.url });
    }
    // What `twill node add` writes into agent configs (cli/data-dir.ts servedBroker): the broker as served, not a guess.
    writeFileSync(join(opts.dataDir, 'endpoints.json'), JSON.stringify({ broker: broker.url, api: api.url }) + '\n', { mode: 0o600 });
    log.info('controller ready', { broker: broker.url, dataDir: opts.dataDir, ...(metricsListener ? { metrics: metricsListener.url } : {}), api: api.url, dashboard: `${api.url}/dashboard/` });
    return {
      plane, controller: plane.controller, store, url: broker.url, cloud, retained: broker.retained, metrics,
      metricsUrl: metricsListener?.url, apiUrl: api.url, close,
    };
  } catch (e) {
    ready.reject(e);
    await close();
    throw e;
  }
}

/** The plane's periodic tasks on this host's timers; each stop is a cleanup. */
function startTimers(plane: ControlPlane, opts: LocalControllerOptions, revokeSessions: (() => Promise<unknown>) | undefined, cleanups: (() => Promise<void> | void)[]): void {
  const log = opts.log;
  // Level-triggered: expire leases, republish what another writer wrote.
  cleanups.push(every(opts.syncIntervalMs ?? 10_000, () => plane.tasks.sync(), (e) => log.error('sync failed', { reason: errorMessage(e) })));
  // Retained topics the store no longer backs (a will published as a
  // removed node's agent went, a write that was never published): the
  // same cleanup the serverless schedule runs, on the same rule.
  cleanups.push(every(opts.cleanIntervalMs ?? 5 * 60_000, () => plane.tasks.clean(), (e) => log.error('retained cleanup failed', { reason: errorMessage(e) })));
  // A node removed or rotated by a command that wrote the store directly
  // (twill node remove --data-dir) loses its sessions within a second;
  // through the admin API, at once.
  if (revokeSessions) cleanups.push(every(1000, revokeSessions, (e) => log.error('session check failed', { reason: errorMessage(e) })));
  if (opts.cloud) {
    // The route controller: level-triggered, on a schedule, a run at start.
    const reconcile = () => plane.tasks.reconcile();
    const failed = (e: unknown) => log.error('reconcile failed', { reason: errorMessage(e) });
    cleanups.push(every(opts.reconcileIntervalMs ?? 30_000, reconcile, failed));
    void reconcile().catch(failed);
  }
}
