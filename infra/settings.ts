// A stage's settings, as data with no SST globals: infra/config.ts makes an
// sst.Secret of each (set with `npx sst secret set NAME VALUE --stage STAGE`),
// and `twill aws check` reads which are set and checks their values before a
// deploy, with the same rules infra applies at deploy time.

/** The SST app's name (sst.config.ts): the first half of every topic prefix, and where SST keeps the stage's secrets. */
export const APP_NAME = 'twill';

/** Unset: a setting's value that turns what it configures off. */
export const NONE = 'none';

export interface Setting {
  /** the sst.Secret's name */
  readonly name: string;
  /** the value when the stage never set it; a setting without one must be set before the first deploy */
  readonly default?: string;
  /** what the value is, for the docs and the check's messages */
  readonly what: string;
  /** why a value is wrong, or undefined when it is right */
  readonly problem?: (value: string) => string | undefined;
}

const positiveInteger = /^[1-9][0-9]{0,5}$/;

/** Reserved concurrency: "none" (no reservation), or a number of executions the function alone may use. */
function reservedProblem(value: string): string | undefined {
  if (value === NONE || positiveInteger.test(value)) return undefined;
  return `must be ${NONE} (no reservation) or a whole number of concurrent executions such as 50, not ${JSON.stringify(value)}`;
}

export const SETTINGS = {
  adminToken: {
    name: 'AdminToken',
    what: 'the admin API token the twill CLI sends (--api)',
    // Anyone holding it runs the admin API: networks, nodes, every node's credentials.
    problem: (v) => (v.length < 16 ? `is ${v.length} characters long: use at least 16 random ones, e.g. "$(openssl rand -base64 32)"` : undefined),
  },
  aliEventToken: { name: 'AliEventToken', default: NONE, what: "the shared token Alibaba Cloud EventBridge sends to <push>ali (none: /ali refuses every request)" },
  gcePushAudience: { name: 'GcePushAudience', default: NONE, what: 'the audience a GCE Pub/Sub push token must carry' },
  gcePushServiceAccount: { name: 'GcePushServiceAccount', default: NONE, what: 'the service account a GCE Pub/Sub push token must name' },
  gceProject: { name: 'GceProject', default: NONE, what: 'the GCE project of the gce networks' },
  gceCredentials: { name: 'GceCredentials', default: NONE, what: 'a GCE workload identity federation credential config (JSON, no key in it)' },
  aliRegion: { name: 'AliRegion', default: NONE, what: 'the Alibaba Cloud region of the ali-vpc networks, e.g. cn-hangzhou' },
  alarmEmail: {
    name: 'AlarmEmail',
    default: NONE,
    what: 'the address alarms and budget warnings are mailed to (none: they reach only the SNS topic)',
    problem: (v) => (v === NONE || /^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v) ? undefined : `must be ${NONE} or an email address, not ${JSON.stringify(v)}`),
  },
  monthlyBudgetUsd: {
    name: 'MonthlyBudgetUsd',
    default: '50',
    what: 'the monthly budget in USD, warned at 80% spent and at a forecast over it',
    problem: (v) => (/^[0-9]{1,9}(\.[0-9]{1,2})?$/.test(v) && Number(v) > 0 ? undefined : `must be an amount of USD above 0 such as 50, not ${JSON.stringify(v)}`),
  },
  authorizerConcurrency: {
    name: 'AuthorizerConcurrency',
    default: NONE,
    what: "executions reserved for the IoT authorizer, so no burst of the account's other functions keeps agents from connecting",
    problem: reservedProblem,
  },
  agentMessagesConcurrency: {
    name: 'AgentMessagesConcurrency',
    default: NONE,
    what: "executions reserved for (and the cap on) the hello and status handler, so a join storm queues instead of taking the account's concurrency",
    problem: reservedProblem,
  },
} as const satisfies Record<string, Setting>;

export type SettingKey = keyof typeof SETTINGS;

/** The settings that reserve Lambda concurrency, each for one function. */
export const RESERVED_CONCURRENCY = ['authorizerConcurrency', 'agentMessagesConcurrency'] as const satisfies readonly SettingKey[];
export type ReservedConcurrencyKey = (typeof RESERVED_CONCURRENCY)[number];

/**
 * How many executions a reserved-concurrency setting reserves (0 for none).
 * Throws, naming the setting, on a value no deploy should take.
 */
export function reservedExecutions(setting: Setting, value: string): number {
  const problem = setting.problem?.(value);
  if (problem) throw new Error(`${setting.name} ${problem} (npx sst secret set ${setting.name} VALUE)`);
  return value === NONE ? 0 : Number(value);
}

/**
 * Lambda keeps this many of an account's concurrent executions unreserved:
 * a function may reserve only what leaves the account's unreserved
 * concurrency at it ("Configuring reserved concurrency", AWS Lambda
 * Developer Guide). So reserving R needs an account concurrency quota of at
 * least R + 100.
 */
export const LAMBDA_UNRESERVED_MINIMUM = 100;

/** Why app/stage cannot be a topic prefix (IoT Core is shared by the whole account), or undefined. */
export function stageProblem(app: string, stage: string): string | undefined {
  return /^[A-Za-z0-9_-]{1,64}$/.test(app) && /^[A-Za-z0-9_-]{1,64}$/.test(stage)
    ? undefined
    : `app/stage ${app}/${stage} cannot be a topic prefix: use 1 to 64 letters, digits, '_' and '-' in the app and stage names`;
}
