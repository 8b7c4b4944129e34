// ipsec: pod traffic between nodes in ESP tunnels (IKEv2, pre-shared key),
// keyed by strongSwan's charon. The agent runs a charon of its own (see
// agent/ipsec/charon.ts) and configures it over vici only. Per peer: one
// connection between the two public IPs whose CHILD_SA covers this node's
// subnet and the peer's, which gives the kernel three policies: out (mine to
// theirs), in and fwd (theirs to mine). Connections trap: the first packet
// for a peer without an SA starts the key exchange (and is held, never sent
// in the clear); the node with the lower public IP also starts it at once.
//
// Level-triggered, where flannel is not: every full pass compares charon's
// connections and the kernel's policies with the leases. A policy deleted by
// hand comes back (a rekey of that peer's CHILD_SA installs all three again,
// without a gap), and connections and policies of peers that left while the
// agent was down are removed at start-up.
//
// Fail closed: a low-priority block policy for Network to Network catches
// pod traffic that no peer's policy covers (a peer whose connection is not
// loaded yet, a policy deleted by hand), so it is dropped rather than sent
// in the clear; an allow policy for this node's own subnet keeps local
// delivery out of it.
//
// The PSK arrives only in the config on this node's own topic; the agent
// hands it to charon over the vici socket and nowhere else (no file, no
// command line, no log).
import { createHash } from 'node:crypto';
import { DEFAULT_ESP_PROPOSAL, SECRET_MASK, type IpsecBackend, type NetConf } from '../../core/config.js';
import { contains, parseCidr, parseIP } from '../../core/cidr.js';
import { parseDuration } from '../../core/duration.js';
import { errorMessage } from '../../core/errors.js';
import type { Lease } from '../../core/lease.js';
import { Charon } from '../ipsec/charon.js';
import type { ViciMessage } from '../ipsec/vici.js';
import { deletePolicy, readPolicies, updatePolicy, type XfrmPolicy } from '../ipsec/xfrm.js';
import { ipv4Underlay } from './common.js';
import type { Backend, BackendContext } from './backend.js';

/** ESP in tunnel mode: outer IPv4 header, ESP header and IV, padding, trailer, ICV. */
const ESP_OVERHEAD = 77;
/** plus the UDP header of NAT traversal */
const ESP_UDP_OVERHEAD = 85;
/** IKE proposals: the ESP default's algorithms, then strongSwan's defaults for peers that differ */
const IKE_PROPOSALS = ['aes128gcm16-prfsha256-ecp256', 'default'];
const CONN_PREFIX = 'twill-';
const PSK_ID = 'twill-psk';
/** lower wins: twill's allow, then charon's IPsec policies (~375000), then twill's block */
const ALLOW_PRIORITY = 1_000_000;
const BLOCK_PRIORITY = 2_000_000;

/** Rekey times in seconds; TWILL_IPSEC_REKEY_TIME shortens both (tests prove rekeying loses nothing). */
function rekeyTimes(): { ike: number; child: number } {
  const env = process.env.TWILL_IPSEC_REKEY_TIME;
  if (!env) return { ike: 4 * 3600, child: 3600 };
  const s = Math.max(5, Math.round(parseDuration(env, 'TWILL_IPSEC_REKEY_TIME') / 1000));
  return { ike: s * 2, child: s };
}

/**
 * How much later the responder (the node with the higher public IP) would
 * rekey. Both ends start an SA's timers at the same moment, so with equal
 * times they rekey it at nearly the same moment too: a rekey collision, which
 * strongSwan resolves only with a gap in traffic (and some versions without
 * installing the new outbound SA: strongswan/strongswan#1896). With the
 * responder's times half as long again, past the initiator's hard lifetime
 * (rekey time + 10%), the initiator always rekeys first, the new SA restarts
 * both ends' timers, and the responder rekeys only if the initiator cannot.
 */
const RESPONDER_REKEY_FACTOR = 1.5;

/** charon's form of a time: whole hours as hours (as twill always wrote them, so names of loaded connections stay), else seconds */
const duration = (seconds: number): string => (seconds % 3600 === 0 ? `${seconds / 3600}h` : `${Math.round(seconds)}s`);

function v4(ip: string): bigint | undefined {
  const p = parseIP(ip);
  return p?.family === 4 ? p.ip : undefined;
}

interface Desired {
  peer: Lease;
  subnet: string;
  publicIP: string;
  def: ViciMessage;
  initiator: boolean;
}

/** What charon holds for a connection: SAs carrying traffic, or an exchange under way (or winding down). */
export type SaState = 'established' | 'busy';

/**
 * charon's list-sas events, by connection name. An IKE_SA that is being
 * rekeyed (REKEYING, REKEYED) still carries its CHILD_SAs, which keep
 * forwarding while they are rekeyed themselves.
 */
export function classifySas(events: readonly ViciMessage[]): Map<string, SaState> {
  const sas = new Map<string, SaState>();
  for (const sa of events) {
    for (const [name, v] of Object.entries(sa)) {
      const ike = v as ViciMessage;
      const children = Object.values((ike['child-sas'] ?? {}) as ViciMessage) as ViciMessage[];
      const carrying = ['ESTABLISHED', 'REKEYING', 'REKEYED'].includes(String(ike.state)) && children.some((c) => ['INSTALLED', 'REKEYING', 'REKEYED', 'UPDATING'].includes(String(c.state)));
      if (carrying) sas.set(name, 'established');
      else if (!sas.has(name)) sas.set(name, 'busy');
    }
  }
  return sas;
}

type Attempt = (what: string, fn: () => Promise<unknown>) => Promise<void>;
type Vici = Awaited<ReturnType<Charon['ensure']>>['vici'];

/**
 * On a pass with no peer change, the kernel's side against what charon
 * should have installed: each peer's three policies (repaired by a rekey,
 * or by reloading the connection when there is no SA), the allow and block
 * policies of the pod network, and no pod-network policy of a peer that is
 * gone.
 */
async function repairPolicies(ctx: BackendContext, vici: Vici, network: string, ownSubnet: string, desired: Map<string, Desired>, sas: ReadonlyMap<string, SaState>, attempt: Attempt): Promise<void> {
    const net = parseCidr(network);
    const inNetwork = (cidr: string) => {
      const c = parseCidr(cidr);
      return !!net && !!c && c.family === 4 && contains(net, c);
    };
    const policies = await readPolicies();
    const has = (src: string, dst: string, dir: XfrmPolicy['dir']) => policies.some((p) => p.src === src && p.dst === dst && p.dir === dir && p.action === 'allow' && p.tmpl);
    for (const [name, d] of desired) {
      if (has(ownSubnet, d.subnet, 'out') && has(d.subnet, ownSubnet, 'in') && has(d.subnet, ownSubnet, 'fwd')) continue;
      // An exchange under way installs the policies when it completes; the next pass looks again.
      if (sas.get(name) === 'busy') continue;
      await attempt(`restoring the policies for ${d.peer.node}`, async () => {
        // A rekey installs the policies of the new CHILD_SA, all three, before the old one goes.
        const r = sas.has(name) ? await vici.request('rekey', { child: name }) : { matches: '0' };
        if (r.matches === '0') {
          // No SA to rekey: reload the connection, which installs its trap policies again.
          await vici.request('unload-conn', { name });
          await vici.request('load-conn', { [name]: d.def });
          if (d.initiator) await vici.request('initiate', { child: name, ike: name, timeout: '-1' });
        }
        ctx.log.warn('repaired ipsec policies deleted behind our back', { peer: d.peer.node, subnet: d.subnet });
      });
    }

    const wanted: Pick<XfrmPolicy, 'src' | 'dst' | 'dir' | 'action' | 'priority'>[] = [
      { src: '0.0.0.0/0', dst: ownSubnet, dir: 'out', action: 'allow', priority: ALLOW_PRIORITY },
      { src: network, dst: network, dir: 'out', action: 'block', priority: BLOCK_PRIORITY },
    ];
    for (const w of wanted) {
      if (policies.some((p) => p.src === w.src && p.dst === w.dst && p.dir === w.dir && p.action === w.action && p.priority === w.priority && !p.tmpl)) continue;
      await attempt(`installing the ${w.action} policy ${w.src} -> ${w.dst}`, () => updatePolicy(w));
    }

    // Pod-network policies that belong to no current peer: left by a peer
    // that went while charon was not told, by a charon that died, or by
    // this node's previous subnet.
    const current = new Set([...desired.values()].flatMap((d) => [`${ownSubnet} ${d.subnet}`, `${d.subnet} ${ownSubnet}`]));
    for (const p of policies) {
      // the allow policy of a subnet this node held before
      const oldAllow = p.action === 'allow' && !p.tmpl && p.priority === ALLOW_PRIORITY && p.src === '0.0.0.0/0' && inNetwork(p.dst) && p.dst !== ownSubnet;
      if (!oldAllow && (!inNetwork(p.src) || !inNetwork(p.dst))) continue;
      if (current.has(`${p.src} ${p.dst}`)) continue;
      if (wanted.some((w) => w.src === p.src && w.dst === p.dst && w.dir === p.dir)) continue;
      await attempt(`removing the stale policy ${p.src} -> ${p.dst} (${p.dir})`, async () => {
        await deletePolicy(p);
        ctx.log.info('removed a stale ipsec policy', { src: p.src, dst: p.dst, dir: p.dir });
      });
    }
}

export async function ipsecBackend(ctx: BackendContext): Promise<Backend> {
  const ext = ctx.external;
  const local = ipv4Underlay(ctx, 'ipsec', '');
  let udpEncap = (ctx.config.Backend as IpsecBackend).UDPEncap;
  const rekey = rekeyTimes();
  const charon = new Charon(ctx.state.dir, ctx.log);
  // Started (or taken over) now: a host without strongSwan stops the agent with the reason.
  await charon.ensure();
  let pskLoaded: string | undefined;

  const connDef = (name: string, own: string, peer: Lease, b: IpsecBackend, initiator: boolean): ViciMessage => {
    const later = initiator ? 1 : RESPONDER_REKEY_FACTOR;
    return {
      version: '2',
      local_addrs: [local],
      remote_addrs: [peer.publicIP as string],
      proposals: IKE_PROPOSALS,
      encap: b.UDPEncap ? 'yes' : 'no',
      mobike: 'no',
      unique: 'replace',
      keyingtries: '0',
      dpd_delay: '30s',
      rekey_time: duration(rekey.ike * later),
      local: { auth: 'psk', id: local },
      remote: { auth: 'psk', id: peer.publicIP as string },
      children: {
        [name]: {
          local_ts: [own],
          remote_ts: [peer.subnet as string],
          esp_proposals: [b.ESPProposal || DEFAULT_ESP_PROPOSAL],
          mode: 'tunnel',
          start_action: 'trap',
          dpd_action: 'trap',
          close_action: 'trap',
          rekey_time: duration(rekey.child * later),
        },
      },
    };
  };

  return {
    type: 'ipsec',
    mtu: () => ext.iface.mtu - (udpEncap ? ESP_UDP_OVERHEAD : ESP_OVERHEAD),
    backendData: () => ({}),
    async reconcile(config: NetConf, own: Lease, peers, changed) {
      const b = config.Backend as IpsecBackend;
      udpEncap = b.UDPEncap;
      if (!own.subnet || !config.Network) return { errors: ['ipsec: this node has no IPv4 subnet (ipsec carries IPv4 only)'] };
      if (!b.PSK || b.PSK === SECRET_MASK) return { errors: ["ipsec: no PSK yet: it arrives only with this node's own lease"] };
      const errors: string[] = [];
      const attempt = async (what: string, fn: () => Promise<unknown>) => {
        try {
          await fn();
        } catch (e) {
          errors.push(`ipsec: ${what}: ${errorMessage(e)}`);
        }
      };

      const { vici, started } = await charon.ensure();
      if (started) pskLoaded = undefined;
      const pskHash = createHash('sha256').update(b.PSK).digest('hex');
      if (pskLoaded !== pskHash) {
        await vici.request('load-shared', { id: PSK_ID, type: 'IKE', data: b.PSK, owners: [] });
        pskLoaded = pskHash;
      }

      const me = v4(local) as bigint;
      const desired = new Map<string, Desired>();
      for (const peer of peers.values()) {
        if (!peer.subnet || !peer.publicIP || v4(peer.publicIP) === undefined) continue;
        // The name carries a digest of the definition, so a changed lease or
        // config is a new connection and the old one a stale one.
        // (The digest is of the initiator's definition whatever this node's role,
        // so an agent that changes only the timers does not reload, and
        // interrupt, the tunnels it finds: they take the new timers when they
        // are next loaded.)
        const initiator = me < (v4(peer.publicIP) as bigint);
        const draft = connDef('x', own.subnet, peer, b, true);
        const digest = createHash('sha256').update(JSON.stringify(draft)).digest('hex').slice(0, 8);
        const name = `${CONN_PREFIX}${peer.node}-${digest}`;
        desired.set(name, { peer, subnet: peer.subnet, publicIP: peer.publicIP, def: connDef(name, own.subnet, peer, b, initiator), initiator });
      }

      const conns = (await vici.request('get-conns')).conns;
      const loaded = new Set((Array.isArray(conns) ? conns : []).filter((n) => n.startsWith(CONN_PREFIX)));
      for (const name of loaded) {
        if (desired.has(name)) continue;
        await attempt(`removing connection ${name}`, async () => {
          await vici.request('unload-conn', { name });
          await vici.request('terminate', { ike: name, timeout: '-1' }).catch(() => {});
          ctx.log.info('removed the connection of a peer that left or changed', { conn: name });
        });
      }
      for (const [name, d] of desired) {
        if (loaded.has(name)) continue;
        await attempt(`loading the connection to ${d.peer.node} (${d.publicIP})`, () => vici.request('load-conn', { [name]: d.def }));
      }

      // What charon holds per connection. An IKE_SA in any state (connecting,
      // rekeying, deleting) is charon's to carry on: a second initiate beside
      // it would make a duplicate IKE_SA, which the peer's uniqueness policy
      // answers by deleting the first with its CHILD_SAs, and packets in
      // flight on them are lost. A restarted agent listing the SAs in the
      // middle of a rekey used to do that.
      const sas = classifySas(await vici.stream('list-sas', 'list-sa'));
      // Start the key exchange now for peers we initiate to, rather than on
      // their first packet; only where charon has no IKE_SA for the peer.
      for (const [name, d] of desired) {
        if (d.initiator && !sas.has(name)) {
          await attempt(`starting the key exchange with ${d.peer.node}`, () => vici.request('initiate', { child: name, ike: name, timeout: '-1' }));
        }
      }

      if (!changed) await repairPolicies(ctx, vici, config.Network, own.subnet, desired, sas, attempt);
      return { errors };
    },
    close: async () => {
      // charon stays: its SAs carry the traffic while the agent is away.
      charon.close();
    },
  };
}
