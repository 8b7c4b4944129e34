// A small Amazon SQS endpoint speaking the protocol the current
// @aws-sdk/client-sqs speaks: AWS JSON 1.0 (POST /, X-Amz-Target
// AmazonSQS.<Action>, Content-Type application/x-amz-json-1.0), SigV4-signed
// requests only, errors as "Interpreting Amazon SQS JSON API responses"
// (SQS developer guide) shows them: a `__type` and `message` in the body and
// the legacy query code in `x-amzn-query-error: <code>;Sender`, which the SDK
// turns into its modelled exceptions (QueueDoesNotExist, ...).
//
// Standard queues only, with what twill and Lambda's SQS poller use:
// CreateQueue, GetQueueUrl, GetQueueAttributes, SendMessage, ReceiveMessage
// (long polling), DeleteMessage, DeleteMessageBatch. The rules enforced, from
// the SQS API reference and the quotas pages:
//   - a message body is 1 character at least and at most the queue's
//     MaximumMessageSize (1,024 to 1,048,576 bytes; default 262,144 here,
//     the lower of the defaults AWS has documented), else
//     InvalidParameterValue "Message must be shorter than N bytes";
//   - only #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF
//     in a body, else InvalidMessageContents;
//   - ReceiveMessage: MaxNumberOfMessages 1 to 10, WaitTimeSeconds 0 to 20,
//     VisibilityTimeout 0 to 43,200; a received message is invisible for the
//     visibility timeout and comes back after it unless deleted; each receive
//     gets a new receipt handle, and a delete with an older one succeeds but
//     deletes nothing ("you must provide the most recently received receipt
//     handle");
//   - a RedrivePolicy moves a message to its dead-letter queue once its
//     receive count has reached maxReceiveCount (1 to 1,000) and it is
//     received again;
//   - messages older than MessageRetentionPeriod (60 s to 14 days) are gone;
//   - a batch has 1 to 10 entries with distinct ids of [A-Za-z0-9_-]{1,80}.
// Message attributes are not modelled: a request carrying them is refused
// rather than having them silently dropped.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { Iam } from './iam.js';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { SQSClientConfig } from '@aws-sdk/client-sqs';

export const SQS_MAX_MESSAGE_BYTES = 1_048_576;
const DEFAULT_MAX_MESSAGE_BYTES = 262_144;

export interface FakeQueueAttributes {
  VisibilityTimeout: number;
  MessageRetentionPeriod: number;
  MaximumMessageSize: number;
  ReceiveMessageWaitTimeSeconds: number;
  DelaySeconds: number;
  RedrivePolicy?: { deadLetterTargetArn: string; maxReceiveCount: number };
}

export interface FakeMessage {
  id: string;
  body: string;
  md5: string;
  sentAt: number;
  /** when it can next be received */
  visibleAt: number;
  receiveCount: number;
  firstReceiveAt?: number;
  /** the latest receipt handle: only it deletes the message */
  receipt?: string;
}

export interface FakeQueue {
  name: string;
  arn: string;
  url: string;
  attributes: FakeQueueAttributes;
  messages: FakeMessage[];
  createdAt: number;
}

export interface FakeSqs {
  endpoint: string;
  region: string;
  account: string;
  /** static fake credentials and this endpoint: a client made from it reaches nothing else */
  clientConfig: SQSClientConfig;
  readonly queues: Map<string, FakeQueue>;
  /** calls by action */
  readonly calls: Record<string, number>;
  /** Creates a queue as CreateQueue would; returns its URL. */
  createQueue(name: string, attributes?: Partial<FakeQueueAttributes>): string;
  /** Messages of a queue now: visible, in flight (received, not deleted) and delayed. */
  depth(name: string): { visible: number; inFlight: number; delayed: number };
  close(): Promise<void>;
}

class SqsError extends Error {
  constructor(readonly status: number, readonly shape: string, readonly queryCode: string, message: string) {
    super(message);
  }
}

const invalid = (message: string) => new SqsError(400, 'InvalidParameterValueException', 'InvalidParameterValue', message);
const missing = (name: string) => new SqsError(400, 'MissingRequiredParameterException', 'MissingParameter', `The request must contain the parameter ${name}.`);

/** Characters SQS accepts in a body (W3C XML Char production). */
const BAD_CHAR = /[^\x09\x0A\x0D\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u;
const QUEUE_NAME = /^[A-Za-z0-9_-]{1,80}$/;
const BATCH_ID = /^[A-Za-z0-9_-]{1,80}$/;
const MESSAGE_SYSTEM_ATTRIBUTES = ['ApproximateReceiveCount', 'ApproximateFirstReceiveTimestamp', 'SentTimestamp', 'SenderId'];
const SENDER_ID = 'AIDAIENQZJOLO23YVJ4VO';

const md5 = (s: string) => createHash('md5').update(s, 'utf8').digest('hex');

function intIn(value: unknown, name: string, min: number, max: number): number {
  const n = typeof value === 'string' && /^-?\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw invalid(`Value ${String(value)} for parameter ${name} is invalid. Reason: Must be an integer from ${min} to ${max}.`);
  }
  return n;
}

function parseAttributes(raw: Record<string, unknown> | undefined, queues: Map<string, FakeQueue>): FakeQueueAttributes {
  const a: FakeQueueAttributes = { VisibilityTimeout: 30, MessageRetentionPeriod: 345_600, MaximumMessageSize: DEFAULT_MAX_MESSAGE_BYTES, ReceiveMessageWaitTimeSeconds: 0, DelaySeconds: 0 };
  for (const [k, v] of Object.entries(raw ?? {})) {
    switch (k) {
      case 'VisibilityTimeout': a.VisibilityTimeout = intIn(v, k, 0, 43_200); break;
      case 'MessageRetentionPeriod': a.MessageRetentionPeriod = intIn(v, k, 60, 1_209_600); break;
      case 'MaximumMessageSize': a.MaximumMessageSize = intIn(v, k, 1024, SQS_MAX_MESSAGE_BYTES); break;
      case 'ReceiveMessageWaitTimeSeconds': a.ReceiveMessageWaitTimeSeconds = intIn(v, k, 0, 20); break;
      case 'DelaySeconds': a.DelaySeconds = intIn(v, k, 0, 900); break;
      case 'RedrivePolicy': {
        let p: { deadLetterTargetArn?: unknown; maxReceiveCount?: unknown };
        try {
          p = JSON.parse(String(v)) as typeof p;
        } catch {
          throw new SqsError(400, 'InvalidAttributeValue', 'InvalidAttributeValue', 'Invalid value for the parameter RedrivePolicy. Reason: Redrive policy is not a valid JSON map.');
        }
        const target = [...queues.values()].find((q) => q.arn === p.deadLetterTargetArn);
        if (!target) throw new SqsError(400, 'InvalidAttributeValue', 'InvalidAttributeValue', `Value ${String(v)} for parameter RedrivePolicy is invalid. Reason: Dead letter target does not exist.`);
        a.RedrivePolicy = { deadLetterTargetArn: target.arn, maxReceiveCount: intIn(p.maxReceiveCount, 'RedrivePolicy.maxReceiveCount', 1, 1000) };
        break;
      }
      default:
        throw new SqsError(400, 'InvalidAttributeName', 'InvalidAttributeName', `Unknown Attribute ${k}.`);
    }
  }
  return a;
}

function attributeStrings(q: FakeQueue, now: number): Record<string, string> {
  const { RedrivePolicy, ...plain } = q.attributes;
  const d = depthOf(q, now);
  return {
    ...Object.fromEntries(Object.entries(plain).map(([k, v]) => [k, String(v)])),
    ...(RedrivePolicy ? { RedrivePolicy: JSON.stringify(RedrivePolicy) } : {}),
    QueueArn: q.arn,
    CreatedTimestamp: String(Math.floor(q.createdAt / 1000)),
    ApproximateNumberOfMessages: String(d.visible),
    ApproximateNumberOfMessagesNotVisible: String(d.inFlight),
    ApproximateNumberOfMessagesDelayed: String(d.delayed),
  };
}

function depthOf(q: FakeQueue, now: number): { visible: number; inFlight: number; delayed: number } {
  let visible = 0;
  let inFlight = 0;
  let delayed = 0;
  for (const m of q.messages) {
    if (m.visibleAt <= now) visible++;
    else if (m.receiveCount > 0) inFlight++;
    else delayed++;
  }
  return { visible, inFlight, delayed };
}

export async function startFakeSqs(opts: { region?: string; account?: string; iam?: Iam } = {}): Promise<FakeSqs> {
  const iam = opts.iam ?? new Iam();
  const region = opts.region ?? 'us-east-1';
  const account = opts.account ?? '123456789012';
  const queues = new Map<string, FakeQueue>();
  const calls: Record<string, number> = {};
  let endpoint = '';
  let closed = false;

  const create = (name: string, raw?: Record<string, unknown>): string => {
    if (!QUEUE_NAME.test(name)) {
      throw invalid(`Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length${name.endsWith('.fifo') ? ' (FIFO queues are not modelled here)' : ''}`);
    }
    const attributes = parseAttributes(raw, queues);
    const existing = queues.get(name);
    if (existing) {
      if (JSON.stringify(existing.attributes) !== JSON.stringify(attributes)) {
        throw new SqsError(400, 'QueueNameExists', 'QueueAlreadyExists', 'A queue already exists with the same name and a different value for attribute(s).');
      }
      return existing.url;
    }
    const q: FakeQueue = { name, arn: `arn:aws:sqs:${region}:${account}:${name}`, url: `${endpoint}/${account}/${name}`, attributes, messages: [], createdAt: Date.now() };
    queues.set(name, q);
    return q.url;
  };

  const queueOf = (url: unknown): FakeQueue => {
    if (typeof url !== 'string' || !url) throw missing('QueueUrl');
    let path: string;
    try {
      path = new URL(url).pathname;
    } catch {
      throw new SqsError(404, 'InvalidAddress', 'InvalidAddress', `The address ${url} is not valid for this endpoint.`);
    }
    const [, acct, name] = path.split('/');
    const q = acct === account && name ? queues.get(name) : undefined;
    if (!q) throw new SqsError(400, 'QueueDoesNotExist', 'AWS.SimpleQueueService.NonExistentQueue', 'The specified queue does not exist.');
    return q;
  };

  /** Drops the messages older than the retention period. */
  const sweep = (q: FakeQueue, now: number) => {
    q.messages = q.messages.filter((m) => now - m.sentAt < q.attributes.MessageRetentionPeriod * 1000);
  };

  const receipt = (q: FakeQueue, m: FakeMessage) => Buffer.from(`${q.name}\u0000${m.id}\u0000${randomBytes(24).toString('base64')}`).toString('base64');

  const receiveNow = (q: FakeQueue, max: number, visibility: number, names: Set<string>): object[] => {
    const now = Date.now();
    sweep(q, now);
    const out: object[] = [];
    for (const m of [...q.messages]) {
      if (out.length >= max) break;
      if (m.visibleAt > now) continue;
      const redrive = q.attributes.RedrivePolicy;
      if (redrive && m.receiveCount >= redrive.maxReceiveCount) {
        const dlq = [...queues.values()].find((x) => x.arn === redrive.deadLetterTargetArn);
        q.messages.splice(q.messages.indexOf(m), 1);
        // The dead-letter queue keeps the message id and body; it is new there.
        dlq?.messages.push({ ...m, visibleAt: now, receiveCount: 0, firstReceiveAt: undefined, receipt: undefined });
        continue;
      }
      m.receiveCount++;
      m.firstReceiveAt ??= now;
      m.visibleAt = now + visibility * 1000;
      m.receipt = receipt(q, m);
      const all = names.has('All');
      const attrs: Record<string, string> = {};
      if (all || names.has('ApproximateReceiveCount')) attrs.ApproximateReceiveCount = String(m.receiveCount);
      if (all || names.has('SentTimestamp')) attrs.SentTimestamp = String(m.sentAt);
      if (all || names.has('SenderId')) attrs.SenderId = SENDER_ID;
      if (all || names.has('ApproximateFirstReceiveTimestamp')) attrs.ApproximateFirstReceiveTimestamp = String(m.firstReceiveAt);
      out.push({ MessageId: m.id, ReceiptHandle: m.receipt, MD5OfBody: m.md5, Body: m.body, ...(Object.keys(attrs).length ? { Attributes: attrs } : {}) });
    }
    return out;
  };

  const checkHandle = (handle: unknown): { name: string; id: string } => {
    if (typeof handle !== 'string' || !handle) throw missing('ReceiptHandle');
    const parts = Buffer.from(handle, 'base64').toString('utf8').split('\u0000');
    if (parts.length !== 3 || !parts[0] || !parts[1]) throw new SqsError(400, 'ReceiptHandleIsInvalid', 'ReceiptHandleIsInvalid', `The input receipt handle "${handle.slice(0, 64)}" is not a valid receipt handle.`);
    return { name: parts[0], id: parts[1] };
  };

  const deleteOne = (q: FakeQueue, handle: unknown) => {
    const { name, id } = checkHandle(handle);
    if (name !== q.name) throw new SqsError(400, 'ReceiptHandleIsInvalid', 'ReceiptHandleIsInvalid', 'The receipt handle is for another queue.');
    const i = q.messages.findIndex((m) => m.id === id && m.receipt === handle);
    // A stale handle (the message was received again since) or a message already deleted: success, nothing deleted.
    if (i >= 0) q.messages.splice(i, 1);
  };

  async function act(action: string, input: Record<string, unknown>, req: IncomingMessage): Promise<object> {
    switch (action) {
      case 'CreateQueue': {
        if (typeof input.QueueName !== 'string') throw missing('QueueName');
        return { QueueUrl: create(input.QueueName, input.Attributes as Record<string, unknown> | undefined) };
      }
      case 'GetQueueUrl': {
        const q = typeof input.QueueName === 'string' ? queues.get(input.QueueName) : undefined;
        if (!q) throw new SqsError(400, 'QueueDoesNotExist', 'AWS.SimpleQueueService.NonExistentQueue', 'The specified queue does not exist.');
        return { QueueUrl: q.url };
      }
      case 'GetQueueAttributes': {
        const q = queueOf(input.QueueUrl);
        const names = (input.AttributeNames as string[] | undefined) ?? [];
        const all = attributeStrings(q, Date.now());
        if (names.includes('All')) return { Attributes: all };
        for (const n of names) if (!(n in all) && n !== 'RedrivePolicy') throw new SqsError(400, 'InvalidAttributeName', 'InvalidAttributeName', `Unknown Attribute ${n}.`);
        return { Attributes: Object.fromEntries(names.filter((n) => n in all).map((n) => [n, all[n] as string])) };
      }
      case 'SendMessage': {
        const q = queueOf(input.QueueUrl);
        const body = input.MessageBody;
        if (typeof body !== 'string') throw missing('MessageBody');
        if (body.length === 0) throw invalid('The request must contain the parameter MessageBody.');
        if (input.MessageAttributes !== undefined || input.MessageSystemAttributes !== undefined) {
          throw invalid('message attributes are not modelled by this stand-in: send the body alone');
        }
        const bytes = Buffer.byteLength(body, 'utf8');
        if (bytes > q.attributes.MaximumMessageSize) throw invalid(`One or more parameters are invalid. Reason: Message must be shorter than ${q.attributes.MaximumMessageSize} bytes.`);
        const bad = BAD_CHAR.exec(body);
        if (bad) {
          throw new SqsError(400, 'InvalidMessageContents', 'InvalidMessageContents', `Invalid binary character '#x${bad[0].codePointAt(0)!.toString(16).toUpperCase()}' was found in the message body, the set of allowed characters is #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF`);
        }
        const delay = input.DelaySeconds === undefined ? q.attributes.DelaySeconds : intIn(input.DelaySeconds, 'DelaySeconds', 0, 900);
        const now = Date.now();
        const m: FakeMessage = { id: randomUUID(), body, md5: md5(body), sentAt: now, visibleAt: now + delay * 1000, receiveCount: 0 };
        q.messages.push(m);
        return { MessageId: m.id, MD5OfMessageBody: m.md5 };
      }
      case 'ReceiveMessage': {
        const q = queueOf(input.QueueUrl);
        const max = input.MaxNumberOfMessages === undefined ? 1 : intIn(input.MaxNumberOfMessages, 'MaxNumberOfMessages', 1, 10);
        const visibility = input.VisibilityTimeout === undefined ? q.attributes.VisibilityTimeout : intIn(input.VisibilityTimeout, 'VisibilityTimeout', 0, 43_200);
        const wait = input.WaitTimeSeconds === undefined ? q.attributes.ReceiveMessageWaitTimeSeconds : intIn(input.WaitTimeSeconds, 'WaitTimeSeconds', 0, 20);
        if (input.MessageAttributeNames !== undefined && (input.MessageAttributeNames as unknown[]).length) throw invalid('message attributes are not modelled by this stand-in');
        const names = new Set([...((input.AttributeNames as string[] | undefined) ?? []), ...((input.MessageSystemAttributeNames as string[] | undefined) ?? [])]);
        for (const n of names) if (n !== 'All' && !MESSAGE_SYSTEM_ATTRIBUTES.includes(n)) throw new SqsError(400, 'InvalidAttributeName', 'InvalidAttributeName', `Unknown Attribute ${n}.`);
        // Long polling: answer as soon as a message is there, or when the wait is over.
        const end = Date.now() + wait * 1000;
        for (;;) {
          const got = receiveNow(q, max, visibility, names);
          if (got.length || Date.now() >= end || closed || req.socket.destroyed) return { Messages: got };
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      case 'DeleteMessage': {
        deleteOne(queueOf(input.QueueUrl), input.ReceiptHandle);
        return {};
      }
      case 'DeleteMessageBatch': {
        const q = queueOf(input.QueueUrl);
        const entries = (input.Entries as { Id?: unknown; ReceiptHandle?: unknown }[] | undefined) ?? [];
        if (entries.length === 0) throw new SqsError(400, 'EmptyBatchRequest', 'AWS.SimpleQueueService.EmptyBatchRequest', 'There should be at least one DeleteMessageBatchRequestEntry in the request.');
        if (entries.length > 10) throw new SqsError(400, 'TooManyEntriesInBatchRequest', 'AWS.SimpleQueueService.TooManyEntriesInBatchRequest', `Maximum number of entries per request are 10. You have sent ${entries.length}.`);
        for (const e of entries) {
          if (typeof e.Id !== 'string' || !BATCH_ID.test(e.Id)) throw new SqsError(400, 'InvalidBatchEntryId', 'AWS.SimpleQueueService.InvalidBatchEntryId', 'A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.');
        }
        if (new Set(entries.map((e) => e.Id)).size !== entries.length) throw new SqsError(400, 'BatchEntryIdsNotDistinct', 'AWS.SimpleQueueService.BatchEntryIdsNotDistinct', 'Id entries must be distinct.');
        const Successful: { Id: string }[] = [];
        const Failed: { Id: string; SenderFault: boolean; Code: string; Message: string }[] = [];
        for (const e of entries) {
          try {
            deleteOne(q, e.ReceiptHandle);
            Successful.push({ Id: e.Id as string });
          } catch (err) {
            if (!(err instanceof SqsError)) throw err;
            Failed.push({ Id: e.Id as string, SenderFault: true, Code: err.queryCode, Message: err.message });
          }
        }
        return { Successful, Failed };
      }
      default:
        throw new SqsError(400, 'UnknownOperationException', 'UnknownOperation', `${action} is not an operation of this stand-in`);
    }
  }

  const send = (res: ServerResponse, status: number, body: object, headers: Record<string, string> = {}) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0', 'x-amzn-requestid': randomUUID(), 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  };
  const fail = (res: ServerResponse, e: SqsError) =>
    send(res, e.status, { __type: `com.amazonaws.sqs#${e.shape}`, message: e.message }, { 'x-amzn-query-error': `${e.queryCode};Sender` });

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const target = String(req.headers['x-amz-target'] ?? '');
      const action = target.startsWith('AmazonSQS.') ? target.slice('AmazonSQS.'.length) : target;
      calls[action] = (calls[action] ?? 0) + 1;
      const auth = String(req.headers.authorization ?? '');
      const m = /^AWS4-HMAC-SHA256 Credential=[^/]+\/(\d{8})\/([a-z0-9-]+)\/sqs\/aws4_request, ?SignedHeaders=[a-z0-9;-]+, ?Signature=[0-9a-f]{64}$/.exec(auth);
      if (!m) return fail(res, new SqsError(403, 'MissingAuthenticationTokenException', 'MissingAuthenticationToken', 'Request is missing Authentication Token or is not signed with SigV4 for sqs'));
      if (m[2] !== region) return fail(res, new SqsError(403, 'InvalidSignatureException', 'SignatureDoesNotMatch', `Credential should be scoped to a valid region, not '${m[2]}'.`));
      const amzDate = String(req.headers['x-amz-date'] ?? '');
      const at = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/.exec(amzDate);
      if (!at || Math.abs(Date.UTC(+at[1]!, +at[2]! - 1, +at[3]!, +at[4]!, +at[5]!, +at[6]!) - Date.now()) > 15 * 60_000) {
        return fail(res, new SqsError(403, 'InvalidSignatureException', 'SignatureDoesNotMatch', `Signature expired or X-Amz-Date missing: ${amzDate || 'none'}`));
      }
      if (req.method !== 'POST' || !target.startsWith('AmazonSQS.')) {
        return fail(res, new SqsError(400, 'UnknownOperationException', 'UnknownOperation', `expected POST with X-Amz-Target AmazonSQS.<Action>, got ${req.method} ${target || 'no target'}`));
      }
      let input: Record<string, unknown>;
      try {
        input = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
      } catch {
        return fail(res, new SqsError(400, 'SerializationException', 'SerializationException', 'the request body is not JSON'));
      }
      // IAM (test/fakes/iam.ts): sqs:<Action> on the queue's ARN, "*" for the
      // calls that name no queue (ListQueues); "Actions, resources, and
      // condition keys for Amazon SQS", Service Authorization Reference.
      // The queue a URL names, whether or not it exists: IAM decides first, then SQS says it does not exist.
      let fromUrl: string | undefined;
      try {
        fromUrl = typeof input.QueueUrl === 'string' ? new URL(input.QueueUrl).pathname.split('/').filter(Boolean).pop() : undefined;
      } catch { /* a malformed URL: refused later, for what it is */ }
      const queueName = typeof input.QueueName === 'string' ? input.QueueName : fromUrl;
      const refused = iam.authorize(req.headers.authorization, (sc) => [
        { action: `sqs:${action}`, resource: queueName ? `arn:${sc.partition}:sqs:${sc.region}:${sc.account}:${queueName}` : '*' },
      ]);
      if (refused) {
        return refused.kind === 'denied'
          ? fail(res, new SqsError(400, 'AccessDeniedException', 'AccessDenied', refused.message))
          : fail(res, new SqsError(403, 'InvalidClientTokenId', 'InvalidClientTokenId', refused.message));
      }
      act(action, input, req)
        .then((out) => send(res, 200, out))
        .catch((e: unknown) => {
          if (e instanceof SqsError) return fail(res, e);
          send(res, 500, { __type: 'com.amazonaws.sqs#InternalError', message: e instanceof Error ? e.message : String(e) });
        });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    endpoint,
    region,
    account,
    clientConfig: {
      endpoint,
      region,
      credentials: { accessKeyId: 'AKIAFAKEFAKEFAKEFAKE', secretAccessKey: 'fake-secret-for-local-tests-only' },
    },
    queues,
    calls,
    createQueue(name, attributes = {}) {
      const raw: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(attributes)) raw[k] = k === 'RedrivePolicy' ? JSON.stringify(v) : String(v);
      return create(name, raw);
    },
    depth(name) {
      const q = queues.get(name);
      if (!q) throw new Error(`no queue ${name}`);
      return depthOf(q, Date.now());
    },
    async close() {
      closed = true;
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
