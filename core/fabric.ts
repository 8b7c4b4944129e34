// The fabric's state in numbers, per network, from what the store holds:
// what the local controller's /metrics and the serverless functions'
// CloudWatch metrics both report. Pure: the caller reads the store.
import { rangeSize } from './allocator.js';
import { subnetRanges, type NetConf } from './config.js';
import type { Status } from './messages.js';

export interface NetworkFigures {
  network: string;
  leases: number;
  revision: number;
  /** subnets still free between SubnetMin and SubnetMax, per family the network enables */
  free: { ipv4?: number; ipv6?: number };
  agentsOnline: number;
  agentsOffline: number;
  /** online agents without a complete, applied view */
  agentsOutOfSync: number;
  /** cloud networks: nodes by the state of their VPC route (undefined elsewhere) */
  routes?: { ok: number; pending: number; error: number };
}

export function fabricFigures(
  networks: { name: string; config: NetConf; leaseCount: number; revision: number }[],
  statuses: { network: string; status: Status }[],
  routes: { network: string; state: 'ok' | 'pending' | 'error' }[],
): NetworkFigures[] {
  return networks.map((n) => {
    const ranges = subnetRanges(n.config);
    // Every lease holds one subnet of each family the network enables.
    const free = (r: typeof ranges.v4) => (r ? Math.max(0, Number(rangeSize(r)) - n.leaseCount) : undefined);
    const mine = statuses.filter((s) => s.network === n.name);
    const theirs = routes.filter((r) => r.network === n.name);
    const count = (state: string) => theirs.filter((r) => r.state === state).length;
    return {
      network: n.name,
      leases: n.leaseCount,
      revision: n.revision,
      free: { ...(ranges.v4 && { ipv4: free(ranges.v4) }), ...(ranges.v6 && { ipv6: free(ranges.v6) }) },
      agentsOnline: mine.filter((s) => s.status.state === 'online').length,
      agentsOffline: mine.filter((s) => s.status.state === 'offline').length,
      agentsOutOfSync: mine.filter((s) => s.status.state === 'online' && s.status.inSync === false).length,
      ...(theirs.length ? { routes: { ok: count('ok'), pending: count('pending'), error: count('error') } } : {}),
    };
  });
}
