// The agent's state directory: which node it is and the last lease it held,
// so a restart asks for (and gets) the same subnet, and the network's last
// shared config, so a restart has its data plane before the broker answers.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseNetConf, type NetConf } from '../core/config.js';
import type { Lease } from '../core/lease.js';
import { leaseSchema } from '../core/messages.js';
import { writeFileAtomic } from './subnet-env.js';

const CONFIG_FILE = 'config.json';

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

  /** The network's shared config as last received (it holds no secrets: they are masked), if it is this network's. */
  lastConfig(network: string, env: Record<string, string | undefined>): NetConf | undefined {
    const text = this.get(CONFIG_FILE);
    if (!text) return undefined;
    try {
      const saved = JSON.parse(text) as { network?: string; config?: unknown };
      return saved.network === network ? parseNetConf(saved.config, env, { masked: true }) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Keeps the network's shared config (secrets masked); written only when it changed. */
  saveConfig(network: string, config: NetConf): void {
    const text = JSON.stringify({ network, config });
    if (this.get(CONFIG_FILE) !== text) this.set(CONFIG_FILE, text);
  }

  /** A small named value a backend keeps across restarts (e.g. the VTEP MAC). */
  get(name: string): string | undefined {
    return this.read(name)?.trim() || undefined;
  }

  set(name: string, value: string): void {
    this.write(name, value + '\n');
  }
}
