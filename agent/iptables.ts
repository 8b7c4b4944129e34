// Masquerade and forward rules: flannel's FLANNEL-POSTRTG and FLANNEL-FWD
// rules, in twill's own chains (TWILL-POSTRTG, TWILL-FWD) so they never fight
// a flannel that ran on the host before. Level-triggered: one iptables-save
// per table reads what is there; if a chain's rules or its jump differ from
// the desired ones, one iptables-restore --noflush rewrites exactly that chain
// (declaring a chain in --noflush mode replaces its rules atomically) and
// nothing else in the table.
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import type { Family } from '../core/cidr.js';
import { run as runIn } from './kernel/exec.js';

const run = promisify(execFile);

/**
 * iptables' only I/O: one table as iptables-save prints it, a restore
 * --noflush of some lines, the version. Planning what to write is pure
 * (planChain), so a fake of this (test/fakes/iptables.ts) runs it without root.
 */
export interface IptablesIO {
  save(family: Family, table: string): Promise<string>;
  restore(family: Family, input: string): Promise<void>;
  version(family: Family): Promise<string>;
}

export const MASQ_CHAIN = 'TWILL-POSTRTG';
export const FWD_CHAIN = 'TWILL-FWD';
/** kube-proxy marks packets it will masquerade itself; masquerading them twice breaks them on some kernels */
export const KUBE_PROXY_MARK = '0x4000/0x4000';

export interface ChainSpec {
  table: 'nat' | 'filter' | 'mangle';
  chain: string;
  /** the built-in chain whose first rule jumps to ours */
  parent: string;
  comment: string;
  /** rule specs exactly as iptables-save prints them, without "-A CHAIN" */
  rules: string[];
}

const q = (comment: string) => `-m comment --comment "${comment}"`;

/** flannel's masquerade rules for one family (cluster = the Network, pod = this node's subnet). */
export function masqChain(cluster: string, pod: string, family: Family, randomFully: boolean): ChainSpec {
  const c = q('twill masq');
  const masq = randomFully ? 'MASQUERADE --random-fully' : 'MASQUERADE';
  const multicast = family === 4 ? '224.0.0.0/4' : 'ff00::/8';
  return {
    table: 'nat',
    chain: MASQ_CHAIN,
    parent: 'POSTROUTING',
    comment: 'twill masq',
    rules: [
      `-m mark --mark ${KUBE_PROXY_MARK} ${c} -j RETURN`,
      // pod to pod inside the overlay is never NATed
      `-s ${pod} -d ${cluster} ${c} -j RETURN`,
      `-s ${cluster} -d ${pod} ${c} -j RETURN`,
      // external traffic arriving for a local pod keeps its source
      `! -s ${cluster} -d ${pod} ${c} -j RETURN`,
      `-s ${cluster} ! -d ${multicast} ${c} -j ${masq}`,
      // the host talking to remote pods
      `! -s ${cluster} -d ${cluster} ${c} -j ${masq}`,
    ],
  };
}

/** flannel's forward rules: accept traffic to and from the Network even when FORWARD's policy is DROP. */
export function forwardChain(cluster: string): ChainSpec {
  const c = q('twill forward');
  return {
    table: 'filter',
    chain: FWD_CHAIN,
    parent: 'FORWARD',
    comment: 'twill forward',
    rules: [`-s ${cluster} ${c} -j ACCEPT`, `-d ${cluster} ${c} -j ACCEPT`],
  };
}

function jump(spec: ChainSpec): string {
  return `${q(spec.comment)} -j ${spec.chain}`;
}

function tool(family: Family, what: 'save' | 'restore' | ''): string {
  const base = family === 4 ? 'iptables' : 'ip6tables';
  return what ? `${base}-${what}` : base;
}

/** --random-fully needs iptables 1.6.2 or later (and a kernel that has it, as every supported one does). */
export async function supportsRandomFully(io: IptablesIO, family: Family = 4): Promise<boolean> {
  try {
    const m = /v(\d+)\.(\d+)\.(\d+)/.exec(await io.version(family));
    if (!m) return false;
    const [a, b, c] = [Number(m[1]), Number(m[2]), Number(m[3])];
    return a > 1 || (a === 1 && (b > 6 || (b === 6 && c >= 2)));
  } catch {
    return false;
  }
}

/** The rules of each chain of a table as iptables-save prints them. */
export function parseSave(text: string): Map<string, string[]> {
  const chains = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const decl = /^:(\S+) /.exec(line);
    if (decl) chains.set(decl[1] as string, chains.get(decl[1] as string) ?? []);
    const rule = /^-A (\S+) (.*)$/.exec(line);
    if (rule) {
      const list = chains.get(rule[1] as string) ?? [];
      list.push(rule[2] as string);
      chains.set(rule[1] as string, list);
    }
  }
  return chains;
}

/** What must change for one chain: its rules and its single jump at the top of the parent. */
export function planChain(spec: ChainSpec, current: Map<string, string[]>): string[] {
  const lines: string[] = [];
  const have = current.get(spec.chain);
  const parent = current.get(spec.parent) ?? [];
  const jumps = parent.map((r, i) => ({ r, i })).filter((x) => x.r === jump(spec));
  const same = have !== undefined && have.length === spec.rules.length && have.every((r, i) => r === spec.rules[i]);
  if (!same) {
    lines.push(`:${spec.chain} - [0:0]`);
    for (const r of spec.rules) lines.push(`-A ${spec.chain} ${r}`);
  }
  // Exactly one jump, first in the parent, so our rules run before anyone else's.
  if (jumps.length !== 1 || jumps[0]?.i !== 0) {
    for (let k = 0; k < jumps.length; k++) lines.push(`-D ${spec.parent} ${jump(spec)}`);
    lines.push(`-I ${spec.parent} 1 ${jump(spec)}`);
  }
  return lines;
}

/** The host's iptables and ip6tables. */
export const iptables: IptablesIO = {
  save: async (family, table) => (await run(tool(family, 'save'), ['-t', table])).stdout,
  restore,
  version: async (family) => (await run(tool(family, ''), ['--version'])).stdout,
};

/** iptables inside a network namespace (tests), through the kernel layer's runner. */
export function iptablesAt(netns: string): IptablesIO {
  return {
    save: async (family, table) => (await runIn([tool(family, 'save'), '-t', table], { netns })).stdout,
    restore: async (family, input) => void (await runIn([tool(family, 'restore'), '--noflush', '-w'], { netns, input })),
    version: async (family) => (await runIn([tool(family, ''), '--version'], { netns })).stdout,
  };
}

async function restore(family: Family, input: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const p = spawn(tool(family, 'restore'), ['--noflush', '-w'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => (err += d));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${tool(family, 'restore')} failed: ${err.trim()}`))));
    p.stdin.end(input);
  });
}

/**
 * Makes each chain match its spec. Returns the chains that had to be
 * repaired, so the caller can log drift once.
 */
export async function ensureChains(io: IptablesIO, family: Family, specs: ChainSpec[]): Promise<string[]> {
  const repaired: string[] = [];
  const byTable = new Map<string, ChainSpec[]>();
  for (const s of specs) byTable.set(s.table, [...(byTable.get(s.table) ?? []), s]);
  for (const [table, list] of byTable) {
    const current = parseSave(await io.save(family, table));
    const lines: string[] = [];
    for (const spec of list) {
      const plan = planChain(spec, current);
      if (plan.length) repaired.push(`${table}/${spec.chain}`);
      lines.push(...plan);
    }
    if (lines.length) await io.restore(family, `*${table}\n${lines.join('\n')}\nCOMMIT\n`);
  }
  return repaired;
}

/** Removes a chain and its jump (when masquerading is turned off). */
export async function removeChain(io: IptablesIO, family: Family, spec: ChainSpec): Promise<boolean> {
  const current = parseSave(await io.save(family, spec.table));
  if (!current.has(spec.chain)) return false;
  const jumps = (current.get(spec.parent) ?? []).filter((r) => r === jump(spec)).length;
  const lines = [...Array.from({ length: jumps }, () => `-D ${spec.parent} ${jump(spec)}`), `-F ${spec.chain}`, `-X ${spec.chain}`];
  await io.restore(family, `*${spec.table}\n${lines.join('\n')}\nCOMMIT\n`);
  return true;
}
