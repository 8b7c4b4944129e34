// Instance events -> an SQS queue -> the reconcile function, in batches:
// EC2 state changes for aws-vpc networks (the default event bus sends them),
// and the GCE Pub/Sub pushes and Alibaba EventBridge deliveries for gce and
// ali-vpc networks, which the push function (infra/push.ts) checks, sends
// here and acknowledges at once: one queue, one dead-letter queue and one
// set of alarms for every cloud's events, and batches that mix them still
// reconcile each network once.
//
// Why a queue between EventBridge and the function: the function takes a
// batch at a time and reconciles each network once for the whole batch (an
// auto scaling group launching twenty instances costs one reconcile), and it
// reports failed records one by one (partial batch response), which a direct
// EventBridge -> Lambda invocation cannot. A record that keeps failing goes
// to the dead-letter queue after a few receives; so does an event EventBridge
// could not deliver to the queue at all. Nothing is lost by a message sitting
// there: the scheduled reconcile repairs whatever it was about, and the
// messages can be moved back (SQS "start DLQ redrive") once the cause is fixed.
import { cloudEnvironment, defaults, environment, permissions } from './functions.js';
import { nodeApiEnvironment } from './node-api.js';

export const deadLetters = new sst.aws.Queue('ReconcileDeadLetters', {
  transform: { queue: { messageRetentionSeconds: 14 * 24 * 3600 } },
});

export const instanceEvents = new sst.aws.Queue('InstanceEvents', {
  // AWS's advice for SQS event sources: six times the function's timeout,
  // so a record is not handed out again while a slow batch still holds it.
  visibilityTimeout: '6 minutes',
  dlq: { queue: deadLetters.arn, retry: 4 },
});

instanceEvents.subscribe(
  {
    handler: 'functions/cloud-events.handler',
    ...defaults,
    // The handler stops starting cloud route changes a few seconds before it
    // (an Alibaba entry takes its time to settle): what is left, the next
    // reconcile makes.
    timeout: '60 seconds',
    // gce and ali-vpc networks are reconciled here too.
    environment: environment({ ...cloudEnvironment, ...nodeApiEnvironment }),
    permissions: permissions('InstanceEvents'),
  },
  {
    // Wait up to 2 s to gather a burst into one batch (one reconcile per network).
    batch: { size: 10, window: '2 seconds', partialResponses: true },
  },
);

const rule = new aws.cloudwatch.EventRule('Ec2StateChange', {
  description: 'EC2 instance state changes, to reconcile twill aws-vpc networks',
  // The default bus: AWS service events arrive there, and at no charge.
  eventPattern: JSON.stringify({ source: ['aws.ec2'], 'detail-type': ['EC2 Instance State-change Notification'] }),
});

new aws.cloudwatch.EventTarget('Ec2StateChangeTarget', {
  rule: rule.name,
  arn: instanceEvents.arn,
  retryPolicy: { maximumEventAgeInSeconds: 3600, maximumRetryAttempts: 20 },
  deadLetterConfig: { arn: deadLetters.arn },
});

// EventBridge may send to the queue (and to the dead-letter queue when the
// queue refuses), for this rule only.
const fromRule = (queueArn: $util.Input<string>) =>
  aws.iam.getPolicyDocumentOutput({
    statements: [
      {
        principals: [{ type: 'Service', identifiers: ['events.amazonaws.com'] }],
        actions: ['sqs:SendMessage'],
        resources: [queueArn],
        conditions: [{ test: 'ArnEquals', variable: 'aws:SourceArn', values: [rule.arn] }],
      },
    ],
  }).json;

new aws.sqs.QueuePolicy('InstanceEventsPolicy', { queueUrl: instanceEvents.url, policy: fromRule(instanceEvents.arn) });
new aws.sqs.QueuePolicy('ReconcileDeadLettersPolicy', { queueUrl: deadLetters.url, policy: fromRule(deadLetters.arn) });
