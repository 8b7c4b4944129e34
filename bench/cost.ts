// The monthly bill of a deployment, from what bench/fanout counts: every
// item AWS meters, priced at us-east-1 list prices with no free tier and no
// reserved capacity (assumptions to check against the price list; each price
// names its page). Pure: usage in, dollars out; bench/fanout prints it.
//
// Fixed costs (the same at 10 nodes and at 10,000: the dashboard, alarms,
// the scheduled task, the queue's pollers, each network's metrics) are kept
// apart from what grows with the fabric, so the per-node figure says what a
// node adds.

/** Prices in USD. */
export const PRICES = {
  // AWS IoT Core pricing (aws.amazon.com/iot-core/pricing): messaging, first
  // billion messages a month; connectivity per minute connected; rules engine.
  // IoT Core's prices hold no separate data transfer charge.
  iotMessage: 1.0 / 1e6,
  iotConnectionMinute: 0.08 / 1e6,
  iotRuleTriggered: 0.15 / 1e6,
  iotRuleAction: 0.15 / 1e6,
  // AWS Lambda pricing (aws.amazon.com/lambda/pricing): Arm, first 7.5
  // billion GB-seconds; function URLs cost nothing beyond the invocation.
  lambdaRequest: 0.2 / 1e6,
  lambdaGbSecond: 0.0000133334,
  // Amazon DynamoDB on-demand pricing (aws.amazon.com/dynamodb/pricing/on-demand):
  // a write unit per 1 KB written (each index an item lands in writes again),
  // a read unit per 4 KB strongly consistent (half that eventually consistent).
  dynamoWru: 0.625 / 1e6,
  dynamoRru: 0.125 / 1e6,
  dynamoGbMonth: 0.25,
  // Amazon SQS pricing (aws.amazon.com/sqs/pricing): standard queue, per
  // request (64 KB chunks); Lambda's pollers make requests of their own.
  sqsRequest: 0.4 / 1e6,
  // Amazon CloudWatch pricing (aws.amazon.com/cloudwatch/pricing): logs
  // ingested and stored (the functions keep a month), custom metrics (the
  // embedded metric format creates them from log lines: no API charge),
  // standard-resolution alarms, dashboards.
  logIngestGb: 0.5,
  logStoreGbMonth: 0.03,
  customMetricMonth: 0.3,
  alarmMonth: 0.1,
  dashboardMonth: 3.0,
  // Amazon EC2 data transfer (aws.amazon.com/ec2/pricing/on-demand), which
  // Lambda's responses to the internet pay: out to the internet, first 10 TB.
  dataOutGb: 0.09,
  // AWS KMS pricing (aws.amazon.com/kms/pricing): SSM SecureString reads
  // decrypt with the AWS managed key, per request.
  kmsRequest: 0.03 / 10_000,
} as const;

export const DAYS_PER_MONTH = 30;
const GB = 1024 ** 3;

/** One function's use in a month. */
export interface FunctionUse {
  name: string;
  requests: number;
  /** average billed duration, ms */
  ms: number;
  memoryMb: number;
}

/** What a deployment uses in a month. */
export interface Usage {
  iotMessages: number;
  iotConnectionMinutes: number;
  /** IoT rules triggered; each runs one action (the Lambda invocation) */
  iotRules: number;
  functions: FunctionUse[];
  dynamoWru: number;
  dynamoRru: number;
  dynamoGb: number;
  sqsRequests: number;
  logBytes: number;
  dataOutBytes: number;
  kmsRequests: number;
  customMetrics: number;
  alarms: number;
  dashboards: number;
}

export function emptyUsage(): Usage {
  return {
    iotMessages: 0, iotConnectionMinutes: 0, iotRules: 0, functions: [], dynamoWru: 0, dynamoRru: 0, dynamoGb: 0,
    sqsRequests: 0, logBytes: 0, dataOutBytes: 0, kmsRequests: 0, customMetrics: 0, alarms: 0, dashboards: 0,
  };
}

/**
 * What a deployment pays whatever its size (infra/monitoring.ts and
 * infra/events.ts): one CloudWatch dashboard; 19 alarms (errors and
 * throttles of six functions, and seven more); the custom metrics the
 * scheduled task emits (per agent network Leases, FreeSubnets, AgentsOnline,
 * AgentsOutOfSync; per stage ScheduledTaskFailures, LeasesExpired,
 * RetainedDeleted: one network here); and the instance-events queue's
 * pollers: Lambda polls an SQS event source with five pollers at first, each
 * a long poll of up to 20 s ("Using Lambda with Amazon SQS"; requests
 * billed to the account), three requests a minute each.
 */
export const FIXED: Usage = {
  ...emptyUsage(),
  dashboards: 1,
  alarms: 19,
  customMetrics: 4 + 3,
  sqsRequests: 5 * 3 * 60 * 24 * DAYS_PER_MONTH,
};

export type Bill = Record<string, number>;

export function bill(u: Usage): Bill {
  const gbSeconds = u.functions.reduce((s, f) => s + f.requests * (f.ms / 1000) * (f.memoryMb / 1024), 0);
  const requests = u.functions.reduce((s, f) => s + f.requests, 0);
  return {
    'IoT messages': u.iotMessages * PRICES.iotMessage,
    'IoT connectivity': u.iotConnectionMinutes * PRICES.iotConnectionMinute,
    'IoT rules': u.iotRules * (PRICES.iotRuleTriggered + PRICES.iotRuleAction),
    'Lambda requests': requests * PRICES.lambdaRequest,
    'Lambda duration': gbSeconds * PRICES.lambdaGbSecond,
    'DynamoDB writes': u.dynamoWru * PRICES.dynamoWru,
    'DynamoDB reads': u.dynamoRru * PRICES.dynamoRru,
    'DynamoDB storage': u.dynamoGb * PRICES.dynamoGbMonth,
    SQS: u.sqsRequests * PRICES.sqsRequest,
    'CloudWatch Logs': (u.logBytes / GB) * (PRICES.logIngestGb + PRICES.logStoreGbMonth),
    'CloudWatch metrics': u.customMetrics * PRICES.customMetricMonth,
    'CloudWatch alarms': u.alarms * PRICES.alarmMonth,
    'CloudWatch dashboard': u.dashboards * PRICES.dashboardMonth,
    'data transfer out': (u.dataOutBytes / GB) * PRICES.dataOutGb,
    KMS: u.kmsRequests * PRICES.kmsRequest,
  };
}

export const total = (b: Bill): number => Object.values(b).reduce((s, x) => s + x, 0);

/** usage a + k * b, function by function */
export function addUsage(a: Usage, b: Usage, k = 1): Usage {
  const out: Usage = { ...a, functions: a.functions.map((f) => ({ ...f })) };
  for (const key of Object.keys(b) as (keyof Usage)[]) {
    if (key === 'functions') continue;
    (out[key] as number) = (a[key] as number) + k * (b[key] as number);
  }
  for (const f of b.functions) {
    const mine = out.functions.find((g) => g.name === f.name);
    if (!mine) out.functions.push({ ...f, requests: k * f.requests });
    else {
      // a weighted average duration keeps GB-seconds exact
      const requests = mine.requests + k * f.requests;
      mine.ms = requests ? (mine.requests * mine.ms + k * f.requests * f.ms) / requests : mine.ms;
      mine.requests = requests;
    }
  }
  return out;
}

export const dollars = (x: number): string => (x >= 100 ? `$${Math.round(x).toLocaleString('en-US')}` : x >= 1 ? `$${x.toFixed(2)}` : `$${x.toFixed(3)}`);
