// Lambda behind a function URL: the admin HTTP API the twill CLI talks to
// (--api URL), and the dashboard. The plane's router (control/http/router.ts)
// checks the admin token (read from SSM: control/lambda/runtime.ts) and
// answers; this only turns the function URL's request into the router's and
// back.
import type { LambdaFunctionURLEvent, LambdaFunctionURLResult } from 'aws-lambda';
import { fromFunctionUrl, toFunctionUrl } from '../control/lambda/function-url.js';
import { runtime } from '../control/lambda/runtime.js';

const SERVES = new Set(['admin'] as const);

export async function handler(event: LambdaFunctionURLEvent): Promise<LambdaFunctionURLResult> {
  return toFunctionUrl(await runtime().plane.http(fromFunctionUrl(event), SERVES));
}
