// udp: flannel0, a TUN device whose packets the agent itself carries in UDP.
import type { BackendSpec } from './spec.js';

export interface UdpBackend { Type: 'udp'; Port: number }

export const udp: BackendSpec<UdpBackend> = {
  type: 'udp',
  summary: 'a TUN device; the agent carries each packet in a UDP datagram (debugging only, as in flannel)',
  options: ['Port'],
  agentData: {},
  nodeSecrets: [],
  controlSecrets: [],
  families: [4],
  ipv4OnlyWhy: 'its encapsulation carries IPv4 packets to IPv4 peers only, as flannel\'s does',
  programsKernel: true,
  podTraffic: true,
  read: (f) => ({ Type: 'udp', Port: f.integerIn('Port', 1, 65535) ?? 8285 }),
};
