// The local controller's /metrics: the control plane as Prometheus sees it.
// Counters are kept as things happen (joins and refused messages in the
// controller, refusals in the broker, publish latency here); the fabric's
// state (leases, free subnets, agents online and in sync, routes pending) is
// read from the store at each scrape, so it is never stale and costs nothing
// between scrapes.
import type { Metrics } from '../../core/metrics.js';
import { readFabric } from './fabric.js';
import type { Publisher } from '../publish/publisher.js';
import type { Store } from '../store/store.js';

/** Sets the fabric's gauges from the store: networks, agents by state and route states. */
export async function collectFabric(store: Store, metrics: Metrics): Promise<void> {
  const { figures } = await readFabric(store);
  for (const name of ['twill_network_leases', 'twill_network_subnets_free', 'twill_network_revision', 'twill_agents', 'twill_agents_out_of_sync', 'twill_route_states']) metrics.clear(name);
  for (const f of figures) {
    const network = f.network;
    metrics.set('twill_network_leases', 'leases held in the network (reservations included)', f.leases, { network });
    metrics.set('twill_network_revision', 'the network\'s revision: bumped by every change a peer sees', f.revision, { network });
    for (const [family, free] of Object.entries(f.free)) {
      metrics.set('twill_network_subnets_free', 'subnets still free between SubnetMin and SubnetMax', free, { network, family });
    }
    metrics.set('twill_agents', 'agents by the state they last reported', f.agentsOnline, { network, state: 'online' });
    metrics.set('twill_agents', 'agents by the state they last reported', f.agentsOffline, { network, state: 'offline' });
    metrics.set('twill_agents_out_of_sync', 'online agents that do not hold a complete, applied view of their network', f.agentsOutOfSync, { network });
    for (const [state, n] of Object.entries(f.routes ?? {})) {
      metrics.set('twill_route_states', 'cloud networks: nodes by the state of their VPC route', n, { network, state });
    }
  }
}

const PUBLISHES = ['twill_publishes_total', 'publishes to the broker (leases, changes, configs)'] as const;
const SECONDS = ['twill_publish_seconds_total', 'time spent in publishes to the broker, in seconds'] as const;
const ERRORS = ['twill_publish_errors_total', 'publishes to the broker that failed (retried by the next sync)'] as const;

/** A publisher that counts its publishes and their latency (mean latency: rate of twill_publish_seconds_total over rate of twill_publishes_total). */
export class MeasuredPublisher implements Publisher {
  constructor(
    private readonly inner: Publisher,
    private readonly metrics: Metrics,
  ) {
    for (const [name, help] of [PUBLISHES, SECONDS, ERRORS]) metrics.declare(name, help);
  }

  async publish(topic: string, payload: string, retain: boolean): Promise<void> {
    const t0 = performance.now();
    try {
      await this.inner.publish(topic, payload, retain);
    } catch (e) {
      this.metrics.inc(...ERRORS);
      throw e;
    } finally {
      this.metrics.inc(...PUBLISHES);
      this.metrics.inc(...SECONDS, (performance.now() - t0) / 1000);
    }
  }
}
