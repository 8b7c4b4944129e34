// The one interface every cloud implements for the route controller: read a
// network's member instances and the routes in its tables (one snapshot, as
// few list calls as the API allows), and change one route at a time. The
// reconcile (control/routes/routes.ts) decides everything else, the same way for
// every cloud; a cloud file only translates.
import { BACKEND_SPECS, BACKEND_TYPES, CLOUD_NAMES, type CloudName } from '../../../core/backends/index.js';
import type { BackendType, NetConf } from '../../../core/config.js';
import { TwillError, errorMessage } from '../../../core/errors.js';
import type { Lease } from '../../../core/lease.js';

// Which cloud carries which backend is said once, in each backend's spec
// (core/backends/, spec.cloud.kind); the lists and maps here derive from it.

/** What a route controller runs against: a cloud twill writes routes on, or the simulated one (twill sim). */
export const CLOUD_KINDS = [...CLOUD_NAMES, 'sim'] as const;
export type CloudKind = (typeof CLOUD_KINDS)[number];
export type CloudBackendType = 'aws-vpc' | 'gce' | 'ali-vpc';
/** The backend types a cloud's route table carries: those whose spec (core/backends/) names a cloud. */
export const CLOUD_BACKEND_TYPES = BACKEND_TYPES.filter((t) => BACKEND_SPECS[t].cloud) as readonly CloudBackendType[];

/** The cloud whose route table carries each cloud backend type. */
export const CLOUD_OF_BACKEND = Object.fromEntries(
  CLOUD_BACKEND_TYPES.map((t) => [t, BACKEND_SPECS[t].cloud?.kind as CloudName]),
) as Record<CloudBackendType, CloudName>;

/** The backend type each cloud's route table carries (one per cloud): whose networks an instance event of that cloud concerns. */
export const BACKEND_OF_CLOUD = Object.fromEntries(
  CLOUD_BACKEND_TYPES.map((t) => [CLOUD_OF_BACKEND[t], t]),
) as Record<CloudName, CloudBackendType>;

/** The backend types whose networks a cloud serves. The sim stands in for any of them. */
export function backendTypesOf(kind: CloudKind): readonly CloudBackendType[] {
  return kind === 'sim' ? CLOUD_BACKEND_TYPES : CLOUD_BACKEND_TYPES.filter((t) => CLOUD_OF_BACKEND[t] === kind);
}

/**
 * Which of the clouds a host runs serves a backend type's networks (the
 * local daemon runs one, perhaps the sim; the functions run every real
 * cloud): the route controller reconciles a network against it, or not at all.
 */
export function cloudServing(type: BackendType, hosted: readonly CloudKind[]): CloudKind | undefined {
  return hosted.find((kind) => (backendTypesOf(kind) as readonly string[]).includes(type));
}

export function isCloudBackend(type: BackendType): type is CloudBackendType {
  return (CLOUD_BACKEND_TYPES as readonly string[]).includes(type);
}

/** The tag (AWS, Ali) or label (GCE) that makes an instance a member: twill-network=<name>. */
export const MEMBER_TAG = 'twill-network';

/**
 * Route limits as the clouds document their defaults (each type's spec says
 * where): AWS 50 routes per route table, GCE 100 routes per project, Ali 200
 * custom entries per route table. The account's own quota is read where the
 * cloud lets twill read it (quota.ts); Backend.RouteLimit overrides both.
 */
const DEFAULT_ROUTE_LIMIT = Object.fromEntries(
  CLOUD_BACKEND_TYPES.map((t) => [t, BACKEND_SPECS[t].cloud?.routeLimit as number]),
) as Record<CloudBackendType, number>;

export function defaultRouteLimit(type: CloudBackendType): number {
  return DEFAULT_ROUTE_LIMIT[type];
}

/** The limit known without asking the account: Backend.RouteLimit, else the documented default. */
export function routeLimit(config: NetConf): number {
  const b = config.Backend;
  if (!isCloudBackend(b.Type)) throw new TwillError('NotCloudNetwork', `backend ${b.Type} has no VPC routes`);
  return ('RouteLimit' in b && b.RouteLimit) || DEFAULT_ROUTE_LIMIT[b.Type];
}

/**
 * Where a pool's limit came from: the account's quota as the cloud reports
 * it, Backend.RouteLimit, or the cloud's documented default (the quota could
 * not be read, or the cloud has none to read: the simulated one).
 */
export type LimitSource = 'quota' | 'RouteLimit' | 'default';

const LIMIT_LABELS: Record<LimitSource, string> = { quota: 'account quota', RouteLimit: 'Backend.RouteLimit', default: 'documented default' };

/** A limit's source in a few words, for status lines: "account quota". */
export function limitLabel(source: LimitSource): string {
  return LIMIT_LABELS[source];
}

/** "route table rtb-1: 48 of 50 (account quota)", and why a default was used when known. */
export function describePool(p: Pick<RoutePool, 'what' | 'used' | 'limit' | 'source' | 'why'>): string {
  return `${p.what}: ${p.used} of ${p.limit} (${limitLabel(p.source)}${p.why ? `: ${p.why}` : ''})`;
}

/** Instance states, the same words for every cloud. */
export type InstanceState = 'pending' | 'running' | 'stopping' | 'stopped';

/** Alive instances hold a lease and may have a route; stopped ones keep their lease (unrenewed) but lose the route. */
export function isAlive(state: InstanceState): boolean {
  return state === 'pending' || state === 'running';
}

export interface CloudInstance {
  /** the node id: AWS and Ali instance id, GCE numeric instance id, sim instance name */
  id: string;
  state: InstanceState;
  privateIP?: string;
  /** the route's next hop: AWS primary ENI id, GCE instance selfLink, Ali and sim instance id */
  target?: string;
  /** the route tables this instance's route belongs in */
  tables: string[];
  /** why the instance cannot have a route although alive, said so an operator can fix it */
  problem?: string;
  /** AWS: the source/destination check is still on and must be switched off before routing through it */
  needsPrepare?: boolean;
  /**
   * Kept in the lease's backendData, so that a later reconcile still finds this
   * instance's tables after the instance is gone (AWS and Ali route tables).
   */
  leaseData?: Record<string, string>;
}

export interface CloudRoute {
  table: string;
  /** canonical CIDR */
  destination: string;
  /** the next hop as the cloud names it (normalised like CloudInstance.target); undefined when it has none left */
  target?: string;
  /** the next hop is an instance or its interface: the only kind of route twill creates */
  instanceHop: boolean;
  /** the next hop no longer exists (AWS state blackhole, GCE next hop not found, sim terminated) */
  blackhole: boolean;
  /** carries twill's mark (GCE name and description, Ali and sim description) */
  marked: boolean;
  /** the cloud's own handle: GCE route name, Ali route entry id */
  ref?: string;
}

/** Where routes count against a limit: a route table (AWS, Ali, sim) or the whole project (GCE). */
export interface RoutePool {
  id: string;
  /** for messages: "route table rtb-0abc", "project my-project" */
  what: string;
  limit: number;
  /** where the limit came from */
  source: LimitSource;
  /** why the documented default: what kept the account's quota from being read */
  why?: string;
  /** routes present now, of every owner (twill's, other tools', the cloud's own) */
  used: number;
}

export interface RouteTable {
  id: string;
  pool: string;
}

export interface NetworkSnapshot {
  /** tagged instances that still exist (terminated ones are left out: they have left) */
  instances: CloudInstance[];
  tables: RouteTable[];
  pools: RoutePool[];
  /**
   * Routes in those tables whose destination lies inside the network, of any
   * owner: the reconcile decides which are twill's. A cloud that marks its
   * routes (ownership 'marked') returns only marked ones.
   */
  routes: CloudRoute[];
  /** what the reconcile logs as a warning: said once per network and reason in a process (a quota that could not be read) */
  warnings?: string[];
}

/** What a cloud is told about the network it reads or writes. */
export interface NetworkRef {
  name: string;
  config: NetConf;
  /** the leases at the start of the reconcile: their backendData holds what leaseData recorded */
  leases: Lease[];
}

export interface DesiredRoute {
  table: string;
  destination: string;
  target: string;
  /** the node (instance id) the route serves, for messages */
  node: string;
}

/** What an instance event names, for the cloud to look the instance up. */
export interface InstanceRef {
  instanceId: string;
  name?: string;
  zone?: string;
  region?: string;
  project?: string;
}

export interface Cloud {
  readonly kind: CloudKind;
  /**
   * How twill's routes are told from other tools': 'marked' clouds carry a
   * mark twill sets (GCE: name and description) and only marked routes are
   * twill's; 'inferred' clouds cannot label a route (AWS) or have routes made
   * before twill marked them (Ali, flannel's), so ownership is inferred from
   * the next hop (see control/routes/routes.ts).
   */
  readonly ownership: 'marked' | 'inferred';
  /** AWS and sim can retarget a route in place; the others delete and create. */
  readonly canReplace: boolean;
  /** mutating calls in flight at once for one network */
  readonly concurrency: number;

  snapshot(net: NetworkRef): Promise<NetworkSnapshot>;
  createRoute(net: NetworkRef, route: DesiredRoute): Promise<void>;
  replaceRoute?(net: NetworkRef, route: DesiredRoute, current: CloudRoute): Promise<void>;
  deleteRoute(net: NetworkRef, route: CloudRoute): Promise<void>;
  prepareInstance?(net: NetworkRef, instance: CloudInstance): Promise<void>;
  /**
   * The networks the instance's twill-network tag names, or undefined when
   * the instance can no longer be read (terminated, deleted, no permission).
   */
  instanceNetworks(ref: InstanceRef): Promise<string[] | undefined>;
  close?(): Promise<void>;
}

/** The cloud refused a route because its table (or project) is full: the node waits for room. */
export class RouteLimitError extends TwillError {
  constructor(message: string) {
    super('RouteLimit', message);
  }
}

/** A cloud call failed; the message names the call and what to check. */
export class CloudError extends TwillError {
  constructor(message: string, override readonly cause?: unknown) {
    super('CloudError', message);
  }
}

// ---------------------------------------------------------------------------
// Helpers every cloud uses.

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface RetryOptions {
  attempts: number;
  baseMs: number;
  maxMs: number;
  /** which errors are worth another try (throttling, a busy VPC) */
  retryable: (e: unknown) => boolean;
  sleep?: (ms: number) => Promise<void>;
}

/** Exponential backoff with full jitter, as the clouds recommend for throttling. */
export async function withRetry<T>(fn: () => Promise<T>, o: RetryOptions): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (attempt >= o.attempts || !o.retryable(e)) throw e;
      const cap = Math.min(o.maxMs, o.baseMs * 2 ** (attempt - 1));
      await (o.sleep ?? sleep)(cap / 2 + Math.random() * (cap / 2));
    }
  }
}

/** Runs fn over items with at most limit in flight; settles every item, never rejects. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<PromiseSettledResult<R>[]> {
  const out: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        out[i] = { status: 'fulfilled', value: await fn(items[i] as T) };
      } catch (reason) {
        out[i] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

/** One lock per key: Ali cannot change two entries of one VPC at once. */
export class KeyedMutex {
  private tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

/** "what failed: why", for a cloud call. */
export function callError(what: string, e: unknown): CloudError {
  return new CloudError(`${what}: ${errorMessage(e)}`, e);
}

/** The fixed description twill writes on the routes it creates, where the cloud has one. */
export const ROUTE_DESCRIPTION = 'managed by twill: do not edit';

/** Lowercase letters, digits and '-', as GCE names allow. */
function sanitize(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9-]/g, '-');
}

function shortHash(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

/**
 * twill-<network>-<cidr with dots, colons and slash as dashes>, at most 63
 * characters of [a-z0-9-]. A network name GCE cannot hold as is (upper case,
 * '.', '_') or one too long is shortened and given a hash of the real name, so
 * two networks never share a route name.
 */
export function routeName(network: string, cidr: string): string {
  const tail = cidr.replace(/[./:]/g, '-');
  const clean = sanitize(network);
  const plain = `twill-${clean}-${tail}`;
  if (clean === network && plain.length <= 63) return plain;
  const room = 63 - `twill--${shortHash(network)}-${tail}`.length;
  return `twill-${clean.slice(0, Math.max(0, room)).replace(/-+$/, '')}-${shortHash(network)}-${tail}`.replace(/^twill--/, 'twill-');
}
