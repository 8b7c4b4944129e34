// Lambda on a schedule (sst.aws.CronV2, infra/schedule.ts): the
// level-triggered loop that events only speed up.
//   expire     removes leases past their expiry (Controller.expire)
//   reconcile  reconciles every aws-vpc, gce and ali-vpc network against its
//              cloud (control/routes/routes.ts), whatever events were lost
//   republish  republishes a network whose retained manifest on IoT Core is
//              behind the store (control/tasks/republish.ts)
//   clean      deletes the retained topics under the deployment's prefix that
//              the store no longer backs (control/tasks/republish.ts cleanRetained);
//              it lists the account's retained messages and reads every node
//              and lease, so infra/schedule.ts runs it hourly, not each minute
// The schedule's input may name the tasks ({"tasks": ["expire"]}); any
// other event, EventBridge's "Scheduled Event" included, runs them all.
// Each task and each network runs whatever the others did; a failure is
// logged, and the invocation fails at the end so it shows in the function's
// error metric. The next tick is the retry.
// Runs never overlap: each takes the store's run lock for as long as it may
// run (the invocation's remaining time), and a run that finds it held (the
// previous one still reconciling a slow cloud) exits at once, logged; one
// that died keeps it only until its timeout.
import { randomUUID } from 'node:crypto';
import type { Context, ScheduledEvent } from 'aws-lambda';
import { errorMessage } from '../core/errors.js';
import { isCloudBackend, routeLimit } from '../control/routes/clouds/cloud.js';
import { emitMetrics, type MetricValue } from '../control/metrics/emf.js';
import { readFabric } from '../control/metrics/fabric.js';
import type { ReconcileReport } from '../control/routes/routes.js';
import { CLOUD_OF_BACKEND } from '../control/routes/clouds/index.js';
import { cleanRetained, republishStale, type CleanReport, type RepublishReport } from '../control/tasks/republish.js';
import { batchReconciler } from '../control/lambda/poke.js';
import type { Logger } from '../core/log.js';
import { runtime, type Runtime } from '../control/lambda/runtime.js';

export const TASKS = ['expire', 'reconcile', 'republish', 'clean'] as const;
export type Task = (typeof TASKS)[number];

export interface ScheduleInput {
  tasks?: Task[];
}

export interface ScheduleReport {
  /** set when another run held the run lock: nothing else ran */
  skipped?: string;
  expired?: number;
  reconciled?: string[];
  republish?: RepublishReport;
  clean?: CleanReport;
  /** what failed, by task or network */
  failed: Record<string, string>;
}

function tasksOf(event: unknown): Task[] {
  const asked = typeof event === 'object' && event !== null ? (event as ScheduleInput).tasks : undefined;
  if (!Array.isArray(asked)) return [...TASKS];
  return TASKS.filter((t) => asked.includes(t));
}

/** The run lock's name in the store. */
export const RUN_LOCK = 'schedule/run';
/** How long a run holds the lock without an invocation context: the function's timeout (infra/schedule.ts). */
const DEFAULT_RUN_MS = 5 * 60_000;
/** Kept for the answer and the lock's release. */
const END_MARGIN_MS = 5_000;

export async function handler(event: ScheduledEvent | ScheduleInput, context?: Context): Promise<ScheduleReport> {
  const rt = runtime();
  const log = rt.log('schedule');
  const owner = context?.awsRequestId ?? randomUUID();
  // Held exactly as long as Lambda lets this run live: a run that dies keeps it no longer.
  const holdMs = context?.getRemainingTimeInMillis() ?? DEFAULT_RUN_MS;
  const lock = await rt.store.tryLock(RUN_LOCK, owner, holdMs);
  if (!lock.acquired) {
    const until = new Date(lock.expiresAt).toISOString();
    log.warn('scheduled run skipped: the previous run is still going', { holder: lock.owner, until });
    return { skipped: `run ${lock.owner} holds the run lock until ${until}`, failed: {} };
  }
  rt.setDeadline(Date.now() + holdMs - END_MARGIN_MS);
  try {
    return await run(rt, log, event);
  } finally {
    rt.setDeadline(undefined);
    await rt.store.unlock(RUN_LOCK, owner).catch((e) => log.warn('run lock not released: it expires at the run\'s timeout', { reason: errorMessage(e) }));
  }
}

async function run(rt: Runtime, log: Logger, event: ScheduledEvent | ScheduleInput): Promise<ScheduleReport> {
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
  // Tasks whose report says what failed, by name: each one a failure of the run.
  const run = async <R extends { failed: Record<string, string> }>(task: Task, fn: () => Promise<R>): Promise<R | undefined> => {
    if (!tasks.includes(task)) return undefined;
    try {
      const r = await fn();
      for (const [what, why] of Object.entries(r.failed)) report.failed[`${task} ${what}`] = why;
      return r;
    } catch (e) {
      report.failed[task] = errorMessage(e);
      return undefined;
    }
  };
  const deps = { store: rt.store, controller: rt.controller, broker: rt.publisher, log };
  const republish = await run('republish', () => republishStale(deps));
  if (republish) report.republish = republish;
  const clean = await run('clean', () => cleanRetained(deps));
  if (clean) report.clean = clean;

  const failed = Object.entries(report.failed);
  // The cloud console's view (infra/monitoring.ts): once a minute, the fabric in numbers.
  // (Not from the hourly clean alone: the minute's run has said it.)
  if (tasks.some((t) => t !== 'clean')) await emitFabric(rt, reports, report).catch((e) => log.error('metrics not emitted', { reason: errorMessage(e) }));
  if (report.clean) emitMetrics({ Stage: rt.env.prefix }, [{ name: 'RetainedDeleted', value: report.clean.deleted.length, unit: 'Count' }]);
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
