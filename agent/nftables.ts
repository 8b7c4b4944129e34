// flannel's EnableNFTables: the same masquerade and forward rules as
// agent/iptables.ts, in an nftables table of twill's own (inet twill: one
// table for both families), so they never touch anyone else's tables or a
// flannel table left on the host. Level-triggered like the iptables rules:
// the table is written whole in one nft transaction (add, delete, define:
// atomic, whether or not it existed), and a later listing that differs from
// the one read back after the last write is drift, written again.
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import type { NetConf } from '../core/config.js';
import type { Lease } from '../core/lease.js';
import { KUBE_PROXY_MARK } from './iptables.js';

const run = promisify(execFile);

export const NFT_TABLE = 'twill';
const FAMILY = 'inet';

/** nft's only I/O: the table as `nft list table` prints it (undefined when absent), and a script run as one transaction. */
export interface NftIO {
  list(): Promise<string | undefined>;
  apply(script: string): Promise<void>;
}

export interface NftOptions {
  ipMasq: boolean;
  forwardRules: boolean;
  /** masquerade fully-random (flanneld's default; --ip-masq-fully-random-disable says not) */
  randomFully?: boolean;
}

/** The chains' rules, as nft takes them (and, but for spacing, lists them back). */
export function nftRules(config: NetConf, lease: Lease, opts: NftOptions): { postrouting: string[]; forward: string[] } {
  const postrouting: string[] = [];
  const forward: string[] = [];
  const families = [
    { on: config.EnableIPv4, cluster: config.Network, pod: lease.subnet, ip: 'ip', multicast: '224.0.0.0/4' },
    { on: config.EnableIPv6, cluster: config.IPv6Network, pod: lease.ipv6Subnet, ip: 'ip6', multicast: 'ff00::/8' },
  ];
  const [mark, mask] = KUBE_PROXY_MARK.split('/') as [string, string];
  const masq = `masquerade${opts.randomFully === false ? '' : ' fully-random'} comment "twill masq"`;
  if (opts.ipMasq) postrouting.push(`meta mark & ${mask} == ${mark} return comment "twill masq"`);
  for (const f of families) {
    if (!f.on || !f.cluster || !f.pod) continue;
    if (opts.ipMasq) {
      postrouting.push(
        // pod to pod inside the overlay is never NATed
        `${f.ip} saddr ${f.pod} ${f.ip} daddr ${f.cluster} return comment "twill masq"`,
        `${f.ip} saddr ${f.cluster} ${f.ip} daddr ${f.pod} return comment "twill masq"`,
        // external traffic arriving for a local pod keeps its source
        `${f.ip} saddr != ${f.cluster} ${f.ip} daddr ${f.pod} return comment "twill masq"`,
        `${f.ip} saddr ${f.cluster} ${f.ip} daddr != ${f.multicast} ${masq}`,
        // the host talking to remote pods
        `${f.ip} saddr != ${f.cluster} ${f.ip} daddr ${f.cluster} ${masq}`,
      );
    }
    if (opts.forwardRules) forward.push(`${f.ip} saddr ${f.cluster} accept comment "twill forward"`, `${f.ip} daddr ${f.cluster} accept comment "twill forward"`);
  }
  // Without a family's subnet there is nothing to masquerade around.
  if (postrouting.length === 1) postrouting.length = 0;
  return { postrouting, forward };
}

/** The script that replaces the table with this one, or removes it when there is nothing to keep. */
export function nftScript(rules: { postrouting: string[]; forward: string[] }): string {
  const lines = [`add table ${FAMILY} ${NFT_TABLE}`, `delete table ${FAMILY} ${NFT_TABLE}`];
  if (rules.postrouting.length || rules.forward.length) {
    lines.push(`table ${FAMILY} ${NFT_TABLE} {`);
    if (rules.postrouting.length) {
      lines.push('  chain postrouting {', '    type nat hook postrouting priority srcnat; policy accept;', ...rules.postrouting.map((r) => `    ${r}`), '  }');
    }
    if (rules.forward.length) {
      lines.push('  chain forward {', '    type filter hook forward priority filter; policy accept;', ...rules.forward.map((r) => `    ${r}`), '  }');
    }
    lines.push('}');
  }
  return lines.join('\n') + '\n';
}

/** A listing with its whitespace made plain, so that the comparison is about rules, not layout. */
const plain = (listing: string | undefined) => listing?.split('\n').map((l) => l.trim()).filter(Boolean).join('\n');

/**
 * Keeps twill's nftables table as the config and lease want it. Returns
 * whether it had to be written again because someone changed it since the
 * last write (drift), which the caller reports.
 */
export class NftRules {
  /** the listing read back after the last write; undefined before the first */
  private written?: string;
  private script?: string;

  constructor(private readonly io: NftIO) {}

  async ensure(config: NetConf, lease: Lease, opts: NftOptions): Promise<{ repaired: boolean }> {
    const script = nftScript(nftRules(config, lease, opts));
    const now = plain(await this.io.list());
    const drifted = this.written !== undefined && now !== this.written && script === this.script;
    if (script !== this.script || now !== this.written) {
      await this.io.apply(script);
      this.script = script;
      this.written = plain(await this.io.list());
    }
    return { repaired: drifted };
  }

  /** Removes the table (the network went back to iptables). */
  async remove(): Promise<void> {
    if ((await this.io.list()) !== undefined) await this.io.apply(nftScript({ postrouting: [], forward: [] }));
    this.written = undefined;
    this.script = undefined;
  }
}

/** The host's nft for one table (twill's inet table unless told), optionally inside a network namespace (tests). */
export function nft(opts: { netns?: string; family?: string; table?: string } = {}): NftIO {
  const FAMILY = opts.family ?? 'inet';
  const NFT_TABLE = opts.table ?? 'twill';
  const cmd = (args: string[]) => (opts.netns ? ['ip', ['netns', 'exec', opts.netns, 'nft', ...args]] : ['nft', args]) as [string, string[]];
  return {
    async list() {
      try {
        return (await run(...cmd(['list', 'table', FAMILY, NFT_TABLE]))).stdout;
      } catch (e) {
        // "No such file or directory": the table is not there; no nft at all: nor can it be
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' || /No such file or directory/.test(String((e as { stderr?: string }).stderr))) return undefined;
        throw new Error(`nft list table ${FAMILY} ${NFT_TABLE}: ${(e as { stderr?: string }).stderr?.trim() || (e as Error).message}`);
      }
    },
    apply: (script) =>
      new Promise<void>((resolve, reject) => {
        const [bin, args] = cmd(['-f', '-']);
        const child = spawn(bin, args, { stdio: ['pipe', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.on('error', (e) => reject(new Error(`nft: ${e.message} (is Debian's nftables package installed?)`)));
        child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`nft -f: ${stderr.trim() || `exit ${code}`}`))));
        child.stdin.end(script);
      }),
  };
}
