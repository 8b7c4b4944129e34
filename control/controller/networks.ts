// A network's life: stored and published, and removed with everything the
// broker keeps for it.
import type { NetConf } from '../../core/config.js';
import { ConflictError, NotFoundError, TwillError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { checkName } from '../../core/topics.js';
import type { NetworkRecord, Store } from '../store/store.js';
import type { RetainedPublisher } from './publishing.js';

/** Conditional writes that lose a race are retried this many times with fresh reads. */
export const WRITE_ATTEMPTS = 16;

export async function requireNetwork(store: Store, name: string): Promise<NetworkRecord> {
  const net = await store.getNetwork(name);
  if (!net) throw new NotFoundError(`network ${name} does not exist`);
  return net;
}

export interface NetworkParts {
  store: Store;
  publishing: RetainedPublisher;
  log: Logger;
  /** removes a node's lease and publishes the removal (Leases.release) */
  release: (network: string, node: string) => Promise<boolean>;
  /** told when a network is removed (its revisions start again with a new one) */
  removed: (network: string) => void;
}

export class Networks {
  constructor(private readonly parts: NetworkParts) {}

  /**
   * Stores a network's config and publishes it. The backend type is fixed once
   * the network has leases: every node's kernel state depends on it.
   */
  async apply(name: string, config: NetConf): Promise<NetworkRecord> {
    const { store, log, publishing } = this.parts;
    checkName('network', name);
    for (let attempt = 0; ; attempt++) {
      const cur = await store.getNetwork(name);
      if (cur && cur.leaseCount > 0 && cur.config.Backend.Type !== config.Backend.Type) {
        throw new TwillError(
          'BackendTypeLocked',
          `network ${name} uses backend ${cur.config.Backend.Type} and has ${cur.leaseCount} lease(s): its backend type cannot change to ${config.Backend.Type}; create a new network instead`,
        );
      }
      try {
        const rec = await store.putNetwork(name, config, cur?.revision);
        log.info('network stored', { network: name, backend: config.Backend.Type, revision: rec.revision });
        await publishing.network(rec);
        return rec;
      } catch (e) {
        if (!(e instanceof ConflictError) || attempt >= WRITE_ATTEMPTS) throw e;
      }
    }
  }

  /**
   * Removes a network. Refused while it has leases or nodes, unless forced:
   * then every lease is released (each agent drops the peer, each node learns
   * it has none) and every node's credentials are deleted; the caller ends
   * their sessions. Last, what the broker keeps for the network is cleared
   * (an empty retained payload deletes a retained message, in MQTT and on
   * IoT Core), so a network of the same name later starts from nothing.
   */
  async remove(name: string, opts: { force?: boolean } = {}): Promise<{ released: number; nodes: string[] }> {
    const { store, log, publishing } = this.parts;
    const net = await requireNetwork(store, name);
    const leases = await store.listLeases(name);
    const nodes = (await store.listNodes()).filter((n) => n.network === name).map((n) => n.name);
    if (!opts.force && (leases.length > 0 || nodes.length > 0)) {
      throw new ConflictError(
        `network ${name} still has ${leases.length} lease(s) and ${nodes.length} node(s): release and remove them first, or force it (twill network remove ${name} --force), which releases every lease and removes every node of the network`,
      );
    }
    // Credentials first: an agent told its lease is gone asks again at once,
    // and a node that no longer exists is refused rather than leased anew.
    for (const n of nodes) await store.deleteNode(n);
    const { released, gone } = await this.releaseAll(name, leases.map((l) => l.node));
    await publishing.forgetNetwork(name);
    for (const node of new Set([...gone, ...nodes])) await publishing.forgetNode(name, node);
    this.parts.removed(name);
    log.info('network removed', { network: name, backend: net.config.Backend.Type, released, nodes: nodes.length });
    return { released, nodes };
  }

  /** Releases every lease of the network and deletes it; the nodes that held one, those found first included. */
  private async releaseAll(name: string, found: string[]): Promise<{ released: number; gone: Set<string> }> {
    const { store, release } = this.parts;
    let released = 0;
    const gone = new Set(found);
    for (let attempt = 0; ; attempt++) {
      for (const l of await store.listLeases(name)) {
        gone.add(l.node);
        if (await release(name, l.node)) released++;
      }
      try {
        await store.deleteNetwork(name);
        return { released, gone };
      } catch (e) {
        // a hello that passed its node check just before the node went got a lease meanwhile
        if (!(e instanceof ConflictError) || attempt >= WRITE_ATTEMPTS) throw e;
      }
    }
  }
}
