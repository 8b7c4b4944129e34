// The steady-state change without a read: when the kernel matched the
// previous desired state (the last reconcile applied cleanly), moving to the
// next one needs only the entries that differ between the two, and reading
// every table of a host with 5,000 peers costs far more than the change. The
// periodic full reconcile still compares against the kernel and repairs any
// drift this path cannot see.
import type { BatchFailure, BatchTool } from './batch.js';
import { iproute2, type KernelIO } from './io.js';
import * as cmd from './commands.js';
import { normalizeState } from './desired.js';
import { fdbKey, neighbourKey, routeKey } from './keys.js';
import { checkDesiredOwned, routeProtocol } from './ownership.js';
import type { Fdb, KernelState, Neighbour, Ownership, Route } from './types.js';

export type Entries = Pick<KernelState, 'routes' | 'neighbours' | 'fdb'>;

export interface DeltaReport {
  commands: number;
  failures: (BatchFailure & { tool: BatchTool })[];
  ok: boolean;
}

function byKey<T>(list: T[], key: (t: T) => string): Map<string, T> {
  return new Map(list.map((x) => [key(x), x]));
}

const sameRoute = (a: Route, b: Route) => a.via === b.via && a.dev === b.dev && a.onlink === b.onlink && a.blackhole === b.blackhole;
const sameNeigh = (a: Neighbour, b: Neighbour) => a.mac === b.mac;
const sameFdb = (a: Fdb, b: Fdb) => a.dst === b.dst;

/** Commands that turn prev into next, in the same order reconcile uses (routes leave first, arrive last). */
export function planDelta(prevIn: Partial<Entries>, nextIn: Partial<Entries>, ownership: Ownership): { tool: BatchTool; commands: string[] }[] {
  const prev = normalizeState({ routes: prevIn.routes ?? [], neighbours: prevIn.neighbours ?? [], fdb: prevIn.fdb ?? [] });
  const next = normalizeState({ routes: nextIn.routes ?? [], neighbours: nextIn.neighbours ?? [], fdb: nextIn.fdb ?? [] });
  checkDesiredOwned(ownership, next);
  const proto = routeProtocol(ownership);
  const [pr, nr] = [byKey(prev.routes, routeKey), byKey(next.routes, routeKey)];
  const [pn, nn] = [byKey(prev.neighbours, neighbourKey), byKey(next.neighbours, neighbourKey)];
  const [pf, nf] = [byKey(prev.fdb, fdbKey), byKey(next.fdb, fdbKey)];

  const teardown: string[] = [];
  for (const [k, r] of pr) if (!nr.has(k)) teardown.push(cmd.routeDel(r, proto));
  for (const [k, n] of pn) if (!nn.has(k)) teardown.push(cmd.neighDel(n));
  const bridge: string[] = [];
  for (const [k, f] of pf) if (!nf.has(k)) bridge.push(cmd.fdbDel(f));
  for (const [k, f] of nf) {
    const old = pf.get(k);
    if (!old || !sameFdb(old, f)) bridge.push(cmd.fdbReplace(f));
  }
  const build: string[] = [];
  for (const [k, n] of nn) {
    const old = pn.get(k);
    if (!old || !sameNeigh(old, n)) build.push(cmd.neighReplace(n));
  }
  for (const [k, r] of nr) {
    const old = pr.get(k);
    if (!old) build.push(cmd.routeAdd(r, proto));
    else if (!sameRoute(old, r)) build.push(cmd.routeReplace(r, proto));
  }
  const steps: { tool: BatchTool; commands: string[] }[] = [
    { tool: 'ip', commands: teardown },
    { tool: 'bridge', commands: bridge },
    { tool: 'ip', commands: build },
  ];
  return steps.filter((s) => s.commands.length > 0);
}

export async function applyDelta(
  prev: Partial<Entries>,
  next: Partial<Entries>,
  ownership: Ownership,
  opts: { netns?: string; timeoutMs?: number; io?: KernelIO } = {},
): Promise<DeltaReport> {
  const io = opts.io ?? iproute2(opts);
  const steps = planDelta(prev, next, ownership);
  const failures: DeltaReport['failures'] = [];
  let commands = 0;
  for (const step of steps) {
    const r = await io.apply(step.tool, step.commands);
    commands += step.commands.length;
    failures.push(...r.failures.map((f) => ({ ...f, tool: step.tool })));
  }
  return { commands, failures, ok: failures.length === 0 };
}
