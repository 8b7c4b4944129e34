// host-gw: no encapsulation. Each peer's subnet is routed via the peer's
// public IP on the external interface (its IPv6 subnet via its public IPv6,
// as flannel does for dual stack), which only works when every node is on
// the same L2 network: a peer that is not on-link is reported, not dropped
// silently, and a public IP that is not this host's (NAT) refuses to start.
import type { Family } from '../../core/cidr.js';
import type { NetConf } from '../../core/config.js';
import { TwillError } from '../../core/errors.js';
import type { Lease } from '../../core/lease.js';
import { connectedPrefixes, isLocalAddress, isOnLink } from '../iface.js';
import type { RouteSpec } from '../kernel/index.js';
import { ownEntries } from './common.js';
import type { Backend, BackendContext } from './backend.js';
import { PeerSync, type PeerEntries } from './peer-sync.js';

/** What one family asks of the host and of a peer's lease. */
const FAMILY = {
  4: { enable: 'EnableIPv4', local: 'publicIP', flag: '--public-ip', subnet: 'subnet', public: 'publicIP' },
  6: { enable: 'EnableIPv6', local: 'publicIPv6', flag: '--public-ipv6', subnet: 'ipv6Subnet', public: 'publicIPv6' },
} as const;

export async function hostGwBackend(ctx: BackendContext): Promise<Backend> {
  const ext = ctx.external;
  /** the public address of each family the network enables, checked to be this host's */
  const locals = async (config: NetConf): Promise<Partial<Record<Family, string>>> => {
    const out: Partial<Record<Family, string>> = {};
    for (const family of [4, 6] as const) {
      const f = FAMILY[family];
      if (!config[f.enable]) continue;
      const local = ext[f.local];
      if (!local) throw new TwillError('NoPublicIP', `host-gw needs an IPv${family} address on ${ext.iface.name} or ${f.flag} (the network enables IPv${family})`);
      if (!(await isLocalAddress(ctx.kernel, local))) {
        throw new TwillError(
          'PublicIPNotLocal',
          `host-gw cannot start: public IP ${local} is not an address of this host (behind NAT?); peers would route to an address that does not reach us. Use vxlan, or give ${f.flag} an address of this host`,
        );
      }
      out[family] = local;
    }
    return out;
  };
  // Checked at start, and again only when the families the network enables
  // change: the host's addresses are read once, not on every pass.
  let publics = await locals(ctx.config);
  let checkedFor = `${ctx.config.EnableIPv4} ${ctx.config.EnableIPv6}`;
  const sync = new PeerSync({ devices: [] }, ctx.log, ctx.kernel);
  return {
    type: 'host-gw',
    mtu: () => ext.iface.mtu,
    backendData: () => ({}),
    async reconcile(config: NetConf, own: Lease, peers, changed) {
      const families = `${config.EnableIPv4} ${config.EnableIPv6}`;
      if (families !== checkedFor) {
        publics = await locals(config);
        checkedFor = families;
      }
      const prefixes = await connectedPrefixes(ctx.kernel, ext.iface.name);
      const entriesFor = (peer: Lease): PeerEntries => {
        const routes: RouteSpec[] = [];
        const problems: string[] = [];
        for (const family of [4, 6] as const) {
          const f = FAMILY[family];
          const subnet = peer[f.subnet];
          const via = peer[f.public];
          if (!publics[family] || !subnet || !via) continue;
          if (!isOnLink(prefixes, via)) {
            problems.push(`peer ${peer.node} (${via}) is not on-link from ${ext.iface.name}: host-gw needs every node on one L2 network; use vxlan (with DirectRouting) to reach it`);
            continue;
          }
          routes.push({ dst: subnet, via, dev: ext.iface.name });
        }
        return { ...(routes.length && { entries: { routes, neighbours: [], fdb: [] } }), ...(problems.length && { problem: problems.join('; ') }) };
      };
      const signature = JSON.stringify([own.subnet, own.ipv6Subnet, publics, ext.iface.name, prefixes.map((p) => `${p.ip}/${p.prefix}`)]);
      return { errors: await sync.sync({ signature, devices: [], peers, changed, entriesFor, own: ownEntries(ctx, own) }) };
    },
    close: async () => {},
  };
}
