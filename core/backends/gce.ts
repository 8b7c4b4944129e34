// gce: a route per node in the project's network, written by the route controller.
import { readRouteLimit, type BackendSpec } from './spec.js';
import { OVERLAY_MAC_KEY, readOverlay, type OverlayConfig } from './overlay.js';
import { macAddress } from '../mac.js';

export interface GceBackend { Type: 'gce'; RouteLimit?: number; Overlay?: OverlayConfig }

export const gce: BackendSpec<GceBackend> = {
  type: 'gce',
  summary: 'a route per node in the GCE network, written centrally',
  options: ['RouteLimit', 'Overlay'],
  // With Backend.Overlay, every member's agent publishes its overlay device's
  // MAC (IPv4 only: the overlay carries what the VPC routes carry, IPv4).
  agentData: { [OVERLAY_MAC_KEY]: macAddress },
  nodeSecrets: [],
  controlSecrets: [],
  // IPv6 subnets are leased, and get no VPC route (control/routes/routes.ts says so when asked)
  families: [4, 6],
  programsKernel: false,
  podTraffic: true,
  // Routes per project: 100 by default (GCE quotas); RouteLimit for a raised quota.
  cloud: { kind: 'gce', routeLimit: 100 },
  read: (f, ctx) => ({ Type: 'gce', ...readRouteLimit(f, ctx), ...readOverlay(f, ctx) }),
};
