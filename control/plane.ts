// The composition root: the control plane, built once, from the parts its
// host hands in (a store, a publisher, the clouds, the admin token...). Both
// hosts build it here and only host it:
//   - the local daemon (control/local/server.ts) binds the sockets, runs the
//     embedded broker and the timers;
//   - each Lambda function (functions/*.ts, over control/lambda/runtime.ts)
//     adapts its event to one of the calls below.
// Neither holds control-plane logic of its own: a node's message, an HTTP
// request, an instance event and a periodic task each take one path, here.
import type { NetConf } from '../core/config.js';
import type { Logger } from '../core/log.js';
import type { Metrics } from '../core/metrics.js';
import type { Topics } from '../core/topics.js';
import { VerifiedCredentials, type CredentialCheck } from './auth/credentials.js';
import { Controller } from './controller/controller.js';
import { KeyedQueue } from './controller/inbox.js';
import type { ApiDeps } from './http/api.js';
import { SnapshotCache } from './http/node-api.js';
import { route, type HttpRequest, type HttpResponse, type RouterDeps, type Surface } from './http/router.js';
import { collectFabric } from './metrics/prometheus.js';
import type { Publisher } from './publish/publisher.js';
import { batchReconciler, poke, type CloudSource, type Reconciler, type RouteControl, type Verdict } from './routes/poke.js';
import type { Store } from './store/store.js';
import type { RetainedLister } from './tasks/republish.js';
import { PublishedWatermark, Sync } from './tasks/sync.js';
import { createTasks, type Tasks } from './tasks/tasks.js';

/**
 * Agents' messages handled at once: each is a few store reads and a write,
 * then waits for its change to be published, so this bounds how many joins
 * of a storm share one batch of changes.
 */
const MESSAGE_CONCURRENCY = 256;

/** What the admin API needs beyond the plane's own parts. */
export interface AdminSettings {
  token: ApiDeps['adminToken'];
  /** the broker URL written into agent configs */
  broker: string;
  prefix?: string;
  /** AWS IoT Core's custom authorizer, written into agent configs beside the broker */
  authorizer?: string;
  /** after a node is removed or its password rotated: end its live sessions at once */
  revokeSessions?: ApiDeps['revokeSessions'];
}

export interface ControlPlaneDeps {
  store: Store;
  publisher: Publisher;
  topics: Topics;
  /** the plane's log; its parts log as its children (api, node-api, routes) */
  log: Logger;
  /** the controller's own lines (default: log) */
  controllerLog?: Logger;
  /** where the plane counts (the local daemon's /metrics); none in the deployment */
  metrics?: Metrics;
  leaseTtlMs?: number;
  /** the node API's URL, told to every node on its own topic */
  nodeApiUrl?: string;
  /** the clouds the route controller reconciles against; none: no route controller */
  clouds?: CloudSource;
  /** what the broker retains: the republish and clean tasks read it */
  retained?: RetainedLister;
  /**
   * Remember what this process published, so the sync task publishes only
   * what is behind: for a host that lives long (a Lambda container would
   * only grow the memory, and runs the republish task instead).
   */
  remembersPublished?: boolean;
  /** node passwords as checked (the embedded broker shares the local daemon's); default: verified against the store */
  credentials?: CredentialCheck;
  /** the admin API; without it, no admin surface */
  admin?: AdminSettings;
}

export interface ControlPlane {
  readonly controller: Controller;
  readonly store: Store;
  readonly topics: Topics;
  readonly tasks: Tasks;
  /** Stores the networks a host was started with, then rebuilds what the broker retains from the store. */
  start(networks?: readonly { name: string; config: NetConf }[]): Promise<void>;
  /**
   * A node's message (hello or status), as the broker delivered it: its rate
   * limit first (a flood's excess is dropped, never queued), then in the
   * order its node sent them, beside other nodes' messages. Never throws.
   */
  nodeMessage(topic: string, payload: Uint8Array, client?: string): Promise<void>;
  /** One HTTP request on a listener that serves these surfaces (control/http/router.ts). */
  http(req: HttpRequest, serves: ReadonlySet<Surface>): Promise<HttpResponse>;
  /** A reconciler for one batch of instance events: each network at most once. */
  reconciler(log?: Logger): Reconciler;
  /** One instance event (parsed here) and the reconciles it asks for; a verdict the trigger acts on. */
  instanceEvent(input: unknown, reconcile: Reconciler, log?: Logger): Promise<Verdict>;
  /** Resolves when the node messages taken so far are handled. */
  idle(): Promise<void>;
}

export function createControlPlane(deps: ControlPlaneDeps): ControlPlane {
  const { store, topics, log, metrics } = deps;
  // Sync's memory hears of every publish from the controller itself.
  const published = deps.remembersPublished ? new PublishedWatermark() : undefined;
  const controller = new Controller(store, deps.publisher, {
    topics, log: deps.controllerLog ?? log, leaseTtlMs: deps.leaseTtlMs, metrics, api: deps.nodeApiUrl, listeners: published?.listeners(),
  });
  const routes: RouteControl | undefined = deps.clouds && { controller, store, clouds: deps.clouds, metrics };
  const tasks = createTasks({ controller, store, log, routes, retained: deps.retained, sync: published && new Sync(controller, store, published) });
  const router: RouterDeps = {
    log,
    node: { store, credentials: deps.credentials ?? new VerifiedCredentials(store), log: log.child('node-api'), cache: new SnapshotCache() },
    ...(deps.admin && {
      admin: {
        store, controller, log: log.child('api'), adminToken: deps.admin.token, broker: deps.admin.broker, prefix: deps.admin.prefix,
        authorizer: deps.admin.authorizer, revokeSessions: deps.admin.revokeSessions,
      },
    }),
    ...(metrics && {
      // The counters as they stand and the fabric as the store has it now.
      metrics: async () => { await collectFabric(store, metrics); return metrics.render(); },
    }),
  };
  const inbox = new KeyedQueue(MESSAGE_CONCURRENCY);
  const noRoutes = (): never => { throw new Error('this host runs no route controller'); };
  const rc = (): RouteControl => routes ?? noRoutes();

  return {
    controller, store, topics, tasks,
    async start(networks = []) {
      for (const n of networks) await controller.applyNetwork(n.name, n.config);
      await controller.publishOnStart();
    },
    async nodeMessage(topic, payload, client) {
      if (!controller.admit(topic, client)) return;
      // One node's messages in the order they came (its hello before its status).
      await inbox.run(topic.slice(0, topic.lastIndexOf('/')), () => controller.handleMessage(topic, payload, client, true));
    },
    http: (req, serves) => route(req, serves, router),
    reconciler: (l = log) => batchReconciler(rc(), l),
    instanceEvent: (input, reconcile, l = log) => poke(input, rc(), reconcile, l),
    idle: () => inbox.idle(),
  };
}
