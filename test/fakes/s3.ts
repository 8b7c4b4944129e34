// Amazon S3 objects as the real S3Client reads them: GetObject and HeadObject
// over S3's REST-XML protocol, path-style (a loopback address cannot carry a
// bucket name; the SDK picks path-style for an IP endpoint), SigV4-signed for
// "s3" in the stand-in's region (Amazon S3 API Reference: GetObject,
// HeadObject, "Error responses"). A missing bucket is NoSuchBucket (404), a
// missing key NoSuchKey (404), each as S3's XML <Error> document; HEAD
// answers a bare 404, as S3 does, since a HEAD response has no body. An
// action IAM does not allow is AccessDenied (403). Nothing here writes: the
// test puts objects straight into the buckets.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createHash } from 'node:crypto';
import { notAuthorized, serveOnLoopback, sigv4Refusal } from './aws-endpoint.js';

export interface FakeS3 {
  endpoint: string;
  /** bucket -> key -> bytes */
  readonly buckets: Map<string, Map<string, Buffer>>;
  readonly deny: Set<string>;
  readonly calls: { action: string; bucket: string; key: string }[];
  close(): Promise<void>;
}

const xmlEscape = (s: string) => s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);

function error(res: ServerResponse, method: string, status: number, code: string, message: string, resource: string): void {
  if (method === 'HEAD') return void res.writeHead(status, { 'x-amz-request-id': 'FAKE0REQUEST0ID' }).end();
  const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message><Resource>${xmlEscape(resource)}</Resource><RequestId>FAKE0REQUEST0ID</RequestId></Error>`;
  res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body), 'x-amz-request-id': 'FAKE0REQUEST0ID' });
  res.end(body);
}

export async function startFakeS3(opts: { region?: string } = {}): Promise<FakeS3> {
  const region = opts.region ?? 'us-east-1';
  const buckets = new Map<string, Map<string, Buffer>>();
  const deny = new Set<string>();
  const calls: FakeS3['calls'] = [];

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const method = req.method ?? 'GET';
    const url = new URL(req.url ?? '/', 'http://s3');
    const refused = sigv4Refusal(req, 's3', region);
    if (refused) return error(res, method, refused.missing ? 403 : 400, refused.missing ? 'AccessDenied' : 'AuthorizationHeaderMalformed', refused.message, url.pathname);
    const m = /^\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (!m || (method !== 'GET' && method !== 'HEAD')) return error(res, method, 405, 'MethodNotAllowed', `${method} ${url.pathname} is not an operation this stand-in serves`, url.pathname);
    const bucket = decodeURIComponent(m[1]!);
    const key = decodeURIComponent(m[2]!);
    const action = method === 'GET' ? 'GetObject' : 'HeadObject';
    calls.push({ action, bucket, key });
    // HeadObject is authorized as s3:GetObject.
    if (deny.has('s3:GetObject')) return error(res, method, 403, 'AccessDenied', notAuthorized('s3:GetObject', `arn:aws:s3:::${bucket}/${key}`), url.pathname);
    const objects = buckets.get(bucket);
    if (!objects) return error(res, method, 404, 'NoSuchBucket', 'The specified bucket does not exist', `/${bucket}`);
    const body = objects.get(key);
    if (!body) return error(res, method, 404, 'NoSuchKey', 'The specified key does not exist.', url.pathname);
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': body.length,
      etag: `"${createHash('md5').update(body).digest('hex')}"`,
      'last-modified': new Date(0).toUTCString(),
      'x-amz-request-id': 'FAKE0REQUEST0ID',
    });
    res.end(method === 'HEAD' ? undefined : body);
  };

  const server = await serveOnLoopback((req, _body, res) => handle(req, res));
  return {
    endpoint: server.endpoint,
    buckets,
    deny,
    calls,
    close: server.close,
  };
}
