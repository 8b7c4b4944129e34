// The local controller's inbox: agents' messages, handled side by side.

/**
 * Runs tasks in order per key and at most `limit` at a time in all: the
 * controller's inbox.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<void>>();
  private running = 0;
  private readonly ready: (() => void)[] = [];
  private all = new Set<Promise<void>>();

  constructor(private readonly limit: number) {}

  run(key: string, task: () => Promise<void>): Promise<void> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const p = prev.then(async () => {
      if (this.running < this.limit) this.running++;
      else await new Promise<void>((r) => this.ready.push(r)); // handed a slot by a task that ended
      try {
        await task();
      } finally {
        const next = this.ready.shift();
        if (next) next();
        else this.running--;
      }
    });
    const tail = p.catch(() => {});
    this.tails.set(key, tail);
    this.all.add(tail);
    void tail.then(() => {
      this.all.delete(tail);
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return p;
  }

  /** Resolves when every task queued so far has finished. */
  async idle(): Promise<void> {
    while (this.all.size) await Promise.all([...this.all]);
  }
}
