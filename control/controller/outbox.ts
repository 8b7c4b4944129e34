// The outbox: each network's changes on their way to its changes topic,
// batched. A change written while the previous one is still being published
// waits, and all that waited go out together in one message: no delay at a
// trickle, and under a storm of joins each member gets a message per batch
// instead of one per join (the difference between N² and N²/100 deliveries
// for a fleet joining at once).
import { MAX_CHANGES_BYTES } from '../../core/messages.js';
import type { Topics } from '../../core/topics.js';
import type { Publisher } from '../publish/publisher.js';
import type { Change } from '../store/store.js';

/** a batch of changes stays under this (core/messages.ts MAX_CHANGES_BYTES, with room for the wrapper) */
const BATCH_BYTES = MAX_CHANGES_BYTES - 1024;
const BATCH_CHANGES = 1000;
/**
 * While other writes of the network are in flight (a storm of joins handled
 * side by side), a batch waits this long to gather theirs: a broker that
 * acknowledges at once (Mosquitto) would otherwise get one message per join.
 * A writer alone, or one that waits for its publish before its next write,
 * is never delayed.
 */
const BUSY_GATHER_MS = 250;

interface Waiting {
  change: Change;
  done: (err?: unknown) => void;
}

/** One network's changes waiting for the publish in flight (flushing) to finish. */
interface Queue {
  waiting: Waiting[];
  flushing: boolean;
}

export class ChangeOutbox {
  private readonly queues = new Map<string, Queue>();
  /** writes in flight per network: while there are more than changes waiting, theirs are coming */
  private readonly writers = new Map<string, number>();

  constructor(
    private readonly publisher: Publisher,
    private readonly topics: Topics,
  ) {}

  /**
   * Counts the writes of a network in flight: while others are writing it
   * (a storm of hellos handled side by side), its next batch of changes waits
   * a moment for theirs (flush). A lone writer is never held up.
   */
  async writing<T>(network: string, write: () => Promise<T>): Promise<T> {
    this.writers.set(network, (this.writers.get(network) ?? 0) + 1);
    try {
      return await write();
    } finally {
      const n = (this.writers.get(network) ?? 1) - 1;
      if (n > 0) this.writers.set(network, n);
      else this.writers.delete(network);
    }
  }

  /** Publishes a change to every member of the network; resolves once the batch that carries it is published. */
  publish(network: string, change: Change): Promise<void> {
    let queue = this.queues.get(network);
    if (!queue) this.queues.set(network, (queue = { waiting: [], flushing: false }));
    const q = queue;
    return new Promise<void>((resolve, reject) => {
      q.waiting.push({ change, done: (err) => (err === undefined ? resolve() : reject(err)) });
      if (!q.flushing) void this.flush(network, q);
    });
  }

  private async flush(network: string, q: Queue): Promise<void> {
    q.flushing = true;
    while (q.waiting.length) {
      if ((this.writers.get(network) ?? 0) > q.waiting.length) await new Promise((r) => setTimeout(r, BUSY_GATHER_MS));
      const batch = nextBatch(q.waiting);
      q.waiting.splice(0, batch.length);
      const changes = batch.map((w) => w.change).sort((a, b) => a.revision - b.revision);
      const payload = changes.length === 1 ? { v: 2, ...changes[0] } : { v: 2, changes };
      try {
        await this.publisher.publish(this.topics.netChanges(network), JSON.stringify(payload), false);
        for (const w of batch) w.done();
      } catch (e) {
        for (const w of batch) w.done(e ?? new Error('publish failed'));
      }
    }
    q.flushing = false;
  }
}

/** The waiting changes that go out in the next message: at least one, within the size and count limits. */
function nextBatch(waiting: readonly Waiting[]): Waiting[] {
  const batch: Waiting[] = [];
  let bytes = 0;
  for (const w of waiting) {
    const size = JSON.stringify(w.change).length + 1;
    if (batch.length && (bytes + size > BATCH_BYTES || batch.length >= BATCH_CHANGES)) break;
    batch.push(w);
    bytes += size;
  }
  return batch;
}
