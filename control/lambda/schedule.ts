// How the deployment schedules the plane's periodic tasks (control/tasks/tasks.ts):
// one invocation of the scheduled function runs the tasks it names, then
// writes the fabric's CloudWatch metrics.
// Each task and each network runs whatever the others did; a failure is
// logged, and the invocation fails at the end so it shows in the function's
// error metric. The next tick is the retry.
// Runs never overlap: each takes the store's run lock for as long as it may
// run (the invocation's remaining time), and a run that finds it held (the
// previous one still reconciling a slow cloud) exits at once, logged; one
// that died keeps it only until its timeout.
import { randomUUID } from 'node:crypto';
import type { Context } from 'aws-lambda';
import { errorMessage } from '../../core/errors.js';
import { emitMetrics } from '../metrics/emf.js';
import { emitFabric } from '../metrics/cloudwatch.js';
import { runTasks, type ScheduleReport, type Task } from '../tasks/tasks.js';
import type { Runtime } from './runtime.js';

/** The run lock's name in the store. */
export const RUN_LOCK = 'schedule/run';
/** How long a run holds the lock without an invocation context: the function's timeout (infra/schedule.ts). */
const DEFAULT_RUN_MS = 5 * 60_000;
/** Kept for the answer and the lock's release. */
const END_MARGIN_MS = 5_000;

export async function scheduledRun(rt: Runtime, tasks: readonly Task[], context?: Pick<Context, 'awsRequestId' | 'getRemainingTimeInMillis'>): Promise<ScheduleReport> {
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
    const { report, reports } = await runTasks(rt.plane.tasks, tasks, log);
    // The cloud console's view (infra/monitoring.ts): once a minute, the fabric in numbers.
    // (Not from the hourly clean alone: the minute's run has said it.)
    if (tasks.some((t) => t !== 'clean')) await emitFabric(rt.store, rt.env.prefix, reports, report).catch((e) => log.error('metrics not emitted', { reason: errorMessage(e) }));
    if (report.clean) emitMetrics({ Stage: rt.env.prefix }, [{ name: 'RetainedDeleted', value: report.clean.deleted.length, unit: 'Count' }]);
    const failed = Object.entries(report.failed);
    if (failed.length) {
      for (const [what, why] of failed) log.error('scheduled task failed', { what, reason: why });
      throw new Error(`scheduled run failed for ${failed.map(([w]) => w).join(', ')}: see the log lines before this one`);
    }
    log.debug('scheduled run done', { tasks: tasks.join(','), expired: report.expired });
    return report;
  } finally {
    rt.setDeadline(undefined);
    await rt.store.unlock(RUN_LOCK, owner).catch((e) => log.warn('run lock not released: it expires at the run\'s timeout', { reason: errorMessage(e) }));
  }
}
