// Desired versus actual, for any kind of object with a stable key. The caller
// passes only actual objects it owns: ownership is decided before the diff,
// so nothing here can ever schedule a foreign object for deletion.

export interface DiffOptions<D, A> {
  desiredKey: (d: D) => string;
  actualKey: (a: A) => string;
  /** true when the actual object already is what is desired */
  same: (d: D, a: A) => boolean;
}

export interface Diff<D, A> {
  add: D[];
  /** present under the same key but different: replace actual with desired */
  replace: { desired: D; actual: A }[];
  remove: A[];
  unchanged: number;
}

export function diff<D, A>(desired: Iterable<D>, actual: Iterable<A>, o: DiffOptions<D, A>): Diff<D, A> {
  // One entry per key; the rare second object under a key goes to `extra`,
  // so the common case allocates no array per object.
  const byKey = new Map<string, A>();
  const extra = new Map<string, A[]>();
  for (const a of actual) {
    const k = o.actualKey(a);
    if (!byKey.has(k)) byKey.set(k, a);
    else {
      const more = extra.get(k);
      if (more) more.push(a);
      else extra.set(k, [a]);
    }
  }
  const out: Diff<D, A> = { add: [], replace: [], remove: [], unchanged: 0 };
  const seen = new Set<string>();
  for (const d of desired) {
    const k = o.desiredKey(d);
    if (seen.has(k)) throw new Error(`diff: desired key ${k} appears twice`);
    seen.add(k);
    if (!byKey.has(k)) {
      out.add.push(d);
      continue;
    }
    const first = byKey.get(k) as A;
    byKey.delete(k);
    const more = extra.get(k);
    if (!more) {
      if (o.same(d, first)) out.unchanged++;
      else out.replace.push({ desired: d, actual: first });
      continue;
    }
    // The kernel can hold several objects under one key (a MAC with two
    // VTEPs); keep one that already matches, remove the surplus.
    extra.delete(k);
    const candidates = [first, ...more];
    const match = candidates.findIndex((a) => o.same(d, a));
    if (match >= 0) {
      out.unchanged++;
      candidates.splice(match, 1);
      out.remove.push(...candidates);
    } else {
      out.replace.push({ desired: d, actual: first });
      out.remove.push(...more);
    }
  }
  for (const left of byKey.values()) out.remove.push(left);
  for (const left of extra.values()) out.remove.push(...left);
  return out;
}
