// iproute2 batch lines for each change. Values come from a NormalState (or
// from the kernel's own records), so they are already canonical and safe to
// put on a line unquoted.

import type { Device, Fdb, Link, Neighbour, Route } from './types.js';

function linkType(link: Link): string {
  switch (link.kind) {
    case 'vxlan':
      return [
        `type vxlan id ${link.vni} dstport ${link.port}`,
        link.local && `local ${link.local}`,
        link.dev && `dev ${link.dev}`,
        link.learning ? 'learning' : 'nolearning',
        link.gbp && 'gbp',
      ]
        .filter(Boolean)
        .join(' ');
    case 'ipip':
      return ['type ipip', link.local && `local ${link.local}`, link.dev && `dev ${link.dev}`].filter(Boolean).join(' ');
    case 'tun':
      throw new Error('tun devices are made with tuntap, not link add');
  }
}

const hasMac = (d: Device) => d.link.kind === 'vxlan';

/** Creates the device with everything but its addresses and up state. */
export function linkAdd(d: Device): string[] {
  if (d.link.kind === 'tun') {
    const out = [`tuntap add dev ${d.name} mode tun`];
    if (d.mtu !== undefined) out.push(`link set dev ${d.name} mtu ${d.mtu}`);
    return out;
  }
  const attrs = [d.mac && hasMac(d) && `address ${d.mac}`, d.mtu !== undefined && `mtu ${d.mtu}`].filter(Boolean).join(' ');
  return [`link add ${d.name}${attrs ? ` ${attrs}` : ''} ${linkType(d.link)}`];
}

export function linkDel(name: string, kind?: string): string {
  return kind === 'tun' ? `tuntap del dev ${name} mode tun` : `link del dev ${name}`;
}

export function linkSet(name: string, attrs: { mtu?: number; mac?: string }): string {
  return `link set dev ${name}${attrs.mtu !== undefined ? ` mtu ${attrs.mtu}` : ''}${attrs.mac ? ` address ${attrs.mac}` : ''}`;
}

export function linkUp(name: string, up: boolean): string {
  return `link set dev ${name} ${up ? 'up' : 'down'}`;
}

export function addrAdd(dev: string, cidr: string): string {
  return `addr add ${cidr} dev ${dev}`;
}

export function addrDel(dev: string, cidr: string): string {
  return `addr del ${cidr} dev ${dev}`;
}

function routeSpec(r: Route, protocol: number): string {
  return [
    r.blackhole ? `blackhole ${r.dst}` : r.dst,
    r.via && `via ${r.via}`,
    r.dev !== undefined && `dev ${r.dev}`,
    r.onlink && 'onlink',
    `proto ${protocol}`,
    `table ${r.table}`,
    `metric ${r.metric}`,
  ]
    .filter(Boolean)
    .join(' ');
}

/**
 * "add", not "replace", for a new route: if someone else's route holds the
 * key, add fails ("File exists") where replace would silently take it over.
 */
export function routeAdd(r: Route, protocol: number): string {
  return `route add ${routeSpec(r, protocol)}`;
}

export function routeReplace(r: Route, protocol: number): string {
  return `route replace ${routeSpec(r, protocol)}`;
}

/** Names the protocol so that the kernel itself refuses to delete a route that is not twill's. */
export function routeDel(r: { dst: string; table: number; metric: number }, protocol: number): string {
  return `route del ${r.dst} proto ${protocol} table ${r.table} metric ${r.metric}`;
}

/** replace also turns a learned (reachable, stale) entry into the permanent one. */
export function neighReplace(n: Neighbour): string {
  return `neigh replace ${n.ip} lladdr ${n.mac} dev ${n.dev} nud permanent`;
}

export function neighDel(n: { ip: string; dev: string }): string {
  return `neigh del ${n.ip} dev ${n.dev}`;
}

export function fdbReplace(f: Fdb): string {
  return `fdb replace ${f.mac} dev ${f.dev} dst ${f.dst} self permanent`;
}

export function fdbDel(f: { mac: string; dev: string; dst?: string }): string {
  return `fdb del ${f.mac} dev ${f.dev}${f.dst ? ` dst ${f.dst}` : ''} self`;
}
