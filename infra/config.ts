// What one deployment (app + stage) is called and what it is told.
//
// Secrets are set per stage with `npx sst secret set NAME VALUE --stage STAGE`
// and never appear in code. The two that are real secrets (the admin token and
// Alibaba EventBridge's shared token) are copied into SSM SecureString
// parameters that only the functions needing them may read; the functions
// read them at run time, so a rotation needs `aws ssm put-parameter` at most
// and never shows up in a function's configuration. The rest are plain
// settings kept per stage the same way; "none" means unset. Which settings
// there are, their defaults and the values each takes: infra/settings.ts.
import { APP_NAME, SETTINGS, reservedExecutions, stageProblem, type ReservedConcurrencyKey, type Setting, type SettingKey } from './settings.js';

/** Topic prefix: IoT Core is shared by the whole account, so every topic carries app and stage. */
export const prefix = `${$app.name}/${$app.stage}`;
const badStage = stageProblem($app.name, $app.stage);
if (badStage) throw new Error(badStage);
if ($app.name !== APP_NAME) throw new Error(`sst.config.ts names the app ${$app.name}, infra/settings.ts ${APP_NAME}: twill aws check reads the stage's secrets under the latter`);

/** Each setting of infra/settings.ts as an sst.Secret, with its default (none: a required one). */
const secret = (key: SettingKey) => {
  const s: Setting = SETTINGS[key];
  return s.default === undefined ? new sst.Secret(s.name) : new sst.Secret(s.name, s.default);
};

export const secrets = {
  adminToken: secret('adminToken'),
  aliEventToken: secret('aliEventToken'),
};

export const settings = {
  /** audience and service account a GCE Pub/Sub push token must carry */
  gcePushAudience: secret('gcePushAudience'),
  gcePushServiceAccount: secret('gcePushServiceAccount'),
  /** GCE project, and a workload identity federation credential config (JSON, no key in it) */
  gceProject: secret('gceProject'),
  gceCredentials: secret('gceCredentials'),
  /** Alibaba Cloud region of the ali-vpc networks, e.g. cn-hangzhou */
  aliRegion: secret('aliRegion'),
  /** where alarms and budget warnings go (infra/monitoring.ts): an email address to confirm once, or none */
  alarmEmail: secret('alarmEmail'),
  /** the monthly budget in USD, warned at 80% spent and at a forecast over it */
  monthlyBudgetUsd: secret('monthlyBudgetUsd'),
  /** reserved concurrency (none by default: a new account has too little to reserve any), infra/realtime.ts */
  authorizerConcurrency: secret('authorizerConcurrency'),
  agentMessagesConcurrency: secret('agentMessagesConcurrency'),
};

/**
 * A function's reserved concurrency from its setting: none reserves nothing
 * (the function shares the account's unreserved pool); a bad value fails the
 * deploy with the setting's name. `twill aws check` says beforehand whether
 * the account has the concurrency to reserve it.
 */
export function reservedConcurrency(key: ReservedConcurrencyKey) {
  return settings[key].value.apply((value) => {
    const reserved = reservedExecutions(SETTINGS[key], value);
    return reserved === 0 ? {} : { reserved };
  });
}

const parameterName = (what: string) => `/${$app.name}/${$app.stage}/${what}`;

export const parameters = {
  adminToken: new aws.ssm.Parameter('AdminTokenParameter', {
    name: parameterName('admin-token'),
    type: 'SecureString',
    value: secrets.adminToken.value,
    description: 'twill admin API token (set with sst secret set AdminToken)',
  }),
  aliEventToken: new aws.ssm.Parameter('AliEventTokenParameter', {
    name: parameterName('ali-event-token'),
    type: 'SecureString',
    value: secrets.aliEventToken.value,
    description: 'shared token Alibaba Cloud EventBridge sends to the push URL (set with sst secret set AliEventToken)',
  }),
};

export const account = aws.getCallerIdentityOutput({}).accountId;
export const region = aws.getRegionOutput({}).region;
export const partition = aws.getPartitionOutput({}).partition;
