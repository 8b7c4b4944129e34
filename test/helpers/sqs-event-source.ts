// Lambda's SQS event source mapping, as the Lambda developer guide describes
// it ("Using Lambda with Amazon SQS", "Creating and configuring an Amazon
// SQS event source mapping", "Handling errors for an SQS event source"),
// polling a queue through the real SQS client (test/fakes/sqs.ts behind it):
//   - created only when the queue's visibility timeout is at least the
//     function's timeout (Lambda refuses the mapping otherwise), with a batch
//     size of 1 to 10,000 and more than 10 only with a batching window
//     (0 to 300 s);
//   - long polls (20 s) and invokes the function with up to batchSize
//     records in the documented event shape, gathering for the batching
//     window first when one is set;
//   - an invocation that throws or outlives the function's timeout deletes
//     nothing: every record comes back after the visibility timeout;
//   - with ReportBatchItemFailures, the records named in batchItemFailures
//     stay and the rest are deleted; a response naming an empty, null or
//     unknown itemIdentifier fails the whole batch; an empty or absent
//     response is full success;
//   - the queue's redrive policy (SQS's, not Lambda's) moves a record to the
//     dead-letter queue after maxReceiveCount receives.
// A timed-out invocation cannot be frozen here as Lambda freezes it: its
// promise is left to settle and its answer is ignored.
import { DeleteMessageBatchCommand, GetQueueAttributesCommand, ReceiveMessageCommand, SQSClient, type Message } from '@aws-sdk/client-sqs';
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from 'aws-lambda';

export interface EventSourceOptions {
  /** an SQS client config reaching the queue (the stand-in's clientConfig) */
  clientConfig: ConstructorParameters<typeof SQSClient>[0];
  queueUrl: string;
  queueArn: string;
  handler: (event: SQSEvent, context: Context) => Promise<SQSBatchResponse | void>;
  functionName?: string;
  /** the function's timeout, in seconds */
  timeoutSeconds: number;
  /** default 10 */
  batchSize?: number;
  /** MaximumBatchingWindowInSeconds; default 0 */
  batchingWindowSeconds?: number;
  /** FunctionResponseTypes: ReportBatchItemFailures; default true */
  reportBatchItemFailures?: boolean;
  /** concurrent pollers (each invokes one batch at a time); default 1 */
  pollers?: number;
}

export interface Invocation {
  records: { messageId: string; receiveCount: number; body: string }[];
  outcome: 'ok' | 'partial' | 'error' | 'timeout' | 'invalid-response';
  /** messageIds left on the queue to come back */
  retried: string[];
  error?: string;
}

export interface EventSource {
  readonly invocations: Invocation[];
  /** Resolves with the first invocation from index `from` on (default: the next to end) that satisfies the predicate. */
  next(pred: (i: Invocation) => boolean, from?: number): Promise<Invocation>;
  stop(): Promise<void>;
}

export async function startSqsEventSource(o: EventSourceOptions): Promise<EventSource> {
  const batchSize = o.batchSize ?? 10;
  const window = o.batchingWindowSeconds ?? 0;
  const report = o.reportBatchItemFailures ?? true;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) throw new Error(`InvalidParameterValueException: BatchSize ${batchSize} must be from 1 to 10000`);
  if (window < 0 || window > 300) throw new Error(`InvalidParameterValueException: MaximumBatchingWindowInSeconds ${window} must be from 0 to 300`);
  if (batchSize > 10 && window === 0) throw new Error('InvalidParameterValueException: Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10');
  const sqs = new SQSClient(o.clientConfig ?? {});
  const attrs = await sqs.send(new GetQueueAttributesCommand({ QueueUrl: o.queueUrl, AttributeNames: ['VisibilityTimeout'] }));
  const visibility = Number(attrs.Attributes?.VisibilityTimeout);
  if (!(visibility >= o.timeoutSeconds)) {
    sqs.destroy();
    throw new Error(`InvalidParameterValueException: Queue visibility timeout: ${visibility} seconds is less than Function timeout: ${o.timeoutSeconds} seconds`);
  }

  const invocations: Invocation[] = [];
  const waiters: { pred: (i: Invocation) => boolean; resolve: (i: Invocation) => void }[] = [];
  const record = (i: Invocation) => {
    invocations.push(i);
    for (const w of [...waiters]) if (w.pred(i)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(i); }
  };
  const abort = new AbortController();
  let running = true;
  const functionName = o.functionName ?? 'twill-test-InstanceEventsSubscriber';
  const region = String(o.queueArn.split(':')[3]);

  const toRecord = (m: Message): SQSRecord => ({
    messageId: m.MessageId!,
    receiptHandle: m.ReceiptHandle!,
    body: m.Body ?? '',
    attributes: {
      ApproximateReceiveCount: m.Attributes?.ApproximateReceiveCount ?? '1',
      SentTimestamp: m.Attributes?.SentTimestamp ?? '',
      SenderId: m.Attributes?.SenderId ?? '',
      ApproximateFirstReceiveTimestamp: m.Attributes?.ApproximateFirstReceiveTimestamp ?? '',
    },
    messageAttributes: {},
    md5OfBody: m.MD5OfBody ?? '',
    eventSource: 'aws:sqs',
    eventSourceARN: o.queueArn,
    awsRegion: region,
  });

  const receive = async (max: number, waitSeconds: number): Promise<Message[]> => {
    const r = await sqs.send(new ReceiveMessageCommand({ QueueUrl: o.queueUrl, MaxNumberOfMessages: Math.min(10, max), WaitTimeSeconds: waitSeconds, MessageSystemAttributeNames: ['All'] }), { abortSignal: abort.signal });
    return r.Messages ?? [];
  };

  const invoke = async (messages: Message[]): Promise<void> => {
    const records = messages.map(toRecord);
    const deadline = Date.now() + o.timeoutSeconds * 1000;
    const context = {
      callbackWaitsForEmptyEventLoop: false, functionName, functionVersion: '$LATEST',
      invokedFunctionArn: `arn:aws:lambda:${region}:${o.queueArn.split(':')[4]}:function:${functionName}`, memoryLimitInMB: '256',
      awsRequestId: crypto.randomUUID(), logGroupName: `/aws/lambda/${functionName}`, logStreamName: 'test',
      getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()), done: () => {}, fail: () => {}, succeed: () => {},
    } as Context;
    const ids = records.map((r) => r.messageId);
    const base = { records: records.map((r) => ({ messageId: r.messageId, receiveCount: Number(r.attributes.ApproximateReceiveCount), body: r.body })) };
    let timer: NodeJS.Timeout | undefined;
    let answer: SQSBatchResponse | void;
    try {
      answer = await Promise.race([
        o.handler({ Records: records }, context),
        new Promise<never>((_, reject) => { timer = setTimeout(() => reject(Object.assign(new Error('Task timed out'), { timedOut: true })), o.timeoutSeconds * 1000); }),
      ]);
    } catch (e) {
      const timedOut = (e as { timedOut?: boolean }).timedOut === true;
      return record({ ...base, outcome: timedOut ? 'timeout' : 'error', retried: ids, error: e instanceof Error ? e.message : String(e) });
    } finally {
      clearTimeout(timer);
    }
    let keep: string[] = [];
    if (report && answer && Array.isArray(answer.batchItemFailures)) {
      const named = answer.batchItemFailures.map((f) => f?.itemIdentifier);
      if (named.some((id) => typeof id !== 'string' || !id || !ids.includes(id))) {
        return record({ ...base, outcome: 'invalid-response', retried: ids, error: `batchItemFailures names ${JSON.stringify(named)}, not all messages of the batch` });
      }
      keep = named as string[];
    }
    const done = records.filter((r) => !keep.includes(r.messageId));
    for (let i = 0; i < done.length; i += 10) {
      const chunk = done.slice(i, i + 10);
      await sqs.send(new DeleteMessageBatchCommand({ QueueUrl: o.queueUrl, Entries: chunk.map((r, j) => ({ Id: `m${i + j}`, ReceiptHandle: r.receiptHandle })) }));
    }
    record({ ...base, outcome: keep.length ? 'partial' : 'ok', retried: keep });
  };

  const poll = async () => {
    while (running) {
      let batch: Message[] = [];
      try {
        batch = await receive(batchSize, 20);
        if (batch.length && window > 0) {
          const end = Date.now() + window * 1000;
          while (running && batch.length < batchSize && Date.now() < end) {
            batch.push(...(await receive(batchSize - batch.length, Math.min(20, Math.ceil((end - Date.now()) / 1000)))));
          }
        }
      } catch (e) {
        if (!running) return;
        await new Promise((r) => setTimeout(r, 100)); // a failed poll: Lambda backs off and polls again
        continue;
      }
      if (batch.length && running) await invoke(batch);
    }
  };
  const loops = Array.from({ length: o.pollers ?? 1 }, () => poll());

  return {
    invocations,
    next(pred, from = invocations.length) {
      const seen = invocations.slice(from).find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => waiters.push({ pred, resolve }));
    },
    async stop() {
      running = false;
      abort.abort();
      await Promise.allSettled(loops);
      sqs.destroy();
    },
  };
}
