// Decides which of the kernel's objects twill may touch. Everything that
// deletes or replaces goes through these predicates first.

import { TwillError } from '../../core/errors.js';
import type { LinkKind, LinkRecord, NormalState, Ownership } from './types.js';
import { TWILL_ROUTE_PROTOCOL } from './types.js';

export function routeProtocol(o: Ownership): number {
  const p = o.routeProtocol ?? TWILL_ROUTE_PROTOCOL;
  // 0-4 mean something to the kernel itself (unspec, redirect, kernel, boot, static).
  if (!Number.isInteger(p) || p < 5 || p > 255) {
    throw new TwillError('InvalidOwnership', `route protocol ${p} cannot mark twill's routes: use a number from 5 to 255 that nothing else on the host uses`);
  }
  return p;
}

function nameMatches(pattern: string | RegExp, name: string): boolean {
  if (typeof pattern === 'string') return pattern === name;
  pattern.lastIndex = 0; // a /g or /y pattern remembers where it last matched
  return pattern.test(name);
}

/** Whether a device of this name and kind is twill's. */
export function ownsDevice(o: Ownership, name: string, kind: LinkKind): boolean {
  return o.devices.some((d) => d.kind === kind && nameMatches(d.name, name));
}

/** Whether an existing link is twill's: its name is claimed and it is of the claimed kind. */
export function ownsLink(o: Ownership, l: LinkRecord): boolean {
  return l.link !== undefined && ownsDevice(o, l.name, l.link.kind);
}

/**
 * Refuses a desired state that reaches beyond what the caller declared as
 * twill's, so that a backend bug cannot make twill manage someone's eth0.
 */
export function checkDesiredOwned(o: Ownership, desired: NormalState): void {
  const errors: string[] = [];
  const devices = new Set<string>();
  for (const d of desired.devices) {
    devices.add(d.name);
    if (!ownsDevice(o, d.name, d.link.kind)) errors.push(`device ${d.name} (${d.link.kind}) is not listed in ownership.devices`);
  }
  const memo = new Map<string, boolean>();
  const claimed = (dev: string) => {
    let c = memo.get(dev);
    if (c === undefined) memo.set(dev, (c = devices.has(dev) || o.devices.some((d) => nameMatches(d.name, dev))));
    return c;
  };
  for (const n of desired.neighbours) {
    if (!claimed(n.dev)) errors.push(`neighbour ${n.ip} is on ${n.dev}, which is not one of twill's devices`);
  }
  for (const f of desired.fdb) {
    if (!claimed(f.dev)) errors.push(`fdb entry ${f.mac} is on ${f.dev}, which is not one of twill's devices`);
  }
  if (errors.length) throw new TwillError('NotOwned', `desired kernel state reaches outside twill's devices: ${errors.join('; ')}`);
}
