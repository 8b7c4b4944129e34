// The kernel layer every backend shares: say what the kernel should hold,
// call reconcile(), read the report.

export * from './types.js';
export { iproute2, type KernelIO } from './io.js';
export { reconcile, type ReconcileOptions, type KernelPassReport } from './reconcile.js';
export { planReconcile, type Plan, type PlanStep, type Changes, type ChangeSet, type Conflict } from './plan.js';
export { normalizeState, DEFAULT_VXLAN_PORT } from './desired.js';
export { readKernel, readLinks, readRoutes, readNeighbours, readFdb, parseLinks, parseRoutes, parseNeighbours, parseFdb, type ReadOptions } from './read.js';
export { applyBatch, parseBatchStderr, checkCommand, MAX_BATCH_RESTARTS, type BatchTool, type BatchResult, type BatchFailure, type BatchWarning, type BatchOptions } from './batch.js';
export { diff, type Diff, type DiffOptions } from './diff.js';
export { run, runJson, inNetns, formatArgv, CommandError, type RunOptions, type RunResult } from './exec.js';
export { ownsDevice, ownsLink, routeProtocol } from './ownership.js';
export { deviceKey, routeKey, neighbourKey, fdbKey, addressKey } from './keys.js';
export { applyDelta, planDelta, type Entries, type DeltaReport } from './delta.js';
