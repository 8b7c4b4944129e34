// The agent on a cloud network (aws-vpc, gce, ali-vpc). Its routes are the
// cloud's, written centrally, so without Backend.Overlay the agent only holds
// its lease and writes subnet.env (alloc.ts), exactly as it always has. With
// Backend.Overlay it also runs the vxlan backend (vxlan.ts) for exactly the
// pairs that use the overlay (core/backends/overlay.ts pairUsesOverlay):
// every peer while this node is reached over the overlay, else only the
// peers that are. A peer of such a pair that publishes no VtepMAC runs no
// overlay agent: it gets no entry, and is reported (logged once, and in the
// status's errors while it lasts). The device exists, and its VtepMAC is
// published, whatever this node's reach: a peer moving to the overlay must
// find it in place. subnet.env's MTU is the overlay's, as pods' packets may
// take it. Strict reverse-path filtering is kept from dropping anything,
// moves included, by agent/reverse-path.ts.
//
// A change of this node's reach is a full pass (every pair may switch); a
// peer's reach change is that peer's change in the delta. When the overlay
// leaves the config, or the backend is retired, the device, every entry and
// the reverse-path settings go.
import type { BackendType, NetConf, VxlanBackend } from '../../core/config.js';
import { errorMessage } from '../../core/errors.js';
import type { Lease } from '../../core/lease.js';
import { macAddress } from '../../core/mac.js';
import { OVERLAY_MAC_KEY, overlayOf, pairUsesOverlay, reachOf, type Reach } from '../../core/backends/overlay.js';
import { iptables } from '../iptables.js';
import { reconcile as kernelPass } from '../kernel/index.js';
import { nft } from '../nftables.js';
import { RPF_NFT_TABLE, ReversePathGuard, hostIO, rpfRoutes } from '../reverse-path.js';
import { allocBackend } from './alloc.js';
import type { Backend, BackendContext, BackendFactory, BackendReport } from './backend.js';
import { vxlanBackend } from './vxlan.js';

/** the overlay device this host last ran, so that one left by a run whose config no longer has an overlay is removed */
const DEVICE_STATE = 'overlay-device';
/** peers without an overlay agent named in the status's errors; the rest are counted */
const MAX_SHOWN = 5;

/** The config the overlay's vxlan backend runs with: the overlay's options, IPv4 only (the VPC routes carry IPv4 only). */
export function overlayView(config: NetConf): NetConf {
  const overlay = overlayOf(config.Backend);
  if (!overlay) throw new Error('overlayView of a network without an overlay');
  const Backend: VxlanBackend = { ...overlay, DirectRouting: false };
  return { ...config, EnableIPv6: false, Backend };
}

/** Which peers the overlay's vxlan backend programs, kept up to date peer by peer between full passes. */
export class OverlayPeers {
  readonly selected = new Map<string, Lease>();
  /** peers of an overlay pair that publish no VtepMAC, with what to say of each */
  readonly missing = new Map<string, string>();
  via?: Reach['via'];
  /** each peer's reach as last seen, to tell a move from route to overlay */
  private readonly seen = new Map<string, Reach['via']>();
  /**
   * The last update moved a member (this node or a peer) from its route to
   * the overlay. The route controller deletes that route only once every
   * member's agent has applied the move, so this pass's revision is worth
   * saying at once.
   */
  movedToOverlay = false;

  /** Takes a pass's input; returns the peers vxlan should look at this time (undefined: every one). */
  update(own: Lease, peers: ReadonlyMap<string, Lease>, changed?: ReadonlySet<string>): ReadonlySet<string> | undefined {
    const via = reachOf(own, true);
    const full = !changed || via !== this.via;
    this.movedToOverlay = this.via === 'route' && via === 'overlay';
    this.via = via;
    if (full) {
      this.selected.clear();
      this.missing.clear();
      for (const node of this.seen.keys()) if (!peers.has(node)) this.seen.delete(node);
      for (const [node, lease] of peers) this.consider(node, lease);
      return undefined;
    }
    for (const node of changed) {
      this.selected.delete(node);
      this.missing.delete(node);
      const lease = peers.get(node);
      if (lease) this.consider(node, lease);
      else this.seen.delete(node);
    }
    return changed;
  }

  private consider(node: string, lease: Lease): void {
    const peerVia = reachOf(lease, true);
    if (this.seen.get(node) === 'route' && peerVia === 'overlay') this.movedToOverlay = true;
    this.seen.set(node, peerVia);
    if (!pairUsesOverlay(this.via ?? 'overlay', peerVia)) return;
    if (macAddress(lease.backendData[OVERLAY_MAC_KEY]) === undefined) {
      this.selected.set(node, lease);
      return;
    }
    this.missing.set(
      node,
      peerVia === 'route'
        ? `peer ${node} runs no overlay agent: it is reachable only through its cloud route`
        : `peer ${node} runs no overlay agent and has no cloud route: it is unreachable until its agent runs`,
    );
  }
}

export function cloudBackend(type: BackendType): BackendFactory {
  return async (ctx: BackendContext): Promise<Backend> => {
    const plain = await allocBackend(type)(ctx);
    const guard = new ReversePathGuard(ctx.host ?? hostIO(), ctx.iptables ?? iptables, ctx.state, ctx.rpfNft ?? nft({ family: 'ip', table: RPF_NFT_TABLE }));
    const peers = new OverlayPeers();
    let vxlan: { backend: Backend; vni: number } | undefined;
    let network = ctx.config.Network ?? '';
    let reported = new Set<string>();
    let guardClean = false;
    /** an overlay device a previous run left (read once: a network without an overlay costs no file read per pass) */
    let leftover = !!ctx.state.get(DEVICE_STATE);

    const start = async (config: NetConf): Promise<Backend> => {
      const view = overlayView(config);
      const vni = (view.Backend as VxlanBackend).VNI;
      if (vxlan && vxlan.vni === vni) return vxlan.backend;
      // Another VNI is another device: the old one goes. A restart with the same one keeps everything (not a packet lost).
      if (vxlan || (leftover && ctx.state.get(DEVICE_STATE) !== `flannel.${vni}`)) await retire();
      const backend = await vxlanBackend({ ...ctx, config: view }, {
        peerType: type,
        own: () => ({ routes: network ? rpfRoutes(network, ctx.external.iface.name) : [], neighbours: [], fdb: [] }),
      });
      ctx.state.set(DEVICE_STATE, `flannel.${vni}`);
      leftover = true;
      vxlan = { backend, vni };
      return backend;
    };

    /** Takes out everything the overlay added: the device and its entries (with the table's route), then the reverse-path settings. */
    const retire = async (): Promise<void> => {
      const device = ctx.state.get(DEVICE_STATE) || (vxlan && `flannel.${vxlan.vni}`);
      vxlan = undefined;
      if (device) await kernelPass({ devices: [] }, { devices: [{ name: device, kind: 'vxlan' }] }, { io: ctx.kernel });
      await guard.remove();
      ctx.state.set(DEVICE_STATE, '');
      leftover = false;
      peers.selected.clear();
      peers.missing.clear();
      guardClean = false;
      ctx.metrics.set('twill_agent_overlay_peers', 'peers this node talks with over the overlay', 0);
    };

    const runOverlay = async (config: NetConf, own: Lease, all: ReadonlyMap<string, Lease>, changed?: ReadonlySet<string>): Promise<BackendReport> => {
      network = config.Network ?? '';
      const backend = await start(config);
      const viaBefore = peers.via;
      const only = peers.update(own, all, changed);
      if (viaBefore !== peers.via) ctx.log.info('this node is reached', { via: peers.via });
      const report = await backend.reconcile(overlayView(config), own, peers.selected, only);
      const errors = [...report.errors];
      if (!only && network) {
        try {
          const repaired = await guard.ensure({ network, iface: ctx.external.iface.name, device: `flannel.${vxlan?.vni}`, nftables: config.EnableNFTables === true });
          if (repaired.length && guardClean) ctx.log.warn('reverse-path settings were changed behind our back and are restored', { what: repaired.join(',') });
          guardClean = true;
        } catch (e) {
          guardClean = false;
          errors.push(`reverse-path settings: ${errorMessage(e)}`);
        }
      }
      const missing = [...peers.missing.values()];
      for (const m of missing) if (!reported.has(m)) ctx.log.warn(m);
      reported = new Set(missing);
      ctx.metrics.set('twill_agent_overlay_peers', 'peers this node talks with over the overlay', peers.selected.size);
      ctx.metrics.clear('twill_agent_reach');
      ctx.metrics.set('twill_agent_reach', 'how this node is reached: through its cloud route or over the overlay', 1, { via: peers.via ?? 'overlay' });
      // The status stays small however many peers lack an agent: the first few by name, then a count (the log names each once).
      const shown = missing.length > MAX_SHOWN ? [...missing.slice(0, MAX_SHOWN), `and ${missing.length - MAX_SHOWN} more peers run no overlay agent (the agent's log names each)`] : missing;
      return { errors: [...errors, ...shown], ...(peers.movedToOverlay ? { confirm: true } : {}) };
    };

    if (overlayOf(ctx.config.Backend)) await start(ctx.config);
    let current = ctx.config;
    return {
      type,
      // Never throw from these two: a hello and subnet.env need them.
      mtu: () => (overlayOf(current.Backend) && vxlan ? vxlan.backend.mtu() : plain.mtu()),
      backendData: () => (overlayOf(current.Backend) && vxlan ? vxlan.backend.backendData() : {}),
      async reconcile(config, own, all, changed) {
        current = config;
        if (overlayOf(config.Backend)) return runOverlay(config, own, all, changed);
        if (leftover) {
          ctx.log.info('the network has no overlay any more: removing the overlay device, its entries and the reverse-path settings');
          await retire();
        }
        return { errors: [] };
      },
      retire,
      close: async () => {},
    };
  };
}
