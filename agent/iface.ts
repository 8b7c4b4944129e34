// Picks the external interface the way flannel does: --iface (a name or an
// address, repeatable, first match wins), else --iface-regex (matched against
// names and addresses), else --iface-can-reach (the interface the routes use
// for that address), else the interface of the default route. The address
// published to peers is the interface's first global address unless
// --public-ip overrides it.
import { containsIP, parseCidr, parseIP, type Cidr } from '../core/cidr.js';
import { TwillError } from '../core/errors.js';
import type { KernelIO } from './kernel/io.js';
import { MAIN_TABLE, type LinkRecord } from './kernel/types.js';

export interface Interface {
  name: string;
  mtu: number;
  ipv4?: string;
  ipv4Prefix?: number;
  ipv6?: string;
  /** every global address, both families */
  addresses: string[];
  up: boolean;
}

export interface IfaceOptions {
  iface?: string[];
  ifaceRegex?: string[];
  /** flanneld's --iface-can-reach: the interface this host's routes use for that address */
  ifaceCanReach?: string;
  publicIP?: string;
  publicIPv6?: string;
}

export interface External {
  iface: Interface;
  /** the address peers reach this host at */
  publicIP?: string;
  publicIPv6?: string;
}

/** The host's interfaces as the kernel layer reads them (global addresses only). */
export function interfacesOf(links: readonly LinkRecord[]): Interface[] {
  return links.map((l) => {
    const global = l.addresses.filter((a) => a.scope === 'global');
    const first = (fam: 4 | 6) => global.find((a) => a.family === fam)?.cidr.split('/');
    return {
      name: l.name,
      mtu: l.mtu || 1500,
      ipv4: first(4)?.[0],
      ipv4Prefix: first(4) ? Number(first(4)?.[1]) : undefined,
      ipv6: first(6)?.[0],
      addresses: global.map((a) => a.cidr.split('/')[0] as string),
      up: l.up,
    };
  });
}

async function defaultRouteDev(kernel: KernelIO): Promise<string | undefined> {
  const routes = (await kernel.read()).routes.filter((r) => r.table === MAIN_TABLE && r.dev);
  return (routes.find((r) => r.dst === '0.0.0.0/0') ?? routes.find((r) => r.dst === '::/0'))?.dev;
}

/**
 * The device the main table routes ip through: the longest matching prefix,
 * then the lowest metric, as `ip route get` finds it without policy rules.
 */
async function routeDevFor(kernel: KernelIO, ip: string): Promise<string | undefined> {
  const want = parseIP(ip);
  if (!want) throw new TwillError('Usage', `--iface-can-reach ${JSON.stringify(ip)} is not an IP address`);
  let best: { prefix: number; metric: number; dev: string } | undefined;
  for (const r of (await kernel.read()).routes) {
    const c = r.table === MAIN_TABLE && r.dev ? parseCidr(r.dst) : undefined;
    if (!c || c.family !== want.family || !containsIP(c, want.family, want.ip)) continue;
    const metric = r.metric ?? 0;
    if (!best || c.prefix > best.prefix || (c.prefix === best.prefix && metric < best.metric)) best = { prefix: c.prefix, metric, dev: r.dev as string };
  }
  return best?.dev;
}

function hasAddress(i: Interface, ip: string): boolean {
  const want = parseIP(ip);
  if (!want) return false;
  return i.addresses.some((a) => parseIP(a)?.ip === want.ip);
}

/** ifaces, when given, stand for the kernel's (the unit tests of the rules above). */
export async function findExternal(opts: IfaceOptions, kernel: KernelIO, ifaces?: Interface[]): Promise<External> {
  const all = ifaces ?? interfacesOf(await kernel.readLinks());
  let chosen: Interface | undefined;
  let chosenIP: string | undefined;
  if (opts.iface?.length) {
    for (const want of opts.iface) {
      chosen = parseIP(want) ? all.find((i) => hasAddress(i, want)) : all.find((i) => i.name === want);
      if (chosen) {
        if (parseIP(want)?.family === 4) chosenIP = want;
        break;
      }
    }
    if (!chosen) throw new TwillError('NoInterface', `none of --iface ${opts.iface.join(', ')} is an interface name or address of this host`);
  } else if (opts.ifaceRegex?.length) {
    for (const pattern of opts.ifaceRegex) {
      let re: RegExp;
      try { re = new RegExp(pattern); } catch (e) { throw new TwillError('InvalidIfaceRegex', `--iface-regex ${pattern} is not a valid regular expression: ${(e as Error).message}`); }
      chosen = all.find((i) => re.test(i.name)) ?? all.find((i) => [i.ipv4, i.ipv6].some((a) => a !== undefined && re.test(a)));
      if (chosen) break;
    }
    if (!chosen) throw new TwillError('NoInterface', `no interface name or address matches --iface-regex ${opts.ifaceRegex.join(', ')}`);
  } else if (opts.ifaceCanReach) {
    const dev = await routeDevFor(kernel, opts.ifaceCanReach);
    chosen = dev ? all.find((i) => i.name === dev) : undefined;
    if (!chosen) throw new TwillError('NoInterface', `no route of this host reaches --iface-can-reach ${opts.ifaceCanReach}: add one, or name the interface with --iface`);
  } else {
    const dev = await defaultRouteDev(kernel);
    chosen = dev ? all.find((i) => i.name === dev) : undefined;
    if (!chosen) throw new TwillError('NoInterface', 'this host has no default route: name the external interface with --iface');
  }
  return {
    iface: chosen,
    publicIP: opts.publicIP ?? chosenIP ?? chosen.ipv4,
    publicIPv6: opts.publicIPv6 ?? chosen.ipv6,
  };
}

/** The prefixes (both families) directly connected to an interface: a peer inside one is on-link. */
export async function connectedPrefixes(kernel: KernelIO, name: string): Promise<Cidr[]> {
  const link = (await kernel.readLinks()).find((l) => l.name === name);
  const out: Cidr[] = [];
  for (const a of link?.addresses ?? []) {
    const c = a.scope === 'global' ? parseCidr(a.cidr) : undefined;
    if (c) out.push(c);
  }
  return out;
}

export function isOnLink(prefixes: readonly Cidr[], ip: string | null | undefined): boolean {
  const p = ip ? parseIP(ip) : undefined;
  return !!p && prefixes.some((c) => containsIP(c, p.family, p.ip));
}

/** Is this address one of this host's own (on any interface)? */
export async function isLocalAddress(kernel: KernelIO, ip: string): Promise<boolean> {
  const want = parseIP(ip);
  if (!want) return false;
  return interfacesOf(await kernel.readLinks()).some((i) => hasAddress(i, ip));
}
