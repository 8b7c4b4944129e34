// The control plane's periodic tasks, each written once; the hosts only
// schedule them: the local daemon on its timers (control/local/server.ts),
// the deployment on an EventBridge schedule (functions/schedule.ts).
//   expire     removes leases past their expiry (Controller.expire)
//   sync       expire, then publish the writes this process has not published
//              (control/tasks/sync.ts): a host that lives long enough to remember
//   reconcile  every cloud network against its cloud (control/tasks/reconcile.ts)
//   republish  a network whose retained config on the broker is behind the
//              store (control/tasks/republish.ts republishStale)
//   clean      deletes the retained topics the store no longer backs
//              (control/tasks/republish.ts cleanRetained)
// A run of a task asked for while one is going joins that run.
import { errorMessage } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { Controller } from '../controller/controller.js';
import type { ReconcileReport } from '../routes/routes.js';
import type { RouteControl } from '../routes/poke.js';
import type { Store } from '../store/store.js';
import { reconcileClouds, type CloudsReconciled } from './reconcile.js';
import { cleanRetained, republishStale, type CleanReport, type RepublishReport, type RetainedLister } from './republish.js';
import type { Sync } from './sync.js';

export interface TaskDeps {
  controller: Controller;
  store: Store;
  log: Logger;
  /** the route controller's clouds and metrics; without it, reconcile has nothing to do */
  routes?: RouteControl;
  /** what the broker retains: republish and clean read it */
  retained?: RetainedLister;
  /** the host's memory of what it published: sync needs it */
  sync?: Sync;
}

export interface Tasks {
  expire(): Promise<number>;
  /** returns the networks it republished */
  sync(): Promise<string[]>;
  /** log: whose lines they are (default the plane's) */
  reconcile(log?: Logger): Promise<CloudsReconciled>;
  republish(log?: Logger): Promise<RepublishReport>;
  clean(log?: Logger): Promise<CleanReport>;
}

/** fn, with a call made while a run is going answered by that run. */
function joining<A extends unknown[], T>(fn: (...args: A) => Promise<T>): (...args: A) => Promise<T> {
  let running: Promise<T> | undefined;
  return (...args) => (running ??= fn(...args).finally(() => { running = undefined; }));
}

function needs<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`this host runs no ${what}`);
  return value;
}

export function createTasks(d: TaskDeps): Tasks {
  const retained = () => needs(d.retained, 'retained-message listing');
  return {
    expire: joining(() => d.controller.expire()),
    sync: joining(() => needs(d.sync, 'publish memory (only a long-running host keeps one)').run()),
    reconcile: joining(async (log = d.log) => (d.routes ? reconcileClouds(d.routes, log) : { reports: new Map(), failed: {} })),
    republish: joining((log = d.log) => republishStale({ store: d.store, controller: d.controller, broker: retained(), log })),
    clean: joining((log = d.log) => cleanRetained({ store: d.store, controller: d.controller, broker: retained(), log })),
  };
}

// ---- a scheduled run of several tasks ----

/** The tasks a scheduled run may name. */
export const TASKS = ['expire', 'reconcile', 'republish', 'clean'] as const;
export type Task = (typeof TASKS)[number];

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

/**
 * Runs the named tasks one after another, each whatever the others did.
 * Returns what each did and what failed (by task, or "task what"), and the
 * reconcile's reports by network.
 */
export async function runTasks(tasks: Tasks, names: readonly Task[], log: Logger): Promise<{ report: ScheduleReport; reports: Map<string, ReconcileReport> }> {
  const report: ScheduleReport = { failed: {} };
  let reports = new Map<string, ReconcileReport>();
  if (names.includes('expire')) {
    try {
      report.expired = await tasks.expire();
    } catch (e) {
      report.failed.expire = errorMessage(e);
    }
  }
  if (names.includes('reconcile')) {
    report.reconciled = [];
    try {
      const r = await tasks.reconcile(log);
      reports = r.reports;
      report.reconciled = [...r.reports.keys()];
      Object.assign(report.failed, r.failed);
    } catch (e) {
      report.failed.reconcile = errorMessage(e);
    }
  }
  // Tasks whose report says what failed, by name: each one a failure of the run.
  const run = async <R extends { failed: Record<string, string> }>(task: Task, fn: () => Promise<R>): Promise<R | undefined> => {
    if (!names.includes(task)) return undefined;
    try {
      const r = await fn();
      for (const [what, why] of Object.entries(r.failed)) report.failed[`${task} ${what}`] = why;
      return r;
    } catch (e) {
      report.failed[task] = errorMessage(e);
      return undefined;
    }
  };
  const republish = await run('republish', () => tasks.republish(log));
  if (republish) report.republish = republish;
  const clean = await run('clean', () => tasks.clean(log));
  if (clean) report.clean = clean;
  return { report, reports };
}
