// Lambda behind a function URL: the node API agents list their network from
// (protocol v2). control/http/node-api.ts routes and checks the node's own
// credentials against the store; this only turns the function URL's request
// into its NodeApiRequest and back. Its URL reaches every agent on its own
// lease topic (TWILL_NODE_API_URL in the other functions' environment).
import type { LambdaFunctionURLEvent, LambdaFunctionURLResult } from 'aws-lambda';
import { VerifiedCredentials } from '../control/auth/credentials.js';
import { handleNodeApi, SnapshotCache } from '../control/http/node-api.js';
import { runtime } from '../control/lambda/runtime.js';

let credentials: VerifiedCredentials | undefined;
// Per warm container too: the pages a fleet asks for at once are built once a second.
const cache = new SnapshotCache();

export async function handler(event: LambdaFunctionURLEvent): Promise<LambdaFunctionURLResult> {
  const rt = runtime();
  // Per warm container: a password verified once is not hashed again (an earlier version's scrypt hash costs tens of ms).
  credentials ??= new VerifiedCredentials(rt.store);
  const res = await handleNodeApi(
    {
      method: event.requestContext?.http?.method ?? 'GET',
      path: event.rawPath ?? '/',
      query: new URLSearchParams(event.rawQueryString ?? ''),
      headers: event.headers ?? {},
    },
    { store: rt.store, credentials, log: rt.log('node-api'), cache },
  );
  // A function URL takes a binary body base64-encoded; the gzipped pages are binary.
  return { statusCode: res.status, headers: res.headers, body: res.body.toString('base64'), isBase64Encoded: true };
}
