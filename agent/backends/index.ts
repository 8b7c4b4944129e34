// Backend.Type -> backend. One file per backend beside this one.
import type { BackendType } from '../../core/config.js';
import { TwillError } from '../../core/errors.js';
import { allocBackend } from './alloc.js';
import type { BackendFactory } from './backend.js';
import { hostGwBackend } from './host-gw.js';
import { ipipBackend } from './ipip.js';
import { ipsecBackend } from './ipsec.js';
import { udpBackend } from './udp.js';
import { vxlanBackend } from './vxlan.js';

const registry: Partial<Record<BackendType, BackendFactory>> = {
  vxlan: vxlanBackend,
  'host-gw': hostGwBackend,
  ipip: ipipBackend,
  ipsec: ipsecBackend,
  udp: udpBackend,
  alloc: allocBackend('alloc'),
  'aws-vpc': allocBackend('aws-vpc'),
  gce: allocBackend('gce'),
  'ali-vpc': allocBackend('ali-vpc'),
};

export function backendFactory(type: BackendType): BackendFactory {
  const f = registry[type];
  if (!f) throw new TwillError('UnsupportedBackend', `backend ${type} is not available in this agent (available: ${Object.keys(registry).join(', ')})`);
  return f;
}
