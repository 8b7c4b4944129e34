// A small Compute Engine endpoint speaking REST v1 JSON: instances
// (aggregatedList, list, get, with labels), routes (list, insert, delete,
// each answered with an Operation), and global and zone operations (get,
// wait). Errors as Google answers them: 409 alreadyExists, 404 notFound,
// 403 QUOTA_EXCEEDED (the 'ROUTES' quota counts every route of the project,
// every network), 429 rateLimitExceeded when throttling is injected, 403
// forbidden when a missing permission is (deny).
//
// projects.get (Compute Engine API reference, "Method: projects.get": GET
// compute/v1/projects/{project}, IAM permission compute.projects.get) answers
// the Project with its quotas[] ("Quota": metric, limit, usage, owner), ROUTES
// among them: the limit the inserts above enforce and the usage they count,
// every network of the project. deny['projects.get'] refuses it with 403
// forbidden, "Required 'compute.projects.get' permission".
import type { IncomingMessage, ServerResponse } from 'node:http';
import { FakeCloud } from './fake.js';

export interface GceInstance {
  id: string;
  name: string;
  zone: string;
  status: 'PROVISIONING' | 'STAGING' | 'RUNNING' | 'STOPPING' | 'STOPPED' | 'SUSPENDING' | 'SUSPENDED' | 'TERMINATED';
  canIpForward: boolean;
  network: string;
  networkIP: string;
  labels: Record<string, string>;
}

export interface GceRoute {
  name: string;
  network: string;
  destRange: string;
  priority: number;
  nextHopInstance?: string;
  nextHopGateway?: string;
  nextHopIp?: string;
  description?: string;
  routeType?: string;
}

interface Operation {
  id: string;
  name: string;
  operationType: string;
  targetLink: string;
  status: 'PENDING' | 'RUNNING' | 'DONE';
  zone?: string;
  error?: { errors: { code: string; message: string }[] };
  httpErrorStatusCode?: number;
  /** polls left before it is DONE */
  left: number;
}

const BASE = 'https://www.googleapis.com/compute/v1/';
const MUTATING = new Set(['routes.insert', 'routes.delete']);

class GceError extends Error {
  constructor(readonly status: number, readonly reason: string, message: string, readonly domain = 'global') {
    super(message);
  }
}

export class FakeGce extends FakeCloud {
  protected mutating = MUTATING;
  readonly instances = new Map<string, GceInstance>();
  readonly routes = new Map<string, GceRoute>();
  readonly operations = new Map<string, Operation>();
  /** the project's 'ROUTES' quota */
  routeLimit = 100;
  /** 'http': insert past the quota is refused with HTTP 403; 'operation': the operation ends in QUOTA_EXCEEDED */
  quotaStyle: 'http' | 'operation' = 'http';
  /** polls of operations.get before an operation is DONE (wait always returns it DONE) */
  opPolls = 1;
  /** every request's Authorization header, to check the client sent one */
  readonly authHeaders = new Set<string>();
  /** the next N calls of an action are refused as IAM refuses a caller without the permission */
  readonly deny: Record<string, number> = {};
  private seq = 0;

  constructor(readonly project = 'test-project') {
    super();
  }

  networkUrl(name = 'default'): string {
    return `${BASE}projects/${this.project}/global/networks/${name}`;
  }

  selfLink(i: Pick<GceInstance, 'zone' | 'name'>): string {
    return `${BASE}projects/${this.project}/zones/${i.zone}/instances/${i.name}`;
  }

  addInstance(i: Partial<GceInstance> & { name: string; network?: string; twill?: string }): GceInstance {
    this.seq++;
    const { twill, ...rest } = i;
    const inst: GceInstance = {
      id: String(7000000000000000000n + BigInt(this.seq)),
      zone: 'us-east1-b',
      status: 'RUNNING',
      canIpForward: true,
      networkIP: `10.128.${this.seq >> 8}.${this.seq & 255}`,
      labels: twill ? { 'twill-network': twill } : {},
      ...rest,
      network: this.networkUrl(i.network ?? 'default'),
    };
    this.instances.set(`${inst.zone}/${inst.name}`, inst);
    return inst;
  }

  addRoute(r: Partial<GceRoute> & { name: string; destRange: string }): void {
    this.routes.set(r.name, { network: this.networkUrl(), priority: 1000, ...r });
  }

  /** destRange -> next hop instance name, of routes with an instance next hop */
  routeMap(prefix = 'twill-'): Record<string, string> {
    return Object.fromEntries(
      [...this.routes.values()].filter((r) => r.name.startsWith(prefix)).map((r) => [r.destRange, r.nextHopInstance?.split('/').pop() ?? r.nextHopGateway ?? '?']),
    );
  }

  private instanceJson(i: GceInstance) {
    return {
      kind: 'compute#instance',
      id: i.id,
      name: i.name,
      zone: `${BASE}projects/${this.project}/zones/${i.zone}`,
      status: i.status,
      canIpForward: i.canIpForward,
      labels: i.labels,
      networkInterfaces: [{ kind: 'compute#networkInterface', name: 'nic0', network: i.network, networkIP: i.networkIP, subnetwork: `${BASE}projects/${this.project}/regions/us-east1/subnetworks/default` }],
      selfLink: this.selfLink(i),
    };
  }

  private routeJson(r: GceRoute) {
    const warnings = r.nextHopInstance && ![...this.instances.values()].some((i) => this.selfLink(i) === r.nextHopInstance)
      ? [{ code: 'NEXT_HOP_INSTANCE_NOT_FOUND', message: `Next hop instance '${r.nextHopInstance}' does not exist.` }]
      : undefined;
    return { kind: 'compute#route', id: String(Math.abs(hash(r.name))), selfLink: `${BASE}projects/${this.project}/global/routes/${r.name}`, ...r, ...(warnings ? { warnings } : {}) };
  }

  private newOperation(type: string, target: string, zone?: string, error?: Operation['error'], httpErrorStatusCode?: number): Operation {
    this.seq++;
    const op: Operation = {
      id: String(9000000000000000000n + BigInt(this.seq)),
      name: `operation-${Date.now()}-${this.seq.toString(16)}`,
      operationType: type,
      targetLink: target,
      status: 'RUNNING',
      left: this.opPolls,
      ...(zone ? { zone } : {}),
      ...(error ? { error } : {}),
      ...(httpErrorStatusCode ? { httpErrorStatusCode } : {}),
    };
    this.operations.set(op.name, op);
    return op;
  }

  private opJson(op: Operation) {
    const { left: _left, zone, ...rest } = op;
    void _left;
    return {
      kind: 'compute#operation',
      ...rest,
      progress: op.status === 'DONE' ? 100 : 0,
      ...(zone ? { zone: `${BASE}projects/${this.project}/zones/${zone}` } : {}),
      selfLink: `${BASE}projects/${this.project}/${zone ? `zones/${zone}` : 'global'}/operations/${op.name}`,
    };
  }

  /** Routes past the quota are refused: counts every route of the project, in any network. */
  private countedRoutes(): number {
    return [...this.routes.values()].filter((r) => r.routeType !== 'SUBNET' && r.routeType !== 'BGP').length;
  }

  protected async handle(req: IncomingMessage, body: string, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const path = url.pathname.replace(/^\/compute\/v1\//, '');
    const send = (status: number, json: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json; charset=UTF-8' });
      res.end(JSON.stringify(json));
    };
    const fail = (e: GceError) => send(e.status, { error: { code: e.status, message: e.message, errors: [{ message: e.message, domain: e.domain, reason: e.reason }] } });
    if (req.headers.authorization) this.authHeaders.add(req.headers.authorization);
    const m = (re: RegExp) => re.exec(path);
    let action = 'unknown';
    let route: () => unknown = () => {
      throw new GceError(404, 'notFound', `The requested URL /${path} was not found on this server.`);
    };
    const p = `projects/${this.project}`;
    let mm: RegExpExecArray | null;
    if (req.method === 'GET' && path === p) {
      action = 'projects.get';
      route = () => this.projectJson();
    } else if (req.method === 'GET' && path === `${p}/aggregated/instances`) {
      action = 'instances.aggregatedList';
      route = () => this.aggregated(url.searchParams);
    } else if (req.method === 'GET' && (mm = m(new RegExp(`^${p}/zones/([^/]+)/instances/([^/]+)$`)))) {
      action = 'instances.get';
      const [, zone, name] = mm as unknown as [string, string, string];
      route = () => {
        const i = this.instances.get(`${zone}/${name}`);
        if (!i) throw new GceError(404, 'notFound', `The resource '${p}/zones/${zone}/instances/${name}' was not found`);
        return this.instanceJson(i);
      };
    } else if (req.method === 'GET' && (mm = m(new RegExp(`^${p}/zones/([^/]+)/instances$`)))) {
      action = 'instances.list';
      const zone = (mm as unknown as [string, string])[1];
      route = () => ({ kind: 'compute#instanceList', items: [...this.instances.values()].filter((i) => i.zone === zone).map((i) => this.instanceJson(i)) });
    } else if (req.method === 'GET' && path === `${p}/global/routes`) {
      action = 'routes.list';
      route = () => this.listRoutes(url.searchParams);
    } else if (req.method === 'POST' && path === `${p}/global/routes`) {
      action = 'routes.insert';
      route = () => this.insertRoute(JSON.parse(body || '{}') as GceRoute);
    } else if (req.method === 'DELETE' && (mm = m(new RegExp(`^${p}/global/routes/([^/]+)$`)))) {
      action = 'routes.delete';
      const name = (mm as unknown as [string, string])[1];
      route = () => {
        if (!this.routes.has(name)) throw new GceError(404, 'notFound', `The resource '${p}/global/routes/${name}' was not found`);
        this.routes.delete(name);
        return this.opJson(this.newOperation('delete', `${BASE}${p}/global/routes/${name}`));
      };
    } else if ((mm = m(new RegExp(`^${p}/(?:global|zones/([^/]+))/operations/([^/]+?)(/wait)?$`)))) {
      const [, zone, name, wait] = mm as unknown as [string, string | undefined, string, string | undefined];
      action = `${zone ? 'zoneOperations' : 'globalOperations'}.${wait ? 'wait' : 'get'}`;
      route = () => {
        const op = this.operations.get(name);
        if (!op) throw new GceError(404, 'notFound', `The resource '${p}/global/operations/${name}' was not found`);
        if (wait || --op.left <= 0) op.status = 'DONE';
        return this.opJson(op);
      };
    }
    this.count(action);
    if (await this.dropped(action)) return;
    if (this.takeThrottle(action)) return fail(new GceError(429, 'rateLimitExceeded', 'Rate Limit Exceeded', 'usageLimits'));
    if ((this.deny[action] ?? 0) > 0) {
      this.deny[action]!--;
      return fail(new GceError(403, 'forbidden', `Required 'compute.${action}' permission for '${p}'`));
    }
    try {
      send(200, route());
    } catch (e) {
      if (e instanceof GceError) return fail(e);
      throw e;
    }
  }

  /** The Project, with the global quotas this stand-in knows; ROUTES is the one the route inserts enforce. */
  private projectJson() {
    const networks = new Set([...this.instances.values()].map((i) => i.network).concat([...this.routes.values()].map((r) => r.network)));
    return {
      kind: 'compute#project',
      id: String(Math.abs(hash(this.project))),
      name: this.project,
      quotas: [
        { metric: 'NETWORKS', limit: 15, usage: networks.size },
        { metric: 'ROUTES', limit: this.routeLimit, usage: this.countedRoutes() },
        { metric: 'FIREWALLS', limit: 200, usage: 0 },
      ],
      selfLink: `${BASE}projects/${this.project}`,
      defaultNetworkTier: 'PREMIUM',
    };
  }

  private aggregated(q: URLSearchParams) {
    const filter = q.get('filter') ?? '';
    const fm = /^labels\.([\w-]+)\s*=\s*"?([^"\s]*)"?$/.exec(filter.trim());
    if (filter && !fm) throw new GceError(400, 'invalid', `Invalid value for field 'filter': '${filter}'. Invalid list filter expression.`);
    let list = [...this.instances.values()];
    if (fm) list = list.filter((i) => i.labels[fm[1] as string] === fm[2]);
    const { items, next } = page(list, q);
    const zones: Record<string, unknown> = {};
    for (const i of items) {
      const z = `zones/${i.zone}`;
      const scoped = (zones[z] ??= { instances: [] }) as { instances: unknown[] };
      scoped.instances.push(this.instanceJson(i));
    }
    if (!zones['zones/us-central1-a']) zones['zones/us-central1-a'] = { warning: { code: 'NO_RESULTS_ON_PAGE', message: 'There are no results for scope \'zones/us-central1-a\' on this page.' } };
    return { kind: 'compute#instanceAggregatedList', id: `projects/${this.project}/aggregated/instances`, items: zones, ...(next ? { nextPageToken: next } : {}) };
  }

  private listRoutes(q: URLSearchParams) {
    const { items, next } = page([...this.routes.values()].sort((a, b) => a.name.localeCompare(b.name)), q);
    return { kind: 'compute#routeList', id: `projects/${this.project}/global/routes`, items: items.map((r) => this.routeJson(r)), ...(next ? { nextPageToken: next } : {}) };
  }

  private insertRoute(r: GceRoute) {
    if (!/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(r.name ?? '')) {
      throw new GceError(400, 'invalid', `Invalid value for field 'resource.name': '${r.name}'. Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'`);
    }
    const target = `${BASE}projects/${this.project}/global/routes/${r.name}`;
    if (this.routes.has(r.name)) throw new GceError(409, 'alreadyExists', `The resource '${target.slice(BASE.length)}' already exists`);
    if (r.nextHopInstance && ![...this.instances.values()].some((i) => this.selfLink(i) === r.nextHopInstance)) {
      throw new GceError(400, 'invalid', `Invalid value for field 'resource.nextHopInstance': '${r.nextHopInstance}'. The resource was not found.`);
    }
    const used = this.countedRoutes();
    if (used >= this.routeLimit) {
      const message = `Quota 'ROUTES' exceeded.  Limit: ${this.routeLimit}.0 globally.`;
      if (this.quotaStyle === 'http') throw new GceError(403, 'quotaExceeded', message, 'usageLimits');
      return this.opJson(this.newOperation('insert', target, undefined, { errors: [{ code: 'QUOTA_EXCEEDED', message }] }, 403));
    }
    const { name, network, destRange, priority, nextHopInstance, nextHopGateway, nextHopIp, description } = r;
    this.routes.set(name, { name, network, destRange, priority, nextHopInstance, nextHopGateway, nextHopIp, description });
    return this.opJson(this.newOperation('insert', target));
  }
}

function page<T>(items: T[], q: URLSearchParams): { items: T[]; next?: string } {
  const start = Number(q.get('pageToken') ?? '0');
  const max = Math.min(Number(q.get('maxResults') ?? '500'), 500);
  const end = start + max;
  return { items: items.slice(start, end), next: end < items.length ? String(end) : undefined };
}

function hash(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (Math.imul(h, 31) + s.charCodeAt(i)) | 0;
  return h;
}
