// The HTTP API the twill CLI talks to (networks, nodes, leases, status). One
// router, framework-free, over the same controller and store everything else
// uses; control/http/router.ts hands it every request that is not the node
// API's or /metrics, in both hosts. Every call needs the admin token (the
// dashboard's page and files excepted); it is compared in constant time and
// never logged, and a request is refused before its body is read.
import { createHash, timingSafeEqual } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { readNetConf } from '../../core/config.js';
import { ConfigError, ConflictError, NotFoundError, OutOfSubnetsError, TwillError, errorMessage } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { addNode, removeNode, rotateNodeKey, statusReport } from './admin.js';
import { dashboardAsset, dashboardView } from './dashboard.js';
import type { Controller } from '../controller/controller.js';
import type { NetworkRecord, Store } from '../store/store.js';

export interface ApiRequest {
  method: string;
  /** path without the query string, e.g. /v1/nodes/h1 */
  path: string;
  headers: Record<string, string | undefined>;
  /**
   * The body, or how to read it: a host that streams requests reads it only
   * once the request is let in (BodyTooLargeError past MAX_BODY).
   */
  body?: string | (() => Promise<string | undefined>);
  /** the query string's parameters, e.g. force=true */
  query?: URLSearchParams;
}

/** A request whose body was read: what the endpoints see. */
type ReadRequest = Omit<ApiRequest, 'body'> & { body?: string };

/** A body past MAX_BODY, found while reading it: the request is answered 413. */
export class BodyTooLargeError extends Error {
  constructor() {
    super(`request body larger than ${MAX_BODY} bytes`);
  }
}

export interface ApiResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface ApiDeps {
  store: Store;
  controller: Controller;
  /** the admin token, or how to read it (the deployment's is in SSM and may be rotated); undefined: not configured */
  adminToken: string | (() => Promise<string | undefined>);
  /** the broker URL written into agent configs */
  broker: string;
  prefix?: string;
  /** AWS IoT Core's custom authorizer, written into agent configs beside the broker */
  authorizer?: string;
  log: Logger;
  /** after a node is removed or its password rotated: end its live sessions at once (the local broker, IoT Core) */
  revokeSessions?: (node: { name: string; network: string }) => Promise<unknown>;
}

/** the largest request body: a network config or a node is a few KB */
export const MAX_BODY = 64 * 1024;

function json(status: number, value: unknown): ApiResponse {
  return { status, headers: { 'content-type': 'application/json' }, body: JSON.stringify(value, null, 2) + '\n' };
}

function problem(status: number, message: string, extra: Record<string, unknown> = {}): ApiResponse {
  return json(status, { error: message, ...extra });
}

/** Below this a body goes as it is: gzip would cost more than it saves. */
const GZIP_FROM = 1024;

/**
 * The answer's bytes as a client that may accept gzip gets them: a
 * dashboard view of 10,000 nodes is a few MB of repetitive JSON and a
 * fraction of that gzipped (and a function URL answers at most 6 MB).
 */
export function encodeForClient(res: ApiResponse, acceptEncoding: string | undefined): { status: number; headers: Record<string, string>; body: string | Buffer } {
  if (Buffer.byteLength(res.body) < GZIP_FROM || !/\bgzip\b/.test(acceptEncoding ?? '')) return res;
  return { status: res.status, headers: { ...res.headers, 'content-encoding': 'gzip', vary: 'accept-encoding' }, body: gzipSync(res.body, { level: 3 }) };
}

/** Hashing first makes the comparison constant-time whatever the lengths. */
function tokenMatches(given: string, expected: string): boolean {
  const h = (s: string) => createHash('sha256').update(s).digest();
  return expected.length > 0 && timingSafeEqual(h(given), h(expected));
}

function body(req: ReadRequest): unknown {
  if (!req.body) throw new TwillError('InvalidRequest', 'the request needs a JSON body');
  try {
    return JSON.parse(req.body);
  } catch (e) {
    throw new TwillError('InvalidRequest', `the body is not valid JSON: ${(e as Error).message}`);
  }
}

function field(o: unknown, name: string, required: true): string;
function field(o: unknown, name: string, required?: false): string | undefined;
function field(o: unknown, name: string, required = false): string | undefined {
  const v = typeof o === 'object' && o !== null ? (o as Record<string, unknown>)[name] : undefined;
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'string') throw new TwillError('InvalidRequest', `field ${name} must be a string`);
  return v;
}

type Handler = (req: ReadRequest, params: string[], deps: ApiDeps) => Promise<ApiResponse>;

/** A network as `twill network list` shows it: no option of its backend (the PSK is one). */
export function networkSummary(n: NetworkRecord) {
  return {
    name: n.name, network: n.config.Network ?? null, ipv6Network: n.config.IPv6Network ?? null, backend: n.config.Backend.Type,
    leases: n.leaseCount, revision: n.revision, updatedAt: n.updatedAt,
  };
}

const routes: [string, RegExp, Handler][] = [
  ['GET', /^\/v1\/status$/, async (_r, _p, d) => json(200, await statusReport(d.store))],
  // What the web dashboard shows (control/http/dashboard.ts): never cached, the page asks every few seconds.
  ['GET', /^\/v1\/dashboard$/, async (_r, _p, d) => ({ ...json(200, await dashboardView(d.store)), headers: { 'content-type': 'application/json', 'cache-control': 'no-store' } })],
  ['GET', /^\/v1\/networks$/, async (_r, _p, d) => json(200, (await d.store.listNetworks()).map(networkSummary))],
  [
    'PUT',
    /^\/v1\/networks\/([^/]+)$/,
    async (r, [name], d) => {
      const { config, warnings } = readNetConf(body(r));
      const rec = await d.controller.applyNetwork(name as string, config);
      return json(200, { name: rec.name, revision: rec.revision, ...(warnings.length ? { warnings } : {}) });
    },
  ],
  [
    'DELETE',
    /^\/v1\/networks\/([^/]+)$/,
    async (r, [name], d) => {
      const force = r.query?.get('force') === 'true';
      const { released, nodes } = await d.controller.removeNetwork(name as string, { force });
      // A removed node can do nothing once this returns.
      for (const node of nodes) await d.revokeSessions?.({ name: node, network: name as string });
      return json(200, { removed: name, released, nodes });
    },
  ],
  ['GET', /^\/v1\/nodes$/, async (_r, _p, d) => json(200, (await d.store.listNodes()).map((n) => ({ name: n.name, network: n.network, createdAt: n.createdAt })))],
  [
    'POST',
    /^\/v1\/nodes$/,
    async (r, _p, d) => {
      const b = body(r);
      const rotate = typeof b === 'object' && b !== null && (b as { rotate?: unknown }).rotate === true;
      const config = await addNode(d.store, { name: field(b, 'name', true), network: field(b, 'network', true), broker: d.broker, prefix: d.prefix, authorizer: d.authorizer, rotate });
      // a new password for an existing node: its old sessions end with the old one
      if (rotate) await d.revokeSessions?.({ name: config.node, network: config.network });
      return json(201, config);
    },
  ],
  [
    'DELETE',
    /^\/v1\/nodes\/([^/]+)$/,
    async (_r, [name], d) => {
      const { released, network } = await removeNode(d.store, name as string, d.controller);
      await d.revokeSessions?.({ name: name as string, network });
      return json(200, { removed: name, released });
    },
  ],
  // A new key pair asked of a node (wireguard): answered with the token on its lease and the lease's revision.
  ['POST', /^\/v1\/nodes\/([^/]+)\/rotate-key$/, async (_r, [name], d) => json(200, await rotateNodeKey(d.store, name as string, d.controller))],
  [
    'PUT',
    /^\/v1\/leases\/([^/]+)\/([^/]+)$/,
    async (r, [network, node], d) => {
      const b = body(r);
      return json(200, await d.controller.reserve(network as string, node as string, field(b, 'subnet', true), field(b, 'publicIP')));
    },
  ],
  [
    'DELETE',
    /^\/v1\/leases\/([^/]+)\/([^/]+)$/,
    async (_r, [network, node], d) => {
      if (!(await d.controller.release(network as string, node as string))) throw new NotFoundError(`node ${node} holds no lease in network ${network}`);
      return json(200, { released: node });
    },
  ],
];

/** The answer to a request without the right admin token, or undefined when the token is right. */
function refuseUnauthorized(req: ApiRequest, adminToken: string, log: Logger): ApiResponse | undefined {
  const auth = req.headers.authorization ?? req.headers.Authorization;
  const token = auth?.startsWith('Bearer ') ? auth.slice(7) : undefined;
  if (!token) return { ...problem(401, 'missing admin token: send Authorization: Bearer <token>'), headers: { 'content-type': 'application/json', 'www-authenticate': 'Bearer' } };
  if (!tokenMatches(token, adminToken)) {
    log.warn('api call refused: wrong admin token', { method: req.method, path: req.path.slice(0, 200) });
    return problem(403, 'wrong admin token');
  }
  return undefined;
}

const tooLarge = () => problem(413, `request body larger than ${MAX_BODY} bytes: nothing was changed`);

/** The body, once the request is let in; undefined when it has none, 'too large' past MAX_BODY. */
async function readBody(req: ApiRequest): Promise<string | undefined | 'too large'> {
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY) return 'too large';
  try {
    const text = typeof req.body === 'function' ? await req.body() : req.body;
    return text !== undefined && Buffer.byteLength(text) > MAX_BODY ? 'too large' : text;
  } catch (e) {
    if (e instanceof BodyTooLargeError) return 'too large';
    throw e;
  }
}

/** A path parameter, %-decoded; a malformed escape is the client's error (400), never a 500. */
function decodeParam(p: string): string {
  try {
    return decodeURIComponent(p);
  } catch {
    throw new TwillError('InvalidRequest', `the path has a malformed %-escape: ${JSON.stringify(p.slice(0, 100))}`);
  }
}

/**
 * One admin API request, in this order: the token must be configured; the
 * dashboard's page and files need none; every other path needs the token,
 * then a body within MAX_BODY; then its endpoint.
 */
export async function handleApi(req: ApiRequest, deps: ApiDeps): Promise<ApiResponse> {
  const adminToken = typeof deps.adminToken === 'string' ? deps.adminToken : await deps.adminToken();
  if (!adminToken) {
    deps.log.error('admin API has no token: set it with sst secret set AdminToken and deploy');
    return problem(503, 'the admin token is not configured');
  }
  // The dashboard's page and files hold nothing secret: a browser loads them
  // before the operator has signed in; everything they show comes from /v1/ with the token.
  if (req.method === 'GET') {
    const page = dashboardAsset(req.path);
    if (page) return page;
  }
  const refused = refuseUnauthorized(req, adminToken, deps.log);
  if (refused) return refused;
  const text = await readBody(req);
  if (text === 'too large') return tooLarge();
  return answer({ ...req, body: text }, deps);
}

/** An admitted request: its endpoint's answer, and errors as the statuses the CLI reads. */
async function answer(req: ReadRequest, deps: ApiDeps): Promise<ApiResponse> {
  const known = routes.filter(([, re]) => re.test(req.path));
  if (known.length === 0) return problem(404, `no such endpoint: ${req.path.slice(0, 200)}`);
  const match = known.find(([m]) => m === req.method);
  if (!match) return { ...problem(405, `${req.method} is not allowed on ${req.path}`), headers: { 'content-type': 'application/json', allow: known.map(([m]) => m).join(', ') } };
  try {
    const params = (match[1].exec(req.path) ?? []).slice(1).map(decodeParam);
    return await match[2](req, params, deps);
  } catch (e) {
    if (e instanceof ConfigError) return problem(400, 'invalid network config', { errors: e.errors });
    if (e instanceof NotFoundError) return problem(404, e.message);
    if (e instanceof ConflictError || e instanceof OutOfSubnetsError || (e instanceof TwillError && ['BackendTypeLocked', 'Exists'].includes(e.code))) return problem(409, e.message);
    if (e instanceof TwillError) return problem(400, e.message);
    deps.log.error('api call failed', { method: req.method, path: req.path, reason: errorMessage(e) });
    return problem(500, 'internal error: see the controller log');
  }
}
