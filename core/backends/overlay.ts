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
import type { BackendConfig } from './index.js';
import type { VxlanBackend } from './vxlan.js';

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
