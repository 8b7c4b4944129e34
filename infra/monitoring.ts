// The deployment as an operator sees it in the AWS console: one CloudWatch
// dashboard of the fabric (the metrics the scheduled function emits in the
// embedded metric format, control/metrics/emf.ts) and of the services under it,
// and alarms on what needs a person, all sent to one SNS topic (subscribe an
// address with the AlarmEmail setting). A monthly budget warns before the
// bill surprises anyone.
import { account, partition, prefix, region, settings } from './config.js';
import { NONE, SETTINGS } from './settings.js';
import { api } from './api.js';
import { deadLetters, instanceEvents } from './events.js';
import { nodeApi } from './node-api.js';
import { push } from './push.js';
import { agentMessages, realtime } from './realtime.js';
import { maintenance } from './schedule.js';
import { table } from './storage.js';

const NAMESPACE = 'twill';

export const alarmTopic = new aws.sns.Topic('Alarms', { displayName: `twill ${prefix} alarms` });

/**
 * Who may publish to the topic. A topic policy replaces the one SNS writes at
 * creation, so its statement comes first, unchanged: the account's own
 * principals may manage and publish. Then the two services that notify it:
 * AWS Budgets publishes only with a statement for budgets.amazonaws.com
 * ("Creating an Amazon SNS topic for budget notifications", AWS Cost
 * Management User Guide: without it budget alerts never arrive), and
 * CloudWatch alarms, for which AWS's guidance ("Why didn't I receive an SNS
 * notification for my CloudWatch alarm trigger?", AWS Knowledge Center) is a
 * statement for cloudwatch.amazonaws.com. Each service statement is held to
 * this account's budgets and alarms with the conditions those pages give
 * (aws:SourceArn, and aws:SourceAccount for Budgets), so no other account's
 * budget or alarm can publish here.
 */
export const alarmTopicPolicy = new aws.sns.TopicPolicy('AlarmsPolicy', {
  arn: alarmTopic.arn,
  policy: $jsonStringify({
    Version: '2008-10-17',
    Id: '__default_policy_ID',
    Statement: [
      {
        Sid: '__default_statement_ID',
        Effect: 'Allow',
        Principal: { AWS: '*' },
        Action: ['SNS:GetTopicAttributes', 'SNS:SetTopicAttributes', 'SNS:AddPermission', 'SNS:RemovePermission', 'SNS:DeleteTopic', 'SNS:Subscribe', 'SNS:ListSubscriptionsByTopic', 'SNS:Publish'],
        Resource: alarmTopic.arn,
        Condition: { StringEquals: { 'AWS:SourceOwner': account } },
      },
      {
        Sid: 'BudgetsPublish',
        Effect: 'Allow',
        Principal: { Service: 'budgets.amazonaws.com' },
        Action: 'SNS:Publish',
        Resource: alarmTopic.arn,
        Condition: { StringEquals: { 'aws:SourceAccount': account }, ArnLike: { 'aws:SourceArn': $interpolate`arn:${partition}:budgets::${account}:*` } },
      },
      {
        Sid: 'CloudWatchAlarmsPublish',
        Effect: 'Allow',
        Principal: { Service: 'cloudwatch.amazonaws.com' },
        Action: 'SNS:Publish',
        Resource: alarmTopic.arn,
        Condition: { ArnLike: { 'aws:SourceArn': $interpolate`arn:${partition}:cloudwatch:${region}:${account}:alarm:*` } },
      },
    ],
  }),
});

/**
 * The AlarmEmail subscription, only when the setting holds an address (none
 * by default, so a first deploy needs no address; the topic still collects
 * everything). The setting is a pulumi Output whose value SST knows when the
 * program runs, so the subscription is decided inside apply and still shows
 * in `sst diff`. A malformed address fails the deploy naming the setting.
 */
export const alarmEmailSubscription = settings.alarmEmail.value.apply((email) => {
  const problem = SETTINGS.alarmEmail.problem(email);
  if (problem) throw new Error(`AlarmEmail ${problem} (npx sst secret set AlarmEmail you@example.com)`);
  if (email === NONE) return undefined;
  return new aws.sns.TopicSubscription('AlarmEmail', { topic: alarmTopic.arn, protocol: 'email', endpoint: email }, { retainOnDelete: false });
});

const functions = {
  Api: api.name,
  NodeApi: nodeApi.name,
  Push: push.name,
  AgentMessages: agentMessages.name,
  Authorizer: realtime.nodes.authHandler.name,
  Maintenance: maintenance.nodes.function.name,
};

type AlarmArgs = aws.cloudwatch.MetricAlarmArgs;
function alarm(name: string, description: string, args: Omit<AlarmArgs, 'alarmActions' | 'okActions' | 'alarmDescription'>) {
  return new aws.cloudwatch.MetricAlarm(name, {
    alarmDescription: `${description} (twill ${prefix})`,
    alarmActions: [alarmTopic.arn],
    okActions: [alarmTopic.arn],
    // No data is not a problem: an idle function emits nothing.
    treatMissingData: 'notBreaching',
    ...args,
  });
}

// Every function: any error, any throttle.
for (const [label, functionName] of Object.entries(functions)) {
  alarm(`${label}Errors`, `${label} function errors`, {
    namespace: 'AWS/Lambda', metricName: 'Errors', dimensions: { FunctionName: functionName },
    statistic: 'Sum', period: 300, evaluationPeriods: 1, threshold: 0, comparisonOperator: 'GreaterThanThreshold',
  });
  alarm(`${label}Throttles`, `${label} function throttled`, {
    namespace: 'AWS/Lambda', metricName: 'Throttles', dimensions: { FunctionName: functionName },
    statistic: 'Sum', period: 300, evaluationPeriods: 1, threshold: 0, comparisonOperator: 'GreaterThanThreshold',
  });
}

// IoT Core gives a custom authorizer 5 seconds; past it the agent's CONNECT fails.
alarm('AuthorizerSlow', 'authorizer p99 duration near IoT Core\'s 5 s deadline', {
  namespace: 'AWS/Lambda', metricName: 'Duration', dimensions: { FunctionName: functions.Authorizer },
  extendedStatistic: 'p99', period: 300, evaluationPeriods: 2, threshold: 3000, comparisonOperator: 'GreaterThanThreshold',
});

// A reconcile event that failed every retry waits in the dead-letter queue for a person.
alarm('DeadLetters', 'reconcile events in the dead-letter queue', {
  namespace: 'AWS/SQS', metricName: 'ApproximateNumberOfMessagesVisible', dimensions: { QueueName: deadLetters.nodes.queue.name },
  statistic: 'Maximum', period: 300, evaluationPeriods: 1, threshold: 0, comparisonOperator: 'GreaterThanThreshold',
});
alarm('EventsWaiting', 'the oldest instance event has waited over 5 minutes', {
  namespace: 'AWS/SQS', metricName: 'ApproximateAgeOfOldestMessage', dimensions: { QueueName: instanceEvents.nodes.queue.name },
  statistic: 'Maximum', period: 300, evaluationPeriods: 1, threshold: 300, comparisonOperator: 'GreaterThanThreshold',
});

// twill's own, from the scheduled function.
alarm('ScheduledTaskFailures', 'a scheduled task (expire, reconcile, republish) failed three minutes running', {
  namespace: NAMESPACE, metricName: 'ScheduledTaskFailures', dimensions: { Stage: prefix },
  statistic: 'Maximum', period: 60, evaluationPeriods: 3, threshold: 0, comparisonOperator: 'GreaterThanThreshold',
});

// IoT Core: agents whose logins fail, and messages IoT Core throttled.
alarm('IotAuthErrors', 'IoT Core refused connections for failed authentication', {
  namespace: 'AWS/IoT', metricName: 'Connection.AuthNError', statistic: 'Sum', period: 300, evaluationPeriods: 1, threshold: 20, comparisonOperator: 'GreaterThanThreshold',
});
alarm('IotPublishOutThrottled', 'IoT Core throttled messages to agents', {
  namespace: 'AWS/IoT', metricName: 'PublishOut.Throttle', statistic: 'Sum', period: 300, evaluationPeriods: 1, threshold: 0, comparisonOperator: 'GreaterThanThreshold',
});

// DynamoDB: any throttled request on the table.
alarm('TableThrottled', 'DynamoDB throttled requests on the twill table', {
  namespace: 'AWS/DynamoDB', metricName: 'ThrottledRequests', dimensions: { TableName: table.name },
  statistic: 'Sum', period: 300, evaluationPeriods: 1, threshold: 0, comparisonOperator: 'GreaterThanThreshold',
});

export const budget = new aws.budgets.Budget('MonthlyBudget', {
  budgetType: 'COST',
  timeUnit: 'MONTHLY',
  limitAmount: settings.monthlyBudgetUsd.value.apply((usd) => {
    const problem = SETTINGS.monthlyBudgetUsd.problem(usd);
    if (problem) throw new Error(`MonthlyBudgetUsd ${problem} (npx sst secret set MonthlyBudgetUsd 50)`);
    return usd;
  }),
  limitUnit: 'USD',
  notifications: [
    { comparisonOperator: 'GREATER_THAN', notificationType: 'FORECASTED', threshold: 100, thresholdType: 'PERCENTAGE', subscriberSnsTopicArns: [alarmTopic.arn] },
    { comparisonOperator: 'GREATER_THAN', notificationType: 'ACTUAL', threshold: 80, thresholdType: 'PERCENTAGE', subscriberSnsTopicArns: [alarmTopic.arn] },
  ],
}, {
  // Budgets refuses a topic it may not publish to: the policy first.
  dependsOn: [alarmTopicPolicy],
});

// The dashboard: the fabric first (per network), then the services under it.
const fabric = (metric: string, title: string) => ({
  type: 'metric', width: 12, height: 6,
  properties: {
    title, region, view: 'timeSeries', stat: 'Maximum', period: 60,
    metrics: [[{ expression: `SEARCH('{${NAMESPACE},Stage,Network} MetricName="${metric}" Stage="${prefix}"', 'Maximum', 60)`, id: 'm', label: '' }]],
  },
});
const perFunction = (metric: string, stat: string, title: string) => ({
  type: 'metric', width: 12, height: 6,
  properties: { title, region, view: 'timeSeries', stat, period: 300, metrics: Object.entries(functions).map(([label, name]) => ['AWS/Lambda', metric, 'FunctionName', name, { label }]) },
});

export const dashboard = new aws.cloudwatch.Dashboard('Dashboard', {
  dashboardName: `twill-${prefix.replace('/', '-')}`,
  dashboardBody: $jsonStringify({
    widgets: [
      fabric('Leases', 'Leases per network'),
      fabric('FreeSubnets', 'Free subnets per network'),
      fabric('AgentsOnline', 'Agents online'),
      fabric('AgentsOutOfSync', 'Agents out of sync'),
      fabric('Routes', "twill's VPC routes (cloud networks)"),
      fabric('RouteTableUse', 'Fullest route table, every owner (cloud networks)'),
      fabric('RouteLimit', 'Route table limit (cloud networks)'),
      fabric('PendingRoutes', 'Pending routes (cloud networks)'),
      fabric('ReconcileErrors', 'Reconcile errors'),
      perFunction('Errors', 'Sum', 'Function errors'),
      perFunction('Throttles', 'Sum', 'Function throttles'),
      perFunction('Duration', 'p99', 'Function duration p99 (authorizer: IoT Core allows 5 s)'),
      {
        type: 'metric', width: 12, height: 6,
        properties: {
          title: 'IoT Core', region, view: 'timeSeries', stat: 'Sum', period: 300,
          metrics: [['AWS/IoT', 'Connect.Success'], ['AWS/IoT', 'Connection.AuthNError'], ['AWS/IoT', 'PublishIn.Success'], ['AWS/IoT', 'PublishOut.Throttle']],
        },
      },
      {
        type: 'metric', width: 12, height: 6,
        properties: {
          title: 'Instance events and dead letters', region, view: 'timeSeries', stat: 'Maximum', period: 300,
          metrics: [['AWS/SQS', 'ApproximateAgeOfOldestMessage', 'QueueName', instanceEvents.nodes.queue.name], ['AWS/SQS', 'ApproximateNumberOfMessagesVisible', 'QueueName', deadLetters.nodes.queue.name]],
        },
      },
      {
        type: 'metric', width: 12, height: 6,
        properties: {
          title: 'DynamoDB', region, view: 'timeSeries', stat: 'Sum', period: 300,
          metrics: [['AWS/DynamoDB', 'ThrottledRequests', 'TableName', table.name], ['AWS/DynamoDB', 'ConsumedWriteCapacityUnits', 'TableName', table.name]],
        },
      },
    ],
  }),
});
