// What the AWS stand-ins of `twill aws check` share: a loopback HTTP server
// handing each request its whole body, JSON answers, and what every AWS
// stand-in asks of a request before anything else: a
// Signature Version 4 Authorization header scoped to its service and to the
// region it serves ("Create a signed AWS API request", IAM User Guide:
// AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/SERVICE/aws4_request,
// SignedHeaders=..., Signature=...), with the X-Amz-Date the scope's date
// comes from, and host among the signed headers. A request signed for another
// service or region is refused, as AWS refuses it.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SigV4Refusal {
  /** the header is missing or not SigV4 at all */
  missing: boolean;
  message: string;
}

const HEADER = /^AWS4-HMAC-SHA256 Credential=([^/\s,]+)\/(\d{8})\/([a-z0-9-]+)\/([a-z0-9-]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/;

/** Why the request is not signed for service in region, or undefined when it is. */
export function sigv4Refusal(req: IncomingMessage, service: string, region: string): SigV4Refusal | undefined {
  const auth = String(req.headers.authorization ?? '');
  const m = HEADER.exec(auth);
  if (!m) return { missing: true, message: 'Missing Authentication Token: the request carries no SigV4 Authorization header' };
  const [, , date, scopeRegion, scopeService, signed] = m as unknown as [string, string, string, string, string, string];
  const amzDate = String(req.headers['x-amz-date'] ?? '');
  if (!amzDate.startsWith(date)) return { missing: false, message: `X-Amz-Date ${amzDate || '(none)'} does not match the credential scope's date ${date}` };
  if (!signed.split(';').includes('host')) return { missing: false, message: 'host is not among the SignedHeaders' };
  if (scopeService !== service) return { missing: false, message: `Credential should be scoped to correct service: '${service}', not '${scopeService}'` };
  if (scopeRegion !== region) return { missing: false, message: `Credential should be scoped to a valid region: '${region}', not '${scopeRegion}'` };
  return undefined;
}

/** The IAM refusal every service words the same way (the caller is the stand-ins' one test principal). */
export function notAuthorized(action: string, resource = '*'): string {
  return `User: arn:aws:iam::123456789012:user/twill-test is not authorized to perform: ${action} on resource: ${resource} because no identity-based policy allows the ${action} action`;
}

export interface LoopbackEndpoint {
  endpoint: string;
  close(): Promise<void>;
}

/** Serves handle on a free loopback port; close() ends every connection first. */
export async function serveOnLoopback(handle: (req: IncomingMessage, body: string, res: ServerResponse) => void): Promise<LoopbackEndpoint> {
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => handle(req, body, res));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** A JSON answer; errorType goes in x-amzn-ErrorType, where REST-JSON services put an error's code. */
export function sendJson(res: ServerResponse, status: number, body: unknown, contentType = 'application/json', errorType?: string): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(text), ...(errorType ? { 'x-amzn-errortype': errorType } : {}) });
  res.end(text);
}
