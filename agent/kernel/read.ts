// Reads the kernel's tables through iproute2's JSON output and turns them
// into small typed records. The schemas are lenient (unknown fields are
// dropped, most fields optional) because the JSON differs between iproute2
// versions and between object types; what twill relies on is checked.
//
// Shapes worth knowing (iproute2 6.1):
// - routes: "protocol", "table", "type", "scope" and "metric" are left out
//   when they are boot (3), main (254), unicast, global and 0; with -N the
//   ones present are numbers in strings ("122"). dst is "default" for /0 in
//   both families and a bare address for host routes.
// - neighbours: "state" is an array (["PERMANENT"]); fdb entries: "state" is
//   a string ("permanent") and the device is "ifname", not "dev".
// - vxlan: the local address is "local" for IPv4 and "local6" for IPv6, the
//   underlay device is "link", and "gbp" only appears when set.
// - -N also turns address scopes into numbers ("253" for link), and -d makes
//   routes print their protocol even when it is boot.
// - a blackhole route (type 6) has no device in IPv4 and "lo" in IPv6.

import { z } from 'zod';
import { canonInterfaceAddress, canonIP, canonNetwork } from './addr.js';
import { run, runJson, type RunOptions } from './exec.js';
import { formatCidr, parseCidr } from '../../core/cidr.js';
import type {
  ActualState,
  AddressRecord,
  Family,
  FdbRecord,
  Link,
  LinkRecord,
  NeighbourRecord,
  RouteRecord,
} from './types.js';
import { MAIN_TABLE } from './types.js';

export interface ReadOptions {
  netns?: string;
  timeoutMs?: number;
}

const num = z.union([z.number(), z.string()]).transform((v) => Number(v));

const linkJson = z.object({
  ifindex: z.number(),
  ifname: z.string(),
  flags: z.array(z.string()).default([]),
  mtu: z.number().default(0),
  address: z.string().optional(),
  master: z.string().optional(),
  linkinfo: z
    .object({
      info_kind: z.string().optional(),
      info_data: z.record(z.string(), z.unknown()).optional(),
    })
    .optional(),
  addr_info: z
    .array(
      z.object({
        family: z.string(),
        local: z.string().optional(),
        prefixlen: z.number().optional(),
        scope: z.string().optional(),
      }),
    )
    .default([]),
});

const routeJson = z.object({
  dst: z.string(),
  type: num.optional(),
  table: num.optional(),
  protocol: num.optional(),
  scope: num.optional(),
  metric: num.optional(),
  gateway: z.string().optional(),
  via: z.object({ family: z.string().optional(), host: z.string() }).optional(),
  dev: z.string().optional(),
  prefsrc: z.string().optional(),
  pref: z.string().optional(),
  flags: z.array(z.string()).default([]),
  nexthops: z.array(z.unknown()).optional(),
});

const neighJson = z.object({
  dst: z.string(),
  dev: z.string().optional(),
  lladdr: z.string().optional(),
  state: z.array(z.string()).default([]),
});

const fdbJson = z.object({
  mac: z.string(),
  ifname: z.string().optional(),
  dev: z.string().optional(),
  dst: z.string().optional(),
  flags: z.array(z.string()).default([]),
  state: z.string().optional(),
  master: z.string().optional(),
  vni: z.number().optional(),
  port: z.number().optional(),
});

function list<T extends z.ZodType>(schema: T, json: unknown, what: string): z.infer<T>[] {
  if (!Array.isArray(json)) throw new Error(`${what}: expected a JSON array from iproute2`);
  const out: z.infer<T>[] = [];
  for (const item of json) {
    const r = schema.safeParse(item);
    // One odd entry (a kind this version prints differently) must not blind
    // the reconcile to all the others, so it is skipped, not fatal.
    if (r.success) out.push(r.data);
  }
  return out;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
const addrOrNone = (v: unknown): string | undefined => {
  const s = str(v);
  return s && s !== 'any' ? (canonIP(s)?.text ?? s) : undefined;
};

function parseLinkKind(kind: string | undefined, data: Record<string, unknown> | undefined): Link | undefined {
  const d = data ?? {};
  if (kind === 'vxlan') {
    const local = addrOrNone(d.local) ?? addrOrNone(d.local6);
    const dev = str(d.link);
    return {
      kind: 'vxlan',
      vni: Number(d.id),
      port: Number(d.port),
      learning: d.learning === true,
      gbp: d.gbp === true,
      ...(local && { local }),
      ...(dev && { dev }),
    };
  }
  if (kind === 'ipip') {
    const local = addrOrNone(d.local);
    const dev = str(d.link);
    return { kind: 'ipip', ...(local && { local }), ...(dev && { dev }) };
  }
  if (kind === 'tun' && d.type === 'tun') return { kind: 'tun' };
  return undefined;
}

// -N prints scopes as numbers (rtnetlink's RT_SCOPE_*); everything else as names.
const SCOPES: Record<string, string> = { '0': 'global', '200': 'site', '253': 'link', '254': 'host', '255': 'nowhere' };
const scopeName = (s: string | undefined) => (s === undefined ? 'global' : (SCOPES[s] ?? s));

/** Parses `ip -j -d addr show` (with or without -N): every link with its details and its addresses. */
export function parseLinks(json: unknown): LinkRecord[] {
  return list(linkJson, json, 'links').map((l) => {
    const addresses: AddressRecord[] = [];
    for (const a of l.addr_info) {
      if ((a.family !== 'inet' && a.family !== 'inet6') || a.local === undefined || a.prefixlen === undefined) continue;
      const c = canonInterfaceAddress(`${a.local}/${a.prefixlen}`);
      if (c) addresses.push({ family: c.family, cidr: c.text, scope: scopeName(a.scope) });
    }
    const kind = l.linkinfo?.info_kind;
    const link = parseLinkKind(kind, l.linkinfo?.info_data);
    return {
      index: l.ifindex,
      name: l.ifname,
      ...(kind && { kind }),
      ...(link && { link }),
      mtu: l.mtu,
      ...(l.address && { mac: l.address.toLowerCase() }),
      up: l.flags.includes('UP'),
      flags: l.flags,
      ...(l.master && { master: l.master }),
      addresses,
    };
  });
}

function routeFamily(r: z.infer<typeof routeJson>): Family {
  for (const s of [r.dst, r.gateway, r.via?.host, r.prefsrc]) {
    if (s && s !== 'default') return s.includes(':') ? 6 : 4;
  }
  // The kernel sends a router preference with every IPv6 route, never with IPv4.
  return r.pref !== undefined ? 6 : 4;
}

function routeDst(dst: string, family: Family): string | undefined {
  if (dst === 'default') return family === 4 ? '0.0.0.0/0' : '::/0';
  const text = dst.includes('/') ? dst : `${dst}/${family === 4 ? 32 : 128}`;
  const fast = canonNetwork(text);
  if (fast) return fast.text;
  const c = parseCidr(text);
  return c && formatCidr(c);
}

const RTN_BLACKHOLE = 6;

/** Parses `ip -N -j route show table all` (numeric tables, protocols, scopes and types). */
export function parseRoutes(json: unknown): RouteRecord[] {
  const out: RouteRecord[] = [];
  for (const r of list(routeJson, json, 'routes')) {
    const family = routeFamily(r);
    const dst = routeDst(r.dst, family);
    if (!dst) continue;
    const gw = r.gateway ?? r.via?.host;
    const via = gw ? (canonIP(gw)?.text ?? gw) : undefined;
    out.push({
      family,
      table: r.table ?? MAIN_TABLE,
      type: r.type ?? 1,
      dst,
      metric: r.metric ?? 0,
      protocol: r.protocol ?? 3,
      scope: r.scope ?? 0,
      ...(via && { via }),
      // The kernel hangs an IPv6 blackhole route on lo (IPv4 on no device): a
      // blackhole route has no device to twill, in either family.
      ...(r.dev && r.type !== RTN_BLACKHOLE && { dev: r.dev }),
      onlink: r.flags.includes('onlink'),
      flags: r.flags,
      multipath: r.nexthops !== undefined,
    });
  }
  return out;
}

/** Parses `ip -j neigh show`. */
export function parseNeighbours(json: unknown): NeighbourRecord[] {
  const out: NeighbourRecord[] = [];
  for (const n of list(neighJson, json, 'neighbours')) {
    const ip = canonIP(n.dst);
    if (!ip || !n.dev) continue;
    out.push({
      family: ip.family,
      dev: n.dev,
      ip: ip.text,
      ...(n.lladdr && { mac: n.lladdr.toLowerCase() }),
      state: n.state,
      permanent: n.state.includes('PERMANENT'),
    });
  }
  return out;
}

/** Parses `bridge -j fdb show`. */
export function parseFdb(json: unknown): FdbRecord[] {
  const out: FdbRecord[] = [];
  for (const f of list(fdbJson, json, 'fdb')) {
    const dev = f.ifname ?? f.dev;
    if (!dev) continue;
    const dst = f.dst ? (canonIP(f.dst)?.text ?? f.dst) : undefined;
    out.push({
      dev,
      mac: f.mac.toLowerCase(),
      ...(dst && { dst }),
      ...(f.state && { state: f.state }),
      permanent: f.state === 'permanent',
      self: f.flags.includes('self'),
      ...(f.master && { master: f.master }),
      ...(f.vni !== undefined && { vni: f.vni }),
      ...(f.port !== undefined && { port: f.port }),
    });
  }
  return out;
}

function opts(o: ReadOptions): RunOptions {
  return { netns: o.netns, timeoutMs: o.timeoutMs };
}

export async function readLinks(o: ReadOptions = {}): Promise<LinkRecord[]> {
  return parseLinks(await runJson(['ip', '-j', '-d', 'addr', 'show'], opts(o)));
}

export async function readRoutes(o: ReadOptions = {}): Promise<RouteRecord[]> {
  // Family unspecified: one dump holds both IPv4 and IPv6, in every table.
  return parseRoutes(await runJson(['ip', '-N', '-j', 'route', 'show', 'table', 'all'], opts(o)));
}

export async function readNeighbours(o: ReadOptions = {}): Promise<NeighbourRecord[]> {
  return parseNeighbours(await runJson(['ip', '-j', 'neigh', 'show'], opts(o)));
}

export async function readFdb(o: ReadOptions = {}): Promise<FdbRecord[]> {
  return parseFdb(await runJson(['bridge', '-j', 'fdb', 'show'], opts(o)));
}

// The three ip dumps share one process: `ip -j -batch` prints one JSON array
// per line read. Spawning costs more than dumping thousands of entries, and
// from a large parent process (fork of its whole address space) more still.
const IP_READS = ['addr show', 'route show table all', 'neigh show'];

/** Splits `ip -j -batch` output into its per-command JSON documents. */
export function splitJsonLines(text: string, expected: number, what: string): unknown[] {
  const docs = text.split('\n').filter((l) => l.trim() !== '');
  if (docs.length !== expected) throw new Error(`${what}: expected ${expected} JSON documents from iproute2, got ${docs.length}`);
  return docs.map((d) => JSON.parse(d) as unknown);
}

/** One dump of each table, taken concurrently in two processes (ip, bridge). */
export async function readKernel(o: ReadOptions = {}): Promise<ActualState> {
  const [ipOut, fdbJson] = await Promise.all([
    run(['ip', '-N', '-d', '-j', '-batch', '-'], { ...opts(o), input: IP_READS.join('\n') + '\n' }),
    runJson(['bridge', '-j', 'fdb', 'show'], opts(o)),
  ]);
  const [addrJson, routeJson, neighJson] = splitJsonLines(ipOut.stdout, IP_READS.length, 'ip -batch read');
  return { links: parseLinks(addrJson), routes: parseRoutes(routeJson), neighbours: parseNeighbours(neighJson), fdb: parseFdb(fdbJson) };
}
