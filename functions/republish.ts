// The backstop for publishes that never reached the broker, for a controller
// that keeps no memory between runs (the serverless one): a store write
// whose publish failed (a function timed out between the two, IoT Core
// throttled) leaves the broker's retained state behind the store, and nothing
// else would ever send it again.
//
// Every change publishes the network's manifest last, after the lease topics
// it touched, so a retained manifest that matches the store's (revision,
// count, hash) means every publish before it arrived. Checking it costs one
// read per network; republishing a network costs O(leases) messages, each
// delivered to every member, so it is done only for a network whose manifest
// is behind, and only when it is still behind a moment later (a change in
// flight publishes its own manifest).
//
// A republish also clears the retained lease topics of nodes the store no
// longer holds (a removal whose clearing publish was lost): the broker lists
// its retained topics, and Controller.clearStale clears those the store does
// not back.
import { errorMessage } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { manifestSchema, type NodeLeaseMessage } from '../core/messages.js';
import type { Controller } from './controller.js';
import type { NetworkRecord, Store } from './store/store.js';

/** What a broker must answer about its retained messages (IotPublisher does). */
export interface RetainedBroker {
  /** the retained payload on a topic; undefined when there is none */
  retained(topic: string): Promise<string | undefined>;
  /** retained topics under a prefix, with their payload sizes */
  listRetained(prefix: string): Promise<{ topic: string; payloadSize: number }[]>;
}

export interface RepublishDeps {
  store: Store;
  controller: Controller;
  broker: RetainedBroker;
  log: Logger;
  /** how long a mismatch must last before the network is republished; default 2 s */
  settleMs?: number;
}

export interface RepublishReport {
  checked: number;
  republished: string[];
  /** networks whose check or republish failed, with why */
  failed: Record<string, string>;
}

const NONE_PAYLOAD = JSON.stringify({ v: 1, lease: null } satisfies NodeLeaseMessage);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Why the broker's manifest differs from the store's, or undefined when it does not. */
function behind(net: NetworkRecord, payload: string | undefined): string | undefined {
  if (payload === undefined || payload === '') return 'no retained manifest';
  let m;
  try {
    m = manifestSchema.parse(JSON.parse(payload));
  } catch {
    return 'retained manifest is unreadable';
  }
  if (m.revision === net.revision && m.count === net.leaseCount && m.hash === net.leaseHash) return undefined;
  return `retained manifest is at revision ${m.revision} (${m.count} leases), the store at ${net.revision} (${net.leaseCount} leases)`;
}

export async function republishStale(deps: RepublishDeps): Promise<RepublishReport> {
  const { store, controller, broker, log } = deps;
  const topics = controller.topics;
  const report: RepublishReport = { checked: 0, republished: [], failed: {} };
  for (const first of await store.listNetworks()) {
    const name = first.name;
    report.checked++;
    try {
      let reason = behind(first, await broker.retained(topics.netManifest(name)));
      if (!reason) continue;
      log.debug('retained manifest differs from the store; checking again', { network: name, reason });
      await sleep(deps.settleMs ?? 2000);
      const net = await store.getNetwork(name);
      if (!net) continue;
      reason = behind(net, await broker.retained(topics.netManifest(name)));
      if (!reason) continue;

      const retained = new Map<string, string>();
      for (const prefix of [`${topics.root}/net/${name}/lease/`, `${topics.root}/node/${name}/`]) {
        for (const t of await broker.listRetained(prefix)) {
          // Payloads are not listed. A node topic of exactly the size of "no
          // lease" already says so; anything else is checked against the store.
          retained.set(t.topic, t.payloadSize === Buffer.byteLength(NONE_PAYLOAD) ? NONE_PAYLOAD : '?');
        }
      }
      const cleared = await controller.clearStale(retained);
      await controller.republishNetwork(name);
      report.republished.push(name);
      log.info('network republished: the broker was behind the store', { network: name, reason, cleared });
    } catch (e) {
      report.failed[name] = errorMessage(e);
      log.warn('republish failed', { network: name, reason: errorMessage(e) });
    }
  }
  return report;
}
