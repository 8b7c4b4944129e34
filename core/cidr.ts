// CIDR arithmetic for IPv4 and IPv6 on bigints, so one code path serves both
// families and the allocator can count subnets of any size without overflow.

export type Family = 4 | 6;

export interface Cidr {
  family: Family;
  /** the network address, host bits cleared */
  ip: bigint;
  prefix: number;
}

export function bits(family: Family): number {
  return family === 4 ? 32 : 128;
}

const V4_PART = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

export function parseIPv4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  // In Number arithmetic, one BigInt at the end: every lease an agent lists
  // passes through here twice, and four BigInt shifts cost more than the rest.
  let v = 0;
  for (const p of parts) {
    if (!V4_PART.test(p)) return undefined;
    v = v * 256 + Number(p);
  }
  return BigInt(v);
}

export function parseIPv6(s: string): bigint | undefined {
  if (s.length === 0 || s.length > 45 || s.includes('%')) return undefined;
  let text = s;
  // An embedded dotted quad ("::ffff:1.2.3.4") stands for the last two groups.
  if (text.includes('.')) {
    const lastColon = text.lastIndexOf(':');
    const v4 = parseIPv4(text.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    text = `${text.slice(0, lastColon + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const parseGroups = (h: string): bigint[] | undefined => {
    if (h === '') return [];
    const out: bigint[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(BigInt('0x' + g));
    }
    return out;
  };
  const head = parseGroups(halves[0] ?? '');
  const rest = halves.length === 2 ? parseGroups(halves[1] ?? '') : [];
  if (!head || !rest) return undefined;
  const given = head.length + rest.length;
  let groups: bigint[];
  if (halves.length === 2) {
    if (given > 7) return undefined;
    groups = [...head, ...new Array<bigint>(8 - given).fill(0n), ...rest];
  } else {
    if (given !== 8) return undefined;
    groups = head;
  }
  return groups.reduce((acc, g) => (acc << 16n) | g, 0n);
}

export function parseIP(s: string): { family: Family; ip: bigint } | undefined {
  const v4 = parseIPv4(s);
  if (v4 !== undefined) return { family: 4, ip: v4 };
  const v6 = parseIPv6(s);
  if (v6 !== undefined) return { family: 6, ip: v6 };
  return undefined;
}

export function formatIPv4(ip: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((ip >> s) & 0xffn)).join('.');
}

/** RFC 5952 form: lower case, longest run of zero groups compressed. */
function formatIPv6(ip: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  const left = hex.slice(0, bestStart).join(':');
  const right = hex.slice(bestStart + bestLen).join(':');
  return `${left}::${right}`;
}

export function formatIP(family: Family, ip: bigint): string {
  return family === 4 ? formatIPv4(ip) : formatIPv6(ip);
}

export function mask(family: Family, prefix: number): bigint {
  const total = bits(family);
  return ((1n << BigInt(prefix)) - 1n) << BigInt(total - prefix);
}

/**
 * Parses "a.b.c.d/n" or "x::/n". With strict, host bits must be zero (what a
 * subnet must look like); otherwise they are cleared, as Go's net.ParseCIDR does
 * for the network it returns.
 */
export function parseCidr(s: string, strict = false): Cidr | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const addr = parseIP(s.slice(0, slash));
  const prefixText = s.slice(slash + 1);
  if (!addr || !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > bits(addr.family)) return undefined;
  const ip = addr.ip & mask(addr.family, prefix);
  if (strict && ip !== addr.ip) return undefined;
  return { family: addr.family, ip, prefix };
}

export function formatCidr(c: Cidr): string {
  return `${formatIP(c.family, c.ip)}/${c.prefix}`;
}

export function contains(outer: Cidr, inner: Cidr): boolean {
  return (
    outer.family === inner.family &&
    inner.prefix >= outer.prefix &&
    (inner.ip & mask(outer.family, outer.prefix)) === outer.ip
  );
}

export function containsIP(outer: Cidr, family: Family, ip: bigint): boolean {
  return outer.family === family && (ip & mask(family, outer.prefix)) === outer.ip;
}

/** The size of one subnet of length len, as an address increment. */
export function subnetStep(family: Family, len: number): bigint {
  return 1n << BigInt(bits(family) - len);
}
