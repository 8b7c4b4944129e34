// DynamoDB for tests: dynalite in-process, plus the two operations dynalite
// 4.0.0 does not implement and the store needs: TransactWriteItems (dynalite
// answers UnknownOperationException; architect/dynalite#151) and
// UpdateTimeToLive / DescribeTimeToLive (accepted and reported, never acted
// on: real TTL deletion is lazy, and nothing may rely on it).
//
// How the transaction is made atomic: every request passes through a
// readers-writer lock in front of dynalite. Ordinary requests share it and run
// inside dynalite as they would without the front. A TransactWriteItems takes
// it exclusively, then applies its items one by one through dynalite's own
// PutItem/UpdateItem/DeleteItem (so dynalite evaluates every condition and
// update expression), keeping each item's old image; if any condition fails it
// puts the old images back and answers TransactionCanceledException with a
// CancellationReason per item, in order, as DynamoDB does. No other request
// runs meanwhile, so nobody sees a half-applied transaction. That is stricter
// than DynamoDB (whose Query may see part of a transaction), never looser.
//
// Fault injection: setTransactionConflictRate(p) cancels that share of
// transactions with a TransactionConflict reason, which real DynamoDB returns
// when two transactions touch one item at once and which dynalite, serialized
// here, would otherwise never produce.
//
// IAM (test/fakes/iam.ts), before anything else, as DynamoDB authorizes: the
// action is dynamodb:<Operation> on the table's ARN (a Query or Scan of an
// index on the index's), a batch is authorized per table as BatchGetItem or
// BatchWriteItem, a transaction item by item as PutItem, UpdateItem,
// DeleteItem, ConditionCheckItem or GetItem ("Using IAM with DynamoDB
// transactions"). A refusal is AccessDeniedException (HTTP 400) naming the
// caller, the action and the resource; an unknown access key is
// UnrecognizedClientException ("Error handling", DynamoDB developer guide).
//
// Throughput: every data-plane call is charged in read and write units to the
// partition key values (of the table and of its indexes) it touches, and a key
// past on-demand DynamoDB's per-partition rates is throttled as DynamoDB
// throttles it (test/fakes/dynamodb-throughput.ts, with the rules and where
// each is documented). A test may lower the rates (throughput.limits) to
// throttle on purpose; benches read what each key consumed (throughput.loads()).
import dynalite from 'dynalite';
import { Agent, createServer, request, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import {
  DeleteItemCommand,
  DescribeTableCommand,
  DynamoDBClient,
  PutItemCommand,
  UpdateItemCommand,
  type AttributeValue,
  type DynamoDBClientConfig,
  type TransactWriteItem,
} from '@aws-sdk/client-dynamodb';
import { Iam, type Call, type Scope } from './iam.js';
import { Meter, METERED, THROTTLE_MESSAGE, Throughput, type Forwarded, type ThroughputLimits } from './dynamodb-throughput.js';

type Item = Record<string, AttributeValue>;

/** Static fake credentials and a local endpoint: nothing here can reach AWS. */
export function localClientConfig(endpoint: string): DynamoDBClientConfig {
  return {
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIAFAKEFAKEFAKEFAKE', secretAccessKey: 'fake-secret-for-local-tests-only' },
    maxAttempts: 3,
  };
}

export interface FakeDynamo {
  endpoint: string;
  clientConfig: DynamoDBClientConfig;
  setTransactionConflictRate(p: number): void;
  readonly stats: { transactions: number; cancelled: number; injectedConflicts: number };
  /** TimeToLive settings per table, as UpdateTimeToLive left them. */
  readonly ttl: Map<string, string>;
  /** Units consumed and calls throttled per partition key value; limits may be lowered. */
  readonly throughput: Throughput;
  /** who may call what (the test's admin keys, unless the caller's IAM was given) */
  readonly iam: Iam;
  close(): Promise<void>;
}

export interface FakeDynamoOptions {
  /** who may call what (default: only the test's admin keys) */
  iam?: Iam;
  /** per-partition rates (on-demand DynamoDB's unless lowered) */
  throughput?: Partial<ThroughputLimits>;
  /**
   * The clock the rates run on, in milliseconds (the wall clock by default),
   * asked with each request's headers: a bench on simulated time stamps its
   * requests (bench/dynamo-storm.ts).
   */
  now?: (headers: IncomingHttpHeaders) => number;
}

/** FIFO readers-writer lock: a waiting transaction is not starved by a stream of reads. */
class RwLock {
  private readers = 0;
  private writer = false;
  private queue: { exclusive: boolean; grant: () => void }[] = [];

  acquire(exclusive: boolean): Promise<() => void> {
    return new Promise((resolve) => {
      this.queue.push({
        exclusive,
        grant: () => {
          let released = false;
          resolve(() => {
            if (released) return;
            released = true;
            if (exclusive) this.writer = false;
            else this.readers--;
            this.pump();
          });
        },
      });
      this.pump();
    });
  }

  private pump(): void {
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      if (head.exclusive) {
        if (this.writer || this.readers > 0) return;
        this.writer = true;
      } else {
        if (this.writer) return;
        this.readers++;
      }
      this.queue.shift();
      head.grant();
    }
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const validation = (message: string) => ({ __type: 'com.amazon.coral.validate#ValidationException', message });

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port));
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

const TRANSACT_ACTIONS: Record<string, string> = { Put: 'PutItem', Update: 'UpdateItem', Delete: 'DeleteItem', ConditionCheck: 'ConditionCheckItem', Get: 'GetItem' };

/** The calls IAM authorizes for one DynamoDB request (a body that is not JSON is refused later, for what it is). */
function dynamoCalls(op: string | undefined, text: string, s: Scope): Call[] {
  let body: { TableName?: string; IndexName?: string; RequestItems?: object; TransactItems?: Record<string, { TableName?: string }>[] };
  try {
    body = JSON.parse(text || '{}') as typeof body;
  } catch {
    return [];
  }
  const arn = (table = '') => (table.startsWith('arn:') ? table : `arn:${s.partition}:dynamodb:${s.region}:${s.account}:table/${table}`);
  if (!op) return [];
  if (op === 'ListTables') return [{ action: 'dynamodb:ListTables', resource: '*' }];
  if (op === 'BatchGetItem' || op === 'BatchWriteItem') return Object.keys(body.RequestItems ?? {}).map((t) => ({ action: `dynamodb:${op}`, resource: arn(t) }));
  if (op === 'TransactWriteItems' || op === 'TransactGetItems') {
    return (body.TransactItems ?? []).flatMap((item) => Object.entries(item).map(([kind, x]) => ({ action: `dynamodb:${TRANSACT_ACTIONS[kind] ?? kind}`, resource: arn(x?.TableName) })));
  }
  return [{ action: `dynamodb:${op}`, resource: arn(body.TableName) + (body.IndexName ? `/index/${body.IndexName}` : '') }];
}

/** Sends a call to dynalite over HTTP with the caller's headers (dynalite checks their form, not the signature). */
function forwarder(port: number, headers: () => IncomingHttpHeaders): (op: string, body: Record<string, unknown>) => Promise<Forwarded> {
  const agent = new Agent({ keepAlive: true });
  return (op, body) => new Promise((resolve, reject) => {
    const text = JSON.stringify(body);
    const r = request({
      host: '127.0.0.1', port, method: 'POST', path: '/', agent,
      headers: { ...headers(), 'x-amz-target': `DynamoDB_20120810.${op}`, 'content-type': 'application/x-amz-json-1.0', 'content-length': Buffer.byteLength(text) },
    }, (res) => {
      readBody(res).then((t) => resolve({ status: res.statusCode ?? 500, body: t ? (JSON.parse(t) as Record<string, unknown>) : {} }), reject);
    });
    r.once('error', reject);
    r.end(text);
  });
}

export async function startFakeDynamo(opts: FakeDynamoOptions = {}): Promise<FakeDynamo> {
  const iam = opts.iam ?? new Iam();
  // createTableMs 0: a test waits for ACTIVE like a deployment would, just not for long.
  const inner = dynalite({ createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 });
  const dynaliteHandler = inner.listeners('request')[0] as (req: IncomingMessage, res: ServerResponse) => void;
  const innerPort = await listen(inner);
  // The transaction's own steps go straight to dynalite, past the lock it holds.
  const direct = new DynamoDBClient({ ...localClientConfig(`http://127.0.0.1:${innerPort}`), maxAttempts: 1 });

  const lock = new RwLock();
  const stats = { transactions: 0, cancelled: 0, injectedConflicts: 0 };
  const now = opts.now ?? (() => Date.now());
  const throughput = new Throughput(() => now({}), opts.throughput);
  // The meter's own reads and writes go past it, with a signed request's headers of the fake's own.
  const signedHeaders = { authorization: 'AWS4-HMAC-SHA256 Credential=AKIAFAKEFAKEFAKEFAKE/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=0', 'x-amz-date': '20260101T000000Z' };
  const meter = new Meter({ throughput, direct, forward: forwarder(innerPort, () => signedHeaders), region: 'us-east-1', account: '123456789012' });
  const ttl = new Map<string, string>();
  const keySchemas = new Map<string, string[]>();
  let conflictRate = 0;

  async function keyNames(table: string): Promise<string[]> {
    let names = keySchemas.get(table);
    if (!names) {
      const d = await direct.send(new DescribeTableCommand({ TableName: table }));
      names = (d.Table?.KeySchema ?? []).map((k) => k.AttributeName!);
      keySchemas.set(table, names);
    }
    return names;
  }

  interface Step { table: string; key: Item; kind: 'put' | 'update' | 'delete' | 'check'; put?: Item; apply(): Promise<Item | undefined> }

  async function stepOf(t: TransactWriteItem): Promise<Step> {
    const ops = [t.Put, t.Update, t.Delete, t.ConditionCheck].filter(Boolean);
    if (ops.length !== 1) throw validation('TransactItems can only contain one of Check, Put, Update or Delete');
    if (t.Put) {
      const { ReturnValuesOnConditionCheckFailure: _r, ...put } = t.Put;
      const names = await keyNames(put.TableName!);
      const k = Object.fromEntries(names.map((n) => [n, put.Item![n]!]));
      return { table: put.TableName!, key: k, kind: 'put', put: put.Item, apply: async () => (await direct.send(new PutItemCommand({ ...put, ReturnValues: 'ALL_OLD' }))).Attributes };
    }
    if (t.Update) {
      const { ReturnValuesOnConditionCheckFailure: _r, ...upd } = t.Update;
      return { table: upd.TableName!, key: upd.Key!, kind: 'update', apply: async () => (await direct.send(new UpdateItemCommand({ ...upd, ReturnValues: 'ALL_OLD' }))).Attributes };
    }
    if (t.Delete) {
      const { ReturnValuesOnConditionCheckFailure: _r, ...del } = t.Delete;
      return { table: del.TableName!, key: del.Key!, kind: 'delete', apply: async () => (await direct.send(new DeleteItemCommand({ ...del, ReturnValues: 'ALL_OLD' }))).Attributes };
    }
    // A condition check is a no-op update carrying the condition; the
    // rollback below undoes the empty item it may create.
    const c = t.ConditionCheck!;
    return {
      table: c.TableName!,
      key: c.Key!,
      kind: 'check',
      apply: async () => (await direct.send(new UpdateItemCommand({
        TableName: c.TableName,
        Key: c.Key,
        ConditionExpression: c.ConditionExpression,
        ExpressionAttributeNames: { ...(c.ExpressionAttributeNames ?? {}), '#fakeProbe': 'fake_condition_probe' },
        ExpressionAttributeValues: c.ExpressionAttributeValues,
        UpdateExpression: 'REMOVE #fakeProbe',
        ReturnValues: 'ALL_OLD',
      }))).Attributes,
    };
  }

  async function transactWrite(body: { TransactItems?: TransactWriteItem[] }, at: number): Promise<{ status: number; body: unknown }> {
    const items = body.TransactItems ?? [];
    if (items.length < 1 || items.length > 100) return { status: 400, body: validation('TransactItems must have between 1 and 100 items') };
    let steps: Step[];
    try {
      steps = await Promise.all(items.map(stepOf));
    } catch (e) {
      return { status: 400, body: typeof e === 'object' && e && '__type' in e ? e : validation(String(e)) };
    }
    const seen = new Set<string>();
    for (const s of steps) {
      const id = `${s.table}\0${JSON.stringify(Object.entries(s.key).sort(([a], [b]) => a.localeCompare(b)))}`;
      if (seen.has(id)) return { status: 400, body: validation('Transaction request cannot include multiple operations on one item') };
      seen.add(id);
    }
    // Throughput: an item on a throttled key cancels the whole transaction, and
    // nothing is consumed. Transactional writes cost twice; a cancelled
    // transaction is charged as if it had run.
    const targets = throughput.paused ? [] : await Promise.all(steps.map((st) => meter.target(st.table, st.key)));
    const admitted = targets.map((t, i) => t && meter.admitWrite(t, steps[i]!.kind === 'put' ? steps[i]!.put : steps[i]!.kind === 'delete' ? undefined : t.old, 2, at));
    if (admitted.some((a) => a && 'refused' in a)) {
      for (const [i, a] of admitted.entries()) if (a && 'taken' in a) meter.settleWrite(targets[i]!, a.taken, 'none', undefined, 2, at);
      return { status: 400, body: cancelled(admitted.map((a) => (a && 'refused' in a ? { Code: 'ThrottlingError', Message: THROTTLE_MESSAGE } : { Code: 'None' }))) };
    }
    const settle = async (outcome: 'done' | 'failed' | 'none') => {
      for (const [i, a] of admitted.entries()) {
        if (!a || !('taken' in a)) continue;
        const t = targets[i]!;
        const st = steps[i]!;
        const after = outcome !== 'done' ? undefined : st.kind === 'put' ? st.put : st.kind === 'delete' ? undefined : st.kind === 'update' ? await meter.after(t) : t.old;
        meter.settleWrite(t, a.taken, outcome, after, 2, at);
      }
    };
    stats.transactions++;

    if (conflictRate > 0 && Math.random() < conflictRate) {
      stats.injectedConflicts++;
      stats.cancelled++;
      await settle('failed');
      const victim = Math.floor(Math.random() * steps.length);
      const reasons = steps.map((_, i) => (i === victim ? { Code: 'TransactionConflict', Message: 'Transaction is ongoing for the item' } : { Code: 'None' }));
      return { status: 400, body: cancelled(reasons) };
    }

    const applied: { step: Step; old: Item | undefined }[] = [];
    const reasons: { Code: string; Message?: string }[] = [];
    let failure: unknown;
    for (const step of steps) {
      try {
        applied.push({ step, old: await step.apply() });
        reasons.push({ Code: 'None' });
      } catch (e) {
        if ((e as { name?: string }).name === 'ConditionalCheckFailedException') {
          reasons.push({ Code: 'ConditionalCheckFailed', Message: 'The conditional request failed' });
        } else {
          failure = e;
          break;
        }
      }
    }
    const ok = failure === undefined && reasons.every((r) => r.Code === 'None');
    if (!ok) {
      for (const { step, old } of applied.reverse()) {
        if (old) await direct.send(new PutItemCommand({ TableName: step.table, Item: old }));
        else await direct.send(new DeleteItemCommand({ TableName: step.table, Key: step.key }));
      }
    }
    if (failure !== undefined) {
      await settle('none');
      const name = (failure as { name?: string }).name ?? 'InternalServerError';
      const message = (failure as Error).message;
      return name === 'ValidationException'
        ? { status: 400, body: validation(message) }
        : { status: 500, body: { __type: `com.amazonaws.dynamodb.v20120810#${name}`, message } };
    }
    if (!ok) {
      stats.cancelled++;
      await settle('failed');
      return { status: 400, body: cancelled(reasons) };
    }
    await settle('done');
    return { status: 200, body: {} };
  }

  function cancelled(reasons: { Code: string; Message?: string }[]) {
    return {
      __type: 'com.amazonaws.dynamodb.v20120810#TransactionCanceledException',
      Message: `Transaction cancelled, please refer cancellation reasons for specific reasons [${reasons.map((r) => r.Code).join(', ')}]`,
      CancellationReasons: reasons,
    };
  }

  // IAM first: a refused request reaches nothing. The body, read to know its
  // calls, is handed on as a stream again.
  const front = createServer((incoming, res) => {
    void readBody(incoming).then((body) => {
      const op = String(incoming.headers['x-amz-target'] ?? '').split('.')[1];
      const refused = iam.authorize(incoming.headers.authorization, (s) => dynamoCalls(op, body, s));
      if (!refused) return dispatch(Object.assign(Readable.from([Buffer.from(body)]), { headers: incoming.headers, method: incoming.method, url: incoming.url }) as unknown as IncomingMessage, res);
      send(res, 400, refused.kind === 'denied'
        ? { __type: 'com.amazon.coral.service#AccessDeniedException', Message: refused.message }
        : { __type: 'com.amazon.coral.service#UnrecognizedClientException', message: refused.message });
    });
  });

  /** A call the stand-in answers itself, under the table lock (exclusive for a transaction). */
  function serveLocked(req: IncomingMessage, res: ServerResponse, exclusive: boolean, serve: (body: Record<string, unknown>) => Promise<{ status: number; body: unknown }>): void {
    void (async () => {
      const body = await readBody(req);
      const release = await lock.acquire(exclusive);
      try {
        const r = await serve(JSON.parse(body) as Record<string, unknown>);
        send(res, r.status, r.body);
      } catch (e) {
        send(res, 500, { __type: 'com.amazonaws.dynamodb.v20120810#InternalServerError', message: (e as Error).message });
      } finally {
        release();
      }
    })();
  }

  function dispatch(req: IncomingMessage, res: ServerResponse): void {
    const op = String(req.headers['x-amz-target'] ?? '').split('.')[1];
    if (op === 'TransactWriteItems') {
      return serveLocked(req, res, true, (body) => transactWrite(body as { TransactItems?: TransactWriteItem[] }, now(req.headers)));
    }
    if (op === 'UpdateTimeToLive' || op === 'DescribeTimeToLive') {
      void readBody(req).then((text) => {
        const body = JSON.parse(text) as { TableName: string; TimeToLiveSpecification?: { Enabled: boolean; AttributeName: string } };
        if (op === 'UpdateTimeToLive') {
          const spec = body.TimeToLiveSpecification!;
          if (spec.Enabled) ttl.set(body.TableName, spec.AttributeName);
          else ttl.delete(body.TableName);
          send(res, 200, { TimeToLiveSpecification: spec });
        } else {
          const attr = ttl.get(body.TableName);
          send(res, 200, { TimeToLiveDescription: attr ? { TimeToLiveStatus: 'ENABLED', AttributeName: attr } : { TimeToLiveStatus: 'DISABLED' } });
        }
      });
      return;
    }
    if (METERED.has(op ?? '') && !throughput.paused) {
      // Metered: admitted or throttled per partition key, then charged (test/fakes/dynamodb-throughput.ts).
      return serveLocked(req, res, false, (body) => meter.serve(op!, body, now(req.headers)));
    }
    void lock.acquire(false).then((release) => {
      res.once('close', release);
      res.once('finish', release);
      dynaliteHandler(req, res);
    });
  }
  const port = await listen(front);
  const endpoint = `http://127.0.0.1:${port}`;

  return {
    endpoint,
    clientConfig: localClientConfig(endpoint),
    setTransactionConflictRate(p: number) { conflictRate = p; },
    stats,
    ttl,
    throughput,
    iam,
    async close() {
      direct.destroy();
      await closeServer(front);
      await closeServer(inner);
    },
  };
}
