// The level-triggered sync of a long-running controller: expire leases, and
// republish a network only when the store holds a write this process has not
// published (the CLI writes reservations and releases straight to the store,
// and so can a second controller on the same data directory).
//
// "Published" is a watermark per network: the highest revision R such that
// every write up to R has been published. Each write bumps the network's
// revision by exactly one, so a revision this process never published leaves
// a hole the watermark cannot pass, however many of its own writes come
// after it. A single "last revision published" would be fooled by the next
// own write (an external release at R, a renewal at R+1 marked published:
// the release is never published, and every agent keeps the departed peer);
// and it would also lag behind concurrent own writes and make a storm
// republish the whole network on every pass.
import type { Controller, ControllerListeners } from '../controller/controller.js';
import type { Store } from '../store/store.js';

export class PublishedWatermark {
  private readonly marks = new Map<string, { upTo: number; above: Set<number> }>();

  /** revision was published; with upTo, every revision up to it was (a whole republish). */
  note(network: string, revision: number, upTo = false): void {
    let m = this.marks.get(network);
    if (!m) this.marks.set(network, (m = { upTo: 0, above: new Set() }));
    if (upTo) {
      if (revision > m.upTo) m.upTo = revision;
    } else if (revision > m.upTo) {
      m.above.add(revision);
    }
    while (m.above.delete(m.upTo + 1)) m.upTo++;
    for (const r of m.above) if (r <= m.upTo) m.above.delete(r);
  }

  /** Whether every write up to revision has been published. */
  covers(network: string, revision: number): boolean {
    return this.upTo(network) >= revision;
  }

  /** Whether the write at revision has been published (at or below the mark, or above it on its own). */
  has(network: string, revision: number): boolean {
    const m = this.marks.get(network);
    return !!m && (revision <= m.upTo || m.above.has(revision));
  }

  /** A removed network: a new one of the same name starts again from revision 1. */
  forget(network: string): void {
    this.marks.delete(network);
  }

  /** The revision up to which every write has been published. */
  upTo(network: string): number {
    return this.marks.get(network)?.upTo ?? 0;
  }

  /** What a controller tells this watermark (given to it at construction: control/plane.ts). */
  listeners(): ControllerListeners {
    return { published: (network, revision, upTo) => this.note(network, revision, upTo), removed: (network) => this.forget(network) };
  }
}

/** The pass over every network: its watermark is the one the controller reports its publishes to. */
export class Sync {
  constructor(
    private readonly controller: Controller,
    private readonly store: Store,
    readonly published: PublishedWatermark,
  ) {}

  /** One pass; returns the networks it republished. */
  async run(): Promise<string[]> {
    await this.controller.expire();
    const republished: string[] = [];
    for (const n of await this.store.listNetworks()) {
      if (this.published.covers(n.name, n.revision)) continue;
      // The writes not published here, from the change log, each once; a log
      // too short to reach back leaves the agents to their own gap rule.
      if (!(await this.controller.publishChangesSince(n.name, this.published.upTo(n.name), (r) => this.published.has(n.name, r)))) await this.controller.republishNetwork(n.name);
      republished.push(n.name);
    }
    return republished;
  }
}
