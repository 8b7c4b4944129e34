// wireguard: pod traffic between hosts inside WireGuard, as flannel's
// wireguard backend builds it (agent/wireguard/desired.ts says what), with
// keys made on each host that never leave it (agent/wireguard/keys.ts), on
// the kernel's device or on wireguard-go (agent/wireguard/device.ts), both
// driven through `wg` (agent/wireguard/wg.ts).
//
// Level-triggered, where flannel is not: every full pass reads each device
// (`wg show dump`) and its link, compares its private key, listen port, MTU,
// addresses, up state and every peer (key, endpoint, allowed IPs, keepalive,
// PSK) and the routes with what the leases say, and repairs the difference
// (agent/wireguard/plan.ts): a peer removed by hand, a wrong endpoint, a
// deleted device or route, peers that left while the agent was down. A pass
// over a few changed peers applies just their difference, without a read.
//
// Rotation: a rotateKey token on the own lease not yet honoured, or a key
// older than Backend.KeyRotation, makes a new key pair: written to the key
// file first, then set on every device (this host keeps receiving on its
// current sessions; what it sends waits, staged, for a handshake with the
// new key), then published in the next hello (agent.ts says hello whenever
// backendData differs from the lease). Each peer swaps the old key for the
// new one in one `wg set` and starts the handshake at once (plan.ts).
import { join } from 'node:path';
import type { NetConf } from '../../core/config.js';
import { keyRotationMs, type WireguardBackend } from '../../core/backends/index.js';
import { errorMessage } from '../../core/errors.js';
import type { Lease } from '../../core/lease.js';
import { SECRET_MASK } from '../../core/secret.js';
import { reconcile, type RouteSpec } from '../kernel/index.js';
import { deviceMtu, desiredDevices, layout, WG_DEVICES, type PeerSpec, type WgDeviceSpec } from '../wireguard/desired.js';
import { WgDevices } from '../wireguard/device.js';
import { keyFilePath, WireguardKeys } from '../wireguard/keys.js';
import { planDevices, planInterface, planLink, planPeerDelta, planPeers, wgCommands, type DeviceState, type Implementation, type PeerChanges } from '../wireguard/plan.js';
import { pskDigest, wgIO, type WgArg } from '../wireguard/wg.js';
import { ownEntries } from './common.js';
import type { Backend, BackendContext, BackendReport, BackendStatus } from './backend.js';

const INFO = ['twill_wireguard_device_info', 'the WireGuard devices this agent runs, by implementation (kernel or wireguard-go)'] as const;
const PEERS = ['twill_wireguard_peers', 'peers configured on each WireGuard device'] as const;
const ROTATIONS = ['twill_wireguard_key_rotations_total', 'new key pairs made, by reason (asked: a rotateKey token; age: Backend.KeyRotation)'] as const;
const KEY_MADE = ['twill_wireguard_key_made_timestamp_seconds', "when this host's key pair was made"] as const;

/** What the last pass left behind, so the next can tell drift from news and apply a delta. */
interface Applied {
  signature: string;
  /** the pass applied everything it planned */
  clean: boolean;
  /** per device, node -> the peer as applied */
  peers: Map<string, Map<string, PeerSpec>>;
  impl: Map<string, Implementation>;
}

const peerMap = (spec: WgDeviceSpec) => new Map(spec.peers.map((p) => [p.node, p]));
const sameSpec = (a: PeerSpec | undefined, b: PeerSpec | undefined) => JSON.stringify(a) === JSON.stringify(b);

class Wireguard implements Backend {
  readonly type = 'wireguard';
  private readonly wg = wgIO();
  private readonly devices: WgDevices;
  private current: NetConf;
  private applied?: Applied;
  /** the rotation token reported done: the one whose key the lease carries */
  private doneToken?: string;

  constructor(
    private readonly ctx: BackendContext,
    private readonly keys: WireguardKeys,
  ) {
    this.devices = new WgDevices({ kernel: ctx.kernel, wg: this.wg, log: ctx.log, dir: join(ctx.state.dir, 'wireguard') });
    this.current = ctx.config;
  }

  private local(config: NetConf) {
    const ext = this.ctx.external;
    return { publicIP: config.EnableIPv4 ? ext.publicIP : undefined, publicIPv6: config.EnableIPv6 ? ext.publicIPv6 : undefined };
  }

  mtu(): number {
    const b = this.current.Backend as WireguardBackend;
    const underlay = this.ctx.external.iface.mtu;
    const mtus = layout(b, this.current, this.local(this.current)).map((d) => deviceMtu(b, underlay, d.underlay));
    return mtus.length ? Math.min(...mtus) : deviceMtu(b, underlay, 4);
  }

  backendData(): Record<string, string> {
    return { PublicKey: this.keys.publicKey };
  }

  async reconcile(config: NetConf, own: Lease, peers: ReadonlyMap<string, Lease>, changed?: ReadonlySet<string>): Promise<BackendReport> {
    this.current = config;
    const b = config.Backend as WireguardBackend;
    if (b.PSK === SECRET_MASK) return { errors: ["wireguard: no PSK yet: it arrives only with this node's own lease"] };
    const desired = desiredDevices({ config, own, peers: peers.values(), local: this.local(config), underlayMtu: this.ctx.external.iface.mtu, publicKey: this.keys.publicKey });
    // what failed or stood in the way this pass (the problems above are the leases' and stay until they change)
    const failures: string[] = [];
    // Anything but the peers changed: compare everything.
    const signature = JSON.stringify([{ ...b, PSK: b.PSK && pskDigest(b.PSK) }, this.keys.publicKey, desired.devices.map((d) => ({ ...d, peers: undefined }))]);
    const quick = changed && this.applied?.signature === signature && (await this.delta(desired.devices, changed, b.PSK, failures));
    if (!quick) await this.full(desired.devices, own, b.PSK, signature, failures);
    await this.rotateIfDue(b, own, failures);
    return { errors: [...desired.problems, ...failures] };
  }

  /**
   * What runs the devices (kernel only where every one is the kernel's),
   * and the rotation token whose key pair this host runs, reported once
   * the lease carries the new public key: the rotation is done when peers
   * can know the key, not when it is made.
   */
  status(own: Lease): BackendStatus {
    const impls = [...(this.applied?.impl.values() ?? [])];
    const implementation = impls.length === 0 ? undefined : impls.every((i) => i === 'kernel') ? 'kernel' : 'wireguard-go';
    if (own.backendData.PublicKey === this.keys.publicKey) this.doneToken = this.keys.honoured;
    return { ...(implementation && { implementation }), ...(this.doneToken !== undefined && { keyToken: this.doneToken }) };
  }

  /** The devices stay, and wireguard-go with them: they carry the traffic while the agent is away. */
  async close(): Promise<void> {}

  /** Runs each `wg set`; a failure is reported and makes the next pass a full one. */
  private async apply(device: string, commands: WgArg[][], psk: string | undefined, errors: string[]): Promise<void> {
    for (const args of commands) {
      try {
        await this.wg.set(device, args, psk);
      } catch (e) {
        errors.push(`wireguard: ${errorMessage(e)}`);
      }
    }
  }

  /**
   * A new key pair when one is due, set on every device at once: the last
   * step of a pass, so that the hello publishing it (agent.ts) follows
   * within moments. From here until each peer has swapped keys, what this
   * host sends waits in WireGuard's queue (128 packets per peer).
   */
  private async rotateIfDue(b: WireguardBackend, own: Lease, failures: string[]): Promise<void> {
    const { keys, ctx } = this;
    const due = keys.rotationDue(own.rotateKey, keyRotationMs(b));
    if (!due) return;
    const before = keys.publicKey;
    keys.rotate(due === 'asked' ? own.rotateKey : undefined);
    for (const name of this.applied?.impl.keys() ?? []) await this.apply(name, [['private-key', keys.file]], undefined, failures);
    ctx.log.info('made a new key pair', { reason: due === 'asked' ? 'a rotation was asked (rotateKey)' : `the key is older than KeyRotation ${b.KeyRotation}`, token: own.rotateKey, publicKey: keys.publicKey, previous: before });
    ctx.metrics.inc(ROTATIONS[0], ROTATIONS[1], 1, { reason: due });
    ctx.metrics.set(...KEY_MADE, Math.floor(keys.madeAt / 1000));
  }

  /**
   * Only what changed among the peers since the last clean pass, without
   * reading the devices; false: do a full pass instead. Besides the nodes
   * whose leases changed, any node whose peer changed with them (the
   * survivor of two publishing one key) is applied too.
   */
  private async delta(specs: WgDeviceSpec[], changed: ReadonlySet<string>, psk: string | undefined, errors: string[]): Promise<boolean> {
    const applied = this.applied;
    if (!applied?.clean) return false;
    const digest = psk === undefined ? undefined : pskDigest(psk);
    const before = errors.length;
    for (const spec of specs) {
      const prev = applied.peers.get(spec.name) ?? new Map<string, PeerSpec>();
      const next = peerMap(spec);
      const touched = new Set(changed);
      for (const node of new Set([...prev.keys(), ...next.keys()])) if (!sameSpec(prev.get(node), next.get(node))) touched.add(node);
      for (const node of touched) {
        const [p, n] = [prev.get(node), next.get(node)];
        if (p && n && p.publicKey !== n.publicKey) this.ctx.log.info('a peer has a new key: swapped for its old one in one step', { device: spec.name, peer: node, publicKey: n.publicKey });
      }
      await this.apply(spec.name, wgCommands([], planPeerDelta(prev, next, touched, digest)), psk, errors);
      applied.peers.set(spec.name, next);
    }
    if (errors.length > before) applied.clean = false;
    return true;
  }

  /** Which devices run, said once in the log and always in /metrics. */
  private report(states: DeviceState[], specs: WgDeviceSpec[]): Map<string, Implementation> {
    const { metrics, log } = this.ctx;
    metrics.clear(INFO[0]);
    const impl = new Map<string, Implementation>();
    for (const s of states) {
      if (s.state !== 'ours') continue;
      impl.set(s.name, s.impl);
      metrics.set(...INFO, 1, { device: s.name, implementation: s.impl });
      metrics.set(...PEERS, specs.find((d) => d.name === s.name)?.peers.length ?? 0, { device: s.name });
      if (this.applied?.impl.get(s.name) !== s.impl) log.info('wireguard device', { device: s.name, implementation: s.impl });
    }
    for (const name of WG_DEVICES) if (!impl.has(name)) metrics.remove(PEERS[0], { device: name });
    return impl;
  }

  /** Devices made, removed or in someone else's hands, then read again if any was made. */
  private async ensureDevices(specs: WgDeviceSpec[], errors: string[]): Promise<{ states: DeviceState[]; made: Set<string> }> {
    const { devices, ctx } = this;
    const states = await devices.read(WG_DEVICES);
    const plan = planDevices(specs, states);
    errors.push(...plan.conflicts.map((c) => `wireguard: ${c}`));
    for (const name of plan.remove) {
      await devices.remove(name).then(() => ctx.log.info('removed a WireGuard device the network no longer uses', { device: name }), (e) => errors.push(`wireguard: ${errorMessage(e)}`));
    }
    const made = new Set<string>();
    for (const spec of plan.create) {
      await devices.create(spec.name, spec.mtu).then(
        (impl) => {
          made.add(spec.name);
          if (this.applied?.impl.has(spec.name)) ctx.log.warn('repaired wireguard drift: the device was gone and is made again', { device: spec.name, implementation: impl });
        },
        (e) => errors.push(`wireguard: ${errorMessage(e)}`),
      );
    }
    return { states: made.size ? await devices.read(WG_DEVICES) : states, made };
  }

  /** Everything compared with what the devices and the kernel have. */
  private async full(specs: WgDeviceSpec[], own: Lease, psk: string | undefined, signature: string, errors: string[]): Promise<void> {
    const { ctx } = this;
    const { states, made } = await this.ensureDevices(specs, errors);
    const digest = psk === undefined ? undefined : pskDigest(psk);
    const routes: RouteSpec[] = [...ownEntries(ctx, own).routes];
    let repaired = 0;
    for (const spec of specs) {
      const s = states.find((x) => x.name === spec.name);
      if (s?.state !== 'ours') continue;
      const link = planLink(spec, s.link);
      if (link.length) {
        const r = await ctx.kernel.apply('ip', link);
        errors.push(...r.failures.map((f) => `wireguard: ip ${f.command}: ${f.error}`));
      }
      const iface = planInterface(spec, s.dump, this.keys);
      const peers: PeerChanges = planPeers(spec.peers, s.dump.peers, digest);
      await this.apply(spec.name, wgCommands(iface, peers), psk, errors);
      if (!made.has(spec.name)) repaired += link.length + iface.length + peers.added + peers.changed + peers.removed;
      routes.push(...spec.routes.map((dst) => ({ dst, dev: spec.name })));
    }
    // Routes are twill's by their protocol (agent/kernel): the pod networks into the devices, and the node's blackhole routes.
    const r = await reconcile({ routes }, { devices: [] }, { io: ctx.kernel });
    errors.push(...r.failures.map((f) => `wireguard: ${f.tool} ${f.command}: ${f.error}`), ...r.plan.conflicts.map((c) => `wireguard: ${c.kind} ${c.key} is not twill's and is in the way: ${c.reason}`));
    repaired += r.plan.changes.routes.add.length + r.plan.changes.routes.replace.length;
    if (repaired && this.applied?.clean && this.applied.signature === signature) ctx.log.warn('repaired wireguard drift', { changes: repaired });
    this.applied = { signature, clean: errors.length === 0, peers: new Map(specs.map((d) => [d.name, peerMap(d)])), impl: this.report(states, specs) };
  }
}

export async function wireguardBackend(ctx: BackendContext): Promise<Backend> {
  // A key file twill cannot use stops the agent here, with the file's name.
  const keys = WireguardKeys.load(keyFilePath(ctx.state.dir, process.env));
  // A host without wireguard-tools stops the agent here, with what to install.
  await wgIO().show(WG_DEVICES[0]);
  ctx.log.info('wireguard key pair', { file: keys.file, publicKey: keys.publicKey });
  ctx.metrics.declare(ROTATIONS[0], ROTATIONS[1], { reason: 'asked' });
  ctx.metrics.set(...KEY_MADE, Math.floor(keys.madeAt / 1000));
  return new Wireguard(ctx, keys);
}
