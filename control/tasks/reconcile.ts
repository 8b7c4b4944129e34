// The periodic route reconcile: every network whose backend a cloud of this
// host serves, reconciled against that cloud (control/routes/routes.ts), one
// after another, whatever instance events were lost. Level-triggered: the
// events only bring a network's turn forward.
import { errorMessage } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { batchReconciler, type RouteControl } from '../routes/poke.js';
import type { ReconcileReport } from '../routes/routes.js';

export interface CloudsReconciled {
  /** by network, the networks reconciled */
  reports: Map<string, ReconcileReport>;
  /** networks whose reconcile failed, with why */
  failed: Record<string, string>;
}

const RECONCILES = ['twill_route_reconciles_total', 'route reconciles by network and result'] as const;

/** Reconciles each cloud network once; a network that fails does not stop the others. */
export async function reconcileClouds(rc: RouteControl, log: Logger): Promise<CloudsReconciled> {
  const reconcile = batchReconciler(rc, log);
  const done: CloudsReconciled = { reports: new Map(), failed: {} };
  for (const n of await rc.store.listNetworks()) {
    const kind = rc.clouds.kindOf(n.config.Backend.Type);
    if (!kind) continue;
    try {
      const r = await reconcile(kind, n.name);
      done.reports.set(n.name, r);
      rc.metrics?.inc(...RECONCILES, 1, { network: n.name, result: 'ok' });
      const changed = r.joined + r.released + r.created + r.replaced + r.deleted + r.prepared + (r.overlay?.written ?? 0);
      const errors = Object.keys(r.errors).length;
      const fields = {
        network: n.name, instances: r.instances, routes: r.routes, created: r.created, replaced: r.replaced, deleted: r.deleted,
        joined: r.joined, released: r.released, pending: Object.keys(r.pending).length, errors,
        // on a network with an overlay: members by path, reach writes, and moves waiting on the agents
        ...(r.overlay && { routed: r.overlay.route, overlay: r.overlay.overlay, reachWritten: r.overlay.written, held: r.overlay.waiting }),
      };
      if (changed || errors) log.info('network reconciled', fields);
      else log.debug('network reconciled', fields);
    } catch (e) {
      done.failed[n.name] = errorMessage(e);
      rc.metrics?.inc(...RECONCILES, 1, { network: n.name, result: 'error' });
      log.error('reconcile failed', { network: n.name, reason: errorMessage(e) });
    }
  }
  return done;
}
