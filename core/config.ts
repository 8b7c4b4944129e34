// flannel's net-conf.json, read as flannel reads it, so that a flannel user's
// file works unchanged, and checked more strictly than flannel checks it, so
// that a mistake is reported with every other mistake at once rather than
// found one at a time on a running node. No I/O: the environment is a parameter.
import {
  containsIP, formatCidr, formatIP, mask, parseCidr, parseIP, subnetStep,
  type Cidr, type Family,
} from './cidr.js';
import { BACKEND_SPECS, BACKEND_TYPES, FLANNEL_ONLY_BACKENDS, backendSpec, isBackendType, type BackendConfig, type BackendType, type ReadContext } from './backends/index.js';
import { unknownKey } from './backends/spec.js';
import { ConfigError } from './errors.js';
import { SECRET_MASK } from './secret.js';
import { Fields, JsonObject, JsonSyntaxError, closestName, isObject, parseJson, position, typeMessage } from './go-json.js';

export {
  BACKEND_TYPES, DEFAULT_ESP_PROPOSAL, type AliVpcBackend, type AllocBackend, type AwsVpcBackend, type BackendConfig,
  type BackendType, type GceBackend, type HostGwBackend, type IpipBackend, type IpsecBackend, type UdpBackend, type VxlanBackend,
} from './backends/index.js';
export { SECRET_MASK } from './secret.js';

/** The effective config: every default filled in, field names as flannel spells them. */
export interface NetConf {
  EnableIPv4: boolean;
  EnableIPv6: boolean;
  Network?: string;
  SubnetLen?: number;
  SubnetMin?: string;
  SubnetMax?: string;
  IPv6Network?: string;
  IPv6SubnetLen?: number;
  IPv6SubnetMin?: string;
  IPv6SubnetMax?: string;
  /** flannel's EnableNFTables: masquerade and forward rules in an nftables table instead of iptables */
  EnableNFTables?: boolean;
  Backend: BackendConfig;
}

/** One family's allocation space: subnets of length len from min to max (network addresses). */
export interface SubnetRange { network: Cidr; len: number; min: bigint; max: bigint }

// ---------------------------------------------------------------------------
// The address families. Both follow one rule set that differs only in names and
// sizes, so it is written once.

interface FamilySpec {
  family: Family;
  enable: 'EnableIPv4' | 'EnableIPv6';
  network: 'Network' | 'IPv6Network';
  len: 'SubnetLen' | 'IPv6SubnetLen';
  min: 'SubnetMin' | 'IPv6SubnetMin';
  max: 'SubnetMax' | 'IPv6SubnetMax';
  /** the subnet length given when the network is large enough */
  defaultLen: number;
  /** the longest subnet that still holds a tunnel and a bridge address */
  maxLen: number;
  example: string;
}

const V4: FamilySpec = {
  family: 4, enable: 'EnableIPv4', network: 'Network', len: 'SubnetLen', min: 'SubnetMin', max: 'SubnetMax',
  defaultLen: 24, maxLen: 30, example: '10.244.0.0/16',
};
const V6: FamilySpec = {
  family: 6, enable: 'EnableIPv6', network: 'IPv6Network', len: 'IPv6SubnetLen', min: 'IPv6SubnetMin', max: 'IPv6SubnetMax',
  defaultLen: 64, maxLen: 126, example: 'fc00::/48',
};
const FAMILIES = [V4, V6] as const;

const familyName = (f: Family): string => `IPv${f}`;

function readNetwork(spec: FamilySpec, text: string, errors: string[]): Cidr | undefined {
  const c = parseCidr(text);
  const v = familyName(spec.family);
  if (!c) {
    errors.push(`${spec.network} ${JSON.stringify(text)} is not a CIDR: expected an ${v} network such as ${spec.example}`);
    return undefined;
  }
  if (c.family !== spec.family) {
    const other = spec === V4 ? V6 : V4;
    errors.push(`${spec.network} ${text} is an ${familyName(c.family)} network: ${spec.network} must be ${v} (put it in ${other.network})`);
    return undefined;
  }
  if (!parseCidr(text, true)) {
    errors.push(`${spec.network} ${text} has host bits set: did you mean ${formatCidr(c)}?`);
  }
  // Carry on with the masked network so the remaining rules are still checked.
  return c;
}

function readAddress(spec: FamilySpec, name: string, text: string, errors: string[]): bigint | undefined {
  const a = parseIP(text);
  if (a?.family === spec.family) return a.ip;
  errors.push(`${name} ${JSON.stringify(text)} is not an ${familyName(spec.family)} address`);
  return undefined;
}

function readSubnetLen(spec: FamilySpec, given: number | undefined, network: Cidr, errors: string[]): number | undefined {
  // flannel cannot tell 0 from absent, so 0 has always meant "the default".
  if (given === undefined || given === 0) {
    if (network.prefix <= spec.defaultLen - 2) return spec.defaultLen;
    if (network.prefix <= spec.maxLen - 2) return network.prefix + 2;
    errors.push(`${spec.network} ${formatCidr(network)} is too small: the prefix must be /${spec.maxLen - 2} or shorter`);
    return undefined;
  }
  let ok = true;
  if (given > spec.maxLen) {
    errors.push(`${spec.len} ${given} is too long: at most ${spec.maxLen}, so that a node's subnet holds its tunnel and bridge addresses`);
    ok = false;
  }
  // The first subnet is never handed out, so a network split in two would serve one node: four is the least.
  if (given < network.prefix + 2) {
    errors.push(
      `${spec.len} ${given} is too short for ${spec.network} ${formatCidr(network)}: at least ${network.prefix + 2}, so that the network holds at least four subnets`,
    );
    ok = false;
  }
  return ok ? given : undefined;
}

/** Reads one family's fields; returns its allocation space when the family is on and valid. */
function readFamily(spec: FamilySpec, f: Fields, enabled: boolean, errors: string[]): SubnetRange | undefined {
  const networkText = f.string(spec.network);
  const lenGiven = f.integer(spec.len);
  const minText = f.string(spec.min);
  const maxText = f.string(spec.max);
  // A switched-off family's fields are only type-checked: a leftover Network
  // next to "EnableIPv4": false is harmless, and flannel ignores it too.
  if (!enabled) return undefined;

  if (networkText === undefined) {
    if (!f.has(spec.network)) errors.push(`${spec.network} is required when ${spec.enable} is true, e.g. "${spec.network}": "${spec.example}"`);
    return undefined;
  }
  const network = readNetwork(spec, networkText, errors);
  const minGiven = minText === undefined ? undefined : readAddress(spec, spec.min, minText, errors);
  const maxGiven = maxText === undefined ? undefined : readAddress(spec, spec.max, maxText, errors);
  // A SubnetLen of the wrong type was reported already; guessing one would only add confusing errors.
  if (!network || (lenGiven === undefined && f.has(spec.len))) return undefined;
  const len = readSubnetLen(spec, lenGiven, network, errors);
  if (len === undefined) return undefined;

  const step = subnetStep(spec.family, len);
  const bound = (name: string, ip: bigint): boolean => {
    const text = formatIP(spec.family, ip);
    if (!containsIP(network, spec.family, ip)) {
      errors.push(`${name} ${text} is outside ${spec.network} ${formatCidr(network)}`);
      return false;
    }
    const aligned = ip & mask(spec.family, len);
    if (aligned !== ip) {
      errors.push(`${name} ${text} is not aligned to ${spec.len} ${len}: did you mean ${formatIP(spec.family, aligned)}?`);
      return false;
    }
    return true;
  };
  // The network's own first subnet is skipped: its first address is the network address.
  const min = minGiven ?? network.ip + step;
  const max = maxGiven ?? network.ip + subnetStep(spec.family, network.prefix) - step;
  const minOk = minText === undefined ? true : minGiven !== undefined && bound(spec.min, minGiven);
  const maxOk = maxText === undefined ? true : maxGiven !== undefined && bound(spec.max, maxGiven);
  if (!minOk || !maxOk) return undefined;
  if (min > max) {
    errors.push(`${spec.min} ${formatIP(spec.family, min)} is greater than ${spec.max} ${formatIP(spec.family, max)}`);
    return undefined;
  }
  return { network, len, min, max };
}

// ---------------------------------------------------------------------------
// Backend: the type's spec (core/backends/) reads its options.

/** The options each backend type takes besides Type. */
export const BACKEND_OPTIONS: Readonly<Record<BackendType, readonly string[]>> = Object.fromEntries(
  BACKEND_TYPES.map((t) => [t, BACKEND_SPECS[t].options]),
) as Record<BackendType, readonly string[]>;

function readBackend(value: unknown, families: { v4: boolean; v6: boolean }, ctx: ReadContext): BackendConfig | undefined {
  // flannel's documentation promises vxlan when Backend is left out.
  const obj = value === undefined ? new JsonObject([['Type', 'vxlan']]) : value;
  if (!isObject(obj)) {
    ctx.errors.push(typeMessage('Backend', obj, 'an object such as {"Type": "vxlan"}'));
    return undefined;
  }
  const f = new Fields(obj, ctx.errors, 'Backend.');
  const given = f.string('Type');
  if (given === undefined) {
    if (!f.has('Type')) ctx.errors.push(`Backend.Type is missing: it must be one of ${BACKEND_TYPES.join(', ')}`);
    return undefined;
  }
  // flanneld lowercases the type before it looks the backend up.
  const type = given.toLowerCase();
  if (!isBackendType(type)) {
    const instead = FLANNEL_ONLY_BACKENDS[type];
    const near = instead ? undefined : closestName(type, BACKEND_TYPES);
    const hint = instead ? `: ${instead}` : `${near ? ` (did you mean ${near}?)` : ''}: it must be one of ${BACKEND_TYPES.join(', ')}`;
    ctx.errors.push(`Backend.Type ${JSON.stringify(given)} is not known${hint}`);
    return undefined;
  }
  const spec = backendSpec(type);
  if (families.v6 && !spec.families.includes(6)) {
    ctx.errors.push(`Backend.Type ${type} is IPv4 only: it cannot be used with EnableIPv6 true (${spec.ipv4OnlyWhy ?? 'it carries IPv4 only'})`);
  }
  const backend = spec.read(f, ctx) as BackendConfig;
  for (const key of spec.windowsOnly ?? []) {
    if (f.has(key)) ctx.warnings.push(`Backend.${key}: a Windows-only ${type} option, ignored on Linux as flannel does`);
  }
  const known = ['Type', ...spec.options, ...(spec.windowsOnly ?? [])];
  for (const key of f.unknown()) {
    ctx.warnings.push(unknownKey('Backend.', key, known, `option of ${type}${spec.options.length ? '' : ' (it takes none)'}`));
  }
  return backend;
}

// ---------------------------------------------------------------------------
// The public API.

const TOP_LEVEL_FIELDS = [
  'Network', 'SubnetLen', 'SubnetMin', 'SubnetMax', 'EnableIPv4', 'EnableIPv6',
  'IPv6Network', 'IPv6SubnetLen', 'IPv6SubnetMin', 'IPv6SubnetMax', 'Backend', 'EnableNFTables',
];
/** Fields flannel's Config has and flanneld never uses for a node's subnet (it reads Network): warned about, ignored. */
const UNUSED_FLANNEL_FIELDS: Readonly<Record<string, string>> = {
  Networks: 'Network',
  IPv6Networks: 'IPv6Network',
};

const EXAMPLE = '{"Network": "10.244.0.0/16"}';

/** The effective config, and what was accepted but deserves a word: unknown fields, Windows-only options. */
export interface ReadNetConf {
  config: NetConf;
  warnings: string[];
}

/**
 * Reads flannel's net-conf.json (its text, or the value JSON.parse made of it)
 * as flanneld reads it and returns the effective config, every default
 * filled in, with warnings for what flannel ignores (unknown fields, with the
 * closest known name; Windows-only options). Throws a ConfigError listing
 * every broken rule. env supplies ali-vpc's credentials when the Backend does
 * not. opts.masked reads a config as publicConfig() made it (the shared
 * topic's copy): a masked PSK is then expected, not short.
 */
export function readNetConf(input: string | unknown, env: Record<string, string | undefined> = process.env, opts: { masked?: boolean } = {}): ReadNetConf {
  let value = input;
  if (typeof input === 'string') {
    if (input.trim() === '') throw new ConfigError([`net-conf.json is empty: expected a JSON object such as ${EXAMPLE}`]);
    try {
      value = parseJson(input);
    } catch (e) {
      if (e instanceof JsonSyntaxError) throw new ConfigError([`invalid JSON at ${position(input, e.at)}: ${e.message}`]);
      throw e;
    }
  }
  if (!isObject(value)) {
    throw new ConfigError([typeMessage('net-conf.json', value, `a JSON object such as ${EXAMPLE}`)]);
  }

  const errors: string[] = [];
  const warnings: string[] = [];
  const f = new Fields(value, errors);
  const enable4 = f.boolean('EnableIPv4') ?? true;
  const enable6 = f.boolean('EnableIPv6') ?? false;
  const nftables = f.boolean('EnableNFTables') === true;
  if (!enable4 && !enable6) errors.push('EnableIPv4 and EnableIPv6 are both false: enable at least one');
  const ranges = FAMILIES.map((spec) => [spec, readFamily(spec, f, spec === V4 ? enable4 : enable6, errors)] as const);
  const backendValue = f.raw('Backend');
  for (const [name, instead] of Object.entries(UNUSED_FLANNEL_FIELDS)) {
    if (f.has(name)) warnings.push(`${name}: flanneld does not allocate from it (it uses ${instead}), and neither does twill: ignored`);
  }
  for (const key of f.unknown()) warnings.push(unknownKey('', key, TOP_LEVEL_FIELDS, 'field'));
  const backend = readBackend(backendValue, { v4: enable4, v6: enable6 }, { env, errors, warnings, masked: opts.masked ?? false, families: { v4: enable4, v6: enable6 } });
  if (errors.length > 0 || !backend) throw new ConfigError(errors);

  const conf: Omit<NetConf, 'Backend'> = { EnableIPv4: enable4, EnableIPv6: enable6, ...(nftables && { EnableNFTables: true }) };
  for (const [spec, r] of ranges) {
    if (!r) continue;
    conf[spec.network] = formatCidr(r.network);
    conf[spec.len] = r.len;
    conf[spec.min] = formatIP(spec.family, r.min);
    conf[spec.max] = formatIP(spec.family, r.max);
  }
  return { config: { ...conf, Backend: backend }, warnings };
}

/** readNetConf's config alone, for a caller with nowhere to show warnings (a config read back from the store). */
export function parseNetConf(input: string | unknown, env: Record<string, string | undefined> = process.env, opts: { masked?: boolean } = {}): NetConf {
  return readNetConf(input, env, opts).config;
}

/**
 * The allocation space of each enabled family. The NetConf is read again with
 * the same rules, so a hand-made one is checked rather than trusted.
 */
export function subnetRanges(c: NetConf): { v4?: SubnetRange; v6?: SubnetRange } {
  const errors: string[] = [];
  const f = new Fields(c, errors);
  const v4 = readFamily(V4, f, c.EnableIPv4, errors);
  const v6 = readFamily(V6, f, c.EnableIPv6, errors);
  if (errors.length > 0) throw new ConfigError(errors);
  return { ...(v4 && { v4 }), ...(v6 && { v6 }) };
}

function masked(c: NetConf, keys: readonly string[]): NetConf {
  const Backend = structuredClone(c.Backend) as unknown as Record<string, unknown>;
  for (const key of keys) if (key in Backend) Backend[key] = SECRET_MASK;
  return { ...c, Backend: Backend as unknown as BackendConfig };
}

/** A copy fit to print, log or show: every secret option of the backend (its spec says which) masked. */
export function maskSecrets(c: NetConf): NetConf {
  const spec = backendSpec(c.Backend.Type);
  return masked(c, [...spec.nodeSecrets, ...spec.controlSecrets]);
}

/**
 * The config as every node of the network may read it, e.g. on a shared MQTT
 * topic or from the node API: every secret masked.
 */
export function publicConfig(c: NetConf): NetConf {
  return maskSecrets(c);
}

/**
 * The config as one node gets it on its own topic: the secrets its backend
 * needs (ipsec's PSK) in the clear, the control plane's own (cloud keys)
 * masked.
 */
export function nodeConfig(c: NetConf): NetConf {
  return masked(c, backendSpec(c.Backend.Type).controlSecrets);
}
