// iptables in memory behind agent/iptables.ts's IptablesIO: save prints a
// table as iptables-save does, restore --noflush applies the lines twill
// writes as one transaction, as iptables-restore does (any bad line and the
// whole table is left as it was). Strict where the real one is: -D of a rule
// that is not there fails, -X of a chain that is still referenced or not
// empty fails, a jump to a chain that does not exist fails.
import type { Family } from '../../core/cidr.js';
import type { IptablesIO } from '../../agent/iptables.js';

type Table = Map<string, string[]>;

const BUILTIN: Record<string, string[]> = {
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
  mangle: ['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'],
};

export class FakeIptables implements IptablesIO {
  private readonly tables = new Map<string, Table>();
  restores = 0;

  constructor(private readonly versionText = 'iptables v1.8.9 (nf_tables)') {}

  table(family: Family, name: string): Table {
    const key = `${family} ${name}`;
    let t = this.tables.get(key);
    if (!t) {
      t = new Map((BUILTIN[name] ?? []).map((c) => [c, []]));
      this.tables.set(key, t);
    }
    return t;
  }

  async version(): Promise<string> {
    return this.versionText;
  }

  async save(family: Family, table: string): Promise<string> {
    const t = this.table(family, table);
    const builtin = new Set(BUILTIN[table] ?? []);
    const lines = [`*${table}`];
    for (const c of t.keys()) lines.push(builtin.has(c) ? `:${c} ACCEPT [0:0]` : `:${c} - [0:0]`);
    for (const [c, rules] of t) for (const r of rules) lines.push(`-A ${c} ${r}`);
    lines.push('COMMIT');
    return lines.join('\n') + '\n';
  }

  async restore(family: Family, input: string): Promise<void> {
    this.restores++;
    let name: string | undefined;
    let work: Table | undefined;
    const fail = (line: string, why: string): never => {
      throw new Error(`iptables-restore: line "${line}" failed: ${why}`);
    };
    for (const line of input.split('\n')) {
      if (!line.trim()) continue;
      if (line.startsWith('*')) {
        name = line.slice(1);
        work = new Map([...this.table(family, name)].map(([c, r]) => [c, [...r]]));
        continue;
      }
      if (!work || !name) fail(line, 'no table');
      const t = work as Table;
      if (line === 'COMMIT') {
        this.tables.set(`${family} ${name}`, t);
        work = undefined;
        continue;
      }
      const decl = /^:(\S+) /.exec(line);
      if (decl) {
        t.set(decl[1] as string, []); // declaring a chain in --noflush mode flushes it
        continue;
      }
      const m = /^-([ADIFX]) (\S+)(?: (.*))?$/.exec(line);
      if (!m) fail(line, 'not understood');
      const [, op, chain, rest = ''] = m as RegExpExecArray;
      const rules = t.get(chain as string);
      if (!rules) fail(line, `chain ${chain} does not exist`);
      const list = rules as string[];
      const target = / -j (\S+)$/.exec(rest)?.[1];
      if ((op === 'A' || op === 'I') && target && !['ACCEPT', 'DROP', 'RETURN', 'MASQUERADE'].includes(target) && !target.startsWith('MASQUERADE') && !t.has(target)) {
        fail(line, `chain ${target} does not exist`);
      }
      if (op === 'A') list.push(rest);
      else if (op === 'I') {
        const pos = /^(\d+) (.*)$/.exec(rest);
        list.splice(pos ? Number(pos[1]) - 1 : 0, 0, pos ? (pos[2] as string) : rest);
      } else if (op === 'D') {
        const i = list.indexOf(rest);
        if (i < 0) fail(line, 'Bad rule (does a matching rule exist in that chain?)');
        list.splice(i, 1);
      } else if (op === 'F') list.length = 0;
      else if (op === 'X') {
        if (list.length) fail(line, 'Directory not empty');
        for (const r of t.values()) if (r.some((x) => x.endsWith(`-j ${chain}`))) fail(line, 'Too many links');
        t.delete(chain as string);
      }
    }
  }

  /** Deletes a rule by hand, as an operator would with iptables -D. */
  deleteRule(family: Family, table: string, chain: string, index: number): void {
    this.table(family, table).get(chain)?.splice(index, 1);
  }
}
