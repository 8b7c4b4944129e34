// vxlan, flannel's recommended backend: one device per address family the
// network enables, flannel.<VNI> over the node's public IPv4 address and
// flannel-v6.<VNI> over its public IPv6 address (learning off unless
// Backend.Learning), each with its own VTEP MAC, kept across restarts and
// published in the lease (VtepMAC and VtepMACv6, flannel's BackendData and
// BackendV6Data). Per peer and family: a permanent neighbour (its subnet's
// first address -> its VTEP MAC), an fdb entry (VTEP MAC -> its public
// address) and an onlink route via that first address. With DirectRouting, a
// peer on the same L2 network gets a plain route via its public address
// instead, decided afresh on every pass.
import { randomBytes } from 'node:crypto';
import type { Family } from '../../core/cidr.js';
import type { BackendType, NetConf, VxlanBackend } from '../../core/config.js';
import { TwillError } from '../../core/errors.js';
import { localUnicastMac, macAddress } from '../../core/mac.js';
import type { Lease } from '../../core/lease.js';
import { connectedPrefixes, isOnLink } from '../iface.js';
import type { DeviceSpec, Entries } from '../kernel/index.js';
import { ownEntries, subnetBase } from './common.js';
import type { Backend, BackendContext } from './backend.js';
import { PeerSync, type PeerEntries } from './peer-sync.js';

/** A family's device and what it takes from the host and from a peer's lease. */
const FAMILY = {
  4: {
    enable: 'EnableIPv4', dev: (vni: number) => `flannel.${vni}`, macState: (vni: number) => `vtep-mac.${vni}`, macKey: 'VtepMAC',
    local: 'publicIP', flag: '--public-ip', subnet: 'subnet', public: 'publicIP', hostBits: 32,
    // outer IPv4 20, UDP 8, VXLAN 8, inner Ethernet 14
    overhead: 50,
  },
  6: {
    enable: 'EnableIPv6', dev: (vni: number) => `flannel-v6.${vni}`, macState: (vni: number) => `vtep-mac6.${vni}`, macKey: 'VtepMACv6',
    local: 'publicIPv6', flag: '--public-ipv6', subnet: 'ipv6Subnet', public: 'publicIPv6', hostBits: 128,
    // flannel takes 50 here too; an outer IPv6 header is 20 bytes more, and a full-size packet would not fit
    overhead: 70,
  },
} as const;

/** A locally administered unicast MAC, kept in the state directory so peers' entries survive our restarts. */
export function vtepMac(ctx: BackendContext, vni: number, family: Family = 4): string {
  const key = FAMILY[family].macState(vni);
  const saved = ctx.state.get(key);
  if (saved && macAddress(saved) === undefined) return saved;
  const mac = localUnicastMac(randomBytes(6));
  ctx.state.set(key, mac);
  return mac;
}

/**
 * The families the network enables, each with this host's public address;
 * refuses a family the host cannot carry, unless lenient (what to publish and
 * size pods for while the refusal is being reported elsewhere).
 */
function families(ctx: BackendContext, config: NetConf, lenient = false): { family: Family; local: string }[] {
  const out: { family: Family; local: string }[] = [];
  for (const family of [4, 6] as const) {
    const f = FAMILY[family];
    if (!config[f.enable]) continue;
    const local = ctx.external[f.local];
    if (!local) {
      if (lenient) continue;
      throw new TwillError('NoPublicIP', `vxlan needs an IPv${family} address on ${ctx.external.iface.name} or ${f.flag}: the network enables IPv${family}`);
    }
    out.push({ family, local });
  }
  return out;
}

/** How another backend runs this one (the overlay of a cloud network: agent/backends/cloud-overlay.ts). */
export interface VxlanUse {
  /** the backend type of the leases whose VtepMAC this device talks to; default vxlan */
  peerType?: BackendType;
  /** entries of the node's own besides ownEntries', kept with the device's (they change only with the config) */
  own?: (own: Lease) => Entries;
}

export async function vxlanBackend(ctx: BackendContext, use: VxlanUse = {}): Promise<Backend> {
  const opts = ctx.config.Backend as VxlanBackend;
  const peerType = use.peerType ?? 'vxlan';
  const ext = ctx.external;
  let current = ctx.config;
  // Both names are claimed from the start: a family the network no longer
  // enables loses its device on the next full pass.
  const sync = new PeerSync({ devices: [{ name: FAMILY[4].dev(opts.VNI), kind: 'vxlan' }, { name: FAMILY[6].dev(opts.VNI), kind: 'vxlan' }] }, ctx.log, ctx.kernel);
  // flannel's Backend.MTU sizes the devices as the underlay's MTU would: each
  // device gets MTU less its encapsulation. Pods get the smallest.
  const mtuOf = (b: VxlanBackend, family: Family) => (b.MTU ?? ext.iface.mtu) - FAMILY[family].overhead;
  const macs = new Map<Family, string>();
  const macOf = (family: Family) => {
    let mac = macs.get(family);
    if (!mac) macs.set(family, (mac = vtepMac(ctx, opts.VNI, family)));
    return mac;
  };
  for (const { family } of families(ctx, current)) macOf(family);

  return {
    type: 'vxlan',
    // Never throw from these two (a hello and subnet.env need them): a family
    // the host cannot carry is refused by reconcile, in status and /readyz.
    mtu: () => Math.min(...families(ctx, current, true).map(({ family }) => mtuOf(current.Backend as VxlanBackend, family)), mtuOf(current.Backend as VxlanBackend, 4)),
    backendData: () => Object.fromEntries(families(ctx, current, true).map(({ family }) => [FAMILY[family].macKey, macOf(family)])),
    async reconcile(config: NetConf, own: Lease, peers, changed) {
      current = config;
      const b = config.Backend as VxlanBackend;
      const carried = families(ctx, config);
      const prefixes = b.DirectRouting ? await connectedPrefixes(ctx.kernel, ext.iface.name) : [];
      const devices: DeviceSpec[] = [];
      const errors: string[] = [];
      for (const { family, local } of carried) {
        const f = FAMILY[family];
        const subnet = own[f.subnet];
        if (!subnet) {
          errors.push(`vxlan: the network enables IPv${family} and this node's lease has no IPv${family} subnet`);
          continue;
        }
        devices.push({
          name: f.dev(b.VNI),
          link: { kind: 'vxlan', vni: b.VNI, port: b.Port, local, dev: ext.iface.name, learning: b.Learning, gbp: b.GBP },
          mtu: mtuOf(b, family),
          mac: macOf(family),
          addresses: [`${subnetBase(subnet)}/${f.hostBits}`],
          up: true,
        });
      }
      const entriesFor = (peer: Lease): PeerEntries => {
        const entries: Entries = { routes: [], neighbours: [], fdb: [] };
        const problems: string[] = [];
        for (const { family } of carried) {
          const f = FAMILY[family];
          const subnet = peer[f.subnet];
          const via = peer[f.public];
          if (!subnet || !via) continue;
          if (b.DirectRouting && isOnLink(prefixes, via)) {
            entries.routes.push({ dst: subnet, via, dev: ext.iface.name });
            continue;
          }
          const peerMac = String(peer.backendData[f.macKey] ?? '');
          if (peer.backendType !== peerType || macAddress(peerMac) !== undefined) {
            problems.push(`peer ${peer.node} (${via}) published no ${f.macKey}: is its agent running the vxlan backend${family === 6 ? ' with IPv6' : ''}?`);
            continue;
          }
          const dev = f.dev(b.VNI);
          const gw = subnetBase(subnet);
          entries.neighbours.push({ dev, ip: gw, mac: peerMac });
          entries.fdb.push({ dev, mac: peerMac, dst: via });
          entries.routes.push({ dst: subnet, via: gw, dev, onlink: true });
        }
        const any = entries.routes.length > 0;
        return { ...(any && { entries }), ...(problems.length && { problem: problems.join('; ') }) };
      };
      const mine = ownEntries(ctx, own);
      const extra = use.own?.(own);
      if (extra) for (const k of ['routes', 'neighbours', 'fdb'] as const) (mine[k] as unknown[]).push(...extra[k]);
      const signature = JSON.stringify([b, own.subnet, own.ipv6Subnet, carried, ext.iface.name, devices.map((d) => [d.mtu, d.mac]), prefixes.map((p) => `${p.ip}/${p.prefix}`), extra]);
      errors.push(...(await sync.sync({ signature, devices, peers, changed, entriesFor, own: mine })));
      return { errors };
    },
    close: async () => {},
  };
}
