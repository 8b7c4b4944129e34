// Checks a desired KernelState and fills in its defaults, once, before any
// command is written. Every value ends up inside an iproute2 batch line, and
// a value iproute2 cannot parse makes it exit mid-batch; catching it here
// turns that into one clear error that changes nothing.

import { z } from 'zod';
import { TwillError } from '../../core/errors.js';
import { canonInterfaceAddress, canonIP, canonMac, canonNetwork, isIfname } from './addr.js';
import { deviceKey, fdbKey, neighbourKey, routeKey } from './keys.js';
import type { Device, Fdb, KernelState, Link, Neighbour, NormalState, Route } from './types.js';
import { MAIN_TABLE } from './types.js';

export const DEFAULT_VXLAN_PORT = 8472;

const ifname = z.string().refine(isIfname, { message: 'not a valid interface name (1-15 characters, no spaces, "/", ":", "#" or quotes)' });

const ip = z.string().transform((s, ctx) => {
  const c = canonIP(s);
  if (!c) {
    ctx.addIssue({ code: 'custom', message: `"${s}" is not an IP address` });
    return z.NEVER;
  }
  return c;
});

const mac = z.string().transform((s, ctx) => {
  const c = canonMac(s);
  if (!c) {
    ctx.addIssue({ code: 'custom', message: `"${s}" is not a MAC address like 0e:12:34:56:78:9a` });
    return z.NEVER;
  }
  return c;
});

const u32 = z.number().int().min(0).max(0xffffffff);

const vxlan = z.strictObject({
  kind: z.literal('vxlan'),
  vni: z.number().int().min(0).max(0xffffff),
  port: z.number().int().min(1).max(65535).default(DEFAULT_VXLAN_PORT),
  local: ip.optional(),
  dev: ifname.optional(),
  learning: z.boolean().default(false),
  gbp: z.boolean().default(false),
});
const ipip = z.strictObject({ kind: z.literal('ipip'), local: ip.optional(), dev: ifname.optional() });
const tun = z.strictObject({ kind: z.literal('tun') });

const device = z.strictObject({
  name: ifname,
  link: z.discriminatedUnion('kind', [vxlan, ipip, tun]),
  mtu: z.number().int().min(68).max(65535).optional(),
  mac: mac.optional(),
  addresses: z
    .array(
      z.string().transform((s, ctx) => {
        const c = canonInterfaceAddress(s);
        if (!c) {
          ctx.addIssue({ code: 'custom', message: `"${s}" is not an address with a prefix length, like 10.244.1.0/32` });
          return z.NEVER;
        }
        return c.text;
      }),
    )
    .default([]),
  up: z.boolean().default(true),
});

const route = z.strictObject({
  dst: z.string().transform((s, ctx) => {
    const c = canonNetwork(s);
    if (!c) {
      ctx.addIssue({ code: 'custom', message: `"${s}" is not a network with its host bits clear, like 10.244.2.0/24` });
      return z.NEVER;
    }
    return c;
  }),
  via: ip.optional(),
  dev: ifname.optional(),
  onlink: z.boolean().default(false),
  blackhole: z.boolean().default(false),
  table: z.number().int().min(1).max(0xffffffff).default(MAIN_TABLE),
  metric: u32.optional(),
});

const neighbour = z.strictObject({ dev: ifname, ip, mac });
const fdb = z.strictObject({ dev: ifname, mac, dst: ip });

const state = z.strictObject({
  devices: z.array(device).default([]),
  routes: z.array(route).default([]),
  neighbours: z.array(neighbour).default([]),
  fdb: z.array(fdb).default([]),
});

/** Drops exact duplicates; two different objects under one key are a caller's bug. */
function unique<T>(what: string, items: T[], key: (t: T) => string, errors: string[]): T[] {
  const seen = new Map<string, T>();
  for (const item of items) {
    const k = key(item);
    const prev = seen.get(k);
    if (prev === undefined) seen.set(k, item);
    else if (JSON.stringify(prev) !== JSON.stringify(item)) {
      errors.push(`two different ${what} for ${k}: ${JSON.stringify(prev)} and ${JSON.stringify(item)}`);
    }
  }
  return [...seen.values()];
}

export function normalizeState(input: Partial<KernelState>): NormalState {
  const parsed = state.safeParse(input);
  if (!parsed.success) {
    const errors = parsed.error.issues.map((i) => `${i.path.join('.') || 'state'}: ${i.message}`);
    throw new TwillError('InvalidKernelState', `desired kernel state is invalid: ${errors.join('; ')}`);
  }
  const errors: string[] = [];
  const p = parsed.data;
  const devices: Device[] = p.devices.map((d) => {
    let link: Link;
    if (d.link.kind === 'vxlan') {
      const v = d.link;
      link = {
        kind: 'vxlan', vni: v.vni, port: v.port, learning: v.learning, gbp: v.gbp,
        ...(v.local && { local: v.local.text }),
        ...(v.dev && { dev: v.dev }),
      };
    } else if (d.link.kind === 'ipip') {
      if (d.link.local && d.link.local.family !== 4) errors.push(`device ${d.name}: ipip local ${d.link.local.text} must be IPv4`);
      link = { kind: 'ipip', ...(d.link.local && { local: d.link.local.text }), ...(d.link.dev && { dev: d.link.dev }) };
    } else {
      link = { kind: 'tun' };
    }
    return {
      name: d.name,
      link,
      ...(d.mtu !== undefined && { mtu: d.mtu }),
      ...(d.mac !== undefined && { mac: d.mac }),
      addresses: [...new Set(d.addresses)].sort(),
      up: d.up,
    };
  });
  const routes: Route[] = p.routes.map((r) => {
    if (r.via && r.via.family !== r.dst.family) errors.push(`route ${r.dst.text}: gateway ${r.via.text} is not of the same family`);
    if (r.blackhole && (r.dev !== undefined || r.via)) errors.push(`route ${r.dst.text}: a blackhole route has no device and no gateway`);
    if (!r.blackhole && r.dev === undefined) errors.push(`route ${r.dst.text}: a device is required (only a blackhole route has none)`);
    return {
      family: r.dst.family,
      table: r.table,
      dst: r.dst.text,
      metric: r.metric ?? (r.dst.family === 4 ? 0 : 1024),
      ...(r.via && { via: r.via.text }),
      ...(r.dev !== undefined && { dev: r.dev }),
      blackhole: r.blackhole,
      // onlink only means something with a gateway: without one, IPv4
      // refuses the route ("PERVASIVE and ONLINK can not be set") and IPv6
      // keeps a flag that changes nothing.
      onlink: r.onlink && r.via !== undefined,
    };
  });
  const neighbours: Neighbour[] = p.neighbours.map((n) => ({ dev: n.dev, ip: n.ip.text, mac: n.mac }));
  const fdbs: Fdb[] = p.fdb.map((f) => ({ dev: f.dev, mac: f.mac, dst: f.dst.text }));
  const out: NormalState = {
    devices: unique('devices', devices, deviceKey, errors),
    routes: unique('routes', routes, routeKey, errors),
    neighbours: unique('neighbours', neighbours, neighbourKey, errors),
    fdb: unique('fdb entries', fdbs, fdbKey, errors),
  };
  if (errors.length) throw new TwillError('InvalidKernelState', `desired kernel state is invalid: ${errors.join('; ')}`);
  return out;
}
