// host-gw: no encapsulation. Each peer's subnet is routed via the peer's
// public IP on the external interface, which only works when every node is on
// the same L2 network: a peer that is not on-link is reported, not dropped
// silently, and a public IP that is not this host's (NAT) refuses to start.
import type { NetConf } from '../../core/config.js';
import { TwillError } from '../../core/errors.js';
import type { Lease } from '../../core/lease.js';
import { connectedPrefixes, isLocalAddress, isOnLink } from '../iface.js';
import { ownEntries } from './common.js';
import type { Backend, BackendContext } from './backend.js';
import { PeerSync, type PeerEntries } from './peer-sync.js';

export async function hostGwBackend(ctx: BackendContext): Promise<Backend> {
  const ext = ctx.external;
  const local = ext.publicIP;
  if (!local) throw new TwillError('NoPublicIP', `host-gw needs an IPv4 address on ${ext.iface.name} or --public-ip`);
  if (!(await isLocalAddress(ctx.kernel, local))) {
    throw new TwillError(
      'PublicIPNotLocal',
      `host-gw cannot start: public IP ${local} is not an address of this host (behind NAT?); peers would route to an address that does not reach us. Use vxlan, or give --public-ip an address of this host`,
    );
  }
  const sync = new PeerSync({ devices: [] }, ctx.log, ctx.kernel);
  return {
    type: 'host-gw',
    mtu: () => ext.iface.mtu,
    backendData: () => ({}),
    async reconcile(_config: NetConf, own: Lease, peers, changed) {
      const prefixes = await connectedPrefixes(ctx.kernel, ext.iface.name);
      const entriesFor = (peer: Lease): PeerEntries => {
        if (!peer.subnet || !peer.publicIP) return {};
        if (!isOnLink(prefixes, peer.publicIP)) {
          return { problem: `peer ${peer.node} (${peer.publicIP}) is not on-link from ${ext.iface.name}: host-gw needs every node on one L2 network; use vxlan (with DirectRouting) to reach it` };
        }
        return { entries: { routes: [{ dst: peer.subnet, via: peer.publicIP, dev: ext.iface.name }], neighbours: [], fdb: [] } };
      };
      const signature = JSON.stringify([own.subnet, local, ext.iface.name, prefixes.map((p) => `${p.ip}/${p.prefix}`)]);
      return { errors: await sync.sync({ signature, devices: [], peers, changed, entriesFor, own: ownEntries(ctx, own) }) };
    },
    close: async () => {},
  };
}
