// gce: custom static routes of the project, one per instance, through
// @google-cloud/compute (REST transport).
//
// Ownership: GCE routes have names and descriptions, so twill marks its own:
// named twill-<network>-<cidr with dashes> (see routeName in cloud.ts), with
// the fixed description ROUTE_DESCRIPTION. A route is twill's only when both
// match and its destination lies inside the network; every other route of the
// project is left alone, but counted: the 'ROUTES' quota is per project and
// covers every network in it.
//
// Each route goes to the VPC network of the instance's first interface, with
// priority 1000 and the instance's selfLink as next hop. Routes cannot be
// changed in place, so a retarget is a delete and an insert; every insert and
// delete waits for its operation.
//
// Limit: the project's ROUTES quota as Compute Engine reports it
// (projects.get: quotas[] metric ROUTES, its limit and usage), kept as
// quota.ts says; it needs compute.projects.get. Its usage counts the static
// routes of every network of the project, as the count from routes.list
// does: the room is the limit less both, whichever is more, so other
// networks' routes leave less room for twill's. Without the permission, the
// documented 100.
import { GlobalOperationsClient, InstancesClient, ProjectsClient, RoutesClient, type protos } from '@google-cloud/compute';
import { OAuth2Client } from 'google-auth-library';
import { TwillError, errorMessage } from '../../../core/errors.js';
import {
  MEMBER_TAG, ROUTE_DESCRIPTION, RouteLimitError, callError, routeName, withRetry,
  type Cloud, type CloudInstance, type CloudRoute, type DesiredRoute, type InstanceRef, type InstanceState,
  type NetworkRef, type NetworkSnapshot,
} from './cloud.js';
import { AccountLimits, type QuotaReading } from './quota.js';

type IOperation = protos.google.cloud.compute.v1.IOperation;

export interface GceOptions {
  /** default: GOOGLE_CLOUD_PROJECT, GCLOUD_PROJECT, or the credentials' project */
  project?: string;
  /** e.g. http://127.0.0.1:8080 for a local endpoint; default compute.googleapis.com over HTTPS */
  endpoint?: string;
  /**
   * A ready OAuth2 access token, used as is and never refreshed (what a local
   * endpoint needs; GOOGLE_OAUTH_ACCESS_TOKEN sets it too). Without it, the
   * standard Application Default Credentials.
   */
  accessToken?: string;
  /** mutating calls in flight at once; default 8 */
  concurrency?: number;
  /** attempts per call when GCE answers "rate limit exceeded"; default 6 */
  attempts?: number;
  /** first backoff after a rate limit, in ms; default 500 */
  backoffMs?: number;
  /** how long quota readings are kept (quota.ts) */
  limits?: AccountLimits;
}

const QUOTA_PERMISSION = 'compute.projects.get';

const COMPUTE_BASE = 'https://www.googleapis.com/compute/v1/';

const STATES: Record<string, InstanceState | undefined> = {
  PROVISIONING: 'pending', STAGING: 'pending', RUNNING: 'running', REPAIRING: 'running',
  STOPPING: 'stopping', SUSPENDING: 'stopping',
  // GCE's TERMINATED is a stopped instance that can start again; a deleted one is simply absent.
  STOPPED: 'stopped', SUSPENDED: 'stopped', TERMINATED: 'stopped',
};

/** projects/p/zones/z/instances/n, whatever the host and version in front of it. */
function normalizeLink(url: string | null | undefined): string | undefined {
  if (!url) return undefined;
  const m = /^(?:https?:\/\/[^/]+\/compute\/(?:v1|beta|alpha)\/)?(projects\/.*)$/.exec(url);
  return m ? m[1] : url;
}

const LABEL_VALUE = /^[\p{Ll}\p{Lo}\p{N}_-]{0,63}$/u;

interface GoogleErrorish { code?: number; message?: string; reason?: string; errors?: { reason?: string }[]; statusDetails?: unknown }

function httpReason(e: unknown): string {
  const g = e as GoogleErrorish;
  return [g?.reason, ...(g?.errors ?? []).map((x) => x.reason), g?.message].filter(Boolean).join(' ');
}

const isRateLimited = (e: unknown) => {
  const g = e as GoogleErrorish;
  return g?.code === 8 || /rateLimitExceeded|userRateLimitExceeded|Rate Limit Exceeded/i.test(httpReason(e));
};
const isQuota = (e: unknown) => /quotaExceeded|QUOTA_EXCEEDED|Quota '\w+' exceeded/i.test(httpReason(e)) && !isRateLimited(e);
const isAlreadyExists = (e: unknown) => /alreadyExists|already exists/i.test(httpReason(e));
const isNotFound = (e: unknown) => (e as GoogleErrorish)?.code === 5 || /notFound|was not found/i.test(httpReason(e));
// 403 forbidden, as the REST transport maps it (PERMISSION_DENIED), or in Google's words.
const isForbidden = (e: unknown) => !isRateLimited(e) && ((e as GoogleErrorish)?.code === 7 || /\bforbidden\b|PERMISSION_DENIED|Required '[\w.]+' permission/i.test(httpReason(e)));

/** What an operation that ended in error says, as an Error the classifiers above understand. */
function operationError(op: IOperation): Error | undefined {
  const errs = op.error?.errors ?? [];
  if (errs.length === 0) return undefined;
  const e = new Error(errs.map((x) => `${x.code}: ${x.message}`).join('; ')) as Error & GoogleErrorish;
  e.errors = errs.map((x) => ({ reason: x.code ?? undefined }));
  return e;
}

export class GceCloud implements Cloud {
  readonly kind = 'gce' as const;
  readonly ownership = 'marked' as const;
  readonly canReplace = false;
  readonly concurrency: number;
  private readonly instancesClient: InstancesClient;
  private readonly routesClient: RoutesClient;
  private readonly operationsClient: GlobalOperationsClient;
  private readonly projectsClient: ProjectsClient;
  private readonly limits: AccountLimits;
  private projectId?: string;
  private readonly retry: { attempts: number; baseMs: number };

  constructor(opts: GceOptions = {}) {
    this.concurrency = opts.concurrency ?? 8;
    this.projectId = opts.project ?? process.env.GOOGLE_CLOUD_PROJECT ?? process.env.GCLOUD_PROJECT;
    this.retry = { attempts: opts.attempts ?? 6, baseMs: opts.backoffMs ?? 500 };
    const clientOpts: ConstructorParameters<typeof InstancesClient>[0] = { fallback: true };
    if (opts.endpoint) {
      const u = new URL(opts.endpoint);
      Object.assign(clientOpts, {
        apiEndpoint: u.hostname,
        port: Number(u.port) || (u.protocol === 'http:' ? 80 : 443),
        protocol: u.protocol.replace(':', ''),
      });
    }
    const token = opts.accessToken ?? process.env.GOOGLE_OAUTH_ACCESS_TOKEN;
    if (token) {
      // A token that is never refreshed: nothing is fetched from Google's token endpoint.
      const auth = new OAuth2Client();
      auth.setCredentials({ access_token: token, expiry_date: Date.now() + 10 * 365 * 86_400_000 });
      clientOpts.authClient = auth;
    }
    this.instancesClient = new InstancesClient(clientOpts);
    this.routesClient = new RoutesClient(clientOpts);
    this.operationsClient = new GlobalOperationsClient(clientOpts);
    this.projectsClient = new ProjectsClient(clientOpts);
    this.limits = opts.limits ?? new AccountLimits();
  }

  /** The project's ROUTES quota, its limit and usage, or why it could not be read. */
  private async readQuota(project: string): Promise<QuotaReading> {
    try {
      const [p] = await this.call(() => this.projectsClient.get({ project }));
      const q = (p.quotas ?? []).find((x) => x.metric === 'ROUTES');
      if (!q || typeof q.limit !== 'number' || !(q.limit >= 1)) return { ok: false, denied: false, why: `project ${project} reports no ROUTES quota` };
      return { ok: true, limit: Math.floor(q.limit), ...(typeof q.usage === 'number' ? { usage: Math.ceil(q.usage) } : {}) };
    } catch (e) {
      if (isForbidden(e)) return { ok: false, denied: true, why: `no permission to read the ROUTES quota of project ${project} (grant ${QUOTA_PERMISSION})` };
      return { ok: false, denied: false, why: `the ROUTES quota of project ${project} could not be read (projects.get): ${errorMessage(e)}` };
    }
  }

  private async project(): Promise<string> {
    this.projectId ??= await this.instancesClient.getProjectId().catch((e: unknown) => {
      throw new TwillError('NoProject', `no GCE project: set --cloud-project or GOOGLE_CLOUD_PROJECT (${errorMessage(e)})`);
    });
    return this.projectId;
  }

  private call<T>(fn: () => Promise<T>): Promise<T> {
    return withRetry(fn, { attempts: this.retry.attempts, baseMs: this.retry.baseMs, maxMs: 30_000, retryable: isRateLimited });
  }

  /** Waits until a global operation is DONE and throws what it failed with. */
  private async waitFor(project: string, op: IOperation | null | undefined): Promise<void> {
    let cur = op;
    for (let i = 0; cur && cur.status !== 'DONE'; i++) {
      if (!cur.name) throw new TwillError('CloudError', 'GCE answered with an operation that has no name');
      if (i >= 30) throw new TwillError('CloudError', `operation ${cur.name} is not done after 30 waits: the next reconcile looks again`);
      const name = cur.name;
      [cur] = await this.call(() => this.operationsClient.wait({ project, operation: name }));
    }
    const err = cur && operationError(cur);
    if (err) throw err;
  }

  async snapshot(net: NetworkRef): Promise<NetworkSnapshot> {
    if (!LABEL_VALUE.test(net.name)) {
      throw new TwillError('InvalidLabel', `network name ${net.name} cannot be a GCE label value (${MEMBER_TAG}=${net.name}): use lowercase letters, digits, '-' and '_' for gce networks`);
    }
    const project = await this.project();
    const instances: CloudInstance[] = [];
    const tables = new Set<string>();
    let listed: protos.google.cloud.compute.v1.IInstance[];
    try {
      // The whole listing is retried when rate limited: a page cannot be asked for again on its own.
      listed = await this.call(async () => {
        const out: protos.google.cloud.compute.v1.IInstance[] = [];
        const pages = this.instancesClient.aggregatedListAsync({ project, filter: `labels.${MEMBER_TAG} = "${net.name}"`, maxResults: 500 }, { autoPaginate: false });
        for await (const [, scoped] of pages) out.push(...(scoped.instances ?? []));
        return out;
      });
    } catch (e) {
      throw callError(`listing the instances labelled ${MEMBER_TAG}=${net.name} in project ${project} (instances.aggregatedList) failed`, e);
    }
    for (const i of listed) {
      const state = STATES[String(i.status ?? '')];
      if (!state || !i.id || i.labels?.[MEMBER_TAG] !== net.name) continue;
      const nic = i.networkInterfaces?.[0];
      const network = normalizeLink(nic?.network);
      if (network) tables.add(network);
      const problem = !i.canIpForward
        ? `instance ${i.name} has canIpForward off: GCE drops the traffic routed through it; recreate it with --can-ip-forward (it cannot be changed on an existing instance)`
        : !network ? `instance ${i.name} has no network interface` : undefined;
      instances.push({
        id: String(i.id),
        state,
        privateIP: nic?.networkIP ?? undefined,
        target: normalizeLink(i.selfLink),
        tables: network ? [network] : [],
        ...(problem ? { problem } : {}),
      });
    }

    let all: protos.google.cloud.compute.v1.IRoute[];
    try {
      all = await this.call(async () => {
        const out: protos.google.cloud.compute.v1.IRoute[] = [];
        for await (const r of this.routesClient.listAsync({ project, maxResults: 500 }, { autoPaginate: false })) out.push(r);
        return out;
      });
    } catch (e) {
      throw callError(`listing the routes of project ${project} (routes.list) failed`, e);
    }
    const routes: CloudRoute[] = [];
    let used = 0;
    for (const r of all) {
      // The quota counts static routes of every network; subnet, peering and dynamic routes are not in it.
      const type = String(r.routeType ?? '');
      if (type !== 'SUBNET' && type !== 'BGP' && type !== 'TRANSIT' && !r.nextHopPeering) used++;
      if (!r.name || !r.destRange || r.description !== ROUTE_DESCRIPTION || r.name !== routeName(net.name, r.destRange)) continue;
      const table = normalizeLink(r.network);
      if (!table) continue;
      tables.add(table);
      routes.push({
        table,
        destination: r.destRange,
        target: normalizeLink(r.nextHopInstance),
        instanceHop: !!r.nextHopInstance,
        blackhole: (r.warnings ?? []).some((w) => w.code === 'NEXT_HOP_INSTANCE_NOT_FOUND'),
        marked: true,
        ref: r.name,
      });
    }
    const { limit, usage, warning } = await this.limits.limitOf(net, project, () => this.readQuota(project));
    return {
      instances,
      tables: [...tables].map((id) => ({ id, pool: 'project' })),
      // The quota's usage, when read just now, may count a route the list has not shown yet (or the other way round): the larger leaves no route without room.
      pools: [{ id: 'project', what: `route quota of project ${project}`, ...limit, used: Math.max(used, usage ?? 0) }],
      routes,
      ...(warning ? { warnings: [warning] } : {}),
    };
  }

  async createRoute(net: NetworkRef, r: DesiredRoute): Promise<void> {
    const project = await this.project();
    const name = routeName(net.name, r.destination);
    try {
      const [op] = await this.call(() =>
        this.routesClient.insert({
          project,
          routeResource: {
            name,
            description: ROUTE_DESCRIPTION,
            network: COMPUTE_BASE + r.table,
            destRange: r.destination,
            priority: 1000,
            nextHopInstance: COMPUTE_BASE + r.target,
          },
        }),
      );
      await this.waitFor(project, op.latestResponse as IOperation);
    } catch (e) {
      // The name is derived from the destination: an existing one is the route this insert would make.
      if (isAlreadyExists(e)) return;
      if (isQuota(e)) {
        throw new RouteLimitError(`route quota of project ${project} is exhausted: GCE refused the route (QUOTA_EXCEEDED); ask for a higher 'Routes' quota or lower Backend.RouteLimit to match it`);
      }
      throw callError(`inserting route ${name} (${r.destination} -> ${r.target}) failed`, e);
    }
  }

  async deleteRoute(net: NetworkRef, r: CloudRoute): Promise<void> {
    const project = await this.project();
    const name = r.ref ?? routeName(net.name, r.destination);
    try {
      const [op] = await this.call(() => this.routesClient.delete({ project, route: name }));
      await this.waitFor(project, op.latestResponse as IOperation);
    } catch (e) {
      if (isNotFound(e)) return; // already gone: the outcome wanted
      throw callError(`deleting route ${name} failed`, e);
    }
  }

  async instanceNetworks(ref: InstanceRef): Promise<string[] | undefined> {
    if (!ref.zone || !ref.name) return undefined;
    const project = ref.project ?? (await this.project());
    try {
      const [i] = await this.call(() => this.instancesClient.get({ project, zone: ref.zone, instance: ref.name }));
      const net = i.labels?.[MEMBER_TAG];
      return net ? [net] : [];
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw callError(`reading instance ${ref.name} in ${ref.zone} (instances.get) failed`, e);
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.instancesClient.close(), this.routesClient.close(), this.operationsClient.close(), this.projectsClient.close()]);
  }
}
