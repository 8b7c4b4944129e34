// What the routed backends (vxlan, host-gw, ipip) share: turn each peer's
// lease into kernel entries, compare the whole with the kernel on a full
// pass, and between full passes apply only the entries of the peers that
// changed, with no read. Any failure or any change to the node's own inputs
// (config, lease, underlay) makes the next pass a full one again.
import type { Lease } from '../../core/lease.js';
import type { Logger } from '../../core/log.js';
import { applyDelta, reconcile, type DeviceSpec, type Entries, type KernelIO, type Ownership } from '../kernel/index.js';

export interface PeerEntries {
  entries?: Entries;
  /** why this peer gets no entries, shown in status (e.g. not on-link for host-gw) */
  problem?: string;
}

export interface SyncInput {
  /** anything that, when it changes, needs a full pass: config, own lease, underlay */
  signature: string;
  devices: DeviceSpec[];
  peers: ReadonlyMap<string, Lease>;
  changed?: ReadonlySet<string>;
  entriesFor(peer: Lease): PeerEntries;
  /** the node's own entries (common.ts ownEntries); they change only with the signature */
  own?: Entries;
}

const empty = (): Entries => ({ routes: [], neighbours: [], fdb: [] });

function merge(into: Entries, e: Entries | undefined): void {
  if (!e) return;
  into.routes.push(...e.routes);
  into.neighbours.push(...e.neighbours);
  into.fdb.push(...e.fdb);
}

export class PeerSync {
  private cache = new Map<string, PeerEntries>();
  private signature?: string;
  private clean = false;
  private reported = new Set<string>();

  constructor(
    private readonly ownership: Ownership,
    private readonly log: Logger,
    private readonly io: KernelIO,
  ) {}

  async sync(input: SyncInput): Promise<string[]> {
    if (input.changed && this.clean && input.signature === this.signature) {
      const errors = await this.delta(input, input.changed);
      if (errors) return errors;
    }
    return this.full(input);
  }

  /** Only the changed peers; undefined means "do a full pass instead". */
  private async delta(input: SyncInput, changed: ReadonlySet<string>): Promise<string[] | undefined> {
    const prev = empty();
    const next = empty();
    const updated = new Map<string, PeerEntries | undefined>();
    for (const node of changed) {
      merge(prev, this.cache.get(node)?.entries);
      const lease = input.peers.get(node);
      const pe = lease ? input.entriesFor(lease) : undefined;
      merge(next, pe?.entries);
      updated.set(node, pe);
    }
    const report = await applyDelta(prev, next, this.ownership, { io: this.io });
    if (!report.ok) {
      this.log.warn('incremental change failed; comparing everything with the kernel', { failures: report.failures.length });
      this.clean = false;
      return undefined;
    }
    for (const [node, pe] of updated) {
      if (pe) this.cache.set(node, pe);
      else this.cache.delete(node);
    }
    return this.problems();
  }

  private async full(input: SyncInput): Promise<string[]> {
    const all = empty();
    merge(all, input.own);
    this.cache.clear();
    for (const [node, lease] of input.peers) {
      const pe = input.entriesFor(lease);
      this.cache.set(node, pe);
      merge(all, pe.entries);
    }
    const report = await reconcile({ devices: input.devices, ...all }, this.ownership, { io: this.io });
    const errors = [
      ...report.failures.map((f) => `${f.tool} ${f.command}: ${f.error}`),
      ...report.plan.conflicts.map((c) => `${c.kind} ${c.key} is not twill's and is in the way: ${c.reason}`),
    ];
    const changes = report.plan.changes;
    const repaired = changes.routes.add.length + changes.neighbours.add.length + changes.fdb.add.length + changes.devices.add.length + changes.devices.replace.length;
    if (this.signature !== undefined && input.signature === this.signature && repaired > 0 && this.clean) {
      // Everything was in place after the last pass: what is missing now was removed behind our back.
      this.log.warn('repaired kernel drift', {
        devices: changes.devices.add.length + changes.devices.replace.length,
        routes: changes.routes.add.length,
        neighbours: changes.neighbours.add.length,
        fdb: changes.fdb.add.length,
      });
    }
    this.signature = input.signature;
    this.clean = errors.length === 0;
    return [...errors, ...this.problems()];
  }

  /** Per-peer problems, logged once each when they first appear. */
  private problems(): string[] {
    const now = [...this.cache.values()].map((p) => p.problem).filter((p): p is string => !!p);
    for (const p of now) if (!this.reported.has(p)) this.log.warn(p);
    this.reported = new Set(now);
    return now;
  }
}
