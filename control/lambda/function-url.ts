// A function URL's request (payload format 2.0) as the plane's router takes
// it, and the router's answer as a function URL returns it: a body that is
// not text (gzipped) travels base64-encoded.
import type { LambdaFunctionURLEvent, LambdaFunctionURLResult } from 'aws-lambda';
import type { HttpRequest, HttpResponse } from '../http/router.js';

export function fromFunctionUrl(event: LambdaFunctionURLEvent): HttpRequest {
  const body = event.body === undefined ? undefined : event.isBase64Encoded ? Buffer.from(event.body, 'base64').toString('utf8') : event.body;
  return {
    method: event.requestContext?.http?.method ?? 'GET',
    path: event.rawPath ?? '/',
    query: new URLSearchParams(event.rawQueryString ?? ''),
    // Function URLs hand headers over lowercased.
    headers: event.headers ?? {},
    body,
  };
}

export function toFunctionUrl(res: HttpResponse): LambdaFunctionURLResult {
  return typeof res.body === 'string'
    ? { statusCode: res.status, headers: res.headers, body: res.body }
    : { statusCode: res.status, headers: res.headers, body: res.body.toString('base64'), isBase64Encoded: true };
}
