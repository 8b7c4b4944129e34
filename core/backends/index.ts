// Every backend type twill knows, by Type (spec.ts says what a spec holds).
import { aliVpc, type AliVpcBackend } from './ali-vpc.js';
import { alloc, type AllocBackend } from './alloc.js';
import { awsVpc, type AwsVpcBackend } from './aws-vpc.js';
import { gce, type GceBackend } from './gce.js';
import { hostGw, type HostGwBackend } from './host-gw.js';
import { ipip, type IpipBackend } from './ipip.js';
import { ipsec, type IpsecBackend } from './ipsec.js';
import type { BackendSpec } from './spec.js';
import { udp, type UdpBackend } from './udp.js';
import { vxlan, type VxlanBackend } from './vxlan.js';
import { wireguard, type WireguardBackend } from './wireguard.js';

export type { AliVpcBackend, AllocBackend, AwsVpcBackend, GceBackend, HostGwBackend, IpipBackend, IpsecBackend, UdpBackend, VxlanBackend, WireguardBackend };
export { CLOUD_NAMES, type BackendSpec, type CloudName, type ReadContext } from './spec.js';
export { DEFAULT_ESP_PROPOSAL } from './ipsec.js';
export { VXLAN_OVERHEAD } from './vxlan.js';
export { WIREGUARD_MODES, WIREGUARD_OVERHEAD, WIREGUARD_PORTS, keyRotationMs, wireguardKeyProblem, type WireguardMode } from './wireguard.js';

export const BACKEND_TYPES = ['vxlan', 'host-gw', 'wireguard', 'udp', 'ipip', 'ipsec', 'alloc', 'aws-vpc', 'gce', 'ali-vpc'] as const;
export type BackendType = (typeof BACKEND_TYPES)[number];

export type BackendConfig =
  | VxlanBackend | HostGwBackend | WireguardBackend | UdpBackend | IpipBackend | IpsecBackend
  | AllocBackend | AwsVpcBackend | GceBackend | AliVpcBackend;

type Specs = { [T in BackendType]: BackendSpec<Extract<BackendConfig, { Type: T }>> };

export const BACKEND_SPECS: Specs = {
  vxlan, 'host-gw': hostGw, wireguard, udp, ipip, ipsec, alloc, 'aws-vpc': awsVpc, gce, 'ali-vpc': aliVpc,
};

export function isBackendType(s: string): s is BackendType {
  return Object.hasOwn(BACKEND_SPECS, s);
}

export function backendSpec(type: BackendType): BackendSpec {
  return BACKEND_SPECS[type] as BackendSpec;
}

/**
 * flannel's backends twill does not have, with what to use instead: said
 * when a net-conf.json names one, rather than "not known".
 */
export const FLANNEL_ONLY_BACKENDS: Readonly<Record<string, string>> = {
  'tencent-vpc': 'twill writes the route tables of AWS (aws-vpc), GCE (gce) and Alibaba Cloud (ali-vpc) only',
  extension: 'twill runs no external commands for a backend: use one of its own',
};

/**
 * What is wrong with backend data a node of this type sent for its lease:
 * a key its agents never publish, or a value that breaks the key's rule
 * (core/backends/spec.ts agentData). Values are quoted as JSON, so nothing a
 * node sends reaches a log or a terminal raw.
 */
export function agentDataProblems(type: BackendType, data: Readonly<Record<string, unknown>>): string[] {
  const rules = BACKEND_SPECS[type].agentData;
  const problems: string[] = [];
  for (const [key, value] of Object.entries(data)) {
    const rule = Object.hasOwn(rules, key) ? rules[key] : undefined;
    if (!rule) {
      const known = Object.keys(rules);
      problems.push(`backendData.${JSON.stringify(key).slice(1, -1)} is not published by ${type} agents (${known.length ? `they publish ${known.join(', ')}` : 'they publish none'})`);
      continue;
    }
    const problem = rule(value);
    if (problem) problems.push(`backendData.${key} ${JSON.stringify(value)} ${problem}`);
  }
  return problems;
}
