// The Pub/Sub push stand-in against a plain endpoint on loopback: what it
// sends, and that it is as unforgiving as Pub/Sub about the answer (a 2xx of
// Google's list within the ack deadline, or the message comes again, and
// again, until it is dead-lettered).
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FakePushSubscription } from '../fakes/pubsub-push.js';
import { waitFor } from '../helpers/procs.js';

// Bounded for a hang only: a message never settled.
describe('Pub/Sub push stand-in', { timeout: 120_000 }, () => {
  let answer: (req: IncomingMessage, body: string, res: ServerResponse) => void;
  const received: { body: Record<string, unknown>; headers: IncomingMessage['headers'] }[] = [];
  let server: Server;
  let endpoint: { url: string };
  let sub: FakePushSubscription | undefined;
  const SUBSCRIPTION = 'projects/my-project/subscriptions/twill';

  before(async () => {
    server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString('utf8')));
      req.on('end', () => {
        received.push({ body: JSON.parse(body) as Record<string, unknown>, headers: req.headers });
        answer(req, body, res);
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    endpoint = { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
  });
  afterEach(() => {
    sub?.close();
    received.length = 0;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  test('a 2xx from the list acknowledges on the first delivery: the documented body and the token', async () => {
    answer = (_req, _body, res) => res.writeHead(204).end();
    sub = new FakePushSubscription({ endpoint: `${endpoint.url}/gce`, subscription: SUBSCRIPTION, token: async () => 'a-google-token' });
    const id = sub.publish('{"protoPayload":{}}', { logging: 'yes' });
    assert.equal(await sub.settled(id), 'acked');
    assert.deepEqual(sub.deliveriesOf(id), [{ messageId: id, attempt: 1, result: 204, acked: true }]);
    const { body, headers } = received[0]!;
    const message = body.message as Record<string, unknown>;
    assert.equal(Buffer.from(String(message.data), 'base64').toString(), '{"protoPayload":{}}');
    assert.deepEqual([message.messageId, message.message_id, message.attributes], [id, id, { logging: 'yes' }]);
    assert.equal(body.subscription, SUBSCRIPTION);
    assert.equal(body.deliveryAttempt, undefined, 'only with a dead-letter policy');
    assert.equal(headers.authorization, 'Bearer a-google-token');
  });

  test('any other status is a nack: delivered again after the push backoff, until acknowledged', async () => {
    const statuses = [500, 429, 302, 200];
    answer = (_req, _body, res) => res.writeHead(statuses.shift()!).end();
    sub = new FakePushSubscription({ endpoint: endpoint.url, subscription: SUBSCRIPTION });
    const id = sub.publish('x');
    assert.equal(await sub.settled(id), 'acked');
    assert.deepEqual(sub.deliveriesOf(id).map((d) => [d.attempt, d.result, d.acked]), [[1, 500, false], [2, 429, false], [3, 302, false], [4, 200, true]]);
  });

  test('no answer within the ack deadline is a nack too: redelivered while the first is still running, then dead-lettered after maxDeliveryAttempts', async () => {
    const open: ServerResponse[] = [];
    answer = (_req, _body, res) => { open.push(res); }; // never answered
    // 1 simulated second = 5 ms: the 10 s deadline and the backoffs pass quickly.
    sub = new FakePushSubscription({ endpoint: endpoint.url, subscription: SUBSCRIPTION, secondMs: 5, deadLetterPolicy: { deadLetterTopic: 'projects/my-project/topics/dead', maxDeliveryAttempts: 5 } });
    const id = sub.publish('slow');
    assert.equal(await sub.settled(id), 'dead-lettered');
    // The stand-in settles at the fifth push's deadline; the endpoint reads that
    // push on a later turn of the event loop than the one this test resumes on
    // (on a busy machine, several turns later).
    await waitFor('the endpoint has read all five pushes', () => received.length >= 5);
    assert.deepEqual(sub.deliveriesOf(id).map((d) => [d.attempt, d.result]), [[1, 'deadline'], [2, 'deadline'], [3, 'deadline'], [4, 'deadline'], [5, 'deadline']]);
    assert.deepEqual(received.map((r) => r.body.deliveryAttempt), [1, 2, 3, 4, 5], 'the attempt number rides along with a dead-letter policy');
    assert.deepEqual(sub.deadLettered, [{ messageId: id, data: Buffer.from('slow').toString('base64'), attempts: 5 }]);
    assert.equal(open.length, 5, 'each redelivery came while the endpoint still held the earlier ones: duplicates run at once');
  });

  test("settings outside Pub/Sub's ranges are refused", () => {
    assert.throws(() => new FakePushSubscription({ endpoint: endpoint.url, subscription: SUBSCRIPTION, ackDeadlineSeconds: 5 }), /ackDeadlineSeconds 5 must be from 10 to 600/);
    assert.throws(() => new FakePushSubscription({ endpoint: endpoint.url, subscription: SUBSCRIPTION, deadLetterPolicy: { deadLetterTopic: 't', maxDeliveryAttempts: 4 } }), /maxDeliveryAttempts 4 must be from 5 to 100/);
  });
});
