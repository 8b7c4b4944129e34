// Which iptables chains the agent keeps, from the config and its own lease.
import type { NetConf } from '../core/config.js';
import type { Lease } from '../core/lease.js';
import { ensureChains, forwardChain, masqChain, removeChain, supportsRandomFully, type ChainSpec, type IptablesIO } from './iptables.js';

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
