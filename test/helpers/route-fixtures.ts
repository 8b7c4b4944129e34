// Literals the route planner's tests share: one network, one route table,
// and leases, instances and routes made with a line each.
import { parseNetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import type { CloudInstance, CloudRoute, RouteTable } from '../../control/routes/clouds/cloud.js';
import { networkSpace, type CloudTraits } from '../../control/routes/plan.js';

export const conf = parseNetConf({ Network: '10.10.0.0/16', Backend: { Type: 'aws-vpc' } }, {});
export const space = networkSpace('net', conf, 'sim');
export const NOW = Date.parse('2030-01-01T00:00:00Z');
export const HOUR = 3_600_000;
export const T = 'rtb-1';
export const INFERRED: CloudTraits = { ownership: 'inferred', replaceInPlace: true, canPrepare: false };
export const MARKED: CloudTraits = { ownership: 'marked', replaceInPlace: false, canPrepare: false };
export const at = (ms: number) => new Date(NOW + ms).toISOString();
export const TABLES: RouteTable[] = [{ id: T, pool: T }];

export function lease(node: string, subnet: string | null, o: Partial<Lease> = {}): Lease {
  return {
    network: 'net', node, subnet, ipv6Subnet: null, publicIP: `ip-${node}`, publicIPv6: null, backendType: 'aws-vpc',
    backendData: { RouteTarget: node }, expiresAt: at(HOUR), createdAt: at(0), revision: 1, ...o,
  };
}
export function inst(id: string, o: Partial<CloudInstance> = {}): CloudInstance {
  return { id, state: 'running', privateIP: `ip-${id}`, target: id, tables: [T], ...o };
}
export function route(destination: string, target: string | undefined, o: Partial<CloudRoute> = {}): CloudRoute {
  return { table: T, destination, target, instanceHop: true, blackhole: false, marked: false, ...o };
}
