// The agent's retained status (`twill status` and the dashboard read it):
// what the agent says of itself, with its current problems (the session, the
// list, the controller's refusal, a shared identity) and the errors of its
// last kernel pass, and when it says it.
import type { Logger } from '../core/log.js';
import type { Status } from '../core/messages.js';

/**
 * A status whose only news is a newer applied revision (a peer came or went)
 * is sent at most this often: each membership change would otherwise cost
 * every member a status, N messages, rule runs and store writes per change
 * (bench/fanout). Falling behind and catching up change the status's meaning
 * (inSync), and those are sent at once; `twill status` shows them.
 */
const REVISION_STATUS_MS = 10 * 60_000;
/** the status schema's bounds (core/messages.ts statusSchema) */
const MAX_ERRORS = 32;
const MAX_ERROR_CHARS = 1024;

export type ProblemKind = 'session' | 'identity' | 'list' | 'controller';

/** Where a status goes: the broker session, while there is one. */
export interface StatusSink {
  readonly connected: boolean;
  publishStatus(status: Status): Promise<void>;
}

export class StatusReport {
  private readonly problems = new Map<ProblemKind, string>();
  /** the errors the last kernel pass (or backend start) reported */
  private errors: string[] = [];
  private last?: Status;
  private lastAt = 0;
  /** a status whose only news is the revision, waiting for REVISION_STATUS_MS to pass */
  private revisionTimer?: NodeJS.Timeout;

  /** compose: the status as it stands, without its errors (this adds them) */
  constructor(
    private readonly log: Logger,
    private readonly compose: () => Omit<Status, 'errors'>,
  ) {}

  problem(kind: ProblemKind): string | undefined {
    return this.problems.get(kind);
  }

  /** A problem the operator should see, or undefined when it is over. */
  setProblem(kind: ProblemKind, problem: string | undefined): void {
    if (problem) this.problems.set(kind, problem);
    else this.problems.delete(kind);
  }

  /** The errors of a kernel pass: each new one logged once, all of them in the status until a pass has none. */
  setErrors(errors: string[]): void {
    const fresh = errors.filter((e) => !this.errors.includes(e));
    for (const e of fresh) this.log.error('agent error', { reason: e });
    this.errors = errors;
  }

  /**
   * Sends the status when its meaning changed (online, in sync or not,
   * errors, subnet); a newer applied revision alone at most every
   * REVISION_STATUS_MS, so a busy network costs each agent O(1) status messages;
   * at once when now says a controller waits on it (a member's move from its
   * route to the overlay: rare, and one status per agent per move).
   */
  async publish(sink: StatusSink | undefined, now = false): Promise<void> {
    if (!sink?.connected) return;
    const status: Status = { ...this.compose(), errors: [...this.problems.values(), ...this.errors].slice(0, MAX_ERRORS).map((e) => e.slice(0, MAX_ERROR_CHARS)) };
    const last = this.last;
    const meaning = (x: Status | undefined) => JSON.stringify(x && { ...x, revision: undefined, peers: undefined });
    if (last && meaning(last) === meaning(status)) {
      if (last.revision === status.revision && last.peers === status.peers) return;
      // only the revision moved: at most every REVISION_STATUS_MS
      const wait = this.lastAt + REVISION_STATUS_MS - Date.now();
      if (wait > 0 && !now) {
        this.revisionTimer ??= setTimeout(() => { this.revisionTimer = undefined; void this.publish(sink); }, wait);
        return;
      }
    }
    this.last = status;
    this.lastAt = Date.now();
    await sink.publishStatus(status);
  }

  stop(): void {
    clearTimeout(this.revisionTimer);
  }
}
