// Catching the broker up with the store, which is the truth (the broker is
// only a cache): the changes this process did not publish, read back from
// the store's change log, and every retained message rebuilt on start.
import type { Store } from '../store/store.js';
import type { ChangeOutbox } from './outbox.js';
import { PUBLISH_ROUNDS, type PublishingParts, type RetainedPublisher } from './publishing.js';

export interface CatchUpParts {
  store: Store;
  outbox: ChangeOutbox;
  publishing: RetainedPublisher;
  published: PublishingParts['published'];
}

export class CatchUp {
  private readonly store: Store;
  private readonly publishing: RetainedPublisher;

  constructor(private readonly parts: CatchUpParts) {
    ({ store: this.store, publishing: this.publishing } = parts);
  }

  /**
   * Catches the broker up with the store after writes this process did not
   * publish (the CLI writes releases and reservations straight to the store,
   * a function died between its write and its publish): the changes after
   * `after` from the store's change log, each once, and the own topics of
   * the nodes they touched. Returns false when the log no longer reaches back
   * (the agents' own gap rule then sends them to the node API).
   */
  async changesSince(name: string, after: number, published: (revision: number) => boolean = () => false): Promise<boolean> {
    let from = after;
    for (;;) {
      const run = await this.store.changesSince(name, from, 1000);
      const net = await this.store.getNetwork(name);
      if (!run || !net) return false;
      for (const c of run.changes) {
        if (published(c.revision)) continue;
        await this.parts.outbox.publish(name, c);
        if (c.config) {
          await this.publishing.config(net);
          for (const lease of await this.store.listLeases(name)) await this.publishing.own(lease, net.config);
        } else if (c.node) {
          const now = (await this.store.getLease(name, c.node)) ?? null;
          if (now) await this.publishing.own(now, net.config);
          else await this.publishing.clearOwn(name, c.node);
        }
      }
      const last = run.changes.length ? run.changes[run.changes.length - 1]!.revision : from;
      this.parts.published(name, last, true);
      if (!run.more) return true;
      from = last;
    }
  }

  /**
   * Rebuilds a network's retained messages from the store (on start: the
   * broker is only a cache): its config, and every node's own topic.
   */
  async republishNetwork(name: string): Promise<void> {
    let net = await this.store.getNetwork(name);
    if (!net) return;
    await this.publishing.config(net);
    for (const lease of await this.store.listLeases(name)) await this.publishing.own(lease, net.config);
    // A write landing meanwhile may have been overtaken by the older copy
    // read here: the nodes written since are published again as they are now.
    for (let round = 0; round < PUBLISH_ROUNDS; round++) {
      const now = await this.store.getNetwork(name);
      if (!now || now.revision === net.revision) break;
      const run = await this.store.changesSince(name, net.revision, 1000);
      const nodes = run ? new Set(run.changes.flatMap((c) => (c.node ? [c.node] : []))) : new Set((await this.store.listLeases(name)).map((l) => l.node));
      for (const node of nodes) {
        const lease = await this.store.getLease(name, node);
        if (lease) await this.publishing.own(lease, now.config);
        else await this.publishing.clearOwn(name, node);
      }
      net = now;
    }
    this.parts.published(name, net.revision, true);
  }

  async republishAll(): Promise<void> {
    for (const net of await this.store.listNetworks()) await this.republishNetwork(net.name);
  }

  /**
   * What a controller publishes when it starts: every network's retained
   * messages rebuilt from the store, and each registered node told on the
   * previous protocol's topic to upgrade (an agent of that protocol already
   * connected says no new hello until its renewal).
   */
  async onStart(): Promise<void> {
    await this.republishAll();
    for (const n of await this.store.listNodes()) await this.publishing.announceUpgrade(n.network, n.name);
  }
}
