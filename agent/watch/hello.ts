// When the agent says hello: on each new session and whenever it has news,
// again after helloRetryMs (doubling to a minute, with jitter) while the
// controller has not answered on the node's own topic, later when the
// controller refused, and to renew the lease when less than the renewal
// margin is left of it. The hello itself (what it says) and how it is sent
// are the caller's: this is only the timing.
import type { Logger } from '../../core/log.js';
import { jitter } from '../timing.js';

export interface HelloOptions {
  /** ask again when a hello gets no answer in this time */
  helloRetryMs: number;
  /** renew when less than this is left of the lease */
  renewMarginMs: number;
  log: Logger;
}

/** the longest wait between two unanswered hellos */
const MAX_HELLO_BACKOFF_MS = 60_000;
/** after a refusal, ask again no sooner than this: the operator has to fix something first */
const REFUSED_RETRY_MS = 10_000;

export class HelloSchedule {
  /**
   * A hello is outstanding: one was sent, or is wanted (after a refusal, or
   * a retry that found no session: the next session says it), and the
   * controller has not answered yet. Renewal waits for that answer rather
   * than say hello over it.
   */
  private outstanding = false;
  /** says the outstanding hello again if no answer comes */
  private retryTimer?: NodeJS.Timeout;
  private renewTimer?: NodeJS.Timeout;
  private backoff: number;
  /** the held lease's expiry, which renewal watches (none: nothing to renew) */
  private expiresAt?: string | null;
  /** renew up to this fraction of the margin earlier, drawn per lease */
  private renewJitter = Math.random() / 2;

  /** say: sends a hello now; false when it could not (no session, or nothing to say yet) */
  constructor(
    private readonly opts: HelloOptions,
    private readonly say: () => boolean,
  ) {
    this.backoff = opts.helloRetryMs;
  }

  start(): void {
    this.renewTimer = setInterval(() => this.maybeRenew(), Math.max(250, Math.min(60_000, this.opts.renewMarginMs / 4)));
  }

  /** Says hello now (a new session, the agent's backend is ready, or the lease is gone) and asks again later if unanswered. */
  sayHello(): void {
    if (!this.say()) return;
    this.retryIn(jitter(this.backoff * 2));
    this.backoff = Math.min(this.backoff * 2, MAX_HELLO_BACKOFF_MS);
  }

  /** The controller answered on the own topic: no hello is outstanding. */
  answered(): void {
    this.outstanding = false;
    this.clearRetry();
  }

  /** The controller refused this node: ask again later, when the operator may have fixed the cause (added the node, freed a subnet). */
  refused(): void {
    this.retryIn(Math.max(this.opts.helloRetryMs, REFUSED_RETRY_MS));
  }

  /** The controller granted a lease: the backoff starts over, and a new expiry draws a new renewal jitter. */
  granted(expiresAt: string | null | undefined): void {
    if (expiresAt !== this.expiresAt) this.renewJitter = Math.random() / 2;
    this.expiresAt = expiresAt;
    this.backoff = this.opts.helloRetryMs;
  }

  /** The lease is gone: nothing to renew. */
  released(): void {
    this.expiresAt = undefined;
  }

  stop(): void {
    this.answered();
    clearInterval(this.renewTimer);
  }

  private retryIn(ms: number): void {
    this.clearRetry();
    this.outstanding = true;
    this.retryTimer = setTimeout(() => this.sayHello(), ms);
  }

  private clearRetry(): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  private maybeRenew(): void {
    const exp = this.expiresAt;
    if (!exp || this.outstanding) return;
    // Up to half the margin earlier, drawn per lease: a fleet whose leases were
    // granted in one storm does not renew in the same minute a day later.
    if (Date.parse(exp) - Date.now() < this.opts.renewMarginMs * (1 + this.renewJitter)) {
      this.opts.log.info('renewing lease', { expires: exp });
      this.sayHello();
    }
  }
}
