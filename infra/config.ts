// What one deployment (app + stage) is called and what it is told.
//
// Secrets are set per stage with `npx sst secret set NAME VALUE --stage STAGE`
// and never appear in code. The two that are real secrets (the admin token and
// Alibaba EventBridge's shared token) are copied into SSM SecureString
// parameters that only the functions needing them may read; the functions
// read them at run time, so a rotation needs `aws ssm put-parameter` at most
// and never shows up in a function's configuration. The rest are plain
// settings kept per stage the same way; "none" means unset.

/** Topic prefix: IoT Core is shared by the whole account, so every topic carries app and stage. */
export const prefix = `${$app.name}/${$app.stage}`;
if (!/^[A-Za-z0-9_-]{1,64}\/[A-Za-z0-9_-]{1,64}$/.test(prefix)) {
  throw new Error(`app/stage ${prefix} cannot be a topic prefix: use letters, digits, '_' and '-' in the app and stage names`);
}

export const secrets = {
  adminToken: new sst.Secret('AdminToken'),
  aliEventToken: new sst.Secret('AliEventToken', 'none'),
};

export const settings = {
  /** audience and service account a GCE Pub/Sub push token must carry */
  gcePushAudience: new sst.Secret('GcePushAudience', 'none'),
  gcePushServiceAccount: new sst.Secret('GcePushServiceAccount', 'none'),
  /** GCE project, and a workload identity federation credential config (JSON, no key in it) */
  gceProject: new sst.Secret('GceProject', 'none'),
  gceCredentials: new sst.Secret('GceCredentials', 'none'),
  /** Alibaba Cloud region of the ali-vpc networks, e.g. cn-hangzhou */
  aliRegion: new sst.Secret('AliRegion', 'none'),
  /** where alarms and budget warnings go (infra/monitoring.ts): an email address to confirm once */
  alarmEmail: new sst.Secret('AlarmEmail'),
  /** the monthly budget in USD, warned at 80% spent and at a forecast over it */
  monthlyBudgetUsd: new sst.Secret('MonthlyBudgetUsd', '50'),
};

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
