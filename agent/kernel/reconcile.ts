// One level-triggered pass: read every table once, compare with the whole
// desired state, apply the difference in at most three batches. Safe to call
// as often as wanted; with nothing to change it only reads.

import type { BatchFailure, BatchResult, BatchTool } from './batch.js';
import { iproute2, type KernelIO } from './io.js';
import { normalizeState } from './desired.js';
import { planReconcile, type Plan } from './plan.js';
import type { ActualState, KernelState, Ownership } from './types.js';

export interface ReconcileOptions {
  /** act inside this network namespace instead of the agent's own */
  netns?: string;
  /** per iproute2 process; default 30 s */
  timeoutMs?: number;
  /** plan only: read and diff, apply nothing */
  dryRun?: boolean;
  /** the kernel to act on; default iproute2 with netns and timeoutMs above */
  io?: KernelIO;
}

/** What one kernel pass found and did: its plan, the batches sent, what failed. */
export interface KernelPassReport {
  plan: Plan;
  batches: BatchResult[];
  /** every line the kernel or iproute2 refused, across all batches */
  failures: (BatchFailure & { tool: BatchTool })[];
  /** commands sent (0 when already in sync or on a dry run) */
  commands: number;
  /** nothing failed and nothing was in the way */
  ok: boolean;
  /** readMs covers the dumps and, overlapping them, the check of the desired state */
  timings: { readMs: number; planMs: number; applyMs: number; totalMs: number };
}

export async function reconcile(
  desired: Partial<KernelState>,
  ownership: Ownership,
  opts: ReconcileOptions = {},
): Promise<KernelPassReport> {
  const t0 = performance.now();
  // The dumps run in child processes while the desired state is checked
  // here; a bad desired state then fails before anything is changed.
  const io = opts.io ?? iproute2(opts);
  const reading = io.read();
  let want;
  try {
    want = normalizeState(desired);
  } catch (e) {
    await reading.catch(() => undefined);
    throw e;
  }
  const actual: ActualState = await reading;
  const t1 = performance.now();
  const plan = planReconcile(want, actual, ownership);
  const t2 = performance.now();
  const batches: BatchResult[] = [];
  if (!opts.dryRun) {
    for (const step of plan.steps) {
      // A refused line does not stop the later steps: each line stands alone,
      // and what did not apply is reported and retried by the next pass.
      batches.push(await io.apply(step.tool, step.commands));
    }
  }
  const t3 = performance.now();
  const failures = batches.flatMap((b) => b.failures.map((f) => ({ ...f, tool: b.tool })));
  return {
    plan,
    batches,
    failures,
    commands: opts.dryRun ? 0 : plan.commands,
    ok: failures.length === 0 && plan.conflicts.length === 0,
    timings: { readMs: t1 - t0, planMs: t2 - t1, applyMs: t3 - t2, totalMs: t3 - t0 },
  };
}
