// The difference between the WireGuard devices this host should have
// (desired.ts) and what it has (links read with iproute2, devices read with
// `wg show dump`), as the commands that close it. Pure: no I/O, so each rule
// is unit-tested without a device.
//
// Two orderings matter and are made here:
//   - Within one `wg set`, peers added or changed come before peers
//     removed. A peer whose key changed (a rotation) is then one request in
//     which the new key takes the allowed IPs from the old one (WireGuard
//     moves a prefix to the peer that names it last) before the old key goes:
//     no packet finds its prefix without a peer.
//   - A peer added is told to handshake at once: setting a persistent
//     keepalive on a new peer sends one immediately, in the kernel and in
//     wireguard-go. The rotating node's packets are staged (up to 128 per
//     peer) until a handshake with its new key completes, and peers refuse
//     the node's own handshakes until they know its new key: this peer's
//     handshake flushes them within one round trip. Where the network's
//     interval is 0 the keepalive is cleared right after (kicks).
import type { LinkRecord } from '../kernel/index.js';
import { addrAdd, addrDel, linkSet, linkUp } from '../kernel/commands.js';
import type { PeerSpec, WgDeviceSpec } from './desired.js';
import { PSK_ARG, type WgArg, type WgDump, type WgPeer } from './wg.js';

/** The keepalive that starts a handshake with a new peer where the network sets none (cleared right after). */
export const KICK_KEEPALIVE = 25;
/** peers per `wg set`: bounds its argv and the pipes its PSKs take */
export const PEERS_PER_COMMAND = 64;

export type Implementation = 'kernel' | 'wireguard-go';

export type DeviceState =
  | { name: string; state: 'absent' }
  | { name: string; state: 'ours'; impl: Implementation; link: LinkRecord; dump: WgDump }
  | { name: string; state: 'foreign'; reason: string };

/**
 * Whose a device of one of our names is: a kernel WireGuard device, or a TUN
 * device that a live wireguard-go answers for, is twill's (made by it, or
 * by flannel before it, and taken over); anything else of that name is
 * someone else's, reported and never replaced.
 */
export function classify(name: string, link: LinkRecord | undefined, dump: WgDump | undefined): DeviceState {
  if (!link) return { name, state: 'absent' };
  if (dump && (link.kind === 'wireguard' || link.kind === 'tun')) return { name, state: 'ours', impl: link.kind === 'wireguard' ? 'kernel' : 'wireguard-go', link, dump };
  const reason =
    link.kind === 'tun'
      ? `a TUN device named ${name} exists and no WireGuard answers for it (no live /run/wireguard/${name}.sock): it is not twill's, and twill leaves it alone; remove it (ip link del ${name}) if nothing needs it`
      : link.kind === 'wireguard'
        ? `the WireGuard device ${name} does not answer wg: is wireguard-tools installed?`
        : `a ${link.kind ?? 'plain'} device named ${name} exists and is not WireGuard: twill leaves it alone and builds no tunnel there; remove or rename it (ip link del ${name}) if nothing needs it`;
  return { name, state: 'foreign', reason };
}

export interface DevicePlan {
  /** desired devices that do not exist: made before anything else */
  create: WgDeviceSpec[];
  /** twill's devices no longer desired (a mode or a family the network dropped) */
  remove: string[];
  /** devices of our names that are someone else's */
  conflicts: string[];
}

export function planDevices(desired: readonly WgDeviceSpec[], states: readonly DeviceState[]): DevicePlan {
  const plan: DevicePlan = { create: [], remove: [], conflicts: [] };
  const byName = new Map(states.map((s) => [s.name, s]));
  for (const d of desired) {
    const s = byName.get(d.name);
    if (!s || s.state === 'absent') plan.create.push(d);
    else if (s.state === 'foreign') plan.conflicts.push(s.reason);
  }
  for (const s of states) if (s.state === 'ours' && !desired.some((d) => d.name === s.name)) plan.remove.push(s.name);
  return plan;
}

/** iproute2 batch lines that give an existing device its MTU, addresses and up state. */
export function planLink(spec: WgDeviceSpec, link: LinkRecord): string[] {
  const out: string[] = [];
  if (link.mtu !== spec.mtu) out.push(linkSet(spec.name, { mtu: spec.mtu }));
  // IPv6 link-local addresses are the kernel's own
  const have = new Set(link.addresses.filter((a) => !(a.family === 6 && a.scope === 'link')).map((a) => a.cidr));
  for (const a of have) if (!spec.addresses.includes(a)) out.push(addrDel(spec.name, a));
  for (const a of spec.addresses) if (!have.has(a)) out.push(addrAdd(spec.name, a));
  if (!link.up) out.push(linkUp(spec.name, true));
  return out;
}

/** One peer's part of a `wg set`; kick: the public key whose keepalive is cleared once it has been kicked. */
export interface PeerOp {
  args: WgArg[];
  kick?: string;
}

export interface PeerWant {
  spec: PeerSpec;
  /** the PSK's digest (wg.ts pskDigest) when the network has one */
  pskDigest?: string;
}

function addPeer(spec: PeerSpec, psk: boolean): PeerOp {
  const args: WgArg[] = ['peer', spec.publicKey, 'endpoint', spec.endpoint, 'allowed-ips', spec.allowedIps.join(','), 'persistent-keepalive', String(spec.keepalive || KICK_KEEPALIVE)];
  if (psk) args.push('preshared-key', PSK_ARG);
  return { args, ...(spec.keepalive === 0 && { kick: spec.publicKey }) };
}

/** What differs between a peer as wanted and as the device has it (or had it, on the delta path). */
function changePeer(want: PeerSpec, wantPsk: string | undefined, have: Pick<WgPeer, 'endpoint' | 'allowedIps' | 'keepalive' | 'pskDigest'>): PeerOp | undefined {
  const args: WgArg[] = [];
  if (have.endpoint !== want.endpoint) args.push('endpoint', want.endpoint);
  if (have.allowedIps.join(',') !== want.allowedIps.join(',')) args.push('allowed-ips', want.allowedIps.join(','));
  if (have.keepalive !== want.keepalive) args.push('persistent-keepalive', want.keepalive ? String(want.keepalive) : 'off');
  // an empty file is wg's way of saying "no preshared key"
  if (have.pskDigest !== wantPsk) args.push('preshared-key', wantPsk ? PSK_ARG : '/dev/null');
  return args.length ? { args: ['peer', want.publicKey, ...args] } : undefined;
}

export interface PeerChanges {
  /** adds and changes first, removals last (see the top of this file) */
  ops: PeerOp[];
  added: number;
  changed: number;
  removed: number;
}

function ordered(adds: PeerOp[], changes: PeerOp[], removes: PeerOp[]): PeerChanges {
  return { ops: [...adds, ...changes, ...removes], added: adds.length, changed: changes.length, removed: removes.length };
}

/** Every peer wanted against every peer the device has (the full pass). */
export function planPeers(want: readonly PeerSpec[], have: readonly WgPeer[], pskDigest: string | undefined): PeerChanges {
  const haveBy = new Map(have.map((p) => [p.publicKey, p]));
  const wantKeys = new Set(want.map((p) => p.publicKey));
  const adds: PeerOp[] = [];
  const changes: PeerOp[] = [];
  for (const w of want) {
    const h = haveBy.get(w.publicKey);
    if (!h) adds.push(addPeer(w, pskDigest !== undefined));
    else {
      const c = changePeer(w, pskDigest, h);
      if (c) changes.push(c);
    }
  }
  const removes = have.filter((h) => !wantKeys.has(h.publicKey)).map((h) => ({ args: ['peer', h.publicKey, 'remove'] }));
  return ordered(adds, changes, removes);
}

/**
 * The peers of the nodes that changed, from what was applied last to what is
 * wanted now, without reading the device (the delta pass: the last pass left
 * the device exactly as prev says). A node whose key changed is its new peer
 * added and its old one removed, in that order.
 */
export function planPeerDelta(prev: ReadonlyMap<string, PeerSpec>, next: ReadonlyMap<string, PeerSpec>, nodes: Iterable<string>, pskDigest: string | undefined): PeerChanges {
  const adds: PeerOp[] = [];
  const changes: PeerOp[] = [];
  const removes: PeerOp[] = [];
  for (const node of nodes) {
    const p = prev.get(node);
    const n = next.get(node);
    if (n && (!p || p.publicKey !== n.publicKey)) adds.push(addPeer(n, pskDigest !== undefined));
    else if (n && p) {
      const c = changePeer(n, pskDigest, { ...p, pskDigest });
      if (c) changes.push(c);
    }
    if (p && (!n || p.publicKey !== n.publicKey)) removes.push({ args: ['peer', p.publicKey, 'remove'] });
  }
  return ordered(adds, changes, removes);
}

/** The device's own settings: its private key (read by wg from the key file) and listen port. */
export function planInterface(spec: WgDeviceSpec, dump: WgDump, key: { publicKey: string; file: string }): WgArg[] {
  const args: WgArg[] = [];
  if (dump.publicKey !== key.publicKey) args.push('private-key', key.file);
  if (dump.listenPort !== spec.listenPort) args.push('listen-port', String(spec.listenPort));
  return args;
}

/**
 * The `wg set` argument lists for one device: its own settings first, then
 * its peers, at most PEERS_PER_COMMAND each; then one list clearing the
 * keepalives of the peers kicked.
 */
export function wgCommands(iface: readonly WgArg[], peers: PeerChanges): WgArg[][] {
  const out: WgArg[][] = [];
  let current: WgArg[] = [...iface];
  let n = 0;
  for (const op of peers.ops) {
    if (n === PEERS_PER_COMMAND) {
      out.push(current);
      current = [];
      n = 0;
    }
    current.push(...op.args);
    n++;
  }
  if (current.length) out.push(current);
  const kicks = peers.ops.flatMap((op) => (op.kick ? ['peer', op.kick, 'persistent-keepalive', 'off'] : []));
  if (kicks.length) out.push(kicks);
  return out;
}
