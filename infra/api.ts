// The admin HTTP API the twill CLI talks to (twill ... --api URL). A function
// URL rather than API Gateway: one route table in control/http/api.ts already,
// no per-request charge beyond Lambda's, and the admin token (read from SSM)
// is checked in constant time by the function on every call.
import { parameters } from './config.js';
import { defaults, environment, permissions } from './functions.js';
import { realtime } from './realtime.js';
import { nodeApiEnvironment } from './node-api.js';

export const api = new sst.aws.Function('Api', {
  handler: 'functions/api.handler',
  ...defaults,
  // No CORS: the CLI is not a browser, and the dashboard is served by this
  // same function (<url>/dashboard/), so its calls are same-origin.
  url: { cors: false },
  // The dashboard's page (control/http/dashboard.ts reads it from the task root).
  copyFiles: [{ from: 'dashboard' }],
  environment: environment({
    ...nodeApiEnvironment,
    TWILL_ADMIN_TOKEN_PARAM: parameters.adminToken.name,
    // Written into the agent configs that `twill node add --api` prints.
    TWILL_IOT_AUTHORIZER: realtime.authorizer,
  }),
  // Nodes added by earlier versions have scrypt hashes (16 MB and a CPU to verify).
  memory: '512 MB',
  permissions: permissions('Api'),
});
