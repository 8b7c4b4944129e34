// ipip: IPv4 in IPv4 (protocol 4), flannel's lightest encapsulation (20
// bytes). One one-to-many device, flannel.ipip (local = this node's public
// IP, remote any), carries every peer: per peer one route, its subnet via its
// public IP, onlink, so the kernel takes the gateway as the tunnel's remote
// end. With DirectRouting a peer on the same L2 network gets a plain route
// via its public IP on the underlay instead, decided afresh on every pass.
//
// Loading the ipip module also makes the kernel's fallback device tunl0 (one
// per network namespace). It stays down and carries nothing of twill's:
// packets for our public IP match flannel.ipip, the more specific tunnel.
import type { IpipBackend, NetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import { connectedPrefixes, isOnLink } from '../iface.js';
import type { DeviceSpec } from '../kernel/index.js';
import { ipv4Underlay, ownEntries, refuseForeignDevice, subnetBase } from './common.js';
import type { Backend, BackendContext } from './backend.js';
import { PeerSync, type PeerEntries } from './peer-sync.js';

export const IPIP_DEVICE = 'flannel.ipip';
/** the outer IPv4 header */
const IPIP_OVERHEAD = 20;

/** Turns the kernel's terse refusal into what to do about it. */
function explain(error: string): string {
  if (/Unknown device type|Operation not supported/.test(error) && error.includes('ipip')) {
    return `${error} (this kernel has no ipip support: load it with "modprobe ipip", or use vxlan)`;
  }
  return error;
}

export async function ipipBackend(ctx: BackendContext): Promise<Backend> {
  const ext = ctx.external;
  const local = ipv4Underlay(ctx, 'ipip');
  await refuseForeignDevice(ctx.kernel, IPIP_DEVICE, 'ipip', 'an ipip tunnel', 'ipip');
  const mtu = ext.iface.mtu - IPIP_OVERHEAD;
  const sync = new PeerSync({ devices: [{ name: IPIP_DEVICE, kind: 'ipip' }] }, ctx.log, ctx.kernel);

  return {
    type: 'ipip',
    mtu: () => mtu,
    backendData: () => ({}),
    async reconcile(config: NetConf, own: Lease, peers, changed) {
      const b = config.Backend as IpipBackend;
      if (!own.subnet) return { errors: ['ipip: this node has no IPv4 subnet (ipip carries IPv4 only)'] };
      const prefixes = b.DirectRouting ? await connectedPrefixes(ctx.kernel, ext.iface.name) : [];
      const device: DeviceSpec = {
        name: IPIP_DEVICE,
        link: { kind: 'ipip', local },
        mtu,
        addresses: [`${subnetBase(own.subnet)}/32`],
        up: true,
      };
      const entriesFor = (peer: Lease): PeerEntries => {
        if (!peer.subnet || !peer.publicIP) return {};
        if (b.DirectRouting && isOnLink(prefixes, peer.publicIP)) {
          return { entries: { routes: [{ dst: peer.subnet, via: peer.publicIP, dev: ext.iface.name }], neighbours: [], fdb: [] } };
        }
        return { entries: { routes: [{ dst: peer.subnet, via: peer.publicIP, dev: IPIP_DEVICE, onlink: true }], neighbours: [], fdb: [] } };
      };
      const signature = JSON.stringify([b, own.subnet, local, ext.iface.name, mtu, prefixes.map((p) => `${p.ip}/${p.prefix}`)]);
      const errors = await sync.sync({ signature, devices: [device], peers, changed, entriesFor, own: ownEntries(ctx, own) });
      return { errors: errors.map(explain) };
    },
    close: async () => {},
  };
}
