// Lambda behind a function URL: the admin HTTP API the twill CLI talks to
// (--api URL). control/http/api.ts routes and checks the admin token; this only
// turns the function URL's request into its ApiRequest and back. The token
// is read from SSM (a SecureString, cached a few minutes), never from code or
// the function's configuration. Agent configs it issues point at IoT Core
// over wss with the custom authorizer, so they work as printed.
import type { LambdaFunctionURLEvent, LambdaFunctionURLResult } from 'aws-lambda';
import { encodeForClient, handleApi } from '../control/http/api.js';
import { runtime } from '../control/lambda/runtime.js';
import { nodeClientId } from '../core/acl.js';

export async function handler(event: LambdaFunctionURLEvent): Promise<LambdaFunctionURLResult> {
  const rt = runtime();
  const log = rt.log('api');
  const adminToken = await rt.secret(rt.env.adminTokenParam);
  if (!adminToken) {
    log.error('admin API has no token: set it with sst secret set AdminToken and deploy');
    return { statusCode: 503, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ error: 'the admin token is not configured' }) + '\n' };
  }
  const host = new URL(rt.env.iotEndpoint).host;
  const res = await handleApi(
    {
      method: event.requestContext?.http?.method ?? 'GET',
      path: event.rawPath ?? '/',
      query: new URLSearchParams(event.rawQueryString ?? ''),
      headers: event.headers ?? {},
      body: event.body === undefined ? undefined : event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : event.body,
    },
    {
      store: rt.store, controller: rt.controller, adminToken, broker: `wss://${host}/mqtt`, prefix: rt.env.prefix, authorizer: rt.env.iotAuthorizer, log,
      // IoT Core keeps a connection's policy until it refreshes: a removed or rotated node is disconnected now.
      revokeSessions: async (n) => {
        if (await rt.publisher.disconnect(nodeClientId(rt.topics.prefix, n.network, n.name))) log.info('node disconnected from IoT Core', { node: n.name, network: n.network });
      },
    },
  );
  const out = encodeForClient(res, event.headers?.['accept-encoding']);
  // A function URL carries a binary body base64-encoded.
  return out.headers['content-encoding']
    ? { statusCode: res.status, headers: out.headers, body: out.body.toString('base64'), isBase64Encoded: true }
    : { statusCode: res.status, headers: res.headers, body: res.body };
}
