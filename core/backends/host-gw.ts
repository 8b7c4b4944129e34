// host-gw: a route per peer via its public address, peers on one link.
import type { BackendSpec } from './spec.js';

export interface HostGwBackend { Type: 'host-gw' }

export const hostGw: BackendSpec<HostGwBackend> = {
  type: 'host-gw',
  summary: 'a route per peer via its public address; every host on one layer-2 link',
  options: [],
  windowsOnly: ['Name'],
  agentData: {},
  nodeSecrets: [],
  controlSecrets: [],
  families: [4, 6],
  programsKernel: true,
  podTraffic: true,
  read: () => ({ Type: 'host-gw' }),
};
