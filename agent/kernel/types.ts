// The vocabulary of the kernel layer: what a backend asks for (specs), what
// the kernel has (records), and which of the kernel's objects are twill's.
import type { Family } from '../../core/cidr.js';

export type { Family };

/**
 * The routing protocol number stamped on every route twill installs, and the
 * only thing that makes a route twill's. Names for protocols live in
 * /etc/iproute2/rt_protos, which an agent should not edit, so the number is
 * used directly (`proto 122`; `ip route show proto 122` lists them).
 * 122 (0x7a) is not reserved by the kernel (0-4), not listed in iproute2's
 * rt_protos (zebra 11, bird 12, dhcp 16, babel 42, openr 99, bgp 186, ...),
 * and not used by the CNIs a flannel host is likely to share with (Calico's
 * felix uses 80). flannel itself installs routes as "boot" (3), which is why
 * twill never deletes those: taking over from flannel leaves its routes in
 * place until an operator removes them or the same key is needed.
 */
export const TWILL_ROUTE_PROTOCOL = 122;

export const MAIN_TABLE = 254;

// ---- what a backend asks for ----------------------------------------------

export interface VxlanLink {
  kind: 'vxlan';
  vni: number;
  /** UDP port; default 8472, Linux's (and flannel's) */
  port?: number;
  /** source address of the encapsulated packets (the node's public IP) */
  local?: string;
  /** underlay interface */
  dev?: string;
  /** default false: flannel programs every fdb and neighbour entry itself */
  learning?: boolean;
  gbp?: boolean;
}

export interface IpipLink {
  kind: 'ipip';
  local?: string;
  dev?: string;
}

/** A persistent TUN device that a user-space process (the udp backend) attaches to. */
export interface TunLink {
  kind: 'tun';
}

export type LinkSpec = VxlanLink | IpipLink | TunLink;
export type LinkKind = LinkSpec['kind'];

export interface DeviceSpec {
  name: string;
  link: LinkSpec;
  /** left to the kernel when unset */
  mtu?: number;
  /** left to the kernel when unset (and then a new one after every recreation) */
  mac?: string;
  /** "ip/prefix"; twill removes any other global address from the device */
  addresses?: string[];
  /** default true */
  up?: boolean;
}

export interface RouteSpec {
  /** "a.b.c.d/n" or "x::/n", host bits clear */
  dst: string;
  via?: string;
  /** the device; absent for a blackhole route, required otherwise */
  dev?: string;
  /** a route that drops what it matches (RTN_BLACKHOLE): no device, no gateway */
  blackhole?: boolean;
  onlink?: boolean;
  /** default 254 (main) */
  table?: number;
  /** default 0 for IPv4, 1024 for IPv6 (what the kernel picks) */
  metric?: number;
}

/** A permanent neighbour entry: ip resolves to mac on dev. */
export interface NeighbourSpec {
  dev: string;
  ip: string;
  mac: string;
}

/** A vxlan forwarding entry: frames for mac go to the VTEP at dst ("self permanent", as flannel writes them). */
export interface FdbSpec {
  dev: string;
  mac: string;
  dst: string;
}

/** The whole of what twill wants the kernel to hold. */
export interface KernelState {
  devices: DeviceSpec[];
  routes: RouteSpec[];
  neighbours: NeighbourSpec[];
  fdb: FdbSpec[];
}

// ---- the same, with every default filled in and every address canonical ----

export type Link =
  | Required<Pick<VxlanLink, 'kind' | 'vni' | 'port' | 'learning' | 'gbp'>> & Pick<VxlanLink, 'local' | 'dev'>
  | IpipLink
  | TunLink;

export interface Device {
  name: string;
  link: Link;
  mtu?: number;
  mac?: string;
  addresses: string[];
  up: boolean;
}

export interface Route {
  family: Family;
  table: number;
  dst: string;
  metric: number;
  via?: string;
  /** absent exactly for a blackhole route */
  dev?: string;
  onlink: boolean;
  blackhole: boolean;
}

export type Neighbour = NeighbourSpec;
export type Fdb = FdbSpec;

export interface NormalState {
  devices: Device[];
  routes: Route[];
  neighbours: Neighbour[];
  fdb: Fdb[];
}

// ---- what the kernel has ----------------------------------------------------

export interface AddressRecord {
  family: Family;
  /** "ip/prefix" */
  cidr: string;
  scope: string;
}

export interface LinkRecord {
  index: number;
  name: string;
  /** linkinfo's kind ("vxlan", "veth", "bridge", ...); undefined for plain devices like lo */
  kind?: string;
  /** parsed when kind is one twill creates */
  link?: Link;
  mtu: number;
  mac?: string;
  /** administratively up */
  up: boolean;
  flags: string[];
  master?: string;
  addresses: AddressRecord[];
}

export interface RouteRecord {
  family: Family;
  table: number;
  /** numeric route type: 1 unicast, 2 local, 3 broadcast, 6 blackhole, ... */
  type: number;
  dst: string;
  metric: number;
  protocol: number;
  scope: number;
  via?: string;
  dev?: string;
  onlink: boolean;
  flags: string[];
  /** present for multipath routes, which twill never installs */
  multipath: boolean;
}

export interface NeighbourRecord {
  family: Family;
  dev: string;
  ip: string;
  mac?: string;
  state: string[];
  permanent: boolean;
}

export interface FdbRecord {
  dev: string;
  mac: string;
  dst?: string;
  state?: string;
  permanent: boolean;
  self: boolean;
  master?: string;
  vni?: number;
  port?: number;
}

export interface ActualState {
  links: LinkRecord[];
  routes: RouteRecord[];
  neighbours: NeighbourRecord[];
  fdb: FdbRecord[];
}

// ---- ownership ----------------------------------------------------------------

export interface OwnedDevice {
  /** an exact name, or a pattern such as /^flannel\.\d+$/ */
  name: string | RegExp;
  kind: LinkKind;
}

/**
 * What twill may change. A device is twill's when its name matches an entry
 * here and its kind matches too: a "flannel.1" that is a bridge is someone
 * else's and is left alone. Only twill's devices are created, changed or
 * deleted, only their permanent neighbours and fdb entries are managed, and
 * only routes carrying routeProtocol are ever replaced or deleted.
 */
export interface Ownership {
  devices: readonly OwnedDevice[];
  /** default TWILL_ROUTE_PROTOCOL */
  routeProtocol?: number;
}

/** The devices flannel creates, for a twill that takes over a flannel host. */
export const FLANNEL_DEVICES: readonly OwnedDevice[] = [
  { name: /^flannel\.\d+$/, kind: 'vxlan' },
  { name: /^flannel-v6\.\d+$/, kind: 'vxlan' },
  { name: 'flannel.ipip', kind: 'ipip' },
  { name: 'flannel0', kind: 'tun' },
];
