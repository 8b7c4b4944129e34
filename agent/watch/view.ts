// The agent's view of its network, as list-then-watch keeps it (Kubernetes
// informers, flannel's etcd watch): a snapshot of the leases at some revision
// R, then each change whose revision is the next one. This file is the rule
// alone, with no broker, no HTTP and no clock: agent/watch/watch.ts feeds it what the
// broker and the node API bring and does what it answers.
//
//   - A change that skips a revision (a message a broker lost, or two
//     controllers publishing out of order) is held back: the view says a sync
//     is needed to fetch the missing ones.
//   - While a sync runs (listing, or catching up), changes from the broker are
//     held, and applied once the sync has brought the view up to them.
//   - A change at or below the view's revision is stale: dropped.
//   - A snapshot read in pages (each page perhaps from a cache, at its own
//     revision) is complete at the oldest page's revision: the changes since
//     then redo whatever a newer page already had.
//   - A peer's lease older than the one held is never put back.
import type { Lease } from '../../core/lease.js';
import type { ChangeMessage } from '../../core/messages.js';

export type WatchState =
  /** no complete view yet: connecting, waiting for the API's address, or listing */
  | 'listing'
  /** the view is complete at the newest revision known */
  | 'in-sync'
  /** the view is complete at some revision, and newer changes are being fetched */
  | 'catching-up';

/** What the watch hands the agent: one consistent view. */
export interface View {
  /** the node's own lease, from its own topic */
  lease?: Lease;
  /** every other node's lease */
  peers: ReadonlyMap<string, Lease>;
  /** the network revision the view is complete at (0: no complete view yet) */
  revision: number;
  state: WatchState;
}

/** Peers a change of the view touched: these, or every one (a list replaced the view). */
export type ChangedPeers = ReadonlySet<string> | 'every peer';

/** One page of a snapshot (the node API's GET .../snapshot). */
export interface SnapshotPage {
  revision: number;
  leases: readonly Lease[];
}

/** changes held while listing or waiting for a missing revision; past this, list again */
const MAX_HELD = 100_000;

export class NetworkView {
  private readonly peerLeases = new Map<string, Lease>();
  private ownLease?: Lease;
  private rev = 0;
  private st: WatchState = 'listing';
  /** changes that arrived before the list, or after a gap, by revision */
  private readonly held = new Map<number, ChangeMessage>();
  /** a sync (list or catch-up) is running: what the broker brings waits for it */
  private syncing = false;
  /** asked for a sync while one ran: it goes round once more */
  private syncAgain = false;

  /** network and node: whose view this is (a lease of another network is not listed; the node's own is not a peer) */
  constructor(
    private readonly network: string,
    private readonly node: string,
    private readonly maxHeld = MAX_HELD,
  ) {}

  get revision(): number {
    return this.rev;
  }

  get state(): WatchState {
    return this.st;
  }

  /** A complete view exists (at some revision): a sync catches up rather than lists. */
  get complete(): boolean {
    return this.rev > 0;
  }

  get lease(): Lease | undefined {
    return this.ownLease;
  }

  snapshot(): View {
    return { lease: this.ownLease, peers: this.peerLeases, revision: this.rev, state: this.st };
  }

  // ---- changes from the broker ----

  /**
   * A change the broker brought. Answers the peers it changed now (nothing
   * while a sync runs or before the first list), and whether a revision is
   * missing, which a sync must fetch.
   */
  offer(c: ChangeMessage): { changed: Set<string>; gap: boolean } {
    const nothing = { changed: new Set<string>(), gap: false };
    if (c.revision <= this.rev) return nothing;
    if (this.held.size >= this.maxHeld) {
      // Far behind (a broker flooding us, or a list that never finishes): start over.
      this.held.clear();
      this.rev = 0;
    }
    this.held.set(c.revision, c);
    if (this.rev === 0 || this.syncing) return nothing;
    const changed = this.drain();
    if (this.held.size === 0) return { changed, gap: false };
    this.st = 'catching-up';
    return { changed, gap: true };
  }

  /** Applies the held changes that follow the view without a gap; drops those it has passed. */
  drain(): Set<string> {
    const changed = new Set<string>();
    for (let next = this.held.get(this.rev + 1); next; next = this.held.get(this.rev + 1)) {
      this.held.delete(next.revision);
      this.apply(next, changed);
    }
    for (const r of this.held.keys()) if (r <= this.rev) this.held.delete(r);
    return changed;
  }

  private apply(c: ChangeMessage, changed: Set<string>): void {
    this.rev = c.revision;
    if (c.node === undefined || c.node === this.node) return;
    const held = this.peerLeases.get(c.node);
    if (c.lease) {
      if (held && held.revision > c.lease.revision) return;
      this.peerLeases.set(c.node, c.lease as Lease);
    } else {
      this.peerLeases.delete(c.node);
    }
    changed.add(c.node);
  }

  // ---- syncs: one at a time ----

  /** A sync is wanted: true when the caller should start one, false when one is running (it will go round again). */
  requestSync(): boolean {
    if (this.syncing) {
      this.syncAgain = true;
      return false;
    }
    this.syncing = true;
    this.syncAgain = false;
    return true;
  }

  /** At the end of a round of the running sync: whether it must go round once more (a request came meanwhile). */
  goAgain(): boolean {
    const again = this.syncAgain;
    this.syncAgain = false;
    return again;
  }

  /**
   * The running sync's rounds are done (or one failed): true when the view is
   * complete and therefore in sync. The store had every change the broker
   * brought by the time it was asked, so nothing held is still needed.
   */
  endSync(ok: boolean): boolean {
    this.syncing = false;
    if (!ok || this.rev === 0) return false;
    this.held.clear();
    this.st = 'in-sync';
    return true;
  }

  /** A list begins: until it is done the view is not complete. */
  beginList(): void {
    this.st = 'listing';
  }

  /**
   * A list's pages, read one after another: the peers are what they hold (of
   * this network, not this node), and the view is complete at the oldest
   * page's revision. The caller then catches up from there.
   */
  listed(pages: Iterable<SnapshotPage>): void {
    const leases = new Map<string, Lease>();
    let start: number | undefined;
    for (const page of pages) {
      start = Math.min(start ?? page.revision, page.revision);
      for (const l of page.leases) if (l.network === this.network) leases.set(l.node, l);
    }
    this.peerLeases.clear();
    for (const [node, l] of leases) if (node !== this.node) this.peerLeases.set(node, l);
    this.rev = start ?? 0;
  }

  /** A page of the change log (GET .../changes?since=revision): the changes that follow the view, in order. */
  catchUp(changes: readonly ChangeMessage[]): Set<string> {
    const changed = new Set<string>();
    for (const c of changes) if (c.revision === this.rev + 1) this.apply(c, changed);
    return changed;
  }

  /** The change log no longer reaches back to the view's revision: only a new list completes it. */
  forget(): void {
    this.rev = 0;
  }

  // ---- the node's own lease ----

  /** A lease from the node's own topic older than the one held: a late retained copy, no news. */
  isStale(lease: Lease | null): boolean {
    return !!lease && !!this.ownLease && lease.revision < this.ownLease.revision;
  }

  /** Whether lease is this node's, in this network: the own topic carries nothing else. */
  isOwn(lease: Lease): boolean {
    return lease.node === this.node && lease.network === this.network;
  }

  setLease(lease: Lease | undefined): void {
    this.ownLease = lease;
  }
}
