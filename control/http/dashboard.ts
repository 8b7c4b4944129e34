// The web dashboard: what the page shows, read from the store in one pass,
// and the page itself (dashboard/ at the top of the repository: plain HTML,
// CSS and JavaScript, no build step). Both the local controller's admin API
// and the deployed one serve it through control/http/api.ts, so an operator
// opens <api>/dashboard/ and signs in with the admin token.
//
// Nothing secret is in the view: no backend option (an ipsec PSK is one), no
// password hash, no token. What a node wrote (its status errors) is bounded
// by the status schema and shown by the page as text, never as markup.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { rangeSize } from '../../core/allocator.js';
import { backendSpec } from '../../core/backends/index.js';
import { formatIP } from '../../core/cidr.js';
import { subnetRanges, type NetConf, type SubnetRange } from '../../core/config.js';
import { limitLabel, routeLimit } from '../routes/clouds/cloud.js';
import { overlayOf, reachOf, type Reach } from '../../core/backends/overlay.js';
import type { Lease } from '../../core/lease.js';
import type { RouteTablesRecord, Store } from '../store/store.js';
import { keyView, type KeyView } from './admin.js';

export interface DashboardRange {
  network: string;
  subnetLen: number;
  /** the first and last subnet's address (SubnetMin, SubnetMax) */
  min: string;
  max: string;
  /** subnets between them */
  size: number;
}

export interface DashboardNetwork {
  name: string;
  backend: string;
  revision: number;
  leases: number;
  ipv4?: DashboardRange;
  ipv6?: DashboardRange;
  /** cloud networks: each route table's use against its limit, as the last reconcile saw it */
  cloud?: {
    /** the limit the route controller counts with: the last reconcile's (the account's quota, Backend.RouteLimit or the default), else the config's */
    routeLimit: number;
    /** where routeLimit came from, as limitLabel says it ("account quota"), and why a default was used */
    limitSource: string;
    limitWhy?: string;
    tables: RouteTablesRecord['tables'];
    updatedAt: string | null;
    /** a network with an overlay (Backend.Overlay): its members reached through their route and over the overlay */
    overlay?: { route: number; overlay: number };
  };
}

export interface DashboardNode {
  name: string;
  network: string;
  /** whether `twill node add` made credentials for it (a cloud instance has none) */
  registered: boolean;
  subnet: string | null;
  ipv6Subnet: string | null;
  publicIP: string | null;
  publicIPv6: string | null;
  /** a reservation (`twill lease reserve`): never expires */
  reserved: boolean;
  expiresAt: string | null;
  agent: { state: string; revision: number | null; inSync: boolean | null; errors: string[]; updatedAt: string } | null;
  route: { state: string; reason: string } | null;
  /** a cloud network with an overlay: how the node is reached, as its lease says */
  reach: Reach | null;
  /** networks with keys (wireguard): the node's public key, and a rotation asked of it (admin.ts keyView) */
  key: KeyView | null;
}

export interface DashboardView {
  time: string;
  networks: DashboardNetwork[];
  nodes: DashboardNode[];
}

function range(r: SubnetRange | undefined): DashboardRange | undefined {
  if (!r) return undefined;
  const size = rangeSize(r);
  return {
    network: `${formatIP(r.network.family, r.network.ip)}/${r.network.prefix}`,
    subnetLen: r.len,
    min: formatIP(r.network.family, r.min),
    max: formatIP(r.network.family, r.max),
    size: size > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(size),
  };
}

/**
 * The limit a cloud network's routes count against, as the route controller
 * last read it (the tightest of its tables): the account's quota where it
 * could read one. Before any reconcile, the config's (Backend.RouteLimit or
 * the documented default).
 */
function cloudLimit(config: NetConf, rec: RouteTablesRecord | undefined): { routeLimit: number; limitSource: string; limitWhy?: string } {
  const tightest = [...(rec?.tables ?? [])].sort((a, b) => a.limit - b.limit)[0];
  if (!tightest) return { routeLimit: routeLimit(config), limitSource: 'RouteLimit' in config.Backend && config.Backend.RouteLimit ? limitLabel('RouteLimit') : limitLabel('default') };
  return { routeLimit: tightest.limit, limitSource: limitLabel(tightest.source ?? 'default'), ...(tightest.why ? { limitWhy: tightest.why } : {}) };
}

function countReach(leases: readonly Lease[]): { route: number; overlay: number } {
  const route = leases.filter((l) => reachOf(l, true) === 'route').length;
  return { route, overlay: leases.length - route };
}

export async function dashboardView(store: Store, now = Date.now()): Promise<DashboardView> {
  const [networks, nodeRecords, statuses, routeStatuses] = await Promise.all([store.listNetworks(), store.listNodes(), store.listStatus(), store.listRouteStatus()]);
  const key = (network: string, node: string) => `${network}\u0000${node}`;
  const statusOf = new Map(statuses.map((s) => [key(s.network, s.node), s]));
  const routeOf = new Map(routeStatuses.map((r) => [key(r.network, r.node), r]));
  const registered = new Map(nodeRecords.map((n) => [key(n.network, n.name), n]));
  const view: DashboardView = { time: new Date(now).toISOString(), networks: [], nodes: [] };
  const seen = new Set<string>();
  const node = (network: string, name: string, lease?: Awaited<ReturnType<Store['listLeases']>>[number], overlay = false): DashboardNode => {
    const k = key(network, name);
    seen.add(k);
    const s = statusOf.get(k);
    const r = routeOf.get(k);
    return {
      name, network, registered: registered.has(k),
      subnet: lease?.subnet ?? null, ipv6Subnet: lease?.ipv6Subnet ?? null,
      publicIP: lease?.publicIP ?? null, publicIPv6: lease?.publicIPv6 ?? null,
      reserved: lease !== undefined && lease.expiresAt === null, expiresAt: lease?.expiresAt ?? null,
      agent: s ? { state: s.status.state, revision: s.status.revision ?? null, inSync: s.status.inSync ?? null, errors: s.status.errors, updatedAt: s.updatedAt } : null,
      route: r ? { state: r.state, reason: r.reason } : null,
      reach: (overlay && lease?.reach) || null,
      key: (lease && keyView(lease, s?.status)) ?? null,
    };
  };
  for (const n of networks) {
    const ranges = subnetRanges(n.config);
    const spec = backendSpec(n.config.Backend.Type);
    const cloud = spec.cloud ? await store.getRouteTables(n.name) : undefined;
    const leases = await store.listLeases(n.name);
    view.networks.push({
      name: n.name, backend: n.config.Backend.Type, revision: n.revision, leases: n.leaseCount,
      ...(ranges.v4 && { ipv4: range(ranges.v4) }), ...(ranges.v6 && { ipv6: range(ranges.v6) }),
      ...(spec.cloud && {
        cloud: {
          ...cloudLimit(n.config, cloud),
          tables: cloud?.tables ?? [], updatedAt: cloud?.updatedAt ?? null,
          ...(overlayOf(n.config.Backend) && { overlay: countReach(leases) }),
        },
      }),
    });
    // A reach left from an overlay since taken out of the config says nothing any more.
    for (const l of leases) view.nodes.push(node(n.name, l.node, l, overlayOf(n.config.Backend) !== undefined));
  }
  // Nodes with credentials that hold no lease (never joined, or released): a first hour's usual question.
  for (const r of nodeRecords) if (!seen.has(key(r.network, r.name))) view.nodes.push(node(r.network, r.name));
  view.nodes.sort((a, b) => (a.network === b.network ? (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) : a.network < b.network ? -1 : 1));
  return view;
}

// ---- the page ----

/**
 * The page's files, by the path under /dashboard/ they are served at. A Map:
 * a plain object would answer for the names it inherits (__proto__,
 * constructor, toString) too.
 */
const ASSETS = new Map<string, { file: string; type: string }>([
  ['', { file: 'index.html', type: 'text/html; charset=utf-8' }],
  ['app.js', { file: 'app.js', type: 'text/javascript; charset=utf-8' }],
  ['style.css', { file: 'style.css', type: 'text/css; charset=utf-8' }],
]);

/**
 * Where dashboard/ is: two levels up from control/http/ in a checkout (tsx),
 * three from dist/control/http/ (the built package), or in the Lambda's
 * task root, where the deployment copies it.
 */
function assetDirs(): string[] {
  const here = import.meta.dirname;
  return [join(here, '..', '..', 'dashboard'), join(here, '..', '..', '..', 'dashboard'), ...(process.env.LAMBDA_TASK_ROOT ? [join(process.env.LAMBDA_TASK_ROOT, 'dashboard')] : [])];
}

const cache = new Map<string, string>();

function readAsset(file: string): string | undefined {
  const hit = cache.get(file);
  if (hit !== undefined) return hit;
  for (const dir of assetDirs()) {
    try {
      const text = readFileSync(join(dir, file), 'utf8');
      cache.set(file, text);
      return text;
    } catch {
      // the next place
    }
  }
  return undefined;
}

/**
 * The page's own rules: its script and style from this origin only, calls
 * to this origin only, never framed, nothing inline, so a string a node
 * wrote can never run as script even if a bug let it into the markup.
 */
export const DASHBOARD_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

/** A GET of the page or one of its files: the answer, or undefined for any other path. Needs no token: nothing in it is secret. */
export function dashboardAsset(path: string): { status: number; headers: Record<string, string>; body: string } | undefined {
  if (path === '/' || path === '/dashboard') return { status: 302, headers: { location: '/dashboard/' }, body: '' };
  if (!path.startsWith('/dashboard/')) return undefined;
  const asset = ASSETS.get(path.slice('/dashboard/'.length));
  if (!asset) return undefined;
  const body = readAsset(asset.file);
  if (body === undefined) return { status: 500, headers: { 'content-type': 'text/plain' }, body: `the dashboard's ${asset.file} is missing from this installation\n` };
  return { status: 200, headers: { 'content-type': asset.type, 'cache-control': 'no-cache', ...DASHBOARD_HEADERS }, body };
}
