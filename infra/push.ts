// Instance events from the other clouds, for the gce and ali-vpc networks run
// from this deployment: one function URL, /gce for Pub/Sub push (Google's
// OIDC token) and /ali for Alibaba Cloud EventBridge (the shared token).
// The URL is public (auth "none") because neither pusher can sign an AWS
// request; the function itself refuses anything without the right token
// (control/auth/push-auth.ts).
// It reconciles nothing: an event it accepts goes to the instance-events
// queue (infra/events.ts) and is acknowledged at once, well within Pub/Sub's
// ack deadline (10 s by default); the queue's function reconciles it.
import { parameters, settings } from './config.js';
import { instanceEvents } from './events.js';
import { defaults, environment, permissions } from './functions.js';

export const push = new sst.aws.Function('Push', {
  handler: 'functions/push.handler',
  ...defaults,
  // Past this an answer is too late for Pub/Sub anyway (its default ack
  // deadline); the work is a token check (a Google key fetch at most) and one
  // SendMessage.
  timeout: '10 seconds',
  // No CORS: neither a browser nor another origin has any business calling it.
  url: { cors: false },
  environment: environment({
    TWILL_EVENTS_QUEUE_URL: instanceEvents.url,
    TWILL_ALI_TOKEN_PARAM: parameters.aliEventToken.name,
    TWILL_GCE_PUSH_AUDIENCE: settings.gcePushAudience.value,
    TWILL_GCE_PUSH_SERVICE_ACCOUNT: settings.gcePushServiceAccount.value,
  }),
  // The queue and the Ali token: no table, no cloud, no IoT.
  permissions: permissions('Push', { eventsQueue: instanceEvents.nodes.queue.name }),
});
