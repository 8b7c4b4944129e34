// The embedded broker's retained messages, found by topic for exact
// subscriptions (control/local/broker.ts retainedByTopic): what every
// agent's first SUBSCRIBE relies on, over real MQTT.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { Aedes } from 'aedes';
import mqtt from 'mqtt';
import { retainedByTopic } from '../../control/local/broker.js';

async function retainedSeen(url: string, filters: string[]): Promise<Map<string, string>> {
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0 });
  const seen = new Map<string, string>();
  c.on('message', (t, p, packet) => { if (packet.retain) seen.set(t, p.toString()); });
  await c.subscribeAsync(filters, { qos: 1 });
  // retained messages are sent right after the SUBACK; a round trip after it sees them all
  await c.publishAsync('probe/x', 'x', { qos: 1 });
  await c.endAsync();
  return seen;
}

test('retained messages reach exact and wildcard subscriptions; a cleared one reaches neither', async () => {
  const broker = await Aedes.createBroker({ persistence: retainedByTopic() });
  const server = createServer(broker.handle);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const url = `mqtt://127.0.0.1:${port}`;
  try {
    const pub = (topic: string, payload: string) => new Promise<void>((r, j) => broker.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: true, dup: false }, (e) => (e ? j(e) : r())));
    await pub('t/net/a/config', 'config-1');
    await pub('t/node/a/n1/lease', 'lease-1');
    await pub('t/node/a/n2/lease', 'lease-2');
    await pub('t/node/a/n1/lease', 'lease-1b');
    assert.deepEqual([...await retainedSeen(url, ['t/net/a/config', 't/node/a/n1/lease', 't/node/a/n9/lease'])].sort(), [['t/net/a/config', 'config-1'], ['t/node/a/n1/lease', 'lease-1b']]);
    assert.deepEqual([...await retainedSeen(url, ['t/node/a/+/lease'])].sort(), [['t/node/a/n1/lease', 'lease-1b'], ['t/node/a/n2/lease', 'lease-2']]);
    await pub('t/node/a/n2/lease', '');
    assert.deepEqual([...await retainedSeen(url, ['t/node/a/n2/lease'])], []);
    assert.deepEqual([...await retainedSeen(url, ['t/#'])].map(([t]) => t).sort(), ['t/net/a/config', 't/node/a/n1/lease']);
  } finally {
    await new Promise<void>((r) => broker.close(() => r()));
    server.close();
  }
});
