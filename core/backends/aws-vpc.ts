// aws-vpc: a route per node in the VPC's route tables, written by the route controller.
import { typeMessage } from '../go-json.js';
import { readRouteLimit, type BackendSpec } from './spec.js';
import { OVERLAY_MAC_KEY, readOverlay, type OverlayConfig } from './overlay.js';
import { macAddress } from '../mac.js';

export interface AwsVpcBackend { Type: 'aws-vpc'; RouteTableID: string[]; RouteLimit?: number; Overlay?: OverlayConfig }

export const awsVpc: BackendSpec<AwsVpcBackend> = {
  type: 'aws-vpc',
  summary: 'a route per node in the VPC route tables (EC2), written centrally',
  options: ['RouteTableID', 'RouteLimit', 'Overlay'],
  // With Backend.Overlay, every member's agent publishes its overlay device's
  // MAC (IPv4 only: the overlay carries what the VPC routes carry, IPv4).
  agentData: { [OVERLAY_MAC_KEY]: macAddress },
  nodeSecrets: [],
  controlSecrets: [],
  // IPv6 subnets are leased, and get no VPC route (control/routes/routes.ts says so when asked)
  families: [4, 6],
  programsKernel: false,
  podTraffic: true,
  // "Routes per route table": 50 by default (Amazon VPC quotas).
  cloud: { kind: 'aws', routeLimit: 50 },
  read: (f, ctx) => {
    // flannel takes one ID or a list; the effective form is always the list.
    const v = f.raw('RouteTableID');
    const ids: string[] = [];
    if (v !== undefined && typeof v !== 'string' && !Array.isArray(v)) {
      ctx.errors.push(typeMessage('Backend.RouteTableID', v, 'a route table ID or an array of them'));
    } else if (v !== undefined) {
      const list: unknown[] = Array.isArray(v) ? v : [v];
      list.forEach((id, i) => {
        const label = Array.isArray(v) ? `Backend.RouteTableID[${i}]` : 'Backend.RouteTableID';
        if (typeof id !== 'string') ctx.errors.push(typeMessage(label, id, 'a string'));
        else if (id.trim() === '') ctx.errors.push(`${label} is empty: expected a route table ID such as rtb-0123456789abcdef0`);
        else ids.push(id);
      });
    }
    return { Type: 'aws-vpc', RouteTableID: ids, ...readRouteLimit(f, ctx), ...readOverlay(f, ctx) };
  },
};
