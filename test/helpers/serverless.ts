// The serverless control plane on this machine: DynamoDB (dynalite), SSM and
// IoT Core's data plane as local fakes, and the environment the Lambda
// handlers read (control/lambda/runtime.ts), so a test invokes the real
// exported handlers as Lambda would. Every AWS SDK client finds a local
// endpoint: the service-specific ones for the services used, and a dead
// loopback port for any other, so nothing can leave the machine.
//
// IAM as deployed: the fakes share one IAM (test/fakes/iam.ts) holding each
// function's grants from infra/grants.ts, and a handler runs as its function
// (world.as('Api', handler)): in a runtime of its own, its SDK clients signed
// with that function's credentials, so a call its grants lack is refused as
// AWS refuses it. A handler called outside any function signs with a key
// that may do nothing. The test's own store and fixtures use the admin keys.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { Context, LambdaFunctionURLEvent, LambdaFunctionURLResult } from 'aws-lambda';
import { handler as nodeApiHandler } from '../../functions/node-api.js';
import { Topics } from '../../core/topics.js';
import { createRuntime, readEnv, resetRuntime, withRuntime, type Runtime } from '../../control/lambda/runtime.js';
import { createTable, DynamoStore } from '../../control/store/dynamo.js';
import type { FunctionName } from '../../infra/grants.js';
import { startFakeDynamo, type FakeDynamo } from '../fakes/dynamodb.js';
import { addFunctions, ACCOUNT as IAM_ACCOUNT, Iam, withoutActions, type Principal } from '../fakes/iam.js';
import { startFakeIotData, type FakeIotData, type IotConnections } from '../fakes/iot-data.js';
import { startFakeSsm, type FakeSsm } from '../fakes/ssm.js';
import { startFakeSqs, type FakeSqs } from '../fakes/sqs.js';

export const REGION = 'us-east-1';
export const ACCOUNT = IAM_ACCOUNT;
export const PREFIX = 'twill/test';
export const AUTHORIZER = 'twill-test-Authorizer';
export const ADMIN_TOKEN = 'admin-token-for-tests-only';
export const ALI_TOKEN = 'ali-shared-token-for-tests-only';
export const ADMIN_PARAM = '/twill/test/admin-token';
export const ALI_PARAM = '/twill/test/ali-event-token';
const TABLE = 'twill-test';
/** What a handler called outside any function signs with: a user with no policy at all. */
const NO_FUNCTION_KEY = 'AKIANOTAFUNCTIONXXXX';
/** The instance-events queue and its dead-letter queue, as infra/events.ts makes them (4 receives, then the DLQ). */
export const EVENTS_QUEUE = 'twill-test-InstanceEvents';
export const DEAD_LETTERS = 'twill-test-ReconcileDeadLetters';
export const EVENTS_MAX_RECEIVES = 4;
/**
 * The queue's visibility timeout here: infra's is 6 minutes (six times the
 * events function's 60 s timeout); a test waits this long for a failed
 * record to come back, and gives the events function this long to run (it
 * starts no cloud route change in its last few seconds).
 */
export const EVENTS_VISIBILITY_SECONDS = 10;

/** What Lambda passes a handler as its context, as far as twill's handlers read it. */
export function lambdaContext(name = 'twill-test-Function'): Context {
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName: name,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:${REGION}:${ACCOUNT}:function:${name}`,
    memoryLimitInMB: '256',
    awsRequestId: 'c6af9ac6-7b61-11e6-9a41-93e812345678',
    logGroupName: `/aws/lambda/${name}`,
    logStreamName: '2026/11/25/[$LATEST]abcdef',
    getRemainingTimeInMillis: () => 30_000,
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}

/** A function URL request, as Lambda hands it over (payload format 2.0). */
export function urlEvent(method: string, path: string, opts: { headers?: Record<string, string>; body?: string; query?: Record<string, string> } = {}): LambdaFunctionURLEvent {
  const query = opts.query ?? {};
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: path,
    rawQueryString: new URLSearchParams(query).toString(),
    headers: { 'content-type': 'application/json', host: 'abcdefgh.lambda-url.us-east-1.on.aws', ...opts.headers },
    ...(Object.keys(query).length ? { queryStringParameters: query } : {}),
    requestContext: {
      accountId: 'anonymous',
      apiId: 'abcdefgh',
      domainName: 'abcdefgh.lambda-url.us-east-1.on.aws',
      domainPrefix: 'abcdefgh',
      http: { method, path, protocol: 'HTTP/1.1', sourceIp: '203.0.113.7', userAgent: 'test' },
      requestId: 'req-1',
      routeKey: '$default',
      stage: '$default',
      time: '25/Nov/2026:10:00:00 +0000',
      timeEpoch: 1795600000000,
    },
    ...(opts.body !== undefined ? { body: opts.body } : {}),
    isBase64Encoded: false,
  };
}

export interface ServerlessWorld {
  dynamo: FakeDynamo;
  ssm: FakeSsm;
  /** SQS with the instance-events queue (TWILL_EVENTS_QUEUE_URL) and its dead-letter queue */
  sqs: FakeSqs;
  eventsQueue: { url: string; arn: string };
  iot: FakeIotData;
  /** a store of its own on the same table, to look at (and tamper with) what the handlers did */
  store: DynamoStore;
  topics: Topics;
  /** the node API Lambda behind a function URL on loopback, as agents reach it (TWILL_NODE_API_URL) */
  nodeApiUrl: string;
  /** who may call what on the fakes (share it with a FakeEc2: ec2.iam = world.iam) */
  iam: Iam;
  /** The handler as the named function runs it: its own runtime, its own credentials and grants. */
  as<A extends unknown[], R>(fn: FunctionName, handler: (...args: A) => R): (...args: A) => R;
  /** The runtime the named function's invocations get, e.g. its controller for a fixture the function would write. */
  runtimeOf(fn: FunctionName): Runtime;
  /**
   * Runs body with the actions (IAM patterns, e.g. 'ec2:*') taken out of the
   * function's grants, as a deployment whose infra forgot them, then gives them back.
   */
  revoking<T>(fn: FunctionName, actions: string[], body: () => Promise<T>): Promise<T>;
  /** sets more environment for the handlers (and resets every function's runtime so they read it) */
  setEnv(vars: Record<string, string | undefined>): Promise<void>;
  close(): Promise<void>;
}

/** Lambda's response payload limit for a function URL in BUFFERED mode */
export const FUNCTION_URL_MAX_BYTES = 6 * 1024 * 1024;

/**
 * A Lambda function URL on loopback: each HTTP request becomes the payload
 * format 2.0 event a function URL sends (a text body as it is, any other
 * base64-encoded; the query string parsed), and the handler's answer (body
 * base64-decoded when it says so) goes back.
 */
export async function functionUrl(handler: (e: LambdaFunctionURLEvent) => Promise<LambdaFunctionURLResult>, host = '127.0.0.1'): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://fn');
      const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(',') : (v ?? '')]));
      const raw = Buffer.concat(chunks);
      // Function URLs pass a text body as it is and anything else base64-encoded.
      const text = /^(text\/|application\/(json|x-www-form-urlencoded|xml))/.test(headers['content-type'] ?? '');
      const query = Object.fromEntries(url.searchParams);
      const event = {
        version: '2.0', routeKey: '$default', rawPath: url.pathname, rawQueryString: url.search.slice(1), headers,
        ...(Object.keys(query).length ? { queryStringParameters: query } : {}),
        ...(raw.length ? { body: text ? raw.toString('utf8') : raw.toString('base64') } : {}),
        isBase64Encoded: raw.length > 0 && !text,
        requestContext: { http: { method: req.method ?? 'GET', path: url.pathname, protocol: 'HTTP/1.1', sourceIp: '127.0.0.1', userAgent: headers['user-agent'] ?? '' } },
      } as unknown as LambdaFunctionURLEvent;
      handler(event)
        .then((r) => {
          // A function URL in its default BUFFERED mode carries at most 6 MB of
          // response payload (the handler's JSON result, base64 body included);
          // past that the caller gets a 502 ("Invoking a response streaming
          // enabled function using Lambda function URLs", Lambda developer guide).
          if (Buffer.byteLength(JSON.stringify(r)) > FUNCTION_URL_MAX_BYTES) return void res.writeHead(502).end('{"Message":"response payload size exceeded"}');
          const result = typeof r === 'string' ? { statusCode: 200, body: r } : r;
          const body = result.body === undefined ? '' : result.isBase64Encoded ? Buffer.from(result.body, 'base64') : result.body;
          res.writeHead(result.statusCode ?? 200, (result.headers ?? {}) as Record<string, string>).end(body);
        })
        .catch(() => res.writeHead(502).end());
    });
  });
  return onLoopback(server, host);
}

/** Serves on a free loopback port (or one of host); close() ends every connection first. */
export async function onLoopback(server: Server, host = '127.0.0.1'): Promise<{ url: string; close(): Promise<void> }> {
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  return {
    url: `http://${host}:${(server.address() as AddressInfo).port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/**
 * host: where the node API's function URL listens (default loopback);
 * connections: the device side DeleteConnection closes (IoT Core's stand-in), if any.
 */
export async function startServerless(brokerUrl: string, extraEnv: Record<string, string> = {}, host?: string, connections?: IotConnections): Promise<ServerlessWorld> {
  const iam = new Iam();
  const functions = addFunctions(iam, { region: REGION, table: TABLE, prefix: PREFIX, adminTokenParameter: ADMIN_PARAM, aliEventTokenParameter: ALI_PARAM, eventsQueue: EVENTS_QUEUE }, 'twill-test');
  iam.add({ arn: `arn:aws:iam::${ACCOUNT}:user/outside-any-function`, statements: [] }, [NO_FUNCTION_KEY]);
  const runtimes = new Map<FunctionName, Runtime>();
  const runtimeOf = (fn: FunctionName): Runtime => {
    let rt = runtimes.get(fn);
    if (!rt) runtimes.set(fn, (rt = createRuntime(readEnv(), { credentials: functions.get(fn)!.credentials })));
    return rt;
  };
  const as = <A extends unknown[], R>(fn: FunctionName, handler: (...args: A) => R) => (...args: A): R => withRuntime(runtimeOf(fn), () => handler(...args));
  const resetAll = async () => {
    const old = [...runtimes.values()];
    runtimes.clear();
    for (const rt of old) await rt.close().catch(() => {});
    await resetRuntime();
  };

  const nodeApi = await functionUrl(as('NodeApi', nodeApiHandler), host);
  const dynamo = await startFakeDynamo({ iam });
  const ssm = await startFakeSsm(iam);
  const sqs = await startFakeSqs({ region: REGION, account: ACCOUNT, iam });
  sqs.createQueue(DEAD_LETTERS, { MessageRetentionPeriod: 14 * 24 * 3600 });
  const eventsUrl = sqs.createQueue(EVENTS_QUEUE, {
    VisibilityTimeout: EVENTS_VISIBILITY_SECONDS,
    RedrivePolicy: { deadLetterTargetArn: sqs.queues.get(DEAD_LETTERS)!.arn, maxReceiveCount: EVENTS_MAX_RECEIVES },
  });
  const iot = await startFakeIotData(brokerUrl, connections, iam);
  const client = new DynamoDBClient(dynamo.clientConfig);
  await createTable(client, TABLE);
  ssm.parameters.set(ADMIN_PARAM, { value: ADMIN_TOKEN, type: 'SecureString' });
  ssm.parameters.set(ALI_PARAM, { value: ALI_TOKEN, type: 'SecureString' });

  const saved = new Map<string, string | undefined>();
  const set = (vars: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(vars)) {
      if (!saved.has(k)) saved.set(k, process.env[k]);
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  set({
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_REGION: REGION,
    AWS_ACCESS_KEY_ID: NO_FUNCTION_KEY,
    AWS_SECRET_ACCESS_KEY: 'fake-secret-for-local-tests-only',
    AWS_SESSION_TOKEN: undefined,
    AWS_PROFILE: undefined,
    // Any AWS client without an endpoint of its own hits a closed loopback port.
    AWS_ENDPOINT_URL: 'http://127.0.0.1:9',
    AWS_ENDPOINT_URL_DYNAMODB: dynamo.endpoint,
    AWS_ENDPOINT_URL_SSM: ssm.endpoint,
    AWS_ENDPOINT_URL_SQS: sqs.endpoint,
    TWILL_EVENTS_QUEUE_URL: eventsUrl,
    TWILL_TABLE: TABLE,
    TWILL_PREFIX: PREFIX,
    TWILL_IOT_ENDPOINT: iot.endpoint,
    TWILL_IOT_AUTHORIZER: AUTHORIZER,
    TWILL_ADMIN_TOKEN_PARAM: ADMIN_PARAM,
    TWILL_ALI_TOKEN_PARAM: ALI_PARAM,
    TWILL_LOG_LEVEL: process.env.TWILL_LOG_LEVEL ?? 'error',
    TWILL_NODE_API_URL: nodeApi.url,
    ...extraEnv,
  });
  await resetAll();
  const store = new DynamoStore({ tableName: TABLE, client });

  return {
    dynamo,
    ssm,
    sqs,
    eventsQueue: { url: eventsUrl, arn: sqs.queues.get(EVENTS_QUEUE)!.arn },
    iot,
    store,
    topics: new Topics(PREFIX),
    nodeApiUrl: extraEnv.TWILL_NODE_API_URL ?? nodeApi.url,
    iam,
    as,
    runtimeOf,
    async revoking(fn, actions, body) {
      const principal: Principal = functions.get(fn)!.principal;
      const granted = principal.statements;
      principal.statements = withoutActions(granted, actions);
      try {
        return await body();
      } finally {
        principal.statements = granted;
      }
    },
    async setEnv(vars) {
      set(vars);
      await resetAll();
    },
    async close() {
      // First: no request of an agent may reach the store once it is closed.
      await nodeApi.close();
      await resetAll().catch(() => {});
      await store.close();
      client.destroy();
      await iot.close();
      await sqs.close();
      await ssm.close();
      await dynamo.close();
      for (const [k, v] of saved) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    },
  };
}
