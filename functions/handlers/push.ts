// Lambda behind a function URL: instance events pushed from the other clouds,
// for the gce and ali-vpc networks run from the same deployment.
//   POST /gce  a Pub/Sub push of a GCE audit log entry, with Google's OIDC
//              token (functions/push-auth.ts checks signature, issuer,
//              audience, service account)
//   POST /ali  an Alibaba Cloud EventBridge delivery (CloudEvent) of an ECS
//              state change, with the shared token
// Answers: 401/403 when the caller is not who it must be (the pusher retries,
// which is right if the configuration is being fixed); 200 when handled, and
// also for an event that can never be handled (malformed, or of the wrong
// cloud): it is logged with its reason and acknowledged, because both
// pushers redeliver anything else for days and the periodic reconcile covers
// what it was about; 500 when a reconcile failed, so the pusher tries again.
import type { APIGatewayProxyStructuredResultV2, LambdaFunctionURLEvent, LambdaFunctionURLResult } from 'aws-lambda';
import { checkSharedToken, sharedTokenOf, type AuthResult } from '../push-auth.js';
import { batchReconciler, poke } from './poke.js';
import { runtime } from './runtime.js';

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
  const v = await poke(body.toString('utf8'), rt, batchReconciler(rt, log), log, source);
  switch (v.kind) {
    case 'poison':
      log.warn('poison event dropped', { source, reason: v.reason });
      return reply(200, { dropped: v.reason });
    case 'retry':
      log.warn('event to be retried', { source, reason: v.reason });
      return reply(500, { error: `not handled, send again: ${v.reason}` });
    case 'done':
      return reply(200, {
        ...(v.result.ignored ? { ignored: v.result.ignored } : {}),
        ...(v.result.event ? { instance: v.result.event.instanceId, state: v.result.event.state } : {}),
        networks: v.result.networks,
      });
  }
}
