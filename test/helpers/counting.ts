// Counters around the controller's two outputs, to prove that a reconcile with
// nothing to change writes nothing and publishes nothing.
import type { Publisher } from '../../control/publish/publisher.js';
import type { Store } from '../../control/store/store.js';

export class CountingPublisher implements Publisher {
  count = 0;
  async publish(): Promise<void> {
    this.count++;
  }
}

const WRITES = ['createLease', 'replaceLease', 'renewLease', 'deleteLease', 'putRouteStatus', 'deleteRouteStatus', 'putNetwork'] as const;

/** Wraps the store's write methods in place; the returned counter goes up on each call. */
export function countWrites(store: Store): { writes: number } {
  const c = { writes: 0 };
  for (const m of WRITES) {
    const orig = (store[m] as (...a: unknown[]) => Promise<unknown>).bind(store);
    (store as unknown as Record<string, unknown>)[m] = async (...a: unknown[]) => {
      c.writes++;
      return orig(...a);
    };
  }
  return c;
}
