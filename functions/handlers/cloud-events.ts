// Lambda: EC2 instance state changes. EventBridge's rule on the default bus
// sends them to an SQS queue and this function takes them from it in
// batches (infra/events.ts), so
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
import type { EventBridgeEvent, SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { batchReconciler, poke } from './poke.js';
import { runtime } from './runtime.js';

export type Ec2StateChange = EventBridgeEvent<'EC2 Instance State-change Notification', { 'instance-id': string; state: string }>;

function isSqs(event: unknown): event is SQSEvent {
  return typeof event === 'object' && event !== null && Array.isArray((event as SQSEvent).Records);
}

export async function handler(event: SQSEvent | Ec2StateChange): Promise<SQSBatchResponse | void> {
  const rt = runtime();
  const log = rt.log('events');
  const reconcile = batchReconciler(rt, log);
  if (!isSqs(event)) {
    const v = await poke(event, rt, reconcile, log);
    if (v.kind === 'poison') log.warn('poison event dropped', { reason: v.reason });
    if (v.kind === 'retry') throw new Error(`event not handled, to be retried: ${v.reason}`);
    return;
  }
  const failures: SQSBatchResponse['batchItemFailures'] = [];
  // One at a time: records of a batch mostly poke the same networks, and the
  // reconciler runs each network once for all of them.
  for (const record of event.Records) {
    const v = await poke(record.body, rt, reconcile, log);
    if (v.kind === 'poison') {
      log.warn('poison event dropped', { messageId: record.messageId, reason: v.reason, receives: record.attributes?.ApproximateReceiveCount });
    } else if (v.kind === 'retry') {
      log.warn('event to be retried', { messageId: record.messageId, reason: v.reason, receives: record.attributes?.ApproximateReceiveCount });
      failures.push({ itemIdentifier: record.messageId });
    }
  }
  return { batchItemFailures: failures };
}
