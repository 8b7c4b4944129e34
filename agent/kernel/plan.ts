// Turns desired state plus what the kernel has into the batches that close
// the gap. Pure: no I/O, so every ownership rule can be tested without root.
//
// The batches run in this order, and each exists only when it has work:
//   1. ip:     route deletes, neighbour deletes, then device deletes,
//              creations, changes, addresses, up   (tear down before build)
//   2. bridge: fdb deletes, then fdb adds and replaces
//   3. ip:     neighbour adds and replaces, then route adds and replaces
// A new peer's route therefore appears only once its neighbour and fdb
// entries exist (flannel's order: no window in which traffic is routed into
// a vxlan device that cannot deliver it), and a departing peer's route goes
// before its other entries. The steady-state change (a peer comes or goes)
// costs two processes whatever the number of peers.

import { diff } from './diff.js';
import * as cmd from './commands.js';
import { addressKey, fdbKey, neighbourKey, routeKey } from './keys.js';
import { checkDesiredOwned, ownsLink, routeProtocol } from './ownership.js';
import type { ActualState, Device, Link, LinkRecord, NormalState, Ownership, Route, RouteRecord } from './types.js';
import type { BatchTool } from './batch.js';

export interface PlanStep {
  tool: BatchTool;
  commands: string[];
}

export interface ChangeSet {
  add: string[];
  replace: string[];
  remove: string[];
}

export interface Changes {
  /** replace: recreated (its link settings differ); update: changed in place (mtu, mac, up, addresses) */
  devices: ChangeSet & { update: string[] };
  addresses: ChangeSet;
  routes: ChangeSet;
  neighbours: ChangeSet;
  fdb: ChangeSet;
}

export interface Conflict {
  kind: 'device' | 'route' | 'neighbour' | 'fdb';
  key: string;
  reason: string;
}

export interface Plan {
  steps: PlanStep[];
  changes: Changes;
  /** desired objects twill will not install because something not twill's is in the way */
  conflicts: Conflict[];
  commands: number;
}

function sameLink(d: Link, a: Link | undefined): boolean {
  if (!a || a.kind !== d.kind) return false;
  if (d.kind === 'vxlan' && a.kind === 'vxlan') {
    return d.vni === a.vni && d.port === a.port && d.learning === a.learning && d.gbp === a.gbp && d.local === a.local && d.dev === a.dev;
  }
  if (d.kind === 'ipip' && a.kind === 'ipip') return d.local === a.local && d.dev === a.dev;
  return true;
}

// IPv6 link-local addresses are the kernel's own, made for every device.
const managedAddresses = (l: LinkRecord) => l.addresses.filter((a) => !(a.family === 6 && a.scope === 'link')).map((a) => a.cidr);

interface InPlace {
  mtu?: number;
  mac?: string;
  up?: boolean;
  addAddresses: string[];
  delAddresses: string[];
}

function inPlaceChanges(d: Device, a: LinkRecord): InPlace {
  const have = new Set(managedAddresses(a));
  const want = new Set(d.addresses);
  return {
    ...(d.mtu !== undefined && d.mtu !== a.mtu && { mtu: d.mtu }),
    ...(d.mac !== undefined && d.link.kind === 'vxlan' && d.mac !== a.mac && { mac: d.mac }),
    ...(d.up !== a.up && { up: d.up }),
    addAddresses: d.addresses.filter((x) => !have.has(x)),
    delAddresses: [...have].filter((x) => !want.has(x)),
  };
}

const isNoop = (c: InPlace) =>
  c.mtu === undefined && c.mac === undefined && c.up === undefined && c.addAddresses.length === 0 && c.delAddresses.length === 0;

/** The kernel's route types twill installs: RTN_UNICAST and RTN_BLACKHOLE. */
const RTN_UNICAST = 1;
const RTN_BLACKHOLE = 6;

const sameRoute = (d: Route, a: RouteRecord) =>
  a.type === (d.blackhole ? RTN_BLACKHOLE : RTN_UNICAST) && !a.multipath && a.dev === d.dev && a.via === d.via && a.onlink === d.onlink;

/**
 * The devices' part of a plan: which desired devices a foreign device of the
 * same name blocks, which devices go (and with them whatever was on them),
 * and the commands that delete, create and change devices and addresses, in
 * the order step 1 runs them.
 */
function planDevices(desired: NormalState, actual: ActualState, ownership: Ownership, changes: Changes, conflicts: Conflict[]) {
  const linkByName = new Map(actual.links.map((l) => [l.name, l]));
  const owned = actual.links.filter((l) => ownsLink(ownership, l));
  const ownedNames = new Set(owned.map((l) => l.name));
  // A desired name held by a device that is not twill's (another kind) blocks
  // that device and everything that would live on it.
  const blocked = new Set<string>();
  for (const d of desired.devices) {
    const a = linkByName.get(d.name);
    if (a && !ownedNames.has(d.name)) {
      blocked.add(d.name);
      conflicts.push({ kind: 'device', key: d.name, reason: `a ${a.kind ?? 'plain'} device named ${d.name} exists and is not twill's` });
    }
  }
  const devDiff = diff(
    desired.devices.filter((d) => !blocked.has(d.name)),
    owned,
    { desiredKey: (d) => d.name, actualKey: (a) => a.name, same: (d, a) => sameLink(d.link, a.link) && isNoop(inPlaceChanges(d, a)) },
  );
  /** devices that will not exist once step 1 has deleted them: whatever was on them is gone */
  const gone = new Set<string>();
  const deviceDels: string[] = [];
  const deviceAdds: string[] = [];
  const deviceSets: string[] = [];
  const addrDels: string[] = [];
  const addrAdds: string[] = [];
  const ups: string[] = [];
  const create = (d: Device) => {
    deviceAdds.push(...cmd.linkAdd(d));
    for (const x of d.addresses) {
      addrAdds.push(cmd.addrAdd(d.name, x));
      changes.addresses.add.push(addressKey(d.name, x));
    }
    if (d.up) ups.push(cmd.linkUp(d.name, true));
  };
  for (const a of devDiff.remove) {
    gone.add(a.name);
    deviceDels.push(cmd.linkDel(a.name, a.link?.kind));
    changes.devices.remove.push(a.name);
  }
  for (const d of devDiff.add) {
    create(d);
    changes.devices.add.push(d.name);
  }
  for (const { desired: d, actual: a } of devDiff.replace) {
    if (!sameLink(d.link, a.link)) {
      // vni, port, local, underlay...: the kernel cannot change these on a
      // live device, so it is made anew and everything on it re-added.
      gone.add(a.name);
      deviceDels.push(cmd.linkDel(a.name, a.link?.kind));
      create(d);
      changes.devices.replace.push(d.name);
      continue;
    }
    const c = inPlaceChanges(d, a);
    if (c.mtu !== undefined || c.mac !== undefined) deviceSets.push(cmd.linkSet(d.name, c));
    for (const x of c.delAddresses) {
      addrDels.push(cmd.addrDel(d.name, x));
      changes.addresses.remove.push(addressKey(d.name, x));
    }
    for (const x of c.addAddresses) {
      addrAdds.push(cmd.addrAdd(d.name, x));
      changes.addresses.add.push(addressKey(d.name, x));
    }
    if (c.up !== undefined) ups.push(cmd.linkUp(d.name, c.up));
    changes.devices.update.push(d.name);
  }

  return { ownedNames, blocked, gone, commands: [...deviceDels, ...deviceAdds, ...deviceSets, ...addrDels, ...addrAdds, ...ups] };
}

export function planReconcile(desired: NormalState, actual: ActualState, ownership: Ownership): Plan {
  checkDesiredOwned(ownership, desired);
  const proto = routeProtocol(ownership);
  const changes: Changes = {
    devices: { add: [], replace: [], remove: [], update: [] },
    addresses: { add: [], replace: [], remove: [] },
    routes: { add: [], replace: [], remove: [] },
    neighbours: { add: [], replace: [], remove: [] },
    fdb: { add: [], replace: [], remove: [] },
  };
  const conflicts: Conflict[] = [];
  const before: string[] = [];
  const bridge: string[] = [];
  const after: string[] = [];

  // ---- devices ----
  const { ownedNames, blocked, gone, commands: deviceCommands } = planDevices(desired, actual, ownership, changes, conflicts);

  // Devices whose neighbours and fdb entries twill manages.
  const managed = new Set([...ownedNames, ...desired.devices.map((d) => d.name)]);
  for (const b of blocked) managed.delete(b);
  const live = (dev: string | undefined) => dev === undefined || !gone.has(dev);

  // ---- routes: twill's by protocol, wherever they point ----
  const ourRoutes: RouteRecord[] = [];
  const foreignKeys = new Map<string, RouteRecord>();
  for (const r of actual.routes) {
    if (r.protocol === proto) {
      if (live(r.dev)) ourRoutes.push(r);
    } else foreignKeys.set(routeKey(r), r);
  }
  const wantRoutes = desired.routes.filter((r) => {
    const f = foreignKeys.get(routeKey(r));
    if (f) conflicts.push({ kind: 'route', key: routeKey(r), reason: `a route with protocol ${f.protocol} already holds this table, prefix and metric` });
    return !f;
  });
  const routeDiff = diff(wantRoutes, ourRoutes, { desiredKey: routeKey, actualKey: routeKey, same: sameRoute });

  // ---- neighbours: permanent ones on twill's devices ----
  const wantNeigh = desired.neighbours.filter((n) => {
    if (blocked.has(n.dev)) conflicts.push({ kind: 'neighbour', key: neighbourKey(n), reason: `device ${n.dev} is not twill's` });
    return !blocked.has(n.dev);
  });
  const haveNeigh = actual.neighbours.filter((n) => n.permanent && managed.has(n.dev) && live(n.dev));
  const neighDiff = diff(wantNeigh, haveNeigh, { desiredKey: neighbourKey, actualKey: neighbourKey, same: (d, a) => a.mac === d.mac });

  // ---- fdb: permanent remote (dst) entries on twill's devices ----
  const wantFdb = desired.fdb.filter((f) => {
    if (blocked.has(f.dev)) conflicts.push({ kind: 'fdb', key: fdbKey(f), reason: `device ${f.dev} is not twill's` });
    return !blocked.has(f.dev);
  });
  const haveFdb = actual.fdb.filter((f) => f.permanent && f.dst !== undefined && managed.has(f.dev) && live(f.dev));
  const fdbDiff = diff(wantFdb, haveFdb, { desiredKey: fdbKey, actualKey: fdbKey, same: (d, a) => a.dst === d.dst });

  // ---- step 1 ----
  for (const r of routeDiff.remove) {
    before.push(cmd.routeDel(r, proto));
    changes.routes.remove.push(routeKey(r));
  }
  for (const n of neighDiff.remove) {
    before.push(cmd.neighDel(n));
    changes.neighbours.remove.push(neighbourKey(n));
  }
  before.push(...deviceCommands);

  // ---- step 2 ----
  for (const f of fdbDiff.remove) {
    bridge.push(cmd.fdbDel(f));
    changes.fdb.remove.push(fdbKey(f));
  }
  for (const f of fdbDiff.add) {
    bridge.push(cmd.fdbReplace(f));
    changes.fdb.add.push(fdbKey(f));
  }
  for (const { desired: f } of fdbDiff.replace) {
    bridge.push(cmd.fdbReplace(f));
    changes.fdb.replace.push(fdbKey(f));
  }

  // ---- step 3 ----
  for (const n of neighDiff.add) {
    after.push(cmd.neighReplace(n));
    changes.neighbours.add.push(neighbourKey(n));
  }
  for (const { desired: n } of neighDiff.replace) {
    after.push(cmd.neighReplace(n));
    changes.neighbours.replace.push(neighbourKey(n));
  }
  for (const r of routeDiff.add) {
    after.push(cmd.routeAdd(r, proto));
    changes.routes.add.push(routeKey(r));
  }
  for (const { desired: r } of routeDiff.replace) {
    after.push(cmd.routeReplace(r, proto));
    changes.routes.replace.push(routeKey(r));
  }

  const steps: PlanStep[] = [
    { tool: 'ip' as const, commands: before },
    { tool: 'bridge' as const, commands: bridge },
    { tool: 'ip' as const, commands: after },
  ].filter((s) => s.commands.length > 0);
  return { steps, changes, conflicts, commands: before.length + bridge.length + after.length };
}
