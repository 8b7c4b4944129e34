// wireguard: flannel-wg (and flannel-wg-v6), one WireGuard peer per node,
// keyed by the node's own key pair; its private key never leaves its host.
// The options are flanneld's (pkg/backend/wireguard), read as it reads them;
// KeyRotation is twill's.
import { formatDuration, parseDuration } from '../duration.js';
import { SECRET_MASK } from '../secret.js';
import type { BackendSpec } from './spec.js';

/**
 * flannel's modes: separate tunnels per family (flannel-wg over IPv4,
 * flannel-wg-v6 over IPv6), or one flannel-wg carrying both families over
 * IPv4 (ipv4), IPv6 (ipv6), or whichever a peer is likely reachable on (auto).
 */
export const WIREGUARD_MODES = ['separate', 'auto', 'ipv4', 'ipv6'] as const;
export type WireguardMode = (typeof WIREGUARD_MODES)[number];

export interface WireguardBackend {
  Type: 'wireguard';
  /** the network's pre-shared key, mixed into every handshake (a node secret); absent: none */
  PSK?: string;
  ListenPort: number;
  ListenPortV6: number;
  /** seconds between keepalives to each peer; 0: none */
  PersistentKeepaliveInterval: number;
  Mode: WireguardMode;
  /** the MTU the devices are sized from (a device gets MTU minus its underlay's overhead); absent: the underlay's */
  MTU?: number;
  /** twill's: each node makes a new key pair when its key is this old (a duration such as 720h); absent: only when asked */
  KeyRotation?: string;
}

/**
 * What WireGuard adds to every packet: the outer IP header (20 bytes over
 * IPv4, 40 over IPv6), UDP 8, and its own 32 (type 4, receiver index 4,
 * counter 8, authentication tag 16). flannel takes 80 for both; a tunnel over
 * IPv4 needs only 60.
 */
export const WIREGUARD_OVERHEAD = { 4: 60, 6: 80 } as const;

/** WireGuard's default ports, as flannel's. */
export const WIREGUARD_PORTS = { v4: 51820, v6: 51821 } as const;

/** The shortest KeyRotation: every rotation is a lease change every peer applies. */
const MIN_KEY_ROTATION_MS = 10 * 60_000;

/** Backend.KeyRotation in milliseconds; undefined: no rotation by age. */
export function keyRotationMs(b: WireguardBackend): number | undefined {
  return b.KeyRotation === undefined ? undefined : parseDuration(b.KeyRotation, 'Backend.KeyRotation');
}

/**
 * A WireGuard key as `wg genkey`, `wg pubkey` and `wg genpsk` print it: 32
 * bytes in standard base64, 44 characters with one '='. Only the canonical
 * text is taken, so one key is one string (peers are compared by it).
 */
export function wireguardKeyProblem(value: unknown): string | undefined {
  if (typeof value !== 'string') return 'is not a string: a WireGuard key is 44 characters of base64';
  if (!/^[A-Za-z0-9+/]{43}=$/.test(value) || Buffer.from(value, 'base64').toString('base64') !== value) {
    return 'is not a WireGuard key: 32 bytes in base64, 44 characters ending in "=", as wg genkey and wg pubkey print them';
  }
  return undefined;
}

export const wireguard: BackendSpec<WireguardBackend> = {
  type: 'wireguard',
  summary: 'WireGuard between hosts: one peer per node, keys made on each host (the kernel device, or wireguard-go)',
  options: ['PSK', 'ListenPort', 'ListenPortV6', 'PersistentKeepaliveInterval', 'Mode', 'MTU', 'KeyRotation'],
  // flannel's BackendData (and BackendV6Data, the same key) .PublicKey
  agentData: { PublicKey: wireguardKeyProblem },
  nodeSecrets: ['PSK'],
  controlSecrets: [],
  families: [4, 6],
  programsKernel: true,
  podTraffic: true,
  read: (f, ctx) => {
    // The key itself never appears in a message.
    let psk = f.string('PSK', true);
    if (psk === '') psk = undefined;
    if (psk !== undefined && !(ctx.masked && psk === SECRET_MASK) && wireguardKeyProblem(psk)) {
      ctx.errors.push('Backend.PSK is not a WireGuard key: make one with "wg genpsk" (32 bytes in base64, 44 characters ending in "=")');
      psk = undefined;
    }
    const modeText = f.string('Mode');
    let mode: WireguardMode = 'separate';
    if (modeText !== undefined) {
      if ((WIREGUARD_MODES as readonly string[]).includes(modeText)) mode = modeText as WireguardMode;
      else ctx.errors.push(`Backend.Mode ${JSON.stringify(modeText)} is not known: use one of ${WIREGUARD_MODES.join(', ')}`);
    }
    // A tunnel over one family needs every node's address of that family, which a network carries only when it enables it.
    if (mode === 'ipv4' && ctx.families && !ctx.families.v4) {
      ctx.errors.push('Backend.Mode ipv4 needs EnableIPv4: the tunnel runs between the nodes\' public IPv4 addresses, which a network without IPv4 does not carry (use ipv6 or separate)');
    }
    if (mode === 'ipv6' && ctx.families && !ctx.families.v6) {
      ctx.errors.push('Backend.Mode ipv6 needs EnableIPv6: the tunnel runs between the nodes\' public IPv6 addresses, which a network without IPv6 does not carry (use ipv4 or separate)');
    }
    // Go cannot tell 0 from absent: 0 has always meant the underlay's MTU.
    let mtu = f.integer('MTU');
    if (mtu === 0) mtu = undefined;
    const overIPv6 = mode === 'ipv6' || mode === 'auto' || (mode === 'separate' && ctx.families?.v6 === true);
    const overhead = overIPv6 ? WIREGUARD_OVERHEAD[6] : WIREGUARD_OVERHEAD[4];
    // IPv4 needs 576-byte datagrams; IPv6 at least 1280 on every link.
    const min = (ctx.families?.v6 ? 1280 : 576) + overhead;
    if (mtu !== undefined && (mtu < min || mtu > 65535)) {
      ctx.errors.push(`Backend.MTU ${mtu} is out of range: from ${min} to 65535 (a device gets MTU - ${overhead}, and ${ctx.families?.v6 ? 'IPv6 needs at least 1280' : 'IPv4 needs at least 576'})`);
      mtu = undefined;
    }
    const rotationText = f.string('KeyRotation');
    let rotation: string | undefined;
    if (rotationText !== undefined && rotationText !== '' && rotationText !== '0') {
      try {
        const ms = parseDuration(rotationText, 'Backend.KeyRotation');
        if (ms < MIN_KEY_ROTATION_MS) ctx.errors.push(`Backend.KeyRotation ${rotationText} is too short: at least 10m (each rotation is a lease change every peer applies)`);
        else rotation = formatDuration(ms);
      } catch (e) {
        ctx.errors.push((e as Error).message);
      }
    }
    const ports = { v4: f.integerIn('ListenPort', 1, 65535) ?? WIREGUARD_PORTS.v4, v6: f.integerIn('ListenPortV6', 1, 65535) ?? WIREGUARD_PORTS.v6 };
    if (mode === 'separate' && ctx.families?.v4 && ctx.families.v6 && ports.v4 === ports.v6) {
      ctx.errors.push(`Backend.ListenPort and Backend.ListenPortV6 are both ${ports.v4}: in Mode separate each family has its own device, and each device its own port`);
    }
    return {
      Type: 'wireguard',
      ...(psk !== undefined ? { PSK: psk } : {}),
      ListenPort: ports.v4,
      ListenPortV6: ports.v6,
      PersistentKeepaliveInterval: f.integerIn('PersistentKeepaliveInterval', 0, 65535) ?? 0,
      Mode: mode,
      ...(mtu !== undefined ? { MTU: mtu } : {}),
      ...(rotation !== undefined ? { KeyRotation: rotation } : {}),
    };
  },
};
