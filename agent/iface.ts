// Picks the external interface the way flannel does: --iface (a name or an
// address, repeatable, first match wins), else --iface-regex (matched against
// names and addresses), else the interface of the default route. The address
// published to peers is the interface's first global address unless
// --public-ip overrides it.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { z } from 'zod';
import { containsIP, parseCidr, parseIP, type Cidr } from '../core/cidr.js';
import { TwillError } from '../core/errors.js';

const run = promisify(execFile);

const addrSchema = z.array(
  z.object({
    ifname: z.string(),
    mtu: z.number().optional(),
    flags: z.array(z.string()).default([]),
    addr_info: z.array(z.object({ family: z.string(), local: z.string(), prefixlen: z.number(), scope: z.string().optional() })).default([]),
  }),
);
const routeSchema = z.array(z.object({ dev: z.string().optional(), dst: z.string().optional() }));

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
  publicIP?: string;
  publicIPv6?: string;
}

export interface External {
  iface: Interface;
  /** the address peers reach this host at */
  publicIP?: string;
  publicIPv6?: string;
}

export async function listInterfaces(): Promise<Interface[]> {
  const { stdout } = await run('ip', ['-j', 'addr', 'show']);
  return addrSchema.parse(JSON.parse(stdout)).map((l) => {
    const global = (fam: string) => l.addr_info.find((a) => a.family === fam && (a.scope ?? 'global') === 'global');
    return {
      name: l.ifname,
      mtu: l.mtu ?? 1500,
      ipv4: global('inet')?.local,
      ipv4Prefix: global('inet')?.prefixlen,
      ipv6: global('inet6')?.local,
      addresses: l.addr_info.filter((a) => (a.scope ?? 'global') === 'global').map((a) => a.local),
      up: l.flags.includes('UP'),
    };
  });
}

async function defaultRouteDev(family: '-4' | '-6'): Promise<string | undefined> {
  const { stdout } = await run('ip', ['-j', family, 'route', 'show', 'default']);
  return routeSchema.parse(JSON.parse(stdout || '[]'))[0]?.dev;
}

function hasAddress(i: Interface, ip: string): boolean {
  const want = parseIP(ip);
  if (!want) return false;
  return i.addresses.some((a) => parseIP(a)?.ip === want.ip);
}

export async function findExternal(opts: IfaceOptions, ifaces?: Interface[]): Promise<External> {
  const all = ifaces ?? (await listInterfaces());
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
  } else {
    const dev = (await defaultRouteDev('-4')) ?? (await defaultRouteDev('-6'));
    chosen = dev ? all.find((i) => i.name === dev) : undefined;
    if (!chosen) throw new TwillError('NoInterface', 'this host has no default route: name the external interface with --iface');
  }
  return {
    iface: chosen,
    publicIP: opts.publicIP ?? chosenIP ?? chosen.ipv4,
    publicIPv6: opts.publicIPv6 ?? chosen.ipv6,
  };
}

/** The IPv4 prefixes directly connected to an interface: a peer inside one is on-link. */
export async function connectedPrefixes(name: string): Promise<Cidr[]> {
  const { stdout } = await run('ip', ['-j', '-4', 'addr', 'show', 'dev', name]);
  const out: Cidr[] = [];
  for (const l of addrSchema.parse(JSON.parse(stdout || '[]'))) {
    for (const a of l.addr_info) {
      const c = parseCidr(`${a.local}/${a.prefixlen}`);
      if (c && (a.scope ?? 'global') === 'global') out.push(c);
    }
  }
  return out;
}

export function isOnLink(prefixes: readonly Cidr[], ip: string | null | undefined): boolean {
  const p = ip ? parseIP(ip) : undefined;
  return !!p && prefixes.some((c) => containsIP(c, p.family, p.ip));
}

/** Is this address one of this host's own (on any interface)? */
export async function isLocalAddress(ip: string): Promise<boolean> {
  const want = parseIP(ip);
  if (!want) return false;
  return (await listInterfaces()).some((i) => hasAddress(i, ip));
}
