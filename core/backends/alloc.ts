// alloc: subnets only; something else carries the traffic.
import type { BackendSpec } from './spec.js';

export interface AllocBackend { Type: 'alloc' }

export const alloc: BackendSpec<AllocBackend> = {
  type: 'alloc',
  summary: 'subnet leases and subnet.env only: no device, route or rule',
  options: [],
  agentData: {},
  nodeSecrets: [],
  controlSecrets: [],
  families: [4, 6],
  programsKernel: false,
  podTraffic: false,
  read: () => ({ Type: 'alloc' }),
};
