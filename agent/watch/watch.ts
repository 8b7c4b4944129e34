// The agent's watch on its network: subscribe to the network's changes first,
// list the network over the node API (control/http/node-api.ts) at some
// revision R, apply the changes newer than R, and from then on apply each
// change whose revision is the next one; a change that skips a revision is
// held back and the missing ones are fetched from the API (`since`), and a
// change log that no longer reaches back means listing again. The view is
// complete by construction: there is no "wait a while, then go ahead".
//
// This file joins the parts beside it and owns no rule of its own: the view's
// rules (view.ts, pure), the MQTT session (session.ts), the node API client
// (node-api.ts) and when to say hello (hello.ts). It tells the agent what
// happened through one interface, WatchOwner.
//
// A reconnect keeps the view: the agent asks for the changes since its
// revision, which costs one small request, and nobody else anything.
import { errorMessage } from '../../core/errors.js';
import type { Lease } from '../../core/lease.js';
import type { Logger } from '../../core/log.js';
import type { Hello, Status } from '../../core/messages.js';
import type { Topics } from '../../core/topics.js';
import type { BrokerOptions } from '../connect.js';
import { HelloSchedule } from './hello.js';
import { GoneError, NodeApiClient } from './node-api.js';
import { BrokerSession, type OwnMessage, type SessionProblem } from './session.js';
import { jitter } from '../timing.js';
import { NetworkView, type ChangedPeers, type SnapshotPage, type View } from './view.js';

export type { ChangedPeers, View, WatchState } from './view.js';

export interface WatchOptions extends BrokerOptions {
  network: string;
  node: string;
  clientId: string;
  topics: Topics;
  log: Logger;
  /** ask again when a hello gets no answer in this time */
  helloRetryMs: number;
  /** renew when less than this is left of the lease */
  renewMarginMs: number;
  /** how often the agent asks the API for changes it may have missed (lost at the end of a burst) */
  pollMs: number;
  /** the retained status the broker sets when the session dies */
  will: Status;
  /** the lease the agent held before this process, asked for again */
  previous?: Lease;
}

/** What the watch asks of and tells its owner, the agent: the only way it calls out. */
export interface WatchOwner {
  /** what to say in a hello, asking for `previous` again; undefined while the agent cannot say yet (no backend) */
  hello(previous?: Lease): Hello | undefined;
  /** the network's shared config (secrets masked) */
  sharedConfig(config: Record<string, unknown>): void;
  /** the node's own topic: its lease, the config with the secrets, or why it has none */
  own(msg: { lease: Lease | null; config?: Record<string, unknown>; error?: string }): void;
  /** the view changed */
  viewChanged(changed: ChangedPeers): void;
  /** a problem the operator should see, or undefined when it is over */
  problem(kind: SessionProblem | 'list', problem: string | undefined): void;
}

const MAX_LIST_BACKOFF_MS = 30_000;
const FIRST_LIST_BACKOFF_MS = 500;

export class Watch {
  private readonly netView: NetworkView;
  private readonly session: BrokerSession;
  private readonly api: NodeApiClient;
  private readonly hellos: HelloSchedule;
  private listBackoff = FIRST_LIST_BACKOFF_MS;
  private readonly timers: NodeJS.Timeout[] = [];
  private stopped = false;

  constructor(
    private readonly opts: WatchOptions,
    private readonly owner: WatchOwner,
  ) {
    this.netView = new NetworkView(opts.network, opts.node);
    this.api = new NodeApiClient(opts);
    this.hellos = new HelloSchedule(opts, () => {
      const hello = owner.hello(this.netView.lease ?? opts.previous);
      return !!hello && !this.stopped && this.session.publishHello(hello);
    });
    this.session = new BrokerSession(opts, {
      subscribed: () => {
        this.hellos.sayHello();
        // Changes that arrive from now on are held until the view catches up with them.
        this.resync();
      },
      config: (config, revision) => {
        owner.sharedConfig(config);
        // The config carries the network's revision when it was published (on
        // every controller start too): past the view, something was missed.
        if (this.netView.complete && revision > this.netView.revision) this.resync();
      },
      changes: (changes) => {
        for (const c of changes) {
          const { changed, gap } = this.netView.offer(c);
          if (changed.size) owner.viewChanged(changed);
          if (gap) {
            // a revision is missing: fetch what the broker did not bring
            this.opts.log.debug('change arrived past a gap', { have: this.netView.revision, got: c.revision });
            this.resync();
          }
        }
      },
      own: (msg) => this.onOwn(msg),
      problem: (kind, problem) => owner.problem(kind, problem),
    });
  }

  view(): View {
    return this.netView.snapshot();
  }

  get connected(): boolean {
    return this.session.connected;
  }

  start(): void {
    this.session.start();
    this.hellos.start();
    const poll = () => {
      this.timers.push(setTimeout(() => {
        if (this.netView.complete) this.resync();
        poll();
      }, jitter(this.opts.pollMs * 2)));
    };
    poll();
  }

  /** Says hello now (the agent's backend is ready, or its data changed). */
  sayHello(): void {
    this.hellos.sayHello();
  }

  publishStatus(status: Status): Promise<void> {
    return this.session.publishStatus(status);
  }

  /** Ends the session, each step bounded; the view stays as it is. */
  async stop(final?: Status): Promise<void> {
    this.stopped = true;
    this.hellos.stop();
    for (const t of this.timers) clearTimeout(t);
    await this.session.stop(final);
  }

  private onOwn(msg: OwnMessage): void {
    if (msg.api && this.api.moveTo(msg.api)) {
      if (this.netView.state !== 'in-sync' || !this.netView.complete) this.resync();
    }
    const lease = msg.lease as Lease | null;
    if (this.netView.isStale(lease)) return;
    this.hellos.answered();
    if (msg.error) {
      this.owner.own({ lease, config: msg.config, error: msg.error });
      this.hellos.refused();
      return;
    }
    if (!lease) {
      const had = this.netView.lease;
      if (had) this.opts.log.warn('lease removed by the controller: asking for a new one', { subnet: had.subnet });
      this.netView.setLease(undefined);
      this.hellos.released();
      this.owner.own({ lease: null, config: msg.config });
      this.hellos.sayHello();
      return;
    }
    if (!this.netView.isOwn(lease)) return;
    this.hellos.granted(lease.expiresAt);
    this.netView.setLease(lease);
    this.owner.own({ lease, config: msg.config });
  }

  // ---- syncs: list, or catch up, over the node API ----

  /** Lists (no view yet) or catches up (a view at some revision); one at a time. */
  private resync(): void {
    if (this.stopped || !this.netView.requestSync()) return;
    void this.sync();
  }

  private async sync(): Promise<void> {
    const view = this.netView;
    let ok = false;
    try {
      do {
        if (!this.api.address) continue; // told on the own topic, which asks again
        if (view.complete) await this.catchUp();
        else await this.list();
        this.changed(view.drain());
      } while (view.goAgain());
      ok = true;
    } catch (e) {
      const reason = errorMessage(e);
      this.opts.log.warn('could not read the network from the node API; trying again', { api: this.api.address, reason });
      this.owner.problem('list', `node API ${this.api.address}: ${reason}`);
      const wait = jitter(this.listBackoff);
      this.listBackoff = Math.min(this.listBackoff * 2, MAX_LIST_BACKOFF_MS);
      this.timers.push(setTimeout(() => this.resync(), wait));
    }
    if (!view.endSync(ok)) return;
    this.listBackoff = FIRST_LIST_BACKOFF_MS;
    this.owner.problem('list', undefined);
  }

  private async list(): Promise<void> {
    const view = this.netView;
    view.beginList();
    const pages: SnapshotPage[] = [];
    let after: string | null = null;
    do {
      // Pages may come from the API's cache, each read at its own revision:
      // the view joins them at the oldest, and the changes since redo the rest.
      const page = await this.api.snapshotPage(after);
      pages.push(page);
      after = page.next;
    } while (after);
    view.listed(pages);
    await this.catchUp();
    this.opts.log.info('network listed', { revision: view.revision, peers: view.snapshot().peers.size });
    this.owner.viewChanged('every peer');
  }

  private async catchUp(): Promise<void> {
    const view = this.netView;
    for (;;) {
      let page;
      try {
        page = await this.api.changesSince(view.revision);
      } catch (e) {
        if (!(e instanceof GoneError)) throw e;
        this.opts.log.info('the change log no longer reaches back to this view: listing the network again', { revision: view.revision });
        view.forget();
        return this.list();
      }
      this.changed(view.catchUp(page.changes));
      if (!page.more) return;
    }
  }

  private changed(peers: ReadonlySet<string>): void {
    if (peers.size) this.owner.viewChanged(peers);
  }
}
