// Locks that hold across processes and function instances: the store's named
// lock (Store.tryLock), waited for until a deadline. Used where one process's
// own mutex is not enough: two scheduled runs, or a queued event and a
// scheduled run changing one Alibaba VPC, run in different Lambda instances.
import { randomUUID } from 'node:crypto';
import { TwillError, errorMessage } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { Store } from './store.js';

/** The named lock is held by someone else past the caller's deadline. */
export class LockBusyError extends TwillError {
  constructor(message: string) {
    super('LockBusy', message);
  }
}

export interface Locks {
  /**
   * Runs fn holding the named lock. Waits for it until `waitUntil` (epoch
   * ms), then throws LockBusyError; holds it at most `holdMs` (after which
   * another may take it over, so fn must be done by then).
   */
  run<T>(name: string, opts: { waitUntil: number; holdMs: number }, fn: () => Promise<T>): Promise<T>;
}

export interface StoreLocksOptions {
  /** first wait between tries while the lock is held; doubles up to maxPollMs. Default 250 */
  pollMs?: number;
  /** default 2000: a waiter costs at most one conditional write every 2 s */
  maxPollMs?: number;
  log?: Logger;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class StoreLocks implements Locks {
  /** One id per process: an owner is this id and a counter, so every holding has an owner of its own. */
  private readonly id = randomUUID();
  private n = 0;

  constructor(
    private readonly store: Pick<Store, 'tryLock' | 'unlock'>,
    private readonly opts: StoreLocksOptions = {},
  ) {}

  async run<T>(name: string, { waitUntil, holdMs }: { waitUntil: number; holdMs: number }, fn: () => Promise<T>): Promise<T> {
    const owner = `${this.id}#${++this.n}`;
    let wait = this.opts.pollMs ?? 250;
    for (;;) {
      const r = await this.store.tryLock(name, owner, Math.max(1, Math.ceil(holdMs)));
      if (r.acquired) break;
      const now = Date.now();
      if (now >= waitUntil) {
        throw new LockBusyError(`lock ${name} is held by ${r.owner || 'another owner'} until ${new Date(r.expiresAt).toISOString()}, past this caller's deadline: the next run tries again`);
      }
      // Never past the deadline, nor past the holder's expiry (then it can be taken over).
      await sleep(Math.max(0, Math.min(waitUntil - now, wait / 2 + Math.random() * (wait / 2), r.expiresAt - now + 1)));
      wait = Math.min(this.opts.maxPollMs ?? 2000, wait * 2);
    }
    try {
      return await fn();
    } finally {
      // A release that fails leaves the lock to expire: slower for the next holder, never wrong.
      await this.store.unlock(name, owner).catch((e) => this.opts.log?.warn('lock not released: it expires by itself', { lock: name, reason: errorMessage(e) }));
    }
  }
}
