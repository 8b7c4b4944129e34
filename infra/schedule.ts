// The periodic, level-triggered loop: lease expiry, a full reconcile of every
// cloud network, and a republish of any network whose retained state on IoT
// Core is behind the store (functions/schedule.ts). Events only make
// it faster; this alone would keep everything right. Hourly, the retained
// topics the store no longer backs are deleted.
import { cloudEnvironment, defaults, environment, permissions } from './functions.js';
import { nodeApiEnvironment } from './node-api.js';

export const maintenance = new sst.aws.CronV2('Maintenance', {
  // Once a minute: a route lost or a lease expired is repaired within a
  // minute even with no event, for about 43,000 short invocations a month.
  schedule: 'rate(1 minute)',
  event: { tasks: ['expire', 'reconcile', 'republish'] },
  function: {
    handler: 'functions/schedule.handler',
    ...defaults,
    // A reconcile may wait out a cloud's rate limits; runs never pile up, as
    // one still running when the next starts only repeats the same work.
    timeout: '5 minutes',
    memory: '512 MB',
    environment: environment({ ...cloudEnvironment, ...nodeApiEnvironment }),
    permissions: permissions('Maintenance'),
  },
});

export const retainedCleanup = new sst.aws.CronV2('RetainedCleanup', {
  // Hourly, on the same function: it lists every retained message of the
  // account (200 a call) and reads every node and lease, about N reads;
  // each minute that would cost more than what it keeps under IoT Core's
  // retained-message quota.
  schedule: 'rate(1 hour)',
  event: { tasks: ['clean'] },
  function: maintenance.nodes.function.arn,
});
