// alloc: a lease and subnet.env, nothing in the kernel. Also what the agent
// runs on cloud instances (aws-vpc, gce, ali-vpc), whose routes the controller
// writes into the VPC route table centrally.
import type { BackendType } from '../../core/config.js';
import type { Backend, BackendContext } from './backend.js';

export function allocBackend(type: BackendType) {
  return async (ctx: BackendContext): Promise<Backend> => ({
    type,
    mtu: () => ctx.external.iface.mtu,
    backendData: () => ({}),
    reconcile: async () => ({ errors: [] }),
    close: async () => {},
  });
}
