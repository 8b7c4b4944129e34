// The fabric's state in numbers, per network, from what the store holds:
// what the local controller's /metrics and the serverless functions'
// CloudWatch metrics both report. Pure: the caller reads the store.
import { rangeSize } from './allocator.js';
import { subnetRanges, type NetConf } from './config.js';
import type { Status } from './messages.js';

/**
 * What an agent's last status says of it, as the fabric counts it: online
 * (and not reporting itself out of sync), online but out of sync, offline.
 * The stores keep a count per state and network as statuses are written, so
 * the figures cost the same to read at any size.
 */
export type AgentState = 'online' | 'outOfSync' | 'offline';
export const AGENT_STATES: readonly AgentState[] = ['online', 'outOfSync', 'offline'];

export function agentState(status: Status): AgentState {
  if (status.state === 'offline') return 'offline';
  // An agent that does not say (an older one) is not counted out of sync.
  return status.inSync === false ? 'outOfSync' : 'online';
}

/** Agents of one network by state; each agent is in exactly one. */
export type AgentCounts = Record<AgentState, number>;
export const noAgents = (): AgentCounts => ({ online: 0, outOfSync: 0, offline: 0 });

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
  agents: ReadonlyMap<string, AgentCounts>,
  routes: { network: string; state: 'ok' | 'pending' | 'error' }[],
): NetworkFigures[] {
  return networks.map((n) => {
    const ranges = subnetRanges(n.config);
    // Every lease holds one subnet of each family the network enables.
    const free = (r: typeof ranges.v4) => (r ? Math.max(0, Number(rangeSize(r)) - n.leaseCount) : undefined);
    const a = agents.get(n.name) ?? noAgents();
    const theirs = routes.filter((r) => r.network === n.name);
    const count = (state: string) => theirs.filter((r) => r.state === state).length;
    return {
      network: n.name,
      leases: n.leaseCount,
      revision: n.revision,
      free: { ...(ranges.v4 && { ipv4: free(ranges.v4) }), ...(ranges.v6 && { ipv6: free(ranges.v6) }) },
      agentsOnline: a.online + a.outOfSync,
      agentsOffline: a.offline,
      agentsOutOfSync: a.outOfSync,
      ...(theirs.length ? { routes: { ok: count('ok'), pending: count('pending'), error: count('error') } } : {}),
    };
  });
}
