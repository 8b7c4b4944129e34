// What this host's WireGuard devices should be, from the config, the own
// lease and every peer's: pure, so every rule below is unit-tested without a
// device. flannel's layout: in Mode separate, flannel-wg over IPv4 (port
// ListenPort) for the IPv4 pod network and flannel-wg-v6 over IPv6 (port
// ListenPortV6) for the IPv6 one; in Mode auto, ipv4 and ipv6 one flannel-wg
// (port ListenPort) carries both families over the chosen underlay. Each
// device holds the node's subnet address as /32 (/128) and the route for the
// whole pod network; each peer is its public key, its endpoint and its
// subnets as allowed IPs. One key pair serves every device.
import { parseIP, type Family } from '../../core/cidr.js';
import type { NetConf } from '../../core/config.js';
import { WIREGUARD_OVERHEAD, wireguardKeyProblem, type WireguardBackend } from '../../core/backends/index.js';
import type { Lease } from '../../core/lease.js';
import { canonInterfaceAddress, canonNetwork } from '../kernel/addr.js';
import { subnetBase } from '../backends/common.js';
import { endpointOf } from './wg.js';

export const WG_DEVICE = 'flannel-wg';
export const WG_DEVICE_V6 = 'flannel-wg-v6';
/** Every name the backend claims: a device of these it no longer wants (and that is its own) goes. */
export const WG_DEVICES = [WG_DEVICE, WG_DEVICE_V6] as const;

export interface PeerSpec {
  /** the node whose lease this peer is */
  node: string;
  publicKey: string;
  endpoint: string;
  /** canonical CIDRs, sorted */
  allowedIps: string[];
  keepalive: number;
}

export interface WgDeviceSpec {
  name: string;
  /** the family of the tunnel's own packets (its overhead and MTU); auto: IPv6 when the host has a public IPv6 address */
  underlay: Family;
  listenPort: number;
  mtu: number;
  /** the node's subnet addresses, canonical ("10.244.1.0/32") */
  addresses: string[];
  /** the pod networks routed into the device, canonical */
  routes: string[];
  peers: PeerSpec[];
}

export interface DesiredInput {
  config: NetConf;
  own: Lease;
  peers: Iterable<Lease>;
  /** this host's public addresses (what it publishes) */
  local: { publicIP?: string; publicIPv6?: string };
  /** the underlay interface's MTU */
  underlayMtu: number;
  /** this host's public key: a peer publishing it shares this host's key file */
  publicKey: string;
}

export interface WgDesired {
  devices: WgDeviceSpec[];
  /** what keeps a device or a peer from being built, one line each */
  problems: string[];
}

interface Layout {
  name: string;
  underlay: Family;
  port: number;
  /** the pod families the device carries */
  families: Family[];
}

const isPrivate = (ip: string): boolean => {
  const p = parseIP(ip);
  if (!p) return false;
  if (p.family === 6) return p.ip >> 121n === 0x7en; // fc00::/7
  const a = Number(p.ip >> 24n);
  const b = Number((p.ip >> 16n) & 0xffn);
  return a === 10 || (a === 172 && b >= 16 && b < 32) || (a === 192 && b === 168);
};

/** The devices a mode builds, and what each carries. */
export function layout(b: WireguardBackend, config: NetConf, local: DesiredInput['local']): Layout[] {
  const families = ([4, 6] as const).filter((f) => (f === 4 ? config.EnableIPv4 : config.EnableIPv6));
  switch (b.Mode) {
    case 'separate':
      return families.map((f) => (f === 4 ? { name: WG_DEVICE, underlay: 4, port: b.ListenPort, families: [4] } : { name: WG_DEVICE_V6, underlay: 6, port: b.ListenPortV6, families: [6] }));
    case 'ipv4':
      return [{ name: WG_DEVICE, underlay: 4, port: b.ListenPort, families }];
    case 'ipv6':
      return [{ name: WG_DEVICE, underlay: 6, port: b.ListenPort, families }];
    case 'auto':
      // A peer may be reached over either family: size for the larger header when IPv6 is possible at all.
      return [{ name: WG_DEVICE, underlay: local.publicIPv6 ? 6 : 4, port: b.ListenPort, families }];
  }
}

/** The device MTU: Backend.MTU (else the underlay's) less WireGuard's overhead over the device's underlay family. */
export function deviceMtu(b: WireguardBackend, underlayMtu: number, underlay: Family): number {
  return (b.MTU ?? underlayMtu) - WIREGUARD_OVERHEAD[underlay];
}

/**
 * Where a peer is reached on a device. Mode auto chooses as flanneld does:
 * the peer's only address; else its IPv4 address when that is public and this
 * host has IPv4; else its IPv6 address when both ends' are public; else IPv4.
 */
export function peerEndpoint(b: WireguardBackend, device: Layout, peer: Lease, local: DesiredInput['local']): string | undefined {
  const v4 = peer.publicIP ?? undefined;
  const v6 = peer.publicIPv6 ?? undefined;
  let ip: string | undefined;
  if (b.Mode === 'auto') {
    if (!v4 || !v6) ip = v4 ?? v6;
    else if (!isPrivate(v4) && local.publicIP) ip = v4;
    else if (!isPrivate(v6) && local.publicIPv6 && !isPrivate(local.publicIPv6)) ip = v6;
    else ip = v4;
  } else {
    ip = device.underlay === 4 ? v4 : v6;
  }
  return ip === undefined ? undefined : endpointOf(ip, device.port);
}

const subnetOf = (l: Lease, f: Family) => (f === 4 ? l.subnet : l.ipv6Subnet);

export function desiredDevices(input: DesiredInput): WgDesired {
  const { config, own, local } = input;
  const b = config.Backend as WireguardBackend;
  const problems: string[] = [];
  const devices: WgDeviceSpec[] = [];
  for (const d of layout(b, config, local)) {
    const needs = b.Mode === 'auto' ? (local.publicIP ?? local.publicIPv6) : d.underlay === 4 ? local.publicIP : local.publicIPv6;
    if (!needs) {
      problems.push(`wireguard: ${d.name} runs over ${b.Mode === 'auto' ? 'IPv4 or IPv6' : `IPv${d.underlay}`} and this host has no public ${b.Mode === 'auto' ? '' : `IPv${d.underlay} `}address: give the external interface one, or --public-ip${d.underlay === 6 ? 'v6' : ''}`);
      continue;
    }
    const addresses: string[] = [];
    const routes: string[] = [];
    for (const f of d.families) {
      const subnet = subnetOf(own, f);
      const network = f === 4 ? config.Network : config.IPv6Network;
      if (!subnet || !network) {
        problems.push(`wireguard: the network enables IPv${f} and this node's lease has no IPv${f} subnet`);
        continue;
      }
      addresses.push(canonInterfaceAddress(`${subnetBase(subnet)}/${f === 4 ? 32 : 128}`)!.text);
      routes.push(canonNetwork(network)?.text ?? network);
    }
    devices.push({ name: d.name, underlay: d.underlay, listenPort: d.port, mtu: deviceMtu(b, input.underlayMtu, d.underlay), addresses, routes, peers: [] });
  }

  // Peers in node order, so that of two publishing one key the same one wins on every host.
  const seen = new Map<string, string>();
  for (const peer of [...input.peers].sort((x, y) => (x.node < y.node ? -1 : x.node > y.node ? 1 : 0))) {
    if (peer.backendType !== 'wireguard') {
      problems.push(`peer ${peer.node} runs the ${peer.backendType} backend, not wireguard: it gets no tunnel`);
      continue;
    }
    const key = peer.backendData.PublicKey;
    if (wireguardKeyProblem(key)) {
      problems.push(`peer ${peer.node} published no PublicKey: is its agent running the wireguard backend?`);
      continue;
    }
    const publicKey = key as string;
    if (publicKey === input.publicKey) {
      problems.push(`peer ${peer.node} publishes this node's own public key: the two hosts share one key file (a copied state directory?); remove the key file on one of them`);
      continue;
    }
    const other = seen.get(publicKey);
    if (other) {
      problems.push(`peers ${other} and ${peer.node} publish the same public key: only ${other} gets a tunnel; remove the key file on one of them`);
      continue;
    }
    seen.set(publicKey, peer.node);
    for (const d of layout(b, config, local)) {
      const spec = devices.find((x) => x.name === d.name);
      if (!spec) continue;
      const allowedIps = d.families.map((f) => subnetOf(peer, f)).filter((s): s is string => !!s).map((s) => canonNetwork(s)?.text ?? s).sort();
      if (allowedIps.length === 0) continue;
      const endpoint = peerEndpoint(b, d, peer, local);
      if (!endpoint) {
        problems.push(`peer ${peer.node} has no public ${b.Mode === 'auto' ? '' : `IPv${d.underlay} `}address: it gets no tunnel on ${d.name}`);
        continue;
      }
      spec.peers.push({ node: peer.node, publicKey, endpoint, allowedIps, keepalive: b.PersistentKeepaliveInterval });
    }
  }
  return { devices, problems };
}
