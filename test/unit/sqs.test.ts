// The SQS stand-in through the real @aws-sdk/client-sqs, and Lambda's SQS
// event source mapping (test/helpers/sqs-event-source.ts) on top of it: what
// the instance-event path relies on (a record that fails comes back after the
// visibility timeout, alone, and reaches the dead-letter queue after
// maxReceiveCount receives), and the errors SQS answers when asked wrong.
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DeleteMessageBatchCommand, DeleteMessageCommand, EmptyBatchRequest, GetQueueAttributesCommand, InvalidMessageContents, QueueDoesNotExist,
  ReceiptHandleIsInvalid, ReceiveMessageCommand, SQSClient, SendMessageCommand, TooManyEntriesInBatchRequest,
} from '@aws-sdk/client-sqs';
import { startFakeSqs, type FakeSqs } from '../fakes/sqs.js';
import { startSqsEventSource, type EventSource } from '../helpers/sqs-event-source.js';

describe('SQS stand-in (real SDK)', () => {
  let sqs: FakeSqs;
  let client: SQSClient;
  let n = 0;
  const queue = (attrs = {}) => sqs.createQueue(`q-${++n}`, attrs);

  before(async () => {
    sqs = await startFakeSqs();
    client = new SQSClient(sqs.clientConfig);
  });
  after(async () => {
    client.destroy();
    await sqs.close();
  });

  test('send, receive (invisible meanwhile), delete; the body and its MD5 come back as sent', async () => {
    const url = queue({ VisibilityTimeout: 60 });
    const body = JSON.stringify({ message: { data: 'eyJ4IjoxfQ==' }, note: 'ünïcødé ✓' });
    const sent = await client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: body }));
    assert.ok(sent.MessageId);
    const r = await client.send(new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 10, MessageSystemAttributeNames: ['All'] }));
    assert.equal(r.Messages?.length, 1);
    const m = r.Messages![0]!;
    assert.equal(m.Body, body);
    assert.equal(m.Attributes?.ApproximateReceiveCount, '1');
    assert.deepEqual((await client.send(new ReceiveMessageCommand({ QueueUrl: url }))).Messages ?? [], [], 'in flight: not received twice');
    await client.send(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: m.ReceiptHandle }));
    assert.deepEqual(sqs.depth(url.split('/').pop()!), { visible: 0, inFlight: 0, delayed: 0 });
  });

  test('a message not deleted comes back after the visibility timeout with a new handle; the old handle deletes nothing', async () => {
    const url = queue({ VisibilityTimeout: 1 });
    await client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'again' }));
    const first = (await client.send(new ReceiveMessageCommand({ QueueUrl: url, MessageSystemAttributeNames: ['ApproximateReceiveCount'] }))).Messages![0]!;
    // Long polling: answered once the message is visible again, within the wait.
    const second = (await client.send(new ReceiveMessageCommand({ QueueUrl: url, WaitTimeSeconds: 5, MessageSystemAttributeNames: ['ApproximateReceiveCount'] }))).Messages![0]!;
    assert.equal(second.MessageId, first.MessageId);
    assert.equal(second.Attributes?.ApproximateReceiveCount, '2');
    assert.notEqual(second.ReceiptHandle, first.ReceiptHandle);
    await client.send(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: first.ReceiptHandle }));
    assert.equal(sqs.depth(url.split('/').pop()!).inFlight, 1, 'a stale handle succeeds but deletes nothing');
    await client.send(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: second.ReceiptHandle }));
    assert.equal(sqs.depth(url.split('/').pop()!).inFlight, 0);
  });

  test('a redrive policy moves a message to the dead-letter queue once received maxReceiveCount times', async () => {
    const dlq = queue();
    const dlqArn = sqs.queues.get(dlq.split('/').pop()!)!.arn;
    const url = queue({ VisibilityTimeout: 0, RedrivePolicy: { deadLetterTargetArn: dlqArn, maxReceiveCount: 2 } });
    const { MessageId } = await client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'poison' }));
    for (let i = 1; i <= 2; i++) assert.equal((await client.send(new ReceiveMessageCommand({ QueueUrl: url }))).Messages?.[0]?.MessageId, MessageId, `receive ${i}`);
    assert.deepEqual((await client.send(new ReceiveMessageCommand({ QueueUrl: url }))).Messages ?? [], []);
    const moved = (await client.send(new ReceiveMessageCommand({ QueueUrl: dlq }))).Messages ?? [];
    assert.deepEqual(moved.map((m) => [m.MessageId, m.Body]), [[MessageId, 'poison']]);
  });

  test("SQS's refusals, as the SDK's exceptions: size, characters, queue, handle, batch", async () => {
    const url = queue({ MaximumMessageSize: 1024 });
    await assert.rejects(client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'x'.repeat(1025) })), (e: Error) => {
      assert.equal(e.name, 'InvalidParameterValue');
      assert.match(e.message, /Message must be shorter than 1024 bytes/);
      return true;
    });
    await client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'x'.repeat(1024) }));
    await assert.rejects(client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'bad \u0001 char' })), (e) => e instanceof InvalidMessageContents && /#x1/.test(e.message));
    await assert.rejects(client.send(new SendMessageCommand({ QueueUrl: url.replace(/[^/]+$/, 'nope'), MessageBody: 'x' })), QueueDoesNotExist);
    await assert.rejects(client.send(new DeleteMessageCommand({ QueueUrl: url, ReceiptHandle: 'not-a-handle' })), ReceiptHandleIsInvalid);
    await assert.rejects(client.send(new DeleteMessageBatchCommand({ QueueUrl: url, Entries: [] })), EmptyBatchRequest);
    await assert.rejects(client.send(new DeleteMessageBatchCommand({ QueueUrl: url, Entries: Array.from({ length: 11 }, (_, i) => ({ Id: `e${i}`, ReceiptHandle: 'x' })) })), TooManyEntriesInBatchRequest);
    await assert.rejects(client.send(new ReceiveMessageCommand({ QueueUrl: url, MaxNumberOfMessages: 11 })), /MaxNumberOfMessages is invalid/);
    const r = await client.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['All'] }));
    assert.equal(r.Attributes?.MaximumMessageSize, '1024');
    assert.equal(r.Attributes?.ApproximateNumberOfMessages, '1', 'the refused sends left nothing');
  });

  test('the service maximum is 1 MiB, and an unsigned request is refused', async () => {
    const url = queue({ MaximumMessageSize: 1_048_576 });
    await client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: 'y'.repeat(1_048_576) }));
    assert.throws(() => sqs.createQueue('too-big', { MaximumMessageSize: 1_048_577 }), /MaximumMessageSize is invalid/);
    const res = await fetch(sqs.endpoint, { method: 'POST', headers: { 'x-amz-target': 'AmazonSQS.SendMessage', 'content-type': 'application/x-amz-json-1.0' }, body: JSON.stringify({ QueueUrl: url, MessageBody: 'x' }) });
    assert.equal(res.status, 403);
    assert.match(res.headers.get('x-amzn-query-error') ?? '', /^MissingAuthenticationToken;Sender$/);
  });
});

// Bounded for a hang only: a record that never comes back.
describe("Lambda's SQS event source mapping (harness)", { timeout: 120_000 }, () => {
  let sqs: FakeSqs;
  let client: SQSClient;
  let es: EventSource | undefined;
  let n = 0;

  before(async () => {
    sqs = await startFakeSqs();
    client = new SQSClient(sqs.clientConfig);
  });
  afterEach(async () => {
    await es?.stop();
    es = undefined;
  });
  after(async () => {
    client.destroy();
    await sqs.close();
  });

  function queues(visibility: number, maxReceiveCount = 3) {
    const dlq = sqs.createQueue(`dlq-${++n}`);
    const dlqArn = sqs.queues.get(`dlq-${n}`)!.arn;
    const url = sqs.createQueue(`src-${n}`, { VisibilityTimeout: visibility, RedrivePolicy: { deadLetterTargetArn: dlqArn, maxReceiveCount } });
    return { url, arn: sqs.queues.get(`src-${n}`)!.arn, dlq, name: `src-${n}`, dlqName: `dlq-${n}` };
  }
  const send = (url: string, body: string) => client.send(new SendMessageCommand({ QueueUrl: url, MessageBody: body })).then((r) => r.MessageId!);

  test('refused when the queue hides a message for less than the function may run, or the batch settings are out of range', async () => {
    const q = queues(30);
    const handler = async () => {};
    await assert.rejects(startSqsEventSource({ clientConfig: sqs.clientConfig, queueUrl: q.url, queueArn: q.arn, handler, timeoutSeconds: 60 }), /Queue visibility timeout: 30 seconds is less than Function timeout: 60 seconds/);
    await assert.rejects(startSqsEventSource({ clientConfig: sqs.clientConfig, queueUrl: q.url, queueArn: q.arn, handler, timeoutSeconds: 30, batchSize: 11 }), /greater than 0 if maximum batch size is greater than 10/);
  });

  test('partial batch response: only the failed record comes back, after the visibility timeout, alone', async () => {
    // The window gathers the three into one batch; it is shorter than the visibility timeout, so none comes back into it.
    const q = queues(2);
    es = await startSqsEventSource({
      clientConfig: sqs.clientConfig, queueUrl: q.url, queueArn: q.arn, timeoutSeconds: 1, batchingWindowSeconds: 1,
      handler: async (event) => {
        return { batchItemFailures: event.Records.filter((r) => r.body === 'fails-once' && r.attributes.ApproximateReceiveCount === '1').map((r) => ({ itemIdentifier: r.messageId })) };
      },
    });
    const ids = [await send(q.url, 'ok-1'), await send(q.url, 'fails-once'), await send(q.url, 'ok-2')];
    const first = await es.next((i) => i.records.some((r) => r.body === 'fails-once'), 0);
    assert.equal(first.outcome, 'partial');
    assert.deepEqual(first.retried, [ids[1]]);
    const again = await es.next((i) => i.records.some((r) => r.body === 'fails-once' && r.receiveCount === 2), 0);
    assert.deepEqual(again.records.map((r) => r.body), ['fails-once'], 'the others were deleted');
    assert.equal(again.outcome, 'ok');
    assert.deepEqual(sqs.depth(q.name), { visible: 0, inFlight: 0, delayed: 0 });
  });

  test('a function that throws, or names a record not in its batch, leaves the whole batch; after maxReceiveCount it is dead-lettered', async () => {
    const q = queues(1, 2);
    let calls = 0;
    es = await startSqsEventSource({
      clientConfig: sqs.clientConfig, queueUrl: q.url, queueArn: q.arn, timeoutSeconds: 1,
      handler: async () => {
        if (++calls === 1) throw new Error('reconcile failed');
        return { batchItemFailures: [{ itemIdentifier: 'not-in-this-batch' }] };
      },
    });
    const id = await send(q.url, 'doomed');
    const thrown = await es.next(() => true, 0);
    assert.deepEqual([thrown.outcome, thrown.retried], ['error', [id]]);
    const invalid = await es.next((i) => i.outcome === 'invalid-response', 0);
    assert.deepEqual(invalid.retried, [id]);
    // Received twice (maxReceiveCount 2): the next receive moves it to the dead-letter queue.
    const dead = await client.send(new ReceiveMessageCommand({ QueueUrl: q.dlq, WaitTimeSeconds: 5 }));
    assert.deepEqual(dead.Messages?.map((m) => [m.MessageId, m.Body]), [[id, 'doomed']]);
    assert.equal(calls, 2);
  });

  test('an invocation past the function timeout counts as failed: its records come back', async () => {
    const q = queues(1);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let calls = 0;
    es = await startSqsEventSource({
      clientConfig: sqs.clientConfig, queueUrl: q.url, queueArn: q.arn, timeoutSeconds: 1,
      handler: async () => { if (++calls === 1) await held; },
    });
    const id = await send(q.url, 'slow');
    const timedOut = await es.next(() => true, 0);
    assert.deepEqual([timedOut.outcome, timedOut.retried], ['timeout', [id]]);
    release();
    const ok = await es.next((i) => i.outcome === 'ok', 0);
    assert.equal(ok.records[0]?.receiveCount, 2);
  });
});
