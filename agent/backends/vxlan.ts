// vxlan, flannel's recommended backend: one device flannel.<VNI> (learning
// off unless Backend.Learning), and per peer a permanent neighbour (its subnet's .0 -> its VTEP MAC),
// an fdb entry (VTEP MAC -> its public IP) and an onlink route via its .0.
// With DirectRouting, a peer on the same L2 network gets a plain route via
// its public IP instead, decided afresh on every pass.
import { randomBytes } from 'node:crypto';
import type { NetConf, VxlanBackend } from '../../core/config.js';
import { parseIP } from '../../core/cidr.js';
import { TwillError } from '../../core/errors.js';
import type { Lease } from '../../core/lease.js';
import { connectedPrefixes, isOnLink } from '../iface.js';
import type { DeviceSpec } from '../kernel/index.js';
import { ownEntries, subnetBase } from './common.js';
import type { Backend, BackendContext } from './backend.js';
import { PeerSync, type PeerEntries } from './peer-sync.js';

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** A locally administered unicast MAC, kept in the state directory so peers' entries survive our restarts. */
export function vtepMac(ctx: BackendContext, vni: number): string {
  const key = `vtep-mac.${vni}`;
  const saved = ctx.state.get(key);
  if (saved && MAC_RE.test(saved)) return saved;
  const b = randomBytes(6);
  b[0] = ((b[0] as number) & 0xfe) | 0x02;
  const mac = [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
  ctx.state.set(key, mac);
  return mac;
}

export async function vxlanBackend(ctx: BackendContext): Promise<Backend> {
  const opts = ctx.config.Backend as VxlanBackend;
  const dev = `flannel.${opts.VNI}`;
  const ext = ctx.external;
  const local = ext.publicIP;
  if (!local) throw new TwillError('NoPublicIP', `vxlan needs an IPv4 address on ${ext.iface.name} or --public-ip`);
  const underlayV6 = parseIP(local)?.family === 6;
  // flannel's Backend.MTU sizes the device as the underlay's MTU would: the
  // device (and FLANNEL_MTU) gets MTU less the encapsulation.
  const mtuOf = (b: VxlanBackend) => (b.MTU ?? ext.iface.mtu) - (underlayV6 ? 70 : 50);
  let mtu = mtuOf(opts);
  const mac = vtepMac(ctx, opts.VNI);
  const sync = new PeerSync({ devices: [{ name: dev, kind: 'vxlan' }] }, ctx.log, ctx.kernel);

  return {
    type: 'vxlan',
    mtu: () => mtu,
    backendData: () => ({ VtepMAC: mac }),
    async reconcile(config: NetConf, own: Lease, peers, changed) {
      const b = config.Backend as VxlanBackend;
      mtu = mtuOf(b);
      if (!own.subnet) return { errors: ['vxlan: this node has no IPv4 subnet (twill runs vxlan over IPv4 subnets only)'] };
      const prefixes = b.DirectRouting ? await connectedPrefixes(ctx.kernel, ext.iface.name) : [];
      const device: DeviceSpec = {
        name: dev,
        link: { kind: 'vxlan', vni: b.VNI, port: b.Port, local, dev: ext.iface.name, learning: b.Learning, gbp: b.GBP },
        mtu,
        mac,
        addresses: [`${subnetBase(own.subnet)}/32`],
        up: true,
      };
      const entriesFor = (peer: Lease): PeerEntries => {
        if (!peer.subnet || !peer.publicIP) return {};
        if (b.DirectRouting && isOnLink(prefixes, peer.publicIP)) {
          return { entries: { routes: [{ dst: peer.subnet, via: peer.publicIP, dev: ext.iface.name }], neighbours: [], fdb: [] } };
        }
        const peerMac = String(peer.backendData.VtepMAC ?? '');
        if (peer.backendType !== 'vxlan' || !MAC_RE.test(peerMac)) {
          return { problem: `peer ${peer.node} (${peer.publicIP}) published no VtepMAC: is its agent running the vxlan backend?` };
        }
        const gw = subnetBase(peer.subnet);
        return {
          entries: {
            neighbours: [{ dev, ip: gw, mac: peerMac }],
            fdb: [{ dev, mac: peerMac, dst: peer.publicIP }],
            routes: [{ dst: peer.subnet, via: gw, dev, onlink: true }],
          },
        };
      };
      const signature = JSON.stringify([b, own.subnet, local, ext.iface.name, mtu, mac, prefixes.map((p) => `${p.ip}/${p.prefix}`)]);
      const errors = await sync.sync({ signature, devices: [device], peers, changed, entriesFor, own: ownEntries(ctx, own) });
      return { errors };
    },
    close: async () => {},
  };
}
