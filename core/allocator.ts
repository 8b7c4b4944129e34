// Subnet choice, as flannel makes it: the node's previous subnet if it is free,
// else a random pick among the first 100 free subnets from SubnetMin up. Random
// among the first few, not the first one, so nodes that join at the same time
// rarely race for the same subnet; near the bottom so the space stays compact.
import { formatCidr, formatIP, mask, parseCidr, subnetStep, type Cidr } from './cidr.js';
import type { SubnetRange } from './config.js';
import { OutOfSubnetsError } from './errors.js';

export const CANDIDATES = 100;

/** Does this subnet (CIDR text) belong to the range as it is configured now? */
export function fitsRange(range: SubnetRange, subnet: string | null | undefined): boolean {
  if (!subnet) return false;
  const c = parseCidr(subnet, true);
  return (
    c !== undefined &&
    c.family === range.network.family &&
    c.prefix === range.len &&
    (c.ip & mask(c.family, range.len)) === c.ip &&
    c.ip >= range.min &&
    c.ip <= range.max
  );
}

/** The first `limit` free subnets from range.min, walking past the sorted taken list. */
function firstFree(range: SubnetRange, takenSorted: readonly bigint[], limit = CANDIDATES): bigint[] {
  const step = subnetStep(range.network.family, range.len);
  const free: bigint[] = [];
  let candidate = range.min;
  let i = 0;
  while (i < takenSorted.length && (takenSorted[i] as bigint) < candidate) i++;
  while (free.length < limit && candidate <= range.max) {
    if (i < takenSorted.length && takenSorted[i] === candidate) {
      i++;
    } else {
      free.push(candidate);
    }
    candidate += step;
  }
  return free;
}

function has(sorted: readonly bigint[], v: bigint): boolean {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const x = sorted[mid] as bigint;
    if (x === v) return true;
    if (x < v) lo = mid + 1;
    else hi = mid - 1;
  }
  return false;
}

/**
 * takenSorted lists the leased subnets of this family in ascending order;
 * previous is the subnet the node held before, preferred when it is free.
 */
function pickSubnet(
  range: SubnetRange,
  takenSorted: readonly bigint[],
  previous: string | null | undefined,
  random: () => number = Math.random,
): string | undefined {
  if (previous && fitsRange(range, previous)) {
    const prev = parseCidr(previous, true) as Cidr;
    if (!has(takenSorted, prev.ip)) return formatCidr(prev);
  }
  const free = firstFree(range, takenSorted);
  if (free.length === 0) return undefined;
  const ip = free[Math.floor(random() * free.length)] as bigint;
  return formatCidr({ family: range.network.family, ip, prefix: range.len });
}

/**
 * The subnet of one family a node gets when it needs a new one (it joins, or
 * what it holds no longer fits): the one it holds if it fits and no other
 * node has it; holding none, the one it held before a release if that fits
 * and is free; else a pick among the first free ones. takenSorted lists every leased subnet of the
 * family, the node's own included; no range (the family is off): null.
 * Throws OutOfSubnetsError, naming the range, when every subnet is leased.
 */
export function chooseSubnet(
  network: string,
  range: SubnetRange | undefined,
  takenSorted: readonly bigint[],
  held: string | null | undefined,
  previous: string | undefined,
  random: () => number,
): string | null {
  if (!range) return null;
  const own = held ? parseCidr(held, true)?.ip : undefined;
  const others = own === undefined ? takenSorted : takenSorted.filter((x) => x !== own);
  const chosen = pickSubnet(range, others, held ?? previous, random) ?? pickSubnet(range, others, previous, random);
  if (!chosen) {
    const fam = range.network.family;
    throw new OutOfSubnetsError(
      network,
      `all ${rangeSize(range)} /${range.len} subnets from ${formatIP(fam, range.min)} to ${formatIP(fam, range.max)} are leased; widen the network or remove nodes that left`,
    );
  }
  return chosen;
}

/** How many subnets the range holds, for error messages. */
export function rangeSize(range: SubnetRange): bigint {
  return (range.max - range.min) / subnetStep(range.network.family, range.len) + 1n;
}
