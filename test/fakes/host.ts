// A host's sysctls and IPv4 policy rules in memory, behind
// agent/reverse-path.ts's HostIO. As strict as the kernel where the guard
// relies on it: a device's sysctls exist only while the device does (the
// in-memory kernel's links), and cannot be written otherwise; `ip rule add`
// of a rule the table already holds fails with "File exists" (iproute2 asks
// with NLM_F_EXCL); `ip rule del` of one it does not hold fails with "No such
// file or directory"; an argument it does not understand fails.
import type { HostIO, PolicyRule } from '../../agent/reverse-path.js';
import type { FakeKernel } from './kernel.js';

const SYSCTL = /^net\/ipv4\/conf\/([^/]+)\/([a-z_]+)$/;

export class FakeHost implements HostIO {
  /** values set, by key; anything not set reads as the kernel's default, 0 */
  readonly sysctls = new Map<string, string>();
  readonly policy: PolicyRule[] = [
    { priority: 0, table: 'local' },
    { priority: 32766, table: 'main' },
    { priority: 32767, table: 'default' },
  ];
  writes = 0;

  constructor(private readonly kernel: FakeKernel) {}

  private exists(key: string): boolean {
    const m = SYSCTL.exec(key);
    if (!m) return false;
    const dev = m[1] as string;
    return dev === 'all' || dev === 'default' || this.kernel.links.some((l) => l.name === dev);
  }

  async getSysctl(key: string): Promise<string | undefined> {
    if (!this.exists(key)) return undefined;
    return this.sysctls.get(key) ?? '0';
  }

  async setSysctl(key: string, value: string): Promise<void> {
    if (!this.exists(key)) throw new Error(`sysctl: cannot stat /proc/sys/${key}: No such file or directory`);
    this.writes++;
    this.sysctls.set(key, value);
  }

  async rules(): Promise<PolicyRule[]> {
    return this.policy.map((r) => ({ ...r }));
  }

  async rule(args: string[]): Promise<void> {
    const [op, ...rest] = args;
    const r: PolicyRule = { priority: 0, table: '' };
    let prioritySet = false;
    for (let i = 0; i < rest.length; i++) {
      const [k, v] = [rest[i], rest[i + 1]];
      if (k === 'nop') { r.nop = true; continue; }
      if (v === undefined) throw new Error(`ip rule: "${k}" needs a value`);
      i++;
      if (k === 'priority') { r.priority = Number(v); prioritySet = true; }
      else if (k === 'fwmark') [r.fwmark, r.fwmask = '0xffffffff'] = v.split('/');
      else if (k === 'iif') r.iif = v;
      else if (k === 'goto') r.goto = v;
      else if (k === 'lookup') r.table = v;
      else if (k === 'proto' || k === 'protocol') r.protocol = v;
      else throw new Error(`ip rule: argument "${k}" is not understood`);
    }
    const key = (a: PolicyRule) => [a.priority, a.fwmark, a.fwmask, a.iif, a.goto, a.nop, a.table].join('|');
    const same = (a: PolicyRule) => a.priority === r.priority && (op === 'del' ? !r.protocol || a.protocol === r.protocol : key(a) === key(r));
    const i = this.policy.findIndex(same);
    if (op === 'add') {
      if (!prioritySet) throw new Error('ip rule add: the fake needs a priority');
      if (i >= 0) throw new Error('RTNETLINK answers: File exists');
      this.policy.push(r);
      this.policy.sort((a, b) => a.priority - b.priority);
    } else if (op === 'del') {
      if (i < 0) throw new Error('RTNETLINK answers: No such file or directory');
      this.policy.splice(i, 1);
    } else throw new Error(`ip rule ${op}: not understood`);
  }
}
