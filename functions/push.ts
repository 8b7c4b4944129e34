// Lambda behind a function URL: instance events pushed from the other clouds,
// for the gce and ali-vpc networks run from the same deployment.
//   POST /gce  a Pub/Sub push of a GCE audit log entry, with Google's OIDC
//              token (control/auth/push-auth.ts checks signature, issuer,
//              audience, service account)
//   POST /ali  an Alibaba Cloud EventBridge delivery (CloudEvent) of an ECS
//              state change, with the shared token
// The event is not reconciled here: it is checked, put on the instance-events
// queue (the one EC2's events go through, infra/events.ts) and acknowledged
// at once. A Pub/Sub push must be answered within the subscription's ack
// deadline (10 s by default) or Pub/Sub delivers it again, concurrently with
// the first; a reconcile waits for the cloud's operations (an Alibaba route
// entry takes its time to settle) and must not race its own duplicates. From
// the queue, functions/cloud-events.ts reconciles each network once
// per batch, a failure is retried by SQS (after the visibility timeout, then
// the dead-letter queue), never by the pusher, and the per-VPC lock holds
// across function instances.
// Answers: 401/403 when the caller is not who it must be (the pusher retries,
// which is right if the configuration is being fixed); 200 once queued, and
// also for an event that can never be handled (malformed, of the wrong cloud,
// or one SQS cannot carry): it is logged with its reason and acknowledged,
// because both pushers redeliver anything else for days and the periodic
// reconcile covers what it was about; 503 when the queue did not take it, so
// the pusher sends it again.
import type { APIGatewayProxyStructuredResultV2, LambdaFunctionURLEvent, LambdaFunctionURLResult } from 'aws-lambda';
import { errorMessage } from '../core/errors.js';
import { checkSharedToken, sharedTokenOf, type AuthResult } from '../control/auth/push-auth.js';
import { admit } from '../control/routes/poke.js';
import { runtime } from '../control/lambda/runtime.js';

/** SQS's answers to a body it can never carry (too large, characters SQS refuses): the event is poison, not a retry. */
const NEVER_QUEUED = new Set(['InvalidMessageContents', 'InvalidParameterValue']);

const MAX_BODY = 256 * 1024;

function reply(status: number, value: unknown): APIGatewayProxyStructuredResultV2 {
  return { statusCode: status, headers: { 'content-type': 'application/json' }, body: JSON.stringify(value) + '\n' };
}

export async function handler(event: LambdaFunctionURLEvent): Promise<LambdaFunctionURLResult> {
  const rt = runtime();
  const log = rt.log('push');
  const method = event.requestContext?.http?.method ?? 'GET';
  const path = event.rawPath ?? '/';
  const source = path === '/gce' ? 'gce' : path === '/ali' ? 'ali' : undefined;
  if (!source) return reply(404, { error: `no such endpoint: ${path}; POST to /gce (Pub/Sub push) or /ali (EventBridge)` });
  if (method !== 'POST') return { ...reply(405, { error: `${method} is not allowed: POST the event` }), headers: { 'content-type': 'application/json', allow: 'POST' } };

  // Headers arrive lowercased from function URLs; the query string is parsed for us.
  const headers = event.headers ?? {};
  let auth: AuthResult;
  if (source === 'gce') {
    const verify = rt.gceVerifier();
    if (!verify) return reply(503, { error: 'GCE push is not configured: set GcePushAudience and GcePushServiceAccount (docs/serverless.md)' });
    auth = await verify(headers.authorization);
  } else {
    const expected = await rt.secret(rt.env.aliTokenParam);
    if (!expected) return reply(503, { error: 'Alibaba EventBridge delivery is not configured: set AliEventToken (docs/serverless.md)' });
    auth = checkSharedToken(sharedTokenOf(headers, event.queryStringParameters ?? {}), expected);
  }
  if (!auth.ok) {
    log.warn('push refused', { source, status: auth.status, reason: auth.reason, ip: event.requestContext?.http?.sourceIp });
    return { ...reply(auth.status, { error: auth.reason }), ...(auth.status === 401 ? { headers: { 'content-type': 'application/json', 'www-authenticate': 'Bearer' } } : {}) };
  }

  const body = event.body ? (event.isBase64Encoded ? Buffer.from(event.body, 'base64') : Buffer.from(event.body, 'utf8')) : Buffer.alloc(0);
  if (body.length > MAX_BODY) {
    log.warn('poison event dropped', { source, reason: `body of ${body.length} bytes is larger than ${MAX_BODY}` });
    return reply(200, { dropped: `body larger than ${MAX_BODY} bytes` });
  }
  const text = body.toString('utf8');
  const a = admit(text, source);
  if (a.kind === 'poison') {
    log.warn('poison event dropped', { source, reason: a.reason });
    return reply(200, { dropped: a.reason });
  }
  if (a.kind === 'ignored') {
    log.debug('event ignored', { source, reason: a.reason });
    return reply(200, { ignored: a.reason });
  }
  let queued: string;
  try {
    queued = await rt.enqueue(text);
  } catch (e) {
    const code = (e as { Code?: string; name?: string }).Code ?? (e as { name?: string }).name ?? '';
    if (NEVER_QUEUED.has(code)) {
      log.warn('poison event dropped', { source, reason: `the queue refused it: ${errorMessage(e)}` });
      return reply(200, { dropped: `the queue refused it: ${errorMessage(e)}` });
    }
    log.error('event not queued', { source, instance: a.event.instanceId, reason: errorMessage(e) });
    return reply(503, { error: `not queued, send again: ${errorMessage(e)}` });
  }
  log.info('instance event queued', { source, instance: a.event.instanceId, state: a.event.rawState, messageId: queued });
  return reply(200, { queued, instance: a.event.instanceId, state: a.event.state });
}
