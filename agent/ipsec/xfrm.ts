// The kernel's IPsec policies, read with `ip xfrm policy` (iproute2 prints
// no JSON for xfrm) and changed with single commands. Policies carry no key
// material, so unlike `ip xfrm state` this output is safe to keep in an
// error message; SAs are asked of charon over vici instead.
import { run } from '../kernel/index.js';

export interface XfrmPolicy {
  src: string;
  dst: string;
  dir: 'in' | 'out' | 'fwd';
  action: 'allow' | 'block';
  priority: number;
  /** tunnel end points, for an IPsec policy */
  tmpl?: { src: string; dst: string };
}

/** Parses `ip xfrm policy list`; socket policies (charon's IKE bypass) have no direction and are left out. */
export function parsePolicies(text: string): XfrmPolicy[] {
  const out: XfrmPolicy[] = [];
  let cur: Partial<XfrmPolicy> | undefined;
  const flush = () => {
    if (cur?.src && cur.dst && cur.dir) out.push({ action: 'allow', priority: 0, ...cur } as XfrmPolicy);
    cur = undefined;
  };
  for (const line of text.split('\n')) {
    const sel = /^src (\S+) dst (\S+)/.exec(line);
    if (sel) {
      flush();
      cur = { src: sel[1], dst: sel[2] };
      continue;
    }
    if (!cur) continue;
    const dir = /^\s+dir (in|out|fwd)\b/.exec(line);
    if (dir) {
      cur.dir = dir[1] as XfrmPolicy['dir'];
      const action = /\baction (allow|block)\b/.exec(line);
      if (action) cur.action = action[1] as XfrmPolicy['action'];
      const prio = /\bpriority (\d+)/.exec(line);
      if (prio) cur.priority = Number(prio[1]);
      continue;
    }
    const tmpl = /^\s+tmpl src (\S+) dst (\S+)/.exec(line);
    if (tmpl) cur.tmpl = { src: tmpl[1] as string, dst: tmpl[2] as string };
  }
  flush();
  return out;
}

export async function readPolicies(): Promise<XfrmPolicy[]> {
  return parsePolicies((await run(['ip', 'xfrm', 'policy', 'list'])).stdout);
}

export async function deletePolicy(p: Pick<XfrmPolicy, 'src' | 'dst' | 'dir'>): Promise<void> {
  await run(['ip', 'xfrm', 'policy', 'delete', 'src', p.src, 'dst', p.dst, 'dir', p.dir]);
}

/** Creates or replaces a policy without a template: an allow or a block. */
export async function updatePolicy(p: Pick<XfrmPolicy, 'src' | 'dst' | 'dir' | 'action' | 'priority'>): Promise<void> {
  await run(['ip', 'xfrm', 'policy', 'update', 'src', p.src, 'dst', p.dst, 'dir', p.dir, 'priority', String(p.priority), 'action', p.action]);
}
