// The vxlan scenario (test/e2e/scenario.ts: every pod pings every pod, drift,
// kill -9, a controller restart, removal also by a host that was down) on
// the two other brokers an agent meets, with the same assertions as on the
// embedded broker (vxlan.test.ts): Mosquitto, and AWS IoT Core's stand-in
// (no retained message through a wildcard, its SUBSCRIBE, payload and rate
// limits, the real authorizer, the IoT rules into the real Lambda handlers,
// DynamoDB). Protocol v1's agent could not pass its first step on IoT Core
// (test/integration/brokers.test.ts says why).
import { overlayScenario } from './scenario.js';

for (const broker of ['mosquitto', 'iot'] as const) {
  overlayScenario({
    name: 'vxlan',
    broker,
    conf: { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } },
    hosts: { h1: 0, h2: 0, h3: 0 },
    device: 'flannel.1',
    entries: async () => ({ route: true, neighbour: true, fdb: true }),
  });
}
