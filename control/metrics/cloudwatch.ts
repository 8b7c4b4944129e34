// The fabric in CloudWatch metrics, once a minute from the scheduled function
// (infra/monitoring.ts draws them), in the embedded metric format (emf.ts).
import { isCloudBackend, routeLimit } from '../routes/clouds/cloud.js';
import type { ReconcileReport } from '../routes/routes.js';
import type { Store } from '../store/store.js';
import type { ScheduleReport } from '../tasks/tasks.js';
import { emitMetrics, type MetricValue } from './emf.js';
import { readFabric } from './fabric.js';

/**
 * Per network (dimensions Stage and Network) its leases, free subnets, agents
 * online and out of sync and, on cloud networks, twill's routes, the fullest
 * route table's use (every owner's routes, RouteTableUse) against its limit,
 * pending routes and reconcile errors; per run (dimension Stage) the tasks
 * that failed and the leases expired.
 */
export async function emitFabric(store: Store, Stage: string, reports: Map<string, ReconcileReport>, report: ScheduleReport): Promise<void> {
  // Agents by state from the counts kept as statuses are written: a few reads per network, whatever its size.
  const { networks, figures } = await readFabric(store);
  const configs = new Map(networks.map((n) => [n.name, n.config]));
  for (const f of figures) {
    const m: MetricValue[] = [
      { name: 'Leases', value: f.leases, unit: 'Count' },
      // the scarcer family: the one that runs out first refuses the next node
      { name: 'FreeSubnets', value: Math.min(...Object.values(f.free), Number.MAX_SAFE_INTEGER), unit: 'Count' },
      { name: 'AgentsOnline', value: f.agentsOnline, unit: 'Count' },
      { name: 'AgentsOutOfSync', value: f.agentsOutOfSync, unit: 'Count' },
    ];
    const config = configs.get(f.network)!;
    const r = reports.get(f.network);
    if (isCloudBackend(config.Backend.Type)) {
      // The fullest table, routes of every owner: the one that makes the next node pending, and its limit as
      // the reconcile had it (the account's quota where it was read); without a reconcile, the configured one.
      const fullest = r?.tables.length ? r.tables.reduce((a, t) => (t.used > a.used ? t : a)) : undefined;
      m.push({ name: 'RouteLimit', value: fullest?.limit ?? routeLimit(config), unit: 'Count' }, { name: 'PendingRoutes', value: f.routes?.pending ?? 0, unit: 'Count' });
      if (r) m.push({ name: 'Routes', value: r.routes, unit: 'Count' }, { name: 'ReconcileErrors', value: Object.keys(r.errors).length, unit: 'Count' });
      if (fullest) m.push({ name: 'RouteTableUse', value: fullest.used, unit: 'Count' });
    }
    emitMetrics({ Stage, Network: f.network }, m);
  }
  emitMetrics({ Stage }, [
    { name: 'ScheduledTaskFailures', value: Object.keys(report.failed).length, unit: 'Count' },
    { name: 'LeasesExpired', value: report.expired ?? 0, unit: 'Count' },
  ]);
}
