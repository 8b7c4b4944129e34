// Lambda on a schedule (sst.aws.CronV2, infra/schedule.ts): the
// level-triggered loop that events only speed up.
//   expire     removes leases past their expiry (Controller.expire)
//   reconcile  reconciles every aws-vpc, gce and ali-vpc network against its
//              cloud (functions/routes.ts), whatever events were lost
//   republish  republishes a network whose retained manifest on IoT Core is
//              behind the store (functions/republish.ts)
// The schedule's input may name the tasks ({"tasks": ["expire"]}); any
// other event, EventBridge's "Scheduled Event" included, runs all three.
// Each task and each network runs whatever the others did; a failure is
// logged, and the invocation fails at the end so it shows in the function's
// error metric. The next tick is the retry.
import type { ScheduledEvent } from 'aws-lambda';
import { errorMessage } from '../../core/errors.js';
import { isCloudBackend, routeLimit } from '../clouds/cloud.js';
import { emitMetrics, type MetricValue } from '../emf.js';
import { readFabric } from '../fabric.js';
import type { ReconcileReport } from '../routes.js';
import { CLOUD_OF_BACKEND } from '../clouds/index.js';
import { republishStale, type RepublishReport } from '../republish.js';
import { batchReconciler } from './poke.js';
import { runtime } from './runtime.js';

export const TASKS = ['expire', 'reconcile', 'republish'] as const;
export type Task = (typeof TASKS)[number];

export interface ScheduleInput {
  tasks?: Task[];
}

export interface ScheduleReport {
  expired?: number;
  reconciled?: string[];
  republish?: RepublishReport;
  /** what failed, by task or network */
  failed: Record<string, string>;
}

function tasksOf(event: unknown): Task[] {
  const asked = typeof event === 'object' && event !== null ? (event as ScheduleInput).tasks : undefined;
  if (!Array.isArray(asked)) return [...TASKS];
  return TASKS.filter((t) => asked.includes(t));
}

export async function handler(event: ScheduledEvent | ScheduleInput): Promise<ScheduleReport> {
  const rt = runtime();
  const log = rt.log('schedule');
  const tasks = tasksOf(event);
  const report: ScheduleReport = { failed: {} };

  if (tasks.includes('expire')) {
    try {
      report.expired = await rt.controller.expire();
    } catch (e) {
      report.failed.expire = errorMessage(e);
    }
  }
  const reports = new Map<string, ReconcileReport>();
  if (tasks.includes('reconcile')) {
    report.reconciled = [];
    const reconcile = batchReconciler(rt, log);
    try {
      for (const net of await rt.store.listNetworks()) {
        const type = net.config.Backend.Type;
        if (!isCloudBackend(type)) continue;
        try {
          const r = await reconcile(CLOUD_OF_BACKEND[type], net.name);
          reports.set(net.name, r);
          report.reconciled.push(net.name);
          const changed = r.joined + r.released + r.created + r.replaced + r.deleted + r.prepared;
          if (changed || Object.keys(r.errors).length) {
            log.info('network reconciled', { network: net.name, joined: r.joined, released: r.released, created: r.created, replaced: r.replaced, deleted: r.deleted, errors: Object.keys(r.errors).length });
          }
        } catch (e) {
          report.failed[net.name] = errorMessage(e);
        }
      }
    } catch (e) {
      report.failed.reconcile = errorMessage(e);
    }
  }
  if (tasks.includes('republish')) {
    try {
      report.republish = await republishStale({ store: rt.store, controller: rt.controller, broker: rt.publisher, log });
      for (const [n, why] of Object.entries(report.republish.failed)) report.failed[`republish ${n}`] = why;
    } catch (e) {
      report.failed.republish = errorMessage(e);
    }
  }

  const failed = Object.entries(report.failed);
  // The cloud console's view (infra/monitoring.ts): once a minute, the fabric in numbers.
  await emitFabric(rt, reports, report).catch((e) => log.error('metrics not emitted', { reason: errorMessage(e) }));
  if (failed.length) {
    for (const [what, why] of failed) log.error('scheduled task failed', { what, reason: why });
    throw new Error(`scheduled run failed for ${failed.map(([w]) => w).join(', ')}: see the log lines before this one`);
  }
  log.debug('scheduled run done', { tasks: tasks.join(','), expired: report.expired });
  return report;
}

/**
 * CloudWatch metrics in the embedded metric format: per network (dimensions
 * Stage and Network) its leases, free subnets, agents online and out of sync
 * and, on cloud networks, twill's routes, the fullest route table's use
 * (every owner's routes, RouteTableUse) against its limit, pending
 * routes and reconcile errors; per run (dimension Stage) the tasks that
 * failed and the leases expired.
 */
async function emitFabric(rt: ReturnType<typeof runtime>, reports: Map<string, ReconcileReport>, report: ScheduleReport): Promise<void> {
  const Stage = rt.env.prefix;
  // Agents by state from the counts kept as statuses are written: a few reads per network, whatever its size.
  const { networks, figures } = await readFabric(rt.store);
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
      m.push({ name: 'RouteLimit', value: routeLimit(config), unit: 'Count' }, { name: 'PendingRoutes', value: f.routes?.pending ?? 0, unit: 'Count' });
      if (r) m.push({ name: 'Routes', value: r.routes, unit: 'Count' }, { name: 'ReconcileErrors', value: Object.keys(r.errors).length, unit: 'Count' });
      // The fullest table, routes of every owner: the one that makes the next node pending.
      if (r?.tables.length) m.push({ name: 'RouteTableUse', value: Math.max(...r.tables.map((t) => t.used)), unit: 'Count' });
    }
    emitMetrics({ Stage, Network: f.network }, m);
  }
  emitMetrics({ Stage }, [
    { name: 'ScheduledTaskFailures', value: Object.keys(report.failed).length, unit: 'Count' },
    { name: 'LeasesExpired', value: report.expired ?? 0, unit: 'Count' },
  ]);
}
