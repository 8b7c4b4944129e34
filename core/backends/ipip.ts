// ipip: flannel.ipip, IP-in-IP to each peer.
import type { BackendSpec } from './spec.js';

export interface IpipBackend { Type: 'ipip'; DirectRouting: boolean }

export const ipip: BackendSpec<IpipBackend> = {
  type: 'ipip',
  summary: 'IP-in-IP tunnel device, a route per peer',
  options: ['DirectRouting'],
  agentData: {},
  nodeSecrets: [],
  controlSecrets: [],
  families: [4],
  ipv4OnlyWhy: 'IP-in-IP (protocol 4) carries IPv4 in IPv4 only, as flannel\'s does',
  programsKernel: true,
  podTraffic: true,
  read: (f) => ({ Type: 'ipip', DirectRouting: f.boolean('DirectRouting') ?? false }),
};
