// When the agent is ready, said once: it holds its lease, has applied a
// complete view of its network, and carries every address family the network
// enables. Otherwise the first step it has not reached, with why: /readyz
// answers it, the status's inSync and twill_agent_ready read it. Pure: the
// agent hands in what its parts know at one moment.
import type { NetConf } from '../core/config.js';
import { backendSpec } from '../core/backends/index.js';
import type { Lease } from '../core/lease.js';
import type { View } from './watch/view.js';

type FamilyGap = `IPv${4 | 6} not carried: ${string}`;

export type Readiness = 'starting' | 'no lease yet' | `no lease yet: ${string}` | `login refused: ${string}` | 'listing the network' | 'applying' | FamilyGap | 'ready';

export interface Progress {
  /** the watch's view; undefined until the agent opened its session */
  view?: View;
  /** why the broker session is down, while it is (undefined when connected) */
  sessionDown?: string;
  /** the view revision the kernel was last brought to (0: not yet) */
  applied: number;
  /** the families the network enables that this node does not carry (familyGaps) */
  gaps: readonly FamilyGap[];
}

export function readiness(p: Progress): Readiness {
  const v = p.view;
  if (!v) return 'starting';
  // A broker that refuses our credentials (removed, rotated) will never
  // let us renew: not ready, whatever the kernel holds, and say so. One
  // that is merely away leaves a ready agent ready: the data plane runs on.
  const down = p.sessionDown;
  if (down && /Connection refused: (Bad username or password|Not authorized)/.test(down)) return `login refused: ${down} (retrying)`;
  if (!v.lease) return down ? `no lease yet: ${down} (retrying)` : 'no lease yet';
  if (v.revision === 0) return 'listing the network';
  if (p.applied === 0) return 'applying';
  // Pods get an address of every family the network enables (subnet.env
  // says so): the agent is not ready until it carries each of them.
  return p.gaps[0] ?? 'ready';
}

/** Each family the network enables that this node does not carry, with why; iface names the external interface. */
export function familyGaps(config: NetConf | undefined, lease: Lease | undefined, iface = 'the interface'): FamilyGap[] {
  if (!config || !lease) return [];
  const gaps: FamilyGap[] = [];
  if (config.EnableIPv4 && !lease.subnet) gaps.push('IPv4 not carried: the lease has no IPv4 subnet');
  if (config.EnableIPv6 && !lease.ipv6Subnet) gaps.push('IPv6 not carried: the lease has no IPv6 subnet');
  const kernel = backendSpec(config.Backend.Type).programsKernel;
  if (kernel && config.EnableIPv4 && !lease.publicIP) gaps.push(`IPv4 not carried: no public IPv4 address (on ${iface}, or --public-ip)`);
  if (kernel && config.EnableIPv6 && !lease.publicIPv6) gaps.push(`IPv6 not carried: no public IPv6 address (on ${iface}, or --public-ipv6)`);
  return gaps;
}
