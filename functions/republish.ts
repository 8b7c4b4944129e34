// The backstop for publishes that never reached the broker, for a controller
// that keeps no memory between runs (the serverless one).
//
// Under protocol v2 most of that repairs itself: a change message lost after
// its store write shows up as a gap in the revisions the next change (or the
// agent's periodic poll of the node API) reveals, and the agent fetches what
// it missed from the store; an own-lease message lost after a join is asked
// for again by the agent's unanswered hello. What nobody asks for again is a
// retained network config: so the scheduled task compares each network's
// retained config with the store's, one read per network, and publishes it
// again where it is missing or different.
import { publicConfig } from '../core/config.js';
import { errorMessage } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { netConfigSchema } from '../core/messages.js';
import type { Controller } from './controller.js';
import type { Store } from './store/store.js';

/** What a broker must answer about its retained messages (IotPublisher does). */
export interface RetainedBroker {
  /** the retained payload on a topic; undefined when there is none */
  retained(topic: string): Promise<string | undefined>;
}

export interface RepublishDeps {
  store: Store;
  controller: Controller;
  broker: RetainedBroker;
  log: Logger;
}

export interface RepublishReport {
  checked: number;
  republished: string[];
  /** networks whose check or republish failed, with why */
  failed: Record<string, string>;
}

/** Why the broker's retained config differs from the store's, or undefined when it does not. */
function behind(config: unknown, payload: string | undefined): string | undefined {
  if (payload === undefined || payload === '') return 'no retained config';
  try {
    const m = netConfigSchema.parse(JSON.parse(payload));
    return JSON.stringify(m.config) === JSON.stringify(config) ? undefined : 'retained config differs from the store\'s';
  } catch {
    return 'retained config is unreadable';
  }
}

export async function republishStale(deps: RepublishDeps): Promise<RepublishReport> {
  const { store, controller, broker, log } = deps;
  const report: RepublishReport = { checked: 0, republished: [], failed: {} };
  for (const net of await store.listNetworks()) {
    report.checked++;
    try {
      const reason = behind(publicConfig(net.config), await broker.retained(controller.topics.netConfig(net.name)));
      if (!reason) continue;
      await controller.republishNetwork(net.name);
      report.republished.push(net.name);
      log.info('network republished: the broker was behind the store', { network: net.name, reason });
    } catch (e) {
      report.failed[net.name] = errorMessage(e);
      log.warn('republish failed', { network: net.name, reason: errorMessage(e) });
    }
  }
  return report;
}
