// Instance events from the other clouds, for the gce and ali-vpc networks run
// from this deployment: one function URL, /gce for Pub/Sub push (Google's
// OIDC token) and /ali for Alibaba Cloud EventBridge (the shared token).
// The URL is public (auth "none") because neither pusher can sign an AWS
// request; the function itself refuses anything without the right token
// (functions/push-auth.ts).
import { parameters, settings } from './config.js';
import { cloudEnvironment, defaults, environment, permissions } from './functions.js';
import { nodeApiEnvironment } from './node-api.js';

export const push = new sst.aws.Function('Push', {
  handler: 'functions/handlers/push.handler',
  ...defaults,
  timeout: '60 seconds',
  // No CORS: neither a browser nor another origin has any business calling it.
  url: { cors: false },
  environment: environment({
    ...cloudEnvironment,
    ...nodeApiEnvironment,
    TWILL_ALI_TOKEN_PARAM: parameters.aliEventToken.name,
    TWILL_GCE_PUSH_AUDIENCE: settings.gcePushAudience.value,
    TWILL_GCE_PUSH_SERVICE_ACCOUNT: settings.gcePushServiceAccount.value,
  }),
  permissions: permissions('Push'),
});
