// The identity of each kind of kernel object: what the kernel itself treats
// as "the same entry", so that a key match means replace and a key mismatch
// means add one and delete the other.

/** A device is its name. */
export const deviceKey = (d: { name: string }): string => d.name;

/** The kernel's FIB key: the same prefix may exist once per table and metric. */
export const routeKey = (r: { table: number; dst: string; metric: number }): string => `${r.table} ${r.dst} ${r.metric}`;

export const neighbourKey = (n: { dev: string; ip: string }): string => `${n.dev} ${n.ip}`;

/** flannel keeps one VTEP per MAC, so a MAC's destination is an attribute, not identity. */
export const fdbKey = (f: { dev: string; mac: string }): string => `${f.dev} ${f.mac}`;

export const addressKey = (dev: string, cidr: string): string => `${dev} ${cidr}`;
