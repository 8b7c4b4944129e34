// The kernel layer's only I/O: dump the tables, apply a batch of iproute2
// commands. Everything between the two (normalising the desired state,
// planning the difference) is pure, so a fake of this interface
// (test/fakes/kernel.ts, which applies the same commands to tables in
// memory) runs the backends and the agent's loop without root.
import { applyBatch, type BatchResult, type BatchTool } from './batch.js';
import { readKernel, readLinks } from './read.js';
import type { ActualState, LinkRecord } from './types.js';

export interface KernelIO {
  /** every link with its addresses, every route, neighbour and fdb entry */
  read(): Promise<ActualState>;
  /** just the links and their addresses (cheaper than read) */
  readLinks(): Promise<LinkRecord[]>;
  /** runs the commands as `TOOL -force -batch -`: each line stands alone, failures are reported per line */
  apply(tool: BatchTool, commands: readonly string[]): Promise<BatchResult>;
}

/** The real kernel through iproute2, optionally inside a network namespace. */
export function iproute2(opts: { netns?: string; timeoutMs?: number } = {}): KernelIO {
  return {
    read: () => readKernel(opts),
    readLinks: () => readLinks(opts),
    apply: (tool, commands) => applyBatch(tool, commands, opts),
  };
}
