// What twill knows about one backend type, in one place: the options it
// reads from net-conf.json (with their defaults and rules), which of them are
// secret, which flannel takes on Windows only, the address families it
// carries, whether pods' traffic crosses the host through it, and the cloud
// whose route table carries it. The parser (core/config.ts), the agent's
// registry and decisions (agent/backends/index.ts, agent/agent.ts) and the
// route controller (control/routes/clouds) derive what they need from it. One
// type per file beside this one; index.ts lists them.
import type { Family } from '../cidr.js';
import { closestName, type Fields } from '../go-json.js';

export interface ReadContext {
  /** where ali-vpc finds its credentials when the Backend has none */
  env: Record<string, string | undefined>;
  errors: string[];
  warnings: string[];
  /** reading a config publicConfig() masked: a masked secret is expected there */
  masked: boolean;
  /** the address families the network enables (options that depend on them are checked against them) */
  families?: { v4: boolean; v6: boolean };
}

/**
 * The clouds whose VPC route tables twill writes, by the name --cloud and
 * the instance events use. A cloud backend's spec names its cloud (cloud
 * below): that is the one table of clouds and backends, and everything else
 * (control/routes/clouds/cloud.ts) is derived from it.
 */
export const CLOUD_NAMES = ['aws', 'gce', 'ali'] as const;
export type CloudName = (typeof CLOUD_NAMES)[number];

export interface BackendSpec<C extends { Type: string } = { Type: string }> {
  type: C['Type'];
  /** one line: what the backend does, for the README and `config check` */
  summary: string;
  /** the options it takes besides Type, as flannel spells them */
  options: readonly string[];
  /** options flannel reads on Windows only and ignores on Linux: warned about, then ignored here too */
  windowsOnly?: readonly string[];
  /**
   * Secrets a node needs to run the backend (ipsec's PSK): they travel only
   * on the node's own topic, and are masked wherever else a config goes.
   */
  nodeSecrets: readonly string[];
  /**
   * Secrets only the control plane uses (a cloud's API keys, which can
   * rewrite the VPC's route tables): masked on every topic, the node's own
   * included, and in every API answer, view and log. Nothing on a node needs
   * them, and a node is where a key would leak from.
   */
  controlSecrets: readonly string[];
  /** the address families a network of this type may enable; another is refused with the reason */
  families: readonly Family[];
  /** why it carries IPv4 only (when families is [4]) */
  ipv4OnlyWhy?: string;
  /** whether the agent builds devices, routes or policies for it (alloc and the clouds: none; a cloud's routes are written centrally) */
  programsKernel: boolean;
  /** whether pods' traffic leaves the host through it, so forward and masquerade rules apply (alloc: none) */
  podTraffic: boolean;
  /** the cloud whose VPC route table carries the pod subnets, and the route limit it documents by default */
  cloud?: { kind: CloudName; routeLimit: number };
  /**
   * The backend data an agent of this type publishes in its lease for its
   * peers, key by key, each with the rule its value must meet (a problem, or
   * undefined). Anything else a node sends is refused: no node can grow its
   * lease, or put in it what its peers would choke on.
   */
  agentData: Readonly<Record<string, (value: unknown) => string | undefined>>;
  /** reads the options into the effective config, every default filled, adding to ctx.errors what is wrong */
  read(f: Fields, ctx: ReadContext): C;
}

/** Backend.RouteLimit of a cloud backend, at least 1: unless given, the account's quota as read (control/routes/clouds/quota.ts), else the documented default. */
export function readRouteLimit(f: Fields, ctx: ReadContext): { RouteLimit?: number } {
  const v = f.integer('RouteLimit');
  if (v === undefined) return {};
  if (v >= 1) return { RouteLimit: v };
  ctx.errors.push(`Backend.RouteLimit ${v} is not positive: it must be at least 1`);
  return {};
}


/** A warning for a key no field asks for: ignored, as Go's decoder ignores it, with the closest known name. */
export function unknownKey(label: string, key: string, known: readonly string[], what: string): string {
  const near = closestName(key, known);
  return `${label}${key}: unknown ${what}, ignored as flannel does${near ? `; did you mean ${near}?` : ''}`;
}
