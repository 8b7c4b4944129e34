// How the agent's config file becomes its broker connection: unchanged for
// any MQTT broker, and for AWS IoT Core with a custom authorizer, the
// authorizer's name in the username (and WebSocket URL), ALPN "mqtt" on 443,
// SNI, and refusals for what IoT Core would never accept.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { agentOptions } from '../../agent/config.js';
import { brokerConnection } from '../../agent/connect.js';
import { silentLogger } from '../../core/log.js';

const ENDPOINT = 'a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com';
const creds = { username: 'edge-1', password: 'secret-password' };

describe('broker connection', () => {
  test('any other broker: the URL and credentials pass through untouched', () => {
    for (const broker of ['mqtt://127.0.0.1:1883', 'mqtts://mosquitto.example:8883', 'ws://broker.example:8080/mqtt', 'wss://emqx.example/mqtt']) {
      const c = brokerConnection({ broker, ...creds }, { clientId: 'twill-net-edge-1', keepalive: 30 });
      assert.equal(c.url, broker);
      assert.deepEqual(c.options, { clientId: 'twill-net-edge-1', keepalive: 30, ...creds });
    }
  });

  test('IoT Core over TLS: port 443, ALPN mqtt, SNI, the authorizer in the username', () => {
    const c = brokerConnection({ broker: `mqtts://${ENDPOINT}`, ...creds, authorizer: 'twill-prod-Authorizer' }, { clientId: 'twill-net-edge-1' });
    assert.equal(c.url, `mqtts://${ENDPOINT}:443`);
    assert.deepEqual(c.options, {
      clientId: 'twill-net-edge-1',
      username: 'edge-1?x-amz-customauthorizer-name=twill-prod-Authorizer',
      password: 'secret-password',
      servername: ENDPOINT,
      ALPNProtocols: ['mqtt'],
    });
    // A port given is kept (an endpoint with a domain configuration may serve another).
    assert.equal(brokerConnection({ broker: `mqtts://${ENDPOINT}:8883`, ...creds, authorizer: 'a' }).url, `mqtts://${ENDPOINT}:8883`);
  });

  test('IoT Core over WebSocket: /mqtt on 443, the authorizer in the URL and the username', () => {
    for (const broker of [`wss://${ENDPOINT}`, `wss://${ENDPOINT}/mqtt`, `wss://${ENDPOINT}:443/mqtt`]) {
      const c = brokerConnection({ broker, ...creds, authorizer: 'twill-prod-Authorizer' });
      assert.equal(c.url, `wss://${ENDPOINT}/mqtt?x-amz-customauthorizer-name=twill-prod-Authorizer`, broker);
      assert.equal(c.options.username, 'edge-1?x-amz-customauthorizer-name=twill-prod-Authorizer');
      assert.equal(c.options.servername, ENDPOINT);
      assert.equal(c.options.ALPNProtocols, undefined);
    }
  });

  test('what IoT Core would refuse is refused before connecting, with what to do', () => {
    const refuse = (opts: Parameters<typeof brokerConnection>[0], re: RegExp) =>
      assert.throws(() => brokerConnection(opts), (e: Error) => re.test(e.message), `expected ${re}`);
    refuse({ broker: `mqtt://${ENDPOINT}:1883`, ...creds, authorizer: 'a' }, /must use mqtts:\/\/ENDPOINT:443 or wss:\/\/ENDPOINT\/mqtt/);
    refuse({ broker: `ws://${ENDPOINT}/mqtt`, ...creds, authorizer: 'a' }, /only takes custom-authorized connections over TLS/);
    refuse({ broker: `wss://${ENDPOINT}/mqtt`, username: 'edge-1', authorizer: 'a' }, /needs the node's username and password/);
    refuse({ broker: `wss://${ENDPOINT}/mqtt`, username: 'edge-1?x-amz-customauthorizer-name=b', password: 'p', authorizer: 'a' }, /must be the bare node name/);
    refuse({ broker: `wss://${ENDPOINT}/mqtt`, ...creds, authorizer: 'has spaces' }, /is not an IoT authorizer name/);
    refuse({ broker: 'not a url', ...creds }, /is not a URL/);
    refuse({ broker: 'http://broker.example', ...creds }, /has scheme http: use mqtt, mqtts, ws or wss/);
  });

  test("the agent's config file takes the authorizer, and a flag overrides it", () => {
    const file = { broker: `wss://${ENDPOINT}/mqtt`, network: 'edge', node: 'edge-1', ...creds, prefix: 'twill/prod', authorizer: 'twill-prod-Authorizer' };
    assert.equal(agentOptions(file, {}, silentLogger).authorizer, 'twill-prod-Authorizer');
    assert.equal(agentOptions(file, { authorizer: 'other' }, silentLogger).authorizer, 'other');
    assert.throws(() => agentOptions({ ...file, broker: `mqtt://${ENDPOINT}` }, {}, silentLogger), /must use mqtts/);
  });
});

describe('agent config: the node API poll', () => {
  const file = { broker: 'mqtt://127.0.0.1:1883', network: 'net', node: 'n1' };
  test('every 15 minutes by default; the file or --poll-interval sets it; shorter than 30 s is refused, saying why', () => {
    assert.equal(agentOptions(file, {}, silentLogger).pollMs, 900_000);
    assert.equal(agentOptions({ ...file, pollInterval: '30m' }, {}, silentLogger).pollMs, 1_800_000);
    assert.equal(agentOptions({ ...file, pollInterval: '30m' }, { pollInterval: '1h' }, silentLogger).pollMs, 3_600_000);
    assert.throws(() => agentOptions(file, { pollInterval: '10s' }, silentLogger), /poll interval 10s is too short: at least 30s/);
    assert.throws(() => agentOptions(file, { pollInterval: 'often' }, silentLogger), /poll interval/);
  });
});
