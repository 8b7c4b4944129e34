// The control plane's one HTTP router: every request either host serves goes
// through here, to the part of the plane its path names. Each part checks its
// own callers in one place: the admin API (control/http/api.ts) the admin
// token and the body's size, the node API (control/http/node-api.ts) a node's
// own credentials. /metrics and /healthz hold no secret and no node name.
//
// Which parts a listener serves is the host's choice (Surface): the local
// controller's API address serves the admin API, the node API and /metrics;
// its --metrics-addr /metrics and /healthz; the deployment's Api function the
// admin API, its NodeApi function the node API, each with its own grants.
import { errorMessage } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { encodeForClient, handleApi, type ApiDeps, type ApiRequest } from './api.js';
import { handleNodeApi, type NodeApiDeps } from './node-api.js';

export type Surface = 'admin' | 'node' | 'metrics' | 'health';

export interface HttpRequest extends ApiRequest {
  query: URLSearchParams;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  /** a Buffer when the bytes are not text (gzipped) */
  body: string | Buffer;
}

/** What answers each surface; a surface without one is not served. */
export interface RouterDeps {
  admin?: ApiDeps;
  node?: NodeApiDeps;
  /** the metrics in Prometheus' text format, as they stand now */
  metrics?: () => Promise<string>;
  log: Logger;
}

const text = (status: number, body: string, headers: Record<string, string> = {}): HttpResponse => ({ status, headers: { 'content-type': 'text/plain', ...headers }, body });

/** Splits a request target into its path and query; undefined when it is not a path (a 400). */
export function splitTarget(target: string): { path: string; query: URLSearchParams } | undefined {
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  if (!path.startsWith('/')) return undefined;
  return { path, query: new URLSearchParams(q < 0 ? '' : target.slice(q + 1)) };
}

/** The answer to one request on a listener that serves these surfaces. Never throws. */
export async function route(req: HttpRequest, serves: ReadonlySet<Surface>, deps: RouterDeps): Promise<HttpResponse> {
  const on = (s: Surface) => serves.has(s) && (s === 'health' || deps[s] !== undefined);
  try {
    if (on('metrics') && req.path === '/metrics' && req.method === 'GET') {
      return text(200, await deps.metrics!(), { 'content-type': 'text/plain; version=0.0.4' });
    }
    const admin = on('admin');
    if (on('health') && !admin) {
      if (req.path === '/healthz' && req.method === 'GET') return text(200, 'ok\n');
      if (!on('node')) return text(404, 'not found: try /metrics or /healthz\n');
    }
    // Agents read their network's snapshot and changes here (protocol v2), with their own credentials.
    if (on('node') && (req.path.startsWith('/v2/') || !admin)) return await handleNodeApi(req, deps.node!);
    if (admin) return encodeForClient(await handleApi(req, deps.admin!), req.headers['accept-encoding']);
    return text(404, `no such endpoint: ${req.path.slice(0, 200)}\n`);
  } catch (e) {
    if (req.path === '/metrics') return text(500, `metrics failed: ${errorMessage(e)}\n`);
    deps.log.error('http request failed', { method: req.method, path: req.path.slice(0, 200), reason: errorMessage(e) });
    return text(500, 'internal error: see the controller log\n');
  }
}
