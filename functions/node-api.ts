// Lambda behind a function URL: the node API agents list their network from
// (protocol v2). The plane's router hands it to control/http/node-api.ts,
// which checks the node's own credentials against the store; this only turns
// the function URL's request into the router's and back. Its URL reaches
// every agent on its own lease topic (TWILL_NODE_API_URL in the other
// functions' environment).
import type { LambdaFunctionURLEvent, LambdaFunctionURLResult } from 'aws-lambda';
import { fromFunctionUrl, toFunctionUrl } from '../control/lambda/function-url.js';
import { runtime } from '../control/lambda/runtime.js';

const SERVES = new Set(['node'] as const);

export async function handler(event: LambdaFunctionURLEvent): Promise<LambdaFunctionURLResult> {
  return toFunctionUrl(await runtime().plane.http(fromFunctionUrl(event), SERVES));
}
