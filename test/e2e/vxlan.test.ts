import { overlayScenario } from './scenario.js';

// Three hosts on one underlay; every peer gets a neighbour, an fdb entry and a route.
overlayScenario({
  name: 'vxlan',
  conf: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } },
  hosts: { h1: 0, h2: 0, h3: 0 },
  device: 'flannel.1',
  entries: async () => ({ route: true, neighbour: true, fdb: true }),
  golden: 'rules-10.244.0.0-16.txt',
});
