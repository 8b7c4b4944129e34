// How the plane takes an instance event: one event in, the reconciles it
// asks for out, and a verdict the trigger can act on. The work itself is
// control/routes/events.ts (parse, find the networks, reconcile each) and
// control/routes/routes.ts (the reconcile); this only picks the cloud and says
// whether a retry could help.
import { errorMessage } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { Metrics } from '../../core/metrics.js';
import type { BackendType } from '../../core/backends/index.js';
import type { Controller } from '../controller/controller.js';
import type { Store } from '../store/store.js';
import type { Cloud, CloudKind } from './clouds/cloud.js';
import { EventError, handleEvent, parseEvent, type HandleResult, type EventCloud, type InstanceEvent } from './events.js';
import { ROUTE_SETTLE_MS } from './reach.js';
import { reconcileNetwork, type ReconcileReport, type RouteDeps } from './routes.js';

/** The clouds a host reconciles against: which serves a network's backend type, and the cloud itself. */
export interface CloudSource {
  /** the cloud whose route tables carry this backend type, or undefined when this host runs none for it */
  kindOf(type: BackendType): CloudKind | undefined;
  /** the cloud, made on first use */
  get(kind: CloudKind): Promise<Cloud>;
}

/** What the route controller runs on. */
export interface RouteControl {
  controller: Controller;
  store: Store;
  clouds: CloudSource;
  metrics?: Metrics;
}

export type Verdict =
  /** done (or nothing to do): acknowledge */
  | { kind: 'done'; result: HandleResult }
  /** malformed, or from a cloud this entry point does not take: no retry can help, so acknowledge and log */
  | { kind: 'poison'; reason: string }
  /** a reconcile or the store failed: worth delivering again (the periodic reconcile also repairs it) */
  | { kind: 'retry'; reason: string };

export type Reconciler = (cloud: CloudKind, network: string) => Promise<ReconcileReport>;

/**
 * A reconciler for one batch of events: each network is reconciled at most
 * once per batch. Every event of a batch happened before the batch was
 * delivered, so one full reconcile started after delivery answers them all.
 */
export function batchReconciler(rc: RouteControl, log: Logger): Reconciler {
  const runs = new Map<string, Promise<ReconcileReport>>();
  return (kind, network) => {
    let run = runs.get(network);
    if (!run) {
      run = rc.clouds.get(kind).then((cloud) => reconcileSettled(network, { controller: rc.controller, store: rc.store, cloud, log: log.child('routes'), metrics: rc.metrics }));
      runs.set(network, run);
    }
    return run;
  };
}

/**
 * A reconcile, and on a network with an overlay a second one once the routes
 * the first made or found have settled (reach.ts ROUTE_SETTLE_MS): their
 * members are reached through them only once a later read of the cloud still
 * shows them, and that read need not wait for the next scheduled reconcile.
 * One more at most: a cloud slow to show a new route (EC2's reads are
 * eventually consistent) is confirmed by the schedule, as everything else.
 */
export async function reconcileSettled(network: string, deps: RouteDeps): Promise<ReconcileReport> {
  const first = await reconcileNetwork(network, deps);
  if (!first.overlay?.confirming) return first;
  const ms = deps.settleMs ?? ROUTE_SETTLE_MS;
  await (deps.sleep ? deps.sleep(ms) : new Promise((r) => setTimeout(r, ms)));
  const second = await reconcileNetwork(network, deps);
  // What the pair did, as one run: the first's changes with the second's outcome.
  return {
    ...second,
    joined: first.joined + second.joined, released: first.released + second.released, prepared: first.prepared + second.prepared,
    created: first.created + second.created, replaced: first.replaced + second.replaced, deleted: first.deleted + second.deleted,
    overlay: { ...(second.overlay as NonNullable<ReconcileReport['overlay']>), written: (first.overlay.written) + (second.overlay?.written ?? 0) },
  };
}

export type Admission =
  /** malformed, or of a cloud this entry point does not take: acknowledge and log */
  | { kind: 'poison'; reason: string }
  /** well-formed, but about nothing that changes which instances run (an unfinished GCE operation): acknowledge */
  | { kind: 'ignored'; reason: string }
  | { kind: 'event'; event: InstanceEvent };

/**
 * What an entry point checks before it acknowledges an event: that it parses
 * and is of the entry point's cloud. Reads and changes nothing.
 */
export function admit(input: unknown, only?: EventCloud): Admission {
  let parsed;
  try {
    parsed = parseEvent(input);
  } catch (e) {
    if (e instanceof EventError) return { kind: 'poison', reason: e.message };
    throw e;
  }
  if (parsed.kind === 'ignored') return parsed;
  if (only && parsed.event.cloud !== only) return { kind: 'poison', reason: `a ${parsed.event.cloud} event was sent to the ${only} entry point` };
  return { kind: 'event', event: parsed.event };
}

/** Handles one event: a parsed value, or the text of one. */
export async function poke(input: unknown, rc: RouteControl, reconcile: Reconciler, log: Logger): Promise<Verdict> {
  let a: Admission;
  try {
    a = admit(input);
  } catch (e) {
    return { kind: 'retry', reason: errorMessage(e) };
  }
  if (a.kind === 'poison') return a;
  if (a.kind === 'ignored') return { kind: 'done', result: { ignored: a.reason, networks: [], reports: [], failed: {} } };
  const cloud = a.event.cloud;
  try {
    const result = await handleEvent(input, {
      store: rc.store,
      cloud: await rc.clouds.get(cloud),
      reconcile: (network) => reconcile(cloud, network),
      log,
    });
    const failed = Object.entries(result.failed);
    if (failed.length) return { kind: 'retry', reason: failed.map(([n, why]) => `${n}: ${why}`).join('; ') };
    return { kind: 'done', result };
  } catch (e) {
    return { kind: 'retry', reason: errorMessage(e) };
  }
}
