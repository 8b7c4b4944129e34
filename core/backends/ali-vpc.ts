// ali-vpc: a route entry per node in the VPC's route table, written by the route controller.
import { readRouteLimit, type BackendSpec } from './spec.js';
import { OVERLAY_MAC_KEY, readOverlay, type OverlayConfig } from './overlay.js';
import { macAddress } from '../mac.js';

export interface AliVpcBackend { Type: 'ali-vpc'; AccessKeyID: string; AccessKeySecret: string; RouteLimit?: number; Overlay?: OverlayConfig }

export const aliVpc: BackendSpec<AliVpcBackend> = {
  type: 'ali-vpc',
  summary: 'a route entry per node in the VPC route table (Alibaba Cloud), written centrally',
  options: ['AccessKeyID', 'AccessKeySecret', 'RouteLimit', 'Overlay'],
  // With Backend.Overlay, every member's agent publishes its overlay device's
  // MAC (IPv4 only: the overlay carries what the VPC routes carry, IPv4).
  agentData: { [OVERLAY_MAC_KEY]: macAddress },
  nodeSecrets: [],
  // The route controller's key: the agents of an ali-vpc network program
  // nothing, so no node gets it. The key ID is not a secret (it is shown by
  // config check, as Alibaba's console shows it).
  controlSecrets: ['AccessKeySecret'],
  // IPv6 subnets are leased, and get no VPC route (control/routes/routes.ts says so when asked)
  families: [4, 6],
  programsKernel: false,
  podTraffic: true,
  // Custom route entries per route table: 200 by default (Alibaba Cloud's
  // "VPC quotas", vpc_quota_route_entrys_num; CreateRouteEntry's reference: "A
  // route table can contain up to 200 custom route entries"); the account's
  // own quota is read from Quota Center where the key may.
  cloud: { kind: 'ali', routeLimit: 200 },
  read: (f, ctx) => {
    // As flannel does: an empty or absent key falls back to the environment.
    const credential = (name: 'AccessKeyID' | 'AccessKeySecret', envName: string, secret: boolean): string => {
      const given = f.string(name, secret);
      if (given) return given;
      if (given === undefined && f.has(name)) return ''; // wrong type, already reported
      const fromEnv = ctx.env[envName];
      if (fromEnv) return fromEnv;
      ctx.errors.push(`Backend.${name} is missing for type ali-vpc: set it in the Backend or in the environment variable ${envName}`);
      return '';
    };
    return {
      Type: 'ali-vpc',
      AccessKeyID: credential('AccessKeyID', 'ACCESS_KEY_ID', false),
      AccessKeySecret: credential('AccessKeySecret', 'ACCESS_KEY_SECRET', true),
      ...readRouteLimit(f, ctx),
      ...readOverlay(f, ctx),
    };
  },
};
