// Lambda: instance events, from the instance-events queue (infra/events.ts):
// EC2 state changes (EventBridge's rule on the default bus sends them there)
// and the GCE Pub/Sub pushes and Alibaba EventBridge deliveries the push
// function checked and queued (functions/push.ts). It takes them in
// batches, so
//   - a burst (an auto scaling group launching twenty instances) becomes one
//     reconcile per network, not twenty;
//   - a record whose reconcile failed is reported as a batch item failure and
//     comes back after the visibility timeout, alone; after a few tries the
//     queue moves it to the dead-letter queue;
//   - a malformed record (a poison event) is logged with its reason and
//     acknowledged: no retry can parse it, and it must not hold up the rest.
// The same handler also takes an event invoked directly (an EventBridge
// target that is the function itself, or a test): then a failure throws, so
// Lambda's asynchronous retries and the function's own dead-letter queue
// apply. Either way, a lost event costs at most one scheduled reconcile's
// delay: every event only pokes a full, level-triggered reconcile.
import type { Context, EventBridgeEvent, SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { runtime } from '../control/lambda/runtime.js';

export type Ec2StateChange = EventBridgeEvent<'EC2 Instance State-change Notification', { 'instance-id': string; state: string }>;

function isSqs(event: unknown): event is SQSEvent {
  return typeof event === 'object' && event !== null && Array.isArray((event as SQSEvent).Records);
}

/** Kept for the answer: the batch response is sent, and the records deleted, only if it arrives before the timeout. */
const ANSWER_MARGIN_MS = 3_000;

export async function handler(event: SQSEvent | Ec2StateChange, context?: Context): Promise<SQSBatchResponse | void> {
  const rt = runtime();
  const log = rt.log('events');
  const reconcile = rt.plane.reconciler(log);
  rt.setDeadline(context ? Date.now() + context.getRemainingTimeInMillis() - ANSWER_MARGIN_MS : undefined);
  try {
    if (!isSqs(event)) {
      const v = await rt.plane.instanceEvent(event, reconcile, log);
      if (v.kind === 'poison') log.warn('poison event dropped', { reason: v.reason });
      if (v.kind === 'retry') throw new Error(`event not handled, to be retried: ${v.reason}`);
      return;
    }
    // Side by side: records of one network share its one reconcile (the
    // reconciler's), and a slow cloud's network does not hold up another's.
    const verdicts = await Promise.all(event.Records.map((record) => rt.plane.instanceEvent(record.body, reconcile, log)));
    const failures: SQSBatchResponse['batchItemFailures'] = [];
    event.Records.forEach((record, i) => {
      const v = verdicts[i]!;
      if (v.kind === 'poison') {
        log.warn('poison event dropped', { messageId: record.messageId, reason: v.reason, receives: record.attributes?.ApproximateReceiveCount });
      } else if (v.kind === 'retry') {
        log.warn('event to be retried', { messageId: record.messageId, reason: v.reason, receives: record.attributes?.ApproximateReceiveCount });
        failures.push({ itemIdentifier: record.messageId });
      }
    });
    return { batchItemFailures: failures };
  } finally {
    rt.setDeadline(undefined);
  }
}
