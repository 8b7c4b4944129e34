// Lambda on a schedule (sst.aws.CronV2, infra/schedule.ts): the
// level-triggered loop that events only speed up, over the plane's periodic
// tasks (control/tasks/tasks.ts).
//   expire     removes leases past their expiry
//   reconcile  reconciles every aws-vpc, gce and ali-vpc network against its
//              cloud, whatever events were lost
//   republish  republishes a network whose retained manifest on IoT Core is
//              behind the store
//   clean      deletes the retained topics under the deployment's prefix that
//              the store no longer backs; it lists the account's retained
//              messages and reads every node and lease, so infra/schedule.ts
//              runs it hourly, not each minute
// The schedule's input may name the tasks ({"tasks": ["expire"]}); any
// other event, EventBridge's "Scheduled Event" included, runs them all.
// Runs never overlap, and a failure fails the invocation: control/lambda/schedule.ts.
import type { Context, ScheduledEvent } from 'aws-lambda';
import { runtime } from '../control/lambda/runtime.js';
import { scheduledRun } from '../control/lambda/schedule.js';
import { TASKS, type ScheduleReport, type Task } from '../control/tasks/tasks.js';

export { RUN_LOCK } from '../control/lambda/schedule.js';
export { TASKS, type ScheduleReport, type Task };

export interface ScheduleInput {
  tasks?: Task[];
}

function tasksOf(event: unknown): Task[] {
  const asked = typeof event === 'object' && event !== null ? (event as ScheduleInput).tasks : undefined;
  if (!Array.isArray(asked)) return [...TASKS];
  return TASKS.filter((t) => asked.includes(t));
}

export async function handler(event: ScheduledEvent | ScheduleInput, context?: Context): Promise<ScheduleReport> {
  return scheduledRun(runtime(), tasksOf(event), context);
}
