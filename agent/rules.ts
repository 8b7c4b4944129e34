// Which iptables chains (or, with EnableNFTables, which nftables table) the
// agent keeps, from the config and its own lease.
import type { NetConf } from '../core/config.js';
import type { Lease } from '../core/lease.js';
import { ensureChains, forwardChain, masqChain, removeChain, supportsRandomFully, type ChainSpec, type IptablesIO } from './iptables.js';
import { NFT_TABLE, type NftRules } from './nftables.js';

export interface RuleOptions {
  ipMasq: boolean;
  forwardRules: boolean;
  /** MASQUERADE --random-fully where iptables has it (default; flanneld's --ip-masq-fully-random-disable says not) */
  randomFully?: boolean;
}

export async function desiredChains(io: IptablesIO, config: NetConf, lease: Lease, opts: RuleOptions): Promise<{ v4: ChainSpec[]; v6: ChainSpec[] }> {
  const v4: ChainSpec[] = [];
  const v6: ChainSpec[] = [];
  if (config.EnableIPv4 && config.Network && lease.subnet) {
    if (opts.ipMasq) v4.push(masqChain(config.Network, lease.subnet, 4, opts.randomFully !== false && (await supportsRandomFully(io, 4))));
    if (opts.forwardRules) v4.push(forwardChain(config.Network));
  }
  if (config.EnableIPv6 && config.IPv6Network && lease.ipv6Subnet) {
    if (opts.ipMasq) v6.push(masqChain(config.IPv6Network, lease.ipv6Subnet, 6, opts.randomFully !== false && (await supportsRandomFully(io, 6))));
    if (opts.forwardRules) v6.push(forwardChain(config.IPv6Network));
  }
  return { v4, v6 };
}

/** Makes the chains match; returns the chains that had to be repaired. */
export async function ensureRules(io: IptablesIO, config: NetConf, lease: Lease, opts: RuleOptions): Promise<string[]> {
  const { v4, v6 } = await desiredChains(io, config, lease, opts);
  const repaired = v4.length ? await ensureChains(io, 4, v4) : [];
  if (v6.length) repaired.push(...(await ensureChains(io, 6, v6)));
  return repaired;
}

/** Chains a previous run left that this run does not want (e.g. --ip-masq turned off). */
export async function removeUnwanted(io: IptablesIO, opts: RuleOptions): Promise<void> {
  for (const family of [4, 6] as const) {
    if (!opts.ipMasq) await removeChain(io, family, masqChain('0.0.0.0/0', '0.0.0.0/0', family, false)).catch(() => false);
    if (!opts.forwardRules) await removeChain(io, family, forwardChain('0.0.0.0/0')).catch(() => false);
  }
}

/** the state file saying this host's rules were last written in nftables */
const MODE_STATE = 'rules-mode';

/**
 * The host's masquerade and forward rules in the mode the network's config
 * asks (EnableNFTables: twill's nftables table; else iptables chains), with
 * twill's rules of the other mode removed when the mode is first taken, at
 * start or when the config changes it. A host that never used nftables never
 * runs nft (it may not have it): the state directory remembers the mode.
 */
export class HostRules {
  private mode?: 'iptables' | 'nftables';

  constructor(
    private readonly iptables: IptablesIO,
    private readonly nft: NftRules,
    private readonly state: { get(name: string): string | undefined; set(name: string, value: string): void },
  ) {}

  /** Makes the rules match; returns what had to be repaired (chains, or the nftables table). */
  async ensure(config: NetConf, lease: Lease, opts: RuleOptions): Promise<string[]> {
    const mode = config.EnableNFTables ? 'nftables' : 'iptables';
    if (mode !== this.mode) {
      if (mode === 'nftables') {
        await removeUnwanted(this.iptables, { ipMasq: false, forwardRules: false });
        this.state.set(MODE_STATE, 'nftables');
      } else if (this.state.get(MODE_STATE) === 'nftables') {
        await this.nft.remove();
        this.state.set(MODE_STATE, 'iptables');
      }
      this.mode = mode;
    }
    if (mode === 'iptables') return ensureRules(this.iptables, config, lease, opts);
    return (await this.nft.ensure(config, lease, opts)).repaired ? [`nftables table inet ${NFT_TABLE}`] : [];
  }
}
