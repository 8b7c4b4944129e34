// Backend.Type -> backend. One file per backend beside this one; a type
// whose spec (core/backends/) programs nothing in the kernel only holds its
// lease and writes subnet.env (alloc.ts); a cloud's does so too unless its
// network has an overlay (cloud-overlay.ts).
import { BACKEND_SPECS, BACKEND_TYPES, type BackendType } from '../../core/backends/index.js';
import { TwillError } from '../../core/errors.js';
import { allocBackend } from './alloc.js';
import { cloudBackend } from './cloud-overlay.js';
import type { BackendFactory } from './backend.js';
import { hostGwBackend } from './host-gw.js';
import { ipipBackend } from './ipip.js';
import { ipsecBackend } from './ipsec.js';
import { udpBackend } from './udp.js';
import { vxlanBackend } from './vxlan.js';
import { wireguardBackend } from './wireguard.js';

const kernel: Partial<Record<BackendType, BackendFactory>> = {
  vxlan: vxlanBackend,
  'host-gw': hostGwBackend,
  ipip: ipipBackend,
  ipsec: ipsecBackend,
  udp: udpBackend,
  wireguard: wireguardBackend,
};

const registry: Partial<Record<BackendType, BackendFactory>> = Object.fromEntries(
  BACKEND_TYPES.flatMap((t) => {
    // a cloud's agent: alloc's, and with Backend.Overlay the overlay's vxlan (cloud-overlay.ts)
    if (BACKEND_SPECS[t].cloud) return [[t, cloudBackend(t)]];
    if (!BACKEND_SPECS[t].programsKernel) return [[t, allocBackend(t)]];
    const f = kernel[t];
    return f ? [[t, f]] : [];
  }),
);

export function backendFactory(type: BackendType): BackendFactory {
  const f = registry[type];
  if (!f) throw new TwillError('UnsupportedBackend', `backend ${type} is not available in this agent (available: ${Object.keys(registry).join(', ')})`);
  return f;
}
