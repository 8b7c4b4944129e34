// flannel's subnet.env, which the CNI bridge/host-local plugins and everything
// else that reads flannel's file consume. Written atomically (temp file in the
// same directory, fsync, rename) so a reader never sees half a file.
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, join, basename } from 'node:path';
import { formatCidr, formatIP, parseCidr } from '../core/cidr.js';
import { makeDirs } from '../core/dirs.js';

export interface SubnetEnv {
  network?: string;
  subnet?: string;
  ipv6Network?: string;
  ipv6Subnet?: string;
  mtu: number;
  ipMasq: boolean;
}

/** flannel writes the subnet's first address with the subnet's prefix: 10.5.3.1/24. */
function firstAddress(subnet: string): string {
  const c = parseCidr(subnet, true);
  if (!c) throw new Error(`not a subnet: ${subnet}`);
  return `${formatIP(c.family, c.ip + 1n)}/${c.prefix}`;
}

export function renderSubnetEnv(env: SubnetEnv): string {
  const lines: string[] = [];
  if (env.network) lines.push(`FLANNEL_NETWORK=${env.network}`);
  if (env.subnet) lines.push(`FLANNEL_SUBNET=${firstAddress(env.subnet)}`);
  if (env.ipv6Network) lines.push(`FLANNEL_IPV6_NETWORK=${env.ipv6Network}`);
  if (env.ipv6Subnet) lines.push(`FLANNEL_IPV6_SUBNET=${firstAddress(env.ipv6Subnet)}`);
  lines.push(`FLANNEL_MTU=${env.mtu}`);
  lines.push(`FLANNEL_IPMASQ=${env.ipMasq}`);
  return lines.join('\n') + '\n';
}

export function writeFileAtomic(path: string, content: string, mode = 0o644): void {
  makeDirs(dirname(path));
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

export function writeSubnetEnv(path: string, env: SubnetEnv): boolean {
  const text = renderSubnetEnv(env);
  let current: string | undefined;
  try { current = readFileSync(path, 'utf8'); } catch { /* first write */ }
  if (current === text) return false;
  writeFileAtomic(path, text);
  return true;
}

/** Reads a subnet.env back into its variables (for the previous subnet at start-up, and tests). */
export function readSubnetEnv(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1] as string] = m[2] as string;
  }
  return out;
}

/**
 * The subnets a subnet.env already on the host names (FLANNEL_SUBNET and
 * FLANNEL_IPV6_SUBNET, as flannel or an earlier twill wrote them), as
 * networks: what flanneld asks for again at start, so that a node moving
 * from flannel keeps its pods' addresses. Nothing for a missing or
 * unreadable file, or a value that is not a subnet.
 */
export function previousSubnets(path: string): { subnet?: string; ipv6Subnet?: string } {
  let vars: Record<string, string>;
  try {
    vars = readSubnetEnv(path);
  } catch {
    return {};
  }
  const net = (text: string | undefined, family: 4 | 6) => {
    const c = text ? parseCidr(text) : undefined;
    return c && c.family === family ? formatCidr(c) : undefined;
  };
  const subnet = net(vars.FLANNEL_SUBNET, 4);
  const ipv6Subnet = net(vars.FLANNEL_IPV6_SUBNET, 6);
  return { ...(subnet && { subnet }), ...(ipv6Subnet && { ipv6Subnet }) };
}
