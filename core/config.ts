// flannel's net-conf.json, read as flannel reads it, so that a flannel user's
// file works unchanged, and checked more strictly than flannel checks it, so
// that a mistake is reported with every other mistake at once rather than
// found one at a time on a running node. No I/O: the environment is a parameter.
import {
  containsIP, formatCidr, formatIP, mask, parseCidr, parseIP, subnetStep,
  type Cidr, type Family,
} from './cidr.js';
import { ConfigError } from './errors.js';

export const BACKEND_TYPES = ['vxlan', 'host-gw', 'udp', 'ipip', 'ipsec', 'alloc', 'aws-vpc', 'gce', 'ali-vpc'] as const;
export type BackendType = (typeof BACKEND_TYPES)[number];

export interface VxlanBackend { Type: 'vxlan'; VNI: number; Port: number; GBP: boolean; DirectRouting: boolean }
export interface HostGwBackend { Type: 'host-gw' }
export interface UdpBackend { Type: 'udp'; Port: number }
export interface IpipBackend { Type: 'ipip'; DirectRouting: boolean }
export interface IpsecBackend { Type: 'ipsec'; PSK: string; UDPEncap: boolean; ESPProposal: string }
export interface AllocBackend { Type: 'alloc' }
export interface AwsVpcBackend { Type: 'aws-vpc'; RouteTableID: string[]; RouteLimit?: number }
export interface GceBackend { Type: 'gce'; RouteLimit?: number }
export interface AliVpcBackend { Type: 'ali-vpc'; AccessKeyID: string; AccessKeySecret: string; RouteLimit?: number }
export type BackendConfig =
  | VxlanBackend | HostGwBackend | UdpBackend | IpipBackend | IpsecBackend
  | AllocBackend | AwsVpcBackend | GceBackend | AliVpcBackend;

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
  Backend: BackendConfig;
}

/** One family's allocation space: subnets of length len from min to max (network addresses). */
export interface SubnetRange { network: Cidr; len: number; min: bigint; max: bigint }

/** What replaces a secret wherever a config is shown or shared. */
export const SECRET_MASK = '********';

// ---------------------------------------------------------------------------
// JSON text. JSON.parse is not enough: its messages sometimes quote the whole
// input (and with it a PSK), and it silently merges duplicate keys, while Go's
// decoder, whose behaviour a flannel user relies on, applies every occurrence
// in document order. So objects keep their entries as written.

class JsonObject {
  constructor(readonly entries: Array<[string, unknown]>) {}
}

class JsonSyntaxError extends Error {
  constructor(readonly at: number, reason: string) {
    super(reason);
  }
}

// Far beyond any real net-conf.json, well within the JS stack.
const MAX_DEPTH = 1000;
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const ESCAPES: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };

function parseJson(text: string): unknown {
  let i = 0;
  const fail = (reason: string, at = i): never => {
    throw new JsonSyntaxError(at, reason);
  };
  // Only ever called outside strings, so the character shown is structure, not content.
  const found = (): string => (i >= text.length ? 'the end of the input' : JSON.stringify(text[i]));
  const skipSpace = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i] as string)) i++;
  };

  const readString = (): string => {
    const start = i++;
    let out = '';
    for (;;) {
      if (i >= text.length) fail('unterminated string', start);
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return out;
      }
      if (c < 0x20) fail('control character inside a string: write it as an escape such as \\n');
      if (c !== 0x5c) {
        out += text[i++];
        continue;
      }
      const e = text[i + 1] ?? '';
      if (e === 'u') {
        const hex = text.slice(i + 2, i + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('invalid \\u escape: expected four hex digits');
        out += String.fromCharCode(parseInt(hex, 16));
        i += 6;
      } else if (e in ESCAPES) {
        out += ESCAPES[e];
        i += 2;
      } else {
        fail('invalid escape in a string');
      }
    }
  };

  const readValue = (depth: number): unknown => {
    if (depth > MAX_DEPTH) fail('values are nested too deeply');
    skipSpace();
    const c = text[i];
    if (c === undefined) return fail('unexpected end of input: expected a value');
    if (c === '"') return readString();
    if (c === '{') {
      i++;
      const entries: Array<[string, unknown]> = [];
      skipSpace();
      if (text[i] === '}') {
        i++;
        return new JsonObject(entries);
      }
      for (;;) {
        skipSpace();
        if (text[i] !== '"') {
          const hint = text[i] === '}' ? ' (JSON allows no comma before })' : '';
          fail(`expected a double-quoted property name, found ${found()}${hint}`);
        }
        const key = readString();
        skipSpace();
        if (text[i] !== ':') fail(`expected ':' after property name ${JSON.stringify(key)}, found ${found()}`);
        i++;
        entries.push([key, readValue(depth + 1)]);
        skipSpace();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return new JsonObject(entries);
        }
        fail(`expected ',' or '}' after the value of ${JSON.stringify(key)}, found ${found()}`);
      }
    }
    if (c === '[') {
      i++;
      const items: unknown[] = [];
      skipSpace();
      if (text[i] === ']') {
        i++;
        return items;
      }
      for (;;) {
        items.push(readValue(depth + 1));
        skipSpace();
        if (text[i] === ',') {
          i++;
          skipSpace();
          if (text[i] === ']') fail('JSON allows no comma before ]');
          continue;
        }
        if (text[i] === ']') {
          i++;
          return items;
        }
        fail(`expected ',' or ']' in an array, found ${found()}`);
      }
    }
    if (c === '-' || (c >= '0' && c <= '9')) {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(text);
      if (!m) return fail('invalid number');
      i += m[0].length;
      return Number(m[0]);
    }
    for (const [word, value] of [['true', true], ['false', false], ['null', null]] as const) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return value;
      }
    }
    if (/[A-Za-z_]/.test(c)) return fail('unquoted word: expected a value (strings are written in double quotes)');
    return fail(`expected a value, found ${found()}`);
  };

  const value = readValue(0);
  skipSpace();
  if (i < text.length) fail(`unexpected ${found()} after the end of the JSON value`);
  return value;
}

function position(text: string, at: number): string {
  const before = text.slice(0, at);
  const line = before.split('\n').length;
  const column = at - (before.lastIndexOf('\n') + 1) + 1;
  return `line ${line}, column ${column}`;
}

// ---------------------------------------------------------------------------
// Typed fields of an object, looked up as Go's encoding/json does: keys match
// case-insensitively and, when several keys land on one field, the last wins.
// null is Go's "leave the default", so it reads as absent.

function isObject(v: unknown): v is object {
  return v instanceof JsonObject || (typeof v === 'object' && v !== null && !Array.isArray(v));
}

function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (isObject(v)) return 'an object';
  const t = typeof v;
  return /^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`;
}

/** A short rendering of a scalar for an error message; containers are only named by kind. */
function shown(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return '';
}

function typeMessage(label: string, v: unknown, expected: string, secret = false): string {
  const value = secret ? '' : shown(v);
  return `${label}${value ? ` ${value}` : ''} is ${kindOf(v)}: expected ${expected}`;
}

class Fields {
  private readonly byKey = new Map<string, { key: string; value: unknown }>();
  private readonly taken = new Set<string>();

  constructor(
    obj: object,
    private readonly errors: string[],
    private readonly prefix = '',
  ) {
    const entries = obj instanceof JsonObject ? obj.entries : Object.entries(obj);
    for (const [key, value] of entries) {
      const folded = key.toLowerCase();
      // Re-inserting moves the key to the end, so leftovers are listed in the order last written.
      this.byKey.delete(folded);
      this.byKey.set(folded, { key, value });
    }
  }

  private label(name: string): string {
    return this.prefix + name;
  }

  /** The value, undefined when absent or null; marks the field as known. */
  raw(name: string): unknown {
    const folded = name.toLowerCase();
    this.taken.add(folded);
    const v = this.byKey.get(folded)?.value;
    return v === null ? undefined : v;
  }

  has(name: string): boolean {
    return this.raw(name) !== undefined;
  }

  private typeError(name: string, v: unknown, expected: string, secret = false): undefined {
    this.errors.push(typeMessage(this.label(name), v, expected, secret));
    return undefined;
  }

  string(name: string, secret = false): string | undefined {
    const v = this.raw(name);
    if (v === undefined || typeof v === 'string') return v;
    return this.typeError(name, v, 'a string', secret);
  }

  boolean(name: string): boolean | undefined {
    const v = this.raw(name);
    if (v === undefined || typeof v === 'boolean') return v;
    return this.typeError(name, v, 'a boolean (true or false)');
  }

  integer(name: string): number | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (typeof v !== 'number') return this.typeError(name, v, 'an integer');
    if (!Number.isSafeInteger(v)) {
      this.errors.push(`${this.label(name)} ${v} ${Number.isInteger(v) ? 'is too large' : 'is not an integer'}`);
      return undefined;
    }
    return v;
  }

  /** An integer within [lo, hi]; undefined (with an error) when outside. */
  integerIn(name: string, lo: number, hi: number): number | undefined {
    const v = this.integer(name);
    if (v === undefined || (v >= lo && v <= hi)) return v;
    this.errors.push(`${this.label(name)} ${v} is out of range: it must be from ${lo} to ${hi}`);
    return undefined;
  }

  /** Keys never asked for, as the user wrote them. */
  unknown(): string[] {
    return [...this.byKey].filter(([folded]) => !this.taken.has(folded)).map(([, e]) => e.key);
  }
}

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
// Backend.

/** The options each backend type takes besides Type. */
export const BACKEND_OPTIONS: Readonly<Record<BackendType, readonly string[]>> = {
  vxlan: ['VNI', 'Port', 'GBP', 'DirectRouting'],
  'host-gw': [],
  udp: ['Port'],
  ipip: ['DirectRouting'],
  ipsec: ['PSK', 'UDPEncap', 'ESPProposal'],
  alloc: [],
  'aws-vpc': ['RouteTableID', 'RouteLimit'],
  gce: ['RouteLimit'],
  'ali-vpc': ['AccessKeyID', 'AccessKeySecret', 'RouteLimit'],
};

const IPV4_ONLY: ReadonlySet<BackendType> = new Set(['udp', 'ipip', 'ipsec']);
export const DEFAULT_ESP_PROPOSAL = 'aes128gcm16-sha256-prfsha256-ecp256';
const MIN_PSK_LENGTH = 96;
const MAX_VNI = 2 ** 24 - 1;

function isBackendType(s: string): s is BackendType {
  return (BACKEND_TYPES as readonly string[]).includes(s);
}

function readBackendOptions(
  type: BackendType,
  f: Fields,
  env: Record<string, string | undefined>,
  errors: string[],
  masked = false,
): BackendConfig {
  const routeLimit = (): { RouteLimit?: number } => {
    const v = f.integer('RouteLimit');
    if (v === undefined) return {};
    if (v >= 1) return { RouteLimit: v };
    errors.push(`Backend.RouteLimit ${v} is not positive: it must be at least 1`);
    return {};
  };

  switch (type) {
    case 'vxlan':
      return {
        Type: type,
        VNI: f.integerIn('VNI', 1, MAX_VNI) ?? 1,
        Port: f.integerIn('Port', 1, 65535) ?? 8472,
        GBP: f.boolean('GBP') ?? false,
        DirectRouting: f.boolean('DirectRouting') ?? false,
      };
    case 'udp':
      return { Type: type, Port: f.integerIn('Port', 1, 65535) ?? 8285 };
    case 'ipip':
      return { Type: type, DirectRouting: f.boolean('DirectRouting') ?? false };
    case 'host-gw':
    case 'alloc':
      return { Type: type };
    case 'ipsec': {
      // The key itself never appears in a message, only its length.
      const psk = f.string('PSK', true);
      if (psk === undefined) {
        if (!f.has('PSK')) {
          errors.push(`Backend.PSK is required for type ipsec: a pre-shared key of at least ${MIN_PSK_LENGTH} characters, e.g. from "openssl rand -hex 48"`);
        }
      } else if (psk.length < MIN_PSK_LENGTH && !(masked && psk === SECRET_MASK)) {
        errors.push(`Backend.PSK is ${psk.length} characters: at least ${MIN_PSK_LENGTH} are required`);
      }
      const udpEncap = f.boolean('UDPEncap') ?? false;
      const esp = f.string('ESPProposal');
      if (esp !== undefined && esp.trim() === '') {
        errors.push(`Backend.ESPProposal is empty: name an ESP proposal, or leave it out for ${DEFAULT_ESP_PROPOSAL}`);
      }
      return { Type: type, PSK: psk ?? '', UDPEncap: udpEncap, ESPProposal: esp || DEFAULT_ESP_PROPOSAL };
    }
    case 'aws-vpc': {
      // flannel takes one ID or a list; the effective form is always the list.
      const v = f.raw('RouteTableID');
      const ids: string[] = [];
      if (v !== undefined && typeof v !== 'string' && !Array.isArray(v)) {
        errors.push(typeMessage('Backend.RouteTableID', v, 'a route table ID or an array of them'));
      } else if (v !== undefined) {
        const list: unknown[] = Array.isArray(v) ? v : [v];
        list.forEach((id, i) => {
          const label = Array.isArray(v) ? `Backend.RouteTableID[${i}]` : 'Backend.RouteTableID';
          if (typeof id !== 'string') errors.push(typeMessage(label, id, 'a string'));
          else if (id.trim() === '') errors.push(`${label} is empty: expected a route table ID such as rtb-0123456789abcdef0`);
          else ids.push(id);
        });
      }
      return { Type: type, RouteTableID: ids, ...routeLimit() };
    }
    case 'gce':
      return { Type: type, ...routeLimit() };
    case 'ali-vpc': {
      // As flannel does: an empty or absent key falls back to the environment.
      const credential = (name: 'AccessKeyID' | 'AccessKeySecret', envName: string, secret: boolean): string => {
        const given = f.string(name, secret);
        if (given) return given;
        if (given === undefined && f.has(name)) return ''; // wrong type, already reported
        const fromEnv = env[envName];
        if (fromEnv) return fromEnv;
        errors.push(`Backend.${name} is missing for type ali-vpc: set it in the Backend or in the environment variable ${envName}`);
        return '';
      };
      return {
        Type: type,
        AccessKeyID: credential('AccessKeyID', 'ACCESS_KEY_ID', false),
        AccessKeySecret: credential('AccessKeySecret', 'ACCESS_KEY_SECRET', true),
        ...routeLimit(),
      };
    }
  }
}

function readBackend(
  value: unknown,
  ipv6: boolean,
  env: Record<string, string | undefined>,
  errors: string[],
  masked = false,
): BackendConfig | undefined {
  // flannel's documentation promises vxlan when Backend is left out.
  const obj = value === undefined ? new JsonObject([['Type', 'vxlan']]) : value;
  if (!isObject(obj)) {
    errors.push(typeMessage('Backend', obj, 'an object such as {"Type": "vxlan"}'));
    return undefined;
  }
  const f = new Fields(obj, errors, 'Backend.');
  const type = f.string('Type');
  if (type === undefined) {
    if (!f.has('Type')) errors.push(`Backend.Type is missing: it must be one of ${BACKEND_TYPES.join(', ')}`);
    return undefined;
  }
  if (!isBackendType(type)) {
    const lower = type.toLowerCase();
    const hint = isBackendType(lower) ? ` (did you mean ${lower}?)` : '';
    errors.push(`Backend.Type ${JSON.stringify(type)} is not known${hint}: it must be one of ${BACKEND_TYPES.join(', ')}`);
    return undefined;
  }
  if (ipv6 && IPV4_ONLY.has(type)) {
    errors.push(`Backend.Type ${type} is IPv4 only: it cannot be used with EnableIPv6 true`);
  }
  const backend = readBackendOptions(type, f, env, errors, masked);
  if (type === 'vxlan' && f.has('MacPrefix')) {
    errors.push('Backend.MacPrefix is a Windows-only vxlan option: twill runs on Linux, so remove it');
  }
  const known = BACKEND_OPTIONS[type];
  for (const key of f.unknown()) {
    const list = known.length > 0 ? `known: ${known.join(', ')}` : `${type} takes no options`;
    errors.push(`Backend option ${key} is not known for type ${type} (${list})`);
  }
  return backend;
}

// ---------------------------------------------------------------------------
// The public API.

const TOP_LEVEL_FIELDS = [
  'Network', 'SubnetLen', 'SubnetMin', 'SubnetMax', 'EnableIPv4', 'EnableIPv6',
  'IPv6Network', 'IPv6SubnetLen', 'IPv6SubnetMin', 'IPv6SubnetMax', 'Backend', 'EnableNFTables',
];

const EXAMPLE = '{"Network": "10.244.0.0/16"}';

/**
 * Reads flannel's net-conf.json (its text, or the value JSON.parse made of it)
 * and returns the effective config, every default filled in. Throws a
 * ConfigError listing every broken rule. env supplies ali-vpc's credentials
 * when the Backend does not. opts.masked reads a config as publicConfig()
 * made it (the shared topic's copy): a masked PSK is then expected, not short.
 */
export function parseNetConf(input: string | unknown, env: Record<string, string | undefined> = process.env, opts: { masked?: boolean } = {}): NetConf {
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
  const f = new Fields(value, errors);
  const enable4 = f.boolean('EnableIPv4') ?? true;
  const enable6 = f.boolean('EnableIPv6') ?? false;
  if (f.boolean('EnableNFTables') === true) {
    errors.push('EnableNFTables true is not supported: twill programs iptables, so set it to false or leave it out');
  }
  if (!enable4 && !enable6) errors.push('EnableIPv4 and EnableIPv6 are both false: enable at least one');
  const ranges = FAMILIES.map((spec) => [spec, readFamily(spec, f, spec === V4 ? enable4 : enable6, errors)] as const);
  const backendValue = f.raw('Backend');
  for (const key of f.unknown()) errors.push(`${key} is not a known field (known: ${TOP_LEVEL_FIELDS.join(', ')})`);
  const backend = readBackend(backendValue, enable6, env, errors, opts.masked);
  if (errors.length > 0 || !backend) throw new ConfigError(errors);

  const conf: Omit<NetConf, 'Backend'> = { EnableIPv4: enable4, EnableIPv6: enable6 };
  for (const [spec, r] of ranges) {
    if (!r) continue;
    conf[spec.network] = formatCidr(r.network);
    conf[spec.len] = r.len;
    conf[spec.min] = formatIP(spec.family, r.min);
    conf[spec.max] = formatIP(spec.family, r.max);
  }
  return { ...conf, Backend: backend };
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

/** A copy fit to print, log or show: the PSK and the access key secret are masked. */
export function maskSecrets(c: NetConf): NetConf {
  const b = c.Backend;
  let Backend: BackendConfig;
  switch (b.Type) {
    case 'ipsec':
      Backend = { ...b, PSK: SECRET_MASK };
      break;
    case 'ali-vpc':
      Backend = { ...b, AccessKeySecret: SECRET_MASK };
      break;
    case 'aws-vpc':
      Backend = { ...b, RouteTableID: [...b.RouteTableID] };
      break;
    default:
      Backend = { ...b };
  }
  return { ...c, Backend };
}

/**
 * The config as every node of the network may read it, e.g. on a shared MQTT
 * topic. Secrets travel only on each node's own topic, so they are masked here.
 */
export function publicConfig(c: NetConf): NetConf {
  return maskSecrets(c);
}
