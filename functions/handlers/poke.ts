// What the instance-event handlers share: one event in, the reconciles it
// asks for out, and a verdict the trigger can act on. The work itself is
// functions/events.ts (parse, find the networks, reconcile each) and
// functions/routes.ts (the reconcile); this only picks the cloud and says
// whether a retry could help.
import { errorMessage } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { CloudKind } from '../clouds/cloud.js';
import { EventError, handleEvent, parseEvent, type HandleResult, type EventCloud } from '../events.js';
import { reconcileNetwork, type ReconcileReport } from '../routes.js';
import type { Runtime } from './runtime.js';

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
export function batchReconciler(rt: Runtime, log: Logger): Reconciler {
  const runs = new Map<string, Promise<ReconcileReport>>();
  return (kind, network) => {
    let run = runs.get(network);
    if (!run) {
      run = rt.cloud(kind).then((cloud) => reconcileNetwork(network, { controller: rt.controller, store: rt.store, cloud, log: log.child('routes') }));
      runs.set(network, run);
    }
    return run;
  };
}

/** Handles one event: a parsed value, or the text of one. */
export async function poke(input: unknown, rt: Runtime, reconcile: Reconciler, log: Logger, only?: EventCloud): Promise<Verdict> {
  let cloud: EventCloud;
  try {
    const parsed = parseEvent(input);
    if (parsed.kind === 'ignored') return { kind: 'done', result: { ignored: parsed.reason, networks: [], reports: [], failed: {} } };
    cloud = parsed.event.cloud;
  } catch (e) {
    if (e instanceof EventError) return { kind: 'poison', reason: e.message };
    return { kind: 'retry', reason: errorMessage(e) };
  }
  if (only && cloud !== only) return { kind: 'poison', reason: `a ${cloud} event was sent to the ${only} entry point` };
  try {
    const result = await handleEvent(input, {
      store: rt.store,
      cloud: await rt.cloud(cloud),
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
