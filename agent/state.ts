// The agent's state directory: which node it is and the last lease it held,
// so a restart asks for (and gets) the same subnet.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Lease } from '../core/lease.js';
import { leaseSchema } from '../core/messages.js';
import { writeFileAtomic } from './subnet-env.js';

export class StateDir {
  constructor(readonly dir: string) {}

  private read(name: string): string | undefined {
    try {
      return readFileSync(join(this.dir, name), 'utf8');
    } catch {
      return undefined;
    }
  }

  private write(name: string, text: string, mode = 0o600): void {
    writeFileAtomic(join(this.dir, name), text, mode);
  }

  /** The last lease, if it belongs to this network and node; a corrupt file is ignored. */
  lastLease(network: string, node: string): Lease | undefined {
    const text = this.read('lease.json');
    if (!text) return undefined;
    try {
      const lease = leaseSchema.parse(JSON.parse(text)) as Lease;
      return lease.network === network && lease.node === node ? lease : undefined;
    } catch {
      return undefined;
    }
  }

  saveLease(lease: Lease): void {
    this.write('lease.json', JSON.stringify(lease, null, 2) + '\n');
  }

  /** A small named value a backend keeps across restarts (e.g. the VTEP MAC). */
  get(name: string): string | undefined {
    return this.read(name)?.trim() || undefined;
  }

  set(name: string, value: string): void {
    this.write(name, value + '\n');
  }
}
