// The local controller's HTTP listeners: each request of node's HTTP server
// handed to the plane's one router (control/http/router.ts), which decides
// everything about it; this only reads and writes bytes. A body is read only
// when the router asks for it (after the admin token was checked), at most
// MAX_BODY of it; what a refused client still sends is read and dropped, and
// past DRAIN_BYTES its connection is cut.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { listenError } from '../../core/errors.js';
import { BodyTooLargeError, MAX_BODY } from '../http/api.js';
import { formatHostPort, parseHostPort, type HostPort } from '../../core/host-port.js';
import { splitTarget, type HttpRequest, type HttpResponse } from '../http/router.js';

/** how much of an unread body is read and dropped before its connection is cut */
const DRAIN_BYTES = 1024 * 1024;

/** A listening address (--listen, --api-listen); a missing host is loopback's. */
export function parseListen(listen: string): HostPort {
  const at = parseHostPort(listen);
  if (!at) throw new Error(`listen address ${JSON.stringify(listen)} is not HOST:PORT (e.g. 127.0.0.1:1883)`);
  return { host: at.host || '127.0.0.1', port: at.port };
}

/** host:port as a URL's authority (an IPv6 address in brackets). */
export const authority = formatHostPort;

export type Answer = (req: HttpRequest) => Promise<HttpResponse>;

/** Reads the body once asked to: BodyTooLargeError past MAX_BODY (the rest is left to the drain). */
function bodyReader(req: IncomingMessage): { read: () => Promise<string | undefined>; started: () => boolean } {
  let reading: Promise<string | undefined> | undefined;
  const read = () => (reading ??= new Promise<string | undefined>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) return void chunks.push(c);
      req.off('data', onData).off('end', onEnd);
      reject(new BodyTooLargeError()); // a chunked body past the limit
    };
    const onEnd = () => resolve(chunks.length ? Buffer.concat(chunks).toString('utf8') : undefined);
    req.on('data', onData).on('end', onEnd).on('error', reject);
  }));
  return { read, started: () => reading !== undefined };
}

/** Writes the answer; a body nobody read is read and dropped, up to DRAIN_BYTES. */
function send(req: IncomingMessage, res: ServerResponse, r: HttpResponse, bodyRead: boolean): void {
  // (Not Connection: close: Node would then close the socket under a client
  // still sending, whose kernel drops the answer on the reset.)
  res.writeHead(r.status, r.headers).end(r.body);
  if (bodyRead && req.readableEnded) return;
  let dropped = 0;
  req.removeAllListeners('data');
  req.on('data', (c: Buffer) => { if ((dropped += c.length) > DRAIN_BYTES) req.socket.destroy(); });
  req.resume();
}

function handle(answer: Answer, req: IncomingMessage, res: ServerResponse): void {
  const target = splitTarget(req.url ?? '/');
  if (!target) {
    return send(req, res, { status: 400, headers: { 'content-type': 'text/plain' }, body: 'the request target must be a path\n' }, false);
  }
  const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(',') : v]));
  const body = bodyReader(req);
  answer({ method: req.method ?? 'GET', ...target, headers, body: body.read })
    .then((r) => send(req, res, r, body.started()))
    .catch(() => send(req, res, { status: 500, headers: {}, body: '' }, body.started()));
}

export interface HttpListener {
  url: string;
  close(): Promise<void>;
}

/**
 * Binds an HTTP listener at once (a port in use stops the start with nothing
 * changed); requests are answered once `answer` resolves, and wait until then.
 */
export async function listenHttp(addr: string, flag: string, answer: Promise<Answer>): Promise<HttpListener> {
  const { host, port } = parseListen(addr);
  // A failed start leaves no request waiting for good.
  answer.catch(() => {});
  const server = createServer((req, res) => void answer.then((a) => handle(a, req, res), () => res.destroy()));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(listenError(e, addr, flag)));
    server.listen(port, host, () => resolve());
  });
  const a = server.address();
  return {
    url: `http://${authority(host, typeof a === 'object' && a ? a.port : port)}`,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  };
}
