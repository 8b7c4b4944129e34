// Strict reverse-path filtering (rp_filter=1, the default of many cloud
// images) on a cloud network with an overlay, also while members move
// between their cloud route and the overlay.
//
// Why anything is needed: with rp_filter=1 the kernel drops a packet whose
// source it would not route back out of the interface it came in on
// (fib_validate_source). In steady state every pair's paths are symmetric:
// both ends route each other over the overlay, or both through the VPC
// (core/backends/overlay.ts pairUsesOverlay), so each packet arrives where
// the receiver would send its reply. During a move the two ends of a pair
// switch one after the other, in whatever order their agents apply the
// lease, and for that while the paths are not symmetric:
// - a packet arrives on the overlay device (the sender switched to the
//   overlay) while the receiver still routes the sender through the VPC,
//   out of the underlay interface;
// - a packet arrives on the underlay interface (the sender switched to the
//   VPC, or still uses it) while the receiver already routes the sender over
//   the overlay.
// Both would be dropped. What twill does, on every member, whatever its reach:
// - the overlay device (ours) gets rp_filter=2 (loose). The kernel uses the
//   larger of conf/all and conf/<dev> (Documentation/networking/ip-sysctl.rst,
//   rp_filter), so overlay arrivals pass whatever conf/all says; nothing but
//   our peers' encapsulated pod traffic arrives there.
// - arrivals on the underlay interface with a source in the Network are
//   marked (iptables mangle PREROUTING, chain TWILL-RPF: -i <iface> -s
//   <Network>, one mark bit), and the reverse-path lookup of a marked packet
//   is answered by a table of ours that routes the Network out of the
//   underlay interface. Which lookup is the reverse one: fib_validate_source
//   looks the source up with iif set to the output device of the packet's
//   forward route (cni0 for a pod here), or to lo when the packet is for this
//   host, while the forward lookup of the same packet runs with iif
//   <underlay>. So three rules, all of the mark: "iif <underlay> goto
//   <third>" (forward lookups skip ours and carry on through every rule the
//   host has, exactly as before), "lookup <table>" (every other lookup of a
//   marked packet: its reverse-path check), and "nop" as the goto's target.
//   With EnableNFTables the mark rule is in nftables instead (table ip
//   twill-rpf, a prerouting chain at mangle priority), the rest the same.
//   The kernel sees the mark in the reverse lookup only with src_valid_mark=1
//   on the interface, which twill sets. A rule matching "iif lo" alone, as
//   one might first think, serves packets for the host but not the pods:
//   their reverse lookup runs with iif cni0.
// Nothing else is loosened: other sources on the underlay, and every packet
// on other interfaces, are checked as the host's settings say.
//
// All of it is level-triggered (read, compare, repair on every full pass)
// and removed when the overlay goes (remove()): the rule, the chain, and
// src_valid_mark put back as it was (the value found is kept in the state
// directory, so a restart in between still restores it). The table's route
// is a route of protocol 122 kept with the overlay's own entries (the kernel
// layer removes it with them); the device's sysctl goes with the device.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureChains, removeChain, type ChainSpec, type IptablesIO } from './iptables.js';
import type { NftIO } from './nftables.js';
import { run } from './kernel/exec.js';
import { TWILL_ROUTE_PROTOCOL, type RouteSpec } from './kernel/index.js';

/** The mark bit of underlay arrivals from the Network. Clear of kube-proxy's (0x4000, 0x8000), Calico's (0xffff0000), Cilium's (0x0f00) and the AWS VPC CNI's (0x80). */
export const RPF_MARK = 0x1000;
/** The table answering their reverse-path lookup (no common tool uses it; the AWS VPC CNI's are 2 up to its ENI count). */
export const RPF_TABLE = 7122;
/** The first of the three rules' priorities (P, P+1, P+2): before main (32766); they match only marked lookups. */
export const RPF_PRIORITY = 3122;
export const RPF_CHAIN = 'TWILL-RPF';

/** The mark rule's nftables table (EnableNFTables), apart from twill's inet table whose rules come from the config alone. */
export const RPF_NFT_TABLE = 'twill-rpf';

const mark = `0x${RPF_MARK.toString(16)}`;
const SAVED = 'rpf-src-valid-mark';
/** the state file saying the mark rule was last written in nftables */
const MODE = 'rpf-mode';

/** One IPv4 policy rule as `ip -j rule show` lists it. */
export interface PolicyRule {
  priority: number;
  table: string;
  fwmark?: string;
  fwmask?: string;
  iif?: string;
  goto?: string;
  nop?: boolean;
  protocol?: string;
}

/** The host settings the guard keeps: sysctls and IPv4 policy rules (a fake in tests, the kernel otherwise). */
export interface HostIO {
  /** a sysctl under /proc/sys (key like net/ipv4/conf/eth0/rp_filter); undefined when it does not exist (no such device) */
  getSysctl(key: string): Promise<string | undefined>;
  setSysctl(key: string, value: string): Promise<void>;
  rules(): Promise<PolicyRule[]>;
  /** runs `ip rule` with these arguments (add ... / del ...) */
  rule(args: string[]): Promise<void>;
}

/** This host's, or a network namespace's (tests): sysctls through /proc/sys, rules through ip. */
export function hostIO(opts: { netns?: string } = {}): HostIO {
  const path = (key: string) => join('/proc/sys', key);
  return {
    async getSysctl(key) {
      if (!opts.netns) return existsSync(path(key)) ? readFileSync(path(key), 'utf8').trim() : undefined;
      const r = await run(['sh', '-c', 'test -e "$1" && cat "$1" || true', 'sh', path(key)], { netns: opts.netns });
      return r.stdout.trim() || undefined;
    },
    async setSysctl(key, value) {
      if (!opts.netns) return writeFileSync(path(key), value);
      await run(['sh', '-c', 'echo "$2" > "$1"', 'sh', path(key), value], { netns: opts.netns });
    },
    async rules() {
      const r = await run(['ip', '-4', '-j', 'rule', 'show'], { netns: opts.netns });
      return parseRules(r.stdout);
    },
    async rule(args) {
      await run(['ip', '-4', 'rule', ...args], { netns: opts.netns });
    },
  };
}

/** `ip -j rule show`, each rule's fields this guard compares; anything else is left out. */
export function parseRules(text: string): PolicyRule[] {
  const list: unknown = JSON.parse(text || '[]');
  if (!Array.isArray(list)) throw new Error('ip -j rule show did not print a list');
  return list.flatMap((r: Record<string, unknown>) => {
    if (typeof r !== 'object' || r === null || typeof r.priority !== 'number') return [];
    const s = (k: string) => (r[k] === undefined ? undefined : String(r[k]));
    return [{ priority: r.priority, table: String(r.table ?? ''), fwmark: s('fwmark'), fwmask: s('fwmask'), iif: s('iif'), goto: s('goto'), nop: 'nop' in r, protocol: s('protocol') }];
  });
}

/** The mark rule: underlay arrivals from the Network (one bit or'ed in, others' bits kept). */
export function rpfChain(network: string, iface: string): ChainSpec {
  return {
    table: 'mangle',
    chain: RPF_CHAIN,
    parent: 'PREROUTING',
    comment: 'twill rpf',
    // exactly as iptables-save prints it (--or-mark is saved as --set-xmark bit/bit)
    rules: [`-s ${network} -i ${iface} -m comment --comment "twill rpf" -j MARK --set-xmark ${mark}/${mark}`],
  };
}

/** The script that replaces the nftables mark rule with this one, or removes its table (no target). */
export function rpfNftScript(target?: { network: string; iface: string }): string {
  const lines = [`add table ip ${RPF_NFT_TABLE}`, `delete table ip ${RPF_NFT_TABLE}`];
  if (target) {
    lines.push(
      `table ip ${RPF_NFT_TABLE} {`,
      '  chain prerouting {',
      '    type filter hook prerouting priority mangle; policy accept;',
      `    iifname "${target.iface}" ip saddr ${target.network} meta mark set meta mark | ${mark} comment "twill rpf"`,
      '  }',
      '}',
    );
  }
  return lines.join('\n') + '\n';
}

const plain = (listing: string | undefined) => listing?.split('\n').map((l) => l.trim()).filter(Boolean).join('\n');

/** The route of our table: the Network out of the underlay interface (only reverse-path lookups of marked packets see it). */
export function rpfRoutes(network: string, iface: string): RouteSpec[] {
  return [{ dst: network, dev: iface, table: RPF_TABLE }];
}

const proto = String(TWILL_ROUTE_PROTOCOL);
const ruleKey = (r: PolicyRule) => [r.priority, r.fwmark, r.fwmask, r.iif, r.goto, r.nop ? 'nop' : r.table, r.protocol].join(' ');

/** The three rules (the file's header says why), each as `ip rule add` takes it and as ruleKey reads it back. */
export function rpfRules(iface: string): { args: string[]; key: string }[] {
  const P = RPF_PRIORITY;
  const fw = ['fwmark', `${mark}/${mark}`];
  return [
    { args: ['priority', String(P), ...fw, 'iif', iface, 'goto', String(P + 2)], key: ruleKey({ priority: P, table: '', fwmark: mark, fwmask: mark, iif: iface, goto: String(P + 2), protocol: proto }) },
    { args: ['priority', String(P + 1), ...fw, 'lookup', String(RPF_TABLE)], key: ruleKey({ priority: P + 1, table: String(RPF_TABLE), fwmark: mark, fwmask: mark, protocol: proto }) },
    { args: ['priority', String(P + 2), 'nop'], key: ruleKey({ priority: P + 2, table: '', nop: true, protocol: proto }) },
  ];
}

/** Ours: at our priorities and of our protocol (someone else's rule there is left alone). */
const isOurs = (r: PolicyRule) => r.priority >= RPF_PRIORITY && r.priority <= RPF_PRIORITY + 2 && r.protocol === proto;

export interface GuardTarget {
  network: string;
  /** the underlay interface */
  iface: string;
  /** EnableNFTables: the mark rule in nftables */
  nftables?: boolean;
  /** the overlay device, once it exists */
  device: string;
}

export class ReversePathGuard {
  constructor(
    private readonly host: HostIO,
    private readonly iptables: IptablesIO,
    private readonly state: { get(name: string): string | undefined; set(name: string, value: string): void },
    private readonly nft: NftIO,
  ) {}

  /** the nftables listing read back after the last write, so a change behind our back is seen */
  private written?: string;
  private script?: string;

  /** Makes the host match; returns what had to be put (back) in place. */
  async ensure(t: GuardTarget): Promise<string[]> {
    const repaired: string[] = [];
    const dev = `net/ipv4/conf/${t.device}/rp_filter`;
    const devValue = await this.host.getSysctl(dev);
    if (devValue !== undefined && devValue !== '2') {
      await this.host.setSysctl(dev, '2');
      repaired.push(`${t.device} rp_filter`);
    }
    const saved = this.saved();
    if (saved && saved.iface !== t.iface) await this.restoreMark(saved);
    const svm = `net/ipv4/conf/${t.iface}/src_valid_mark`;
    const svmValue = await this.host.getSysctl(svm);
    if (svmValue !== undefined && svmValue !== '1') {
      if (!this.saved()) this.state.set(SAVED, JSON.stringify({ iface: t.iface, value: svmValue }));
      await this.host.setSysctl(svm, '1');
      repaired.push(`${t.iface} src_valid_mark`);
    }
    const have = (await this.host.rules()).filter(isOurs);
    const want = rpfRules(t.iface);
    if (have.length !== want.length || !want.every((w, i) => have[i] && ruleKey(have[i]) === w.key)) {
      // The three go and come back together, in an order that never lets a forward lookup reach our table.
      await this.deleteRules(have);
      // The goto's target first, then the goto, then the table's rule: a goto without its target is skipped by the kernel.
      for (const w of [want[2], want[0], want[1]]) if (w) await this.host.rule(['add', ...w.args, 'proto', proto]);
      repaired.push(`ip rules ${RPF_PRIORITY}-${RPF_PRIORITY + 2}`);
    }
    repaired.push(...(await this.ensureMark(t)));
    return repaired;
  }

  /** The mark rule in the mode the config asks, the other mode's taken out when the mode is first taken. */
  private async ensureMark(t: GuardTarget): Promise<string[]> {
    const mode = t.nftables ? 'nftables' : 'iptables';
    if (this.state.get(MODE) !== mode) {
      if (mode === 'nftables') await removeChain(this.iptables, 4, rpfChain('0.0.0.0/0', 'lo')).catch(() => false);
      else if (this.state.get(MODE) === 'nftables') await this.removeNft();
      this.state.set(MODE, mode);
    }
    if (mode === 'iptables') return ensureChains(this.iptables, 4, [rpfChain(t.network, t.iface)]);
    const script = rpfNftScript(t);
    const now = plain(await this.nft.list());
    if (script === this.script && now === this.written) return [];
    const drifted = this.written !== undefined && script === this.script;
    await this.nft.apply(script);
    this.script = script;
    this.written = plain(await this.nft.list());
    return drifted ? [`nftables table ip ${RPF_NFT_TABLE}`] : [];
  }

  private async removeNft(): Promise<void> {
    if ((await this.nft.list()) !== undefined) await this.nft.apply(rpfNftScript());
    this.written = undefined;
    this.script = undefined;
  }

  /** Takes out the rule and the chain, and puts src_valid_mark back as it was found. */
  async remove(): Promise<void> {
    await this.deleteRules((await this.host.rules()).filter(isOurs));
    if (this.state.get(MODE) === 'nftables') await this.removeNft();
    else await removeChain(this.iptables, 4, rpfChain('0.0.0.0/0', 'lo'));
    this.state.set(MODE, '');
    const saved = this.saved();
    if (saved) await this.restoreMark(saved);
  }

  /** Deletes the table's rule first: a marked reverse lookup never meets a half set. */
  private async deleteRules(rules: PolicyRule[]): Promise<void> {
    const order = [...rules].sort((a, b) => (a.priority === RPF_PRIORITY + 1 ? -1 : b.priority === RPF_PRIORITY + 1 ? 1 : a.priority - b.priority));
    for (const r of order) await this.host.rule(['del', 'priority', String(r.priority), 'protocol', proto]);
  }

  private saved(): { iface: string; value: string } | undefined {
    const text = this.state.get(SAVED);
    if (!text) return undefined;
    try {
      const v = JSON.parse(text) as { iface?: unknown; value?: unknown };
      if (typeof v.iface === 'string' && /^[0-9]$/.test(String(v.value))) return { iface: v.iface, value: String(v.value) };
    } catch {
      // a damaged file: nothing to restore from it
    }
    return undefined;
  }

  private async restoreMark(saved: { iface: string; value: string }): Promise<void> {
    const key = `net/ipv4/conf/${saved.iface}/src_valid_mark`;
    if ((await this.host.getSysctl(key)) !== undefined) await this.host.setSysctl(key, saved.value);
    this.state.set(SAVED, '');
  }
}
