// Fairness between nodes: a token bucket per node and kind of message, so
// one node's flood of hellos or statuses is refused cheaply (no parse, no
// store) while every other node is served as usual. Which topic takes from
// which bucket is said once, in intake.ts (limitOf). Pure apart from the
// clock it is given.

export interface Bucket {
  /** messages taken at once after a quiet time */
  burst: number;
  /** one more message allowed every this many ms */
  everyMs: number;
}

/**
 * A hello is a join or a renewal (an agent sends one per session and per
 * renewal, and retries every 5 to 60 s until answered); a status is sent
 * when its meaning changes. Both limits leave a well-behaved agent far
 * below them, tests and restarts included.
 */
export const NODE_LIMITS: Record<'hello' | 'status', Bucket> = {
  hello: { burst: 20, everyMs: 3_000 },
  status: { burst: 30, everyMs: 1_000 },
};

/** How often the refusals of one node are logged: the first at once, then a count per interval. */
const REPORT_MS = 60_000;

export class RateLimiter {
  private readonly buckets = new Map<string, { kind: string; tokens: number; at: number; refused: number; reportedAt: number }>();
  private calls = 0;

  constructor(
    private readonly limits: Record<string, Bucket> = NODE_LIMITS,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Takes one message of kind from key: true when allowed. When refused,
   * report says whether (and how many refusals) to log now.
   */
  take(kind: string, key: string): { ok: true } | { ok: false; report?: number } {
    const limit = this.limits[kind];
    if (!limit) return { ok: true };
    const id = `${kind} ${key}`;
    const t = this.now();
    let b = this.buckets.get(id);
    if (!b) this.buckets.set(id, (b = { kind, tokens: limit.burst, at: t, refused: 0, reportedAt: -Infinity }));
    b.tokens = Math.min(limit.burst, b.tokens + (t - b.at) / limit.everyMs);
    b.at = t;
    if (++this.calls % 1_000 === 0) this.sweep(t);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return { ok: true };
    }
    b.refused++;
    if (t - b.reportedAt < REPORT_MS) return { ok: false };
    const report = b.refused;
    b.refused = 0;
    b.reportedAt = t;
    return { ok: false, report };
  }

  /** Forgets the buckets that have filled up again: a fresh one would be the same. Memory stays O(busy nodes). */
  private sweep(t: number): void {
    for (const [id, b] of this.buckets) {
      const limit = this.limits[b.kind] as Bucket;
      if (b.refused === 0 && b.tokens + (t - b.at) / limit.everyMs >= limit.burst) this.buckets.delete(id);
    }
  }

  /** buckets held (for tests) */
  get size(): number {
    return this.buckets.size;
  }
}
