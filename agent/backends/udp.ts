// udp: flannel's user-space backend. A TUN device flannel0 (address
// subnet.0/32, a route for the whole Network through it, MTU 28 below the
// underlay) hands every packet for another node's pods to this process,
// which sends it in UDP datagrams to that node's public IP on Port (8285);
// what current peers send goes back into flannel0 (the wire format is in
// agent/udp/wire.mjs). The packets move in
// a worker thread (agent/udp/), so the agent's own event loop never carries
// them.
//
// The data plane lives in this process, unlike every kernel backend's: it
// stops while the agent is down. flannel0 is made persistent, so the device,
// its address and its route stay, and the forwarding table is kept in the
// state directory: a restarted agent attaches again and forwards with the
// last table as soon as it has its config, before the snapshot is complete.
import { readFileSync } from 'node:fs';
import type { NetConf, UdpBackend } from '../../core/config.js';
import { parseCidr, parseIP } from '../../core/cidr.js';
import { errorMessage } from '../../core/errors.js';
import type { Lease } from '../../core/lease.js';
import { reconcile, type DeviceSpec, type Ownership } from '../kernel/index.js';
import { Forwarder, type CounterName } from '../udp/forwarder.js';
import type { TableMessage } from '../udp/worker.mjs';
import { MAX_UDP_PAYLOAD } from '../udp/wire.mjs';
import { ipv4Underlay, ownEntries, refuseForeignDevice, subnetBase } from './common.js';
import type { Backend, BackendContext } from './backend.js';

export const UDP_DEVICE = 'flannel0';
/** outer IPv4 and UDP headers */
const UDP_OVERHEAD = 28;
const STATE_KEY = 'udp-table.json';
const OWNERSHIP: Ownership = { devices: [{ name: UDP_DEVICE, kind: 'tun' }] };

const DROP_REASONS: Partial<Record<CounterName, string>> = {
  noLease: 'no_lease',
  notPeer: 'not_a_peer',
  notForUs: 'not_for_this_node',
  spoofed: 'source_outside_peer_subnet',
  malformed: 'not_ipv4',
  errors: 'send_or_write_error',
  readErrors: 'read_error',
  incomplete: 'incomplete_packet',
};

function v4(ip: string): number {
  const p = parseIP(ip);
  if (p?.family !== 4) throw new Error(`not an IPv4 address: ${ip}`);
  return Number(p.ip);
}

function subnetParts(subnet: string): { base: number; prefix: number } | undefined {
  const c = parseCidr(subnet, true);
  return c?.family === 4 ? { base: Number(c.ip), prefix: c.prefix } : undefined;
}

/** The saved table, to forward with right after a restart. */
interface Saved {
  v: 1;
  own: string;
  port: number;
  peers: [subnet: string, publicIP: string][];
}

function toMessage(s: Saved): TableMessage {
  return {
    own: subnetParts(s.own),
    port: s.port,
    peers: s.peers.flatMap(([subnet, ip]) => {
      const p = subnetParts(subnet);
      return p ? [{ ...p, ip: v4(ip) }] : [];
    }),
  };
}

function ifindex(name: string): number | undefined {
  try {
    return Number(readFileSync(`/sys/class/net/${name}/ifindex`, 'utf8'));
  } catch {
    return undefined;
  }
}

export async function udpBackend(ctx: BackendContext): Promise<Backend> {
  const ext = ctx.external;
  const local = ipv4Underlay(ctx, 'udp');
  const existing = await refuseForeignDevice(ctx.kernel, UDP_DEVICE, 'tun', 'a TUN device', 'udp');
  const port = (ctx.config.Backend as UdpBackend).Port;
  const mtu = ext.iface.mtu - UDP_OVERHEAD;
  // Binding first: a port in use (flannel still running) stops the agent with the reason.
  // Each datagram fills the underlay MTU: the TUN's MTU is exactly the UDP
  // payload that fits (up to the largest datagram there is: lo's MTU is 64 KB).
  const fwd = new Forwarder(UDP_DEVICE, v4(local), port, Math.min(mtu, MAX_UDP_PAYLOAD), ctx.log);
  let attachedIndex: number | undefined;
  let savedText = ctx.state.get(STATE_KEY);
  let saved: Saved | undefined;
  try {
    saved = savedText ? (JSON.parse(savedText) as Saved) : undefined;
  } catch {
    saved = undefined;
  }
  const metrics = ctx.metrics;
  let reported = { out: {} as Record<string, number>, in: {} as Record<string, number> };
  const exportCounters = () => {
    const now = fwd.counters();
    for (const dir of ['out', 'in'] as const) {
      for (const [k, v] of Object.entries(now[dir]) as [CounterName, number][]) {
        const delta = v - (reported[dir][k] ?? 0);
        if (delta <= 0) continue;
        if (k === 'packets') metrics.inc('twill_udp_packets_total', 'packets forwarded by the udp backend (out: flannel0 to a peer, in: a peer to flannel0)', delta, { direction: dir });
        else if (k === 'bytes') metrics.inc('twill_udp_bytes_total', 'bytes of the packets forwarded by the udp backend', delta, { direction: dir });
        else metrics.inc('twill_udp_dropped_total', 'packets the udp backend dropped, by reason', delta, { direction: dir, reason: DROP_REASONS[k] ?? k });
      }
    }
    reported = now;
  };
  for (const dir of ['out', 'in'] as const) metrics.declare('twill_udp_packets_total', 'packets forwarded by the udp backend (out: flannel0 to a peer, in: a peer to flannel0)', { direction: dir });
  metrics.declare('twill_udp_dropped_total', 'packets the udp backend dropped, by reason', { direction: 'out', reason: 'no_lease' });
  metrics.declare('twill_udp_dropped_total', 'packets the udp backend dropped, by reason', { direction: 'in', reason: 'not_a_peer' });
  const timer = setInterval(exportCounters, 1000);
  timer.unref();

  const attach = async () => {
    await fwd.attach();
    attachedIndex = ifindex(UDP_DEVICE);
  };
  // After a restart the device and its route are still there: forward with
  // the last table now rather than after the first complete snapshot.
  if (saved && saved.port === port && existing?.link?.kind === 'tun') {
    try {
      fwd.update(toMessage(saved));
      await attach();
      ctx.log.info('forwarding with the saved table until the snapshot is complete', { peers: saved.peers.length });
    } catch (e) {
      ctx.log.warn('could not resume forwarding from the saved table', { reason: errorMessage(e) });
    }
  }

  return {
    type: 'udp',
    mtu: () => mtu,
    backendData: () => ({}),
    async reconcile(config: NetConf, own: Lease, peers, changed) {
      const errors: string[] = [];
      if (!own.subnet || !config.Network) return { errors: ['udp: this node has no IPv4 subnet (udp carries IPv4 only)'] };
      const b = config.Backend as UdpBackend;
      if (b.Port !== port) errors.push(`udp: Port changed from ${port} to ${b.Port}: restart the agent to listen on the new port`);
      if (!changed) {
        const device: DeviceSpec = { name: UDP_DEVICE, link: { kind: 'tun' }, mtu, addresses: [`${subnetBase(own.subnet)}/32`], up: true };
        const report = await reconcile({ devices: [device], routes: [{ dst: config.Network, dev: UDP_DEVICE }, ...ownEntries(ctx, own).routes] }, OWNERSHIP, { io: ctx.kernel });
        errors.push(
          ...report.failures.map((f) => `${f.tool} ${f.command}: ${f.error}`),
          ...report.plan.conflicts.map((c) => `${c.kind} ${c.key} is not twill's and is in the way: ${c.reason}`),
        );
        const repaired = report.plan.changes.devices.add.length + report.plan.changes.devices.replace.length + report.plan.changes.routes.add.length;
        if (repaired && attachedIndex !== undefined) ctx.log.warn('repaired kernel drift', { devices: report.plan.changes.devices.add.length, routes: report.plan.changes.routes.add.length });
      }
      const next: Saved = {
        v: 1,
        own: own.subnet,
        port,
        peers: [...peers.values()].filter((p) => p.subnet && p.publicIP).map((p) => [p.subnet as string, p.publicIP as string] as [string, string]).sort((x, y) => (x[0] < y[0] ? -1 : 1)),
      };
      const text = JSON.stringify(next);
      if (text !== savedText) {
        fwd.update(toMessage(next));
        ctx.state.set(STATE_KEY, text);
        savedText = text;
      }
      metrics.set('twill_udp_peers', 'peers in the udp forwarding table', next.peers.length);
      // A device deleted by hand and made again is a new device: attach to it.
      const index = ifindex(UDP_DEVICE);
      if (index !== undefined && (!fwd.attached || index !== attachedIndex)) {
        try {
          await attach();
        } catch (e) {
          errors.push(errorMessage(e));
        }
      }
      if (!fwd.attached) errors.push(`udp: not attached to ${UDP_DEVICE}: pod traffic to other nodes is not forwarded`);
      exportCounters();
      return { errors };
    },
    close: async () => {
      clearInterval(timer);
      exportCounters();
      await fwd.close();
    },
  };
}
