// Canonical text for addresses, so that a desired "fd00:0::1" and the
// kernel's "fd00::1" compare equal, and keys built from them are stable.

import { formatCidr, formatIP, parseCidr, parseIP } from '../../core/cidr.js';
import type { Family } from './types.js';

// IPv4 text without leading zeros is already canonical. Checking it with
// plain numbers instead of core/cidr's bigints matters at scale: a reconcile
// of 5,000 peers looks at some 60,000 addresses.
const OCTET = '(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const V4 = new RegExp(`^${OCTET}\\.${OCTET}\\.${OCTET}\\.${OCTET}$`);

function v4Number(m: RegExpExecArray): number {
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}

export function canonIP(s: string): { family: Family; text: string } | undefined {
  if (V4.test(s)) return { family: 4, text: s };
  const p = parseIP(s);
  return p && { family: p.family, text: formatIP(p.family, p.ip) };
}

/** A network ("10.1.0.0/16"): host bits must be clear, as the kernel demands of a route. */
export function canonNetwork(s: string): { family: Family; text: string } | undefined {
  const slash = s.indexOf('/');
  const m = slash > 0 ? V4.exec(s.slice(0, slash)) : null;
  if (m) {
    const prefixText = s.slice(slash + 1);
    if (!/^\d{1,2}$/.test(prefixText) || Number(prefixText) > 32) return undefined;
    const prefix = Number(prefixText);
    const hostBits = prefix === 0 ? 0xffffffff : prefix === 32 ? 0 : 0xffffffff >>> prefix;
    return (v4Number(m) & hostBits) >>> 0 === 0 ? { family: 4, text: `${s.slice(0, slash)}/${prefix}` } : undefined;
  }
  const c = parseCidr(s, true);
  return c && { family: c.family, text: formatCidr(c) };
}

/** An interface address ("10.1.2.3/24"): host bits are the point. */
export function canonInterfaceAddress(s: string): { family: Family; text: string } | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = canonIP(s.slice(0, slash));
  const prefixText = s.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > (ip.family === 4 ? 32 : 128)) return undefined;
  return { family: ip.family, text: `${ip.text}/${prefix}` };
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export function canonMac(s: string): string | undefined {
  const lower = s.toLowerCase();
  return MAC.test(lower) ? lower : undefined;
}

// Linux allows up to 15 bytes and forbids '/', ':' and whitespace; iproute2's
// batch reader also gives '#' and quotes meaning, so those are refused too.
const IFNAME = /^[^\s/:#"'\\]{1,15}$/;

export function isIfname(s: string): boolean {
  return IFNAME.test(s) && s !== '.' && s !== '..';
}
