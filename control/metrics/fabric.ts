// The fabric's figures as both hosts read them from the store: the local
// controller at each /metrics scrape, the scheduled function once a minute
// for CloudWatch. Agents by state come from the counts the store keeps as
// statuses are written (Store.agentCounts), never from reading every status:
// on DynamoDB that read cost N read units a minute on one partition.
import { fabricFigures, type AgentCounts, type NetworkFigures } from '../../core/fabric.js';
import type { NetworkRecord, Store } from '../store/store.js';

export async function readFabric(store: Store): Promise<{ networks: NetworkRecord[]; figures: NetworkFigures[] }> {
  const [networks, routes] = await Promise.all([store.listNetworks(), store.listRouteStatus()]);
  const counts = await Promise.all(networks.map(async (n) => [n.name, await store.agentCounts(n.name)] as [string, AgentCounts]));
  return { networks, figures: fabricFigures(networks, new Map(counts), routes) };
}
