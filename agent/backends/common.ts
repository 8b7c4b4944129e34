// Start-up checks and helpers that several backends share.
import { formatIP, parseCidr, parseIP } from '../../core/cidr.js';
import { TwillError } from '../../core/errors.js';
import type { Lease } from '../../core/lease.js';
import type { Entries, KernelIO, LinkRecord } from '../kernel/index.js';
import type { BackendContext } from './backend.js';

/** The network address of a subnet: flannel's address for it on an overlay device, and its gateway. */
export function subnetBase(subnet: string): string {
  const c = parseCidr(subnet, true);
  if (!c) throw new Error(`not a subnet: ${subnet}`);
  return formatIP(c.family, c.ip);
}

/**
 * The public IPv4 address of a backend that carries IPv4 over IPv4 only
 * (ipip, ipsec, udp); refuses, saying what to do instead, an IPv6 public
 * address or an IPv6 pod network.
 */
export function ipv4Underlay(ctx: BackendContext, backend: string, instead = ', or use vxlan'): string {
  const ext = ctx.external;
  const local = ext.publicIP;
  if (!local) throw new TwillError('NoPublicIP', `${backend} needs an IPv4 address on ${ext.iface.name} or --public-ip`);
  if (parseIP(local)?.family !== 4) {
    throw new TwillError('IPv4Only', `${backend} carries IPv4 over IPv4 only, and the public IP ${local} is not IPv4: give --public-ip an IPv4 address${instead ? `${instead} for an IPv6 underlay` : ''}`);
  }
  if (ctx.config.EnableIPv6) throw new TwillError('IPv4Only', `${backend} carries IPv4 only: set EnableIPv6 to false${instead ? `${instead} for IPv6 pod networks` : ''}`);
  return local;
}

/**
 * Refuses to start beside a device of our name that is of another kind: it
 * is someone else's, and the kernel layer would only report it in the way on
 * every pass. Returns the device when it is ours to reuse.
 */
export async function refuseForeignDevice(kernel: KernelIO, name: string, kind: string, what: string, backend: string): Promise<LinkRecord | undefined> {
  const existing = (await kernel.readLinks()).find((l) => l.name === name);
  if (existing && existing.link?.kind !== kind) {
    throw new TwillError(
      'DeviceInUse',
      `a ${existing.kind ?? 'plain'} device named ${name} exists and is not ${what}: twill leaves it alone and cannot run the ${backend} backend beside it; remove or rename it (ip link del ${name}) if nothing needs it`,
    );
  }
  return existing;
}

/**
 * Behind every route a pod needs, a metric no route the host makes for its
 * own bridge reaches (IPv4 connected routes are 0, IPv6 ones 256): the
 * blackhole is used only while no pod bridge holds the subnet.
 */
export const BLACKHOLE_METRIC = 4096;

/**
 * The entries a node needs for its own lease, whatever its peers:
 * flanneld's --ip-blackhole-route drops traffic to the node's own subnets
 * (an address no pod holds yet) instead of sending it out the default route.
 */
export function ownEntries(ctx: BackendContext, own: Lease): Entries {
  const subnets = ctx.blackholeRoute ? [own.subnet, own.ipv6Subnet].filter((s): s is string => !!s) : [];
  return { routes: subnets.map((dst) => ({ dst, blackhole: true, metric: BLACKHOLE_METRIC })), neighbours: [], fdb: [] };
}
