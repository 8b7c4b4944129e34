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
import { isCloudBackend } from '../clouds/cloud.js';
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
  if (tasks.includes('reconcile')) {
    report.reconciled = [];
    const reconcile = batchReconciler(rt, log);
    try {
      for (const net of await rt.store.listNetworks()) {
        const type = net.config.Backend.Type;
        if (!isCloudBackend(type)) continue;
        try {
          const r = await reconcile(CLOUD_OF_BACKEND[type], net.name);
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
  if (failed.length) {
    for (const [what, why] of failed) log.error('scheduled task failed', { what, reason: why });
    throw new Error(`scheduled run failed for ${failed.map(([w]) => w).join(', ')}: see the log lines before this one`);
  }
  log.debug('scheduled run done', { tasks: tasks.join(','), expired: report.expired });
  return report;
}
