// The overlay of a cloud network (a twill extension): Backend.Overlay on
// aws-vpc, gce and ali-vpc names a vxlan overlay that carries the traffic of
// every member the cloud's route table does not (past the route limit, a
// route deleted by another tool, a host outside the cloud). A member whose
// cloud route is in place is reached through the VPC as before; a pair of
// members talks over the overlay, both ways, when either of them is not.
//
// This file holds the contract the route controller and the agents share:
// the config's shape and the lease's Reach. How the config is read is in the
// cloud backends' specs; what the agent builds is in agent/backends/.
import { Fields, isObject, typeMessage } from '../go-json.js';
import type { BackendConfig } from './index.js';
import { unknownKey, type ReadContext } from './spec.js';
import { vxlan, type VxlanBackend } from './vxlan.js';

/** Backend.Overlay: vxlan with vxlan's options (VNI, Port, GBP, MTU, Learning). */
export type OverlayConfig = Omit<VxlanBackend, 'DirectRouting'>;

/**
 * How a member of a cloud network with an overlay is reached, as the route
 * controller decides it and writes it in the member's lease: through its
 * cloud route (confirmed in place), or over the overlay, and why
 * ("route table full (2 of 2)", "outside the cloud").
 */
export type Reach = { via: 'route' } | { via: 'overlay'; why: string };

/**
 * How a lease's node is reached. A lease the controller has not judged yet
 * (absent reach) counts as overlay on a network with one: the overlay works
 * without the cloud, the route only once it is in place.
 */
export function reachOf(lease: { reach?: Reach }, hasOverlay: boolean): Reach['via'] {
  if (!hasOverlay) return 'route';
  return lease.reach?.via ?? 'overlay';
}

/** Whether two members talk over the overlay: when either is not reached through its route. */
export function pairUsesOverlay(a: Reach['via'], b: Reach['via']): boolean {
  return a === 'overlay' || b === 'overlay';
}

/** The overlay a network's config names, if its backend is a cloud's and names one. */
export function overlayOf(backend: BackendConfig): OverlayConfig | undefined {
  return 'Overlay' in backend ? backend.Overlay : undefined;
}

/** The options Backend.Overlay takes besides Type: vxlan's, but DirectRouting (the VPC is the direct path). */
export const OVERLAY_OPTIONS: readonly string[] = vxlan.options.filter((o) => o !== 'DirectRouting');

/** The key a cloud backend's members publish their overlay device's MAC under (vxlan's, flannel's BackendData.VtepMAC). */
export const OVERLAY_MAC_KEY = 'VtepMAC';

/**
 * Reads Backend.Overlay of a cloud backend with vxlan's own rules (its
 * defaults, ranges and messages, labelled Backend.Overlay.*). Only vxlan is
 * accepted, and DirectRouting is refused: on a cloud network the VPC is the
 * direct path. Unknown keys are warned about as the Backend's own are.
 */
export function readOverlay(f: Fields, ctx: ReadContext): { Overlay?: OverlayConfig } {
  const value = f.raw('Overlay');
  if (value === undefined) return {};
  const label = f.label('Overlay');
  if (!isObject(value)) {
    ctx.errors.push(typeMessage(label, value, 'an object such as {"Type": "vxlan"}'));
    return {};
  }
  const o = new Fields(value, ctx.errors, `${label}.`);
  const type = o.string('Type');
  if (type === undefined) {
    if (!o.has('Type')) ctx.errors.push(`${label}.Type is missing: the overlay of a cloud network is vxlan, e.g. "Overlay": {"Type": "vxlan"}`);
    return {};
  }
  // The backend's Type is matched case-insensitively (flanneld lowercases it), and so is this one.
  if (type.toLowerCase() !== 'vxlan') {
    ctx.errors.push(`${label}.Type ${JSON.stringify(type)} is not accepted: the overlay of a cloud network is vxlan ("Type": "vxlan", with vxlan's options ${OVERLAY_OPTIONS.join(', ')})`);
    return {};
  }
  if (ctx.families && !ctx.families.v4) {
    ctx.errors.push(`${label} carries IPv4 only, as the VPC routes do, and this network does not enable IPv4: set EnableIPv4 (and Network), or leave the overlay out`);
  }
  const { DirectRouting, ...overlay } = vxlan.read(o, ctx);
  if (DirectRouting) {
    ctx.errors.push(`${label}.DirectRouting is not taken: on a cloud network the VPC is the direct path (a member whose cloud route is in place is reached through it); leave it out`);
  }
  for (const key of o.unknown()) ctx.warnings.push(unknownKey(`${label}.`, key, ['Type', ...OVERLAY_OPTIONS], 'option of the vxlan overlay'));
  return { Overlay: overlay };
}

/**
 * What `twill config check` says of a network's overlay: a twill extension
 * flannel lacks (flanneld ignores the key), what it does, and what it asks
 * of the hosts.
 */
export function explainOverlay(config: { EnableIPv6: boolean; Backend: BackendConfig }): string[] {
  const overlay = overlayOf(config.Backend);
  if (!overlay) return [];
  const mtu = overlay.MTU ? `sized from MTU ${overlay.MTU}` : "sized from the underlay's MTU";
  const notes = [
    `Backend.Overlay is a twill extension flannel lacks (flanneld ignores it): a member whose cloud route is in place is reached through the VPC, and a member without one (past the route limit, a route deleted by another tool, a host outside the cloud) talks with every member over vxlan VNI ${overlay.VNI}, UDP port ${overlay.Port} (${mtu}), both ways`,
    `every member runs the twill agent (it builds flannel.${overlay.VNI} and publishes its VtepMAC); a member without one is reachable only through its cloud route, and the agents say so; allow UDP ${overlay.Port} between members in the security groups or firewall rules`,
    "subnet.env's FLANNEL_MTU is the overlay's on every member (a pod's packets may take it); strict reverse-path filtering (rp_filter=1) drops nothing, also while a member moves between its route and the overlay",
  ];
  if (config.EnableIPv6) notes.push('the overlay carries IPv4 only, as the VPC routes do: IPv6 subnets are leased and get no path between members');
  return notes;
}
