// A fake AWS IoT data-plane endpoint: the REST shape of Publish
// (POST /topics/{topic}?qos=1&retain=true, the payload as the body, SigV4
// signed for the "iotdata" service), forwarded into a real MQTT broker so
// that a subscriber there sees exactly what IoT Core subscribers would.
// It refuses what IoT Core refuses, with IoT's error types, so a topic that
// would break IoT's limits fails here too: wildcards or a leading '$' in a
// published topic, more than 7 slashes, more than 256 bytes, a payload over
// 128 KB, QoS other than 0 or 1, an unsigned request.
// GetRetainedMessage (GET /retainedMessage/{topic}) and ListRetainedMessages
// (GET /retainedMessage) answer from the account's retained messages: with
// IoT Core's stand-in (test/fakes/iot-core.ts) those are every retained
// message of the account, devices' and wills' included, as on IoT Core;
// with a plain broker, those this endpoint published. An empty retained
// payload deletes one. The rules the code relies on, as IoT Core has them:
//   - ListRetainedMessages pages: maxResults from 1 to 200, nextToken from
//     the previous page (ListRetainedMessages, IoT data plane API reference);
//     anything else is InvalidRequestException;
//   - an account holds at most a quota of retained messages ("Maximum number
//     of retained messages per account", IoT Core quotas page; 500,000 by
//     default, configurable here so a test can make it small); at it, "AWS
//     IoT Core returns a throttled response to messages published with
//     RETAIN set and payloads greater than 0 bytes until some retained
//     messages are deleted" (developer guide, "Using MQTT retained
//     messages"): Publish answers ThrottlingException (HTTP 429), whatever
//     the topic, and a zero-byte retained publish still deletes.
// DeleteConnection (DELETE /connections/{clientId}?cleanSession&preventWillMessage,
// IoT data plane API reference) closes a client's connection on the IoT Core
// stand-in it is given; a client not connected is ResourceNotFoundException,
// a client id starting with '$' InvalidRequestException, as IoT Core answers.
// IAM (test/fakes/iam.ts) on every call, with IoT's actions and resources
// ("AWS IoT Core policy actions"): iot:Publish on topic/<topic>, and
// iot:RetainPublish as well for a retained publish; iot:GetRetainedMessage on
// topic/<topic>; iot:ListRetainedMessages on "*" (it takes no other resource);
// iot:DeleteConnection on client/<clientId>. A denied call is answered as the
// data plane answers a role without the permission: HTTP 403
// ForbiddenException, message "Forbidden", nothing more (the API reference's
// "The caller isn't authorized to make the request"; aws/aws-sdk-js-v3#5562).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import mqtt, { type MqttClient } from 'mqtt';
import { Iam, type Call, type Scope } from './iam.js';

export interface ForwardedPublish {
  topic: string;
  payload: string;
  qos: 0 | 1;
  retain: boolean;
}

/** IoT Core's default "Maximum number of retained messages per account" (quotas page). */
export const DEFAULT_RETAINED_QUOTA = 500_000;

/** An account's retained messages, as IoT Core keeps them, and its quota. */
export class RetainedMessages {
  readonly byTopic = new Map<string, { payload: Buffer; qos: 0 | 1; at: number }>();
  /** retained publishes refused for the quota */
  throttled = 0;

  constructor(readonly quota = DEFAULT_RETAINED_QUOTA) {
    if (!Number.isInteger(quota) || quota < 0) throw new Error(`retained quota ${quota} is not a whole number`);
  }

  /** Whether IoT Core would throttle a retained publish of this many bytes now (and count it when so). */
  throttles(payloadBytes: number): boolean {
    if (payloadBytes === 0 || this.byTopic.size < this.quota) return false;
    this.throttled++;
    return true;
  }

  /** A retained publish the broker took: an empty payload deletes. */
  put(topic: string, payload: Buffer, qos: 0 | 1): void {
    if (payload.length === 0) this.byTopic.delete(topic);
    else this.byTopic.set(topic, { payload, qos, at: Date.now() });
  }
}

/** The device side the data plane acts on (the IoT Core stand-in, test/fakes/iot-core.ts). */
export interface IotConnections {
  /** closes the client's connection; false when it is not connected */
  disconnect(clientId: string, o: { cleanSession: boolean; preventWillMessage: boolean }): boolean;
  /** the account's retained messages, when the device side keeps them */
  retained?: RetainedMessages;
  /** a publish inside the broker, retained there when asked (with retained) */
  publish?(topic: string, payload: Buffer, qos: 0 | 1, retain: boolean): Promise<void>;
}

export interface FakeIotData {
  endpoint: string;
  /** Every publish forwarded to the broker, in order. */
  readonly published: ForwardedPublish[];
  /** Every DeleteConnection asked for, in order, and whether a connection was closed. */
  readonly disconnects: { clientId: string; cleanSession: boolean; preventWillMessage: boolean; closed: boolean }[];
  /** The account's retained messages, by topic (see the header). */
  readonly retained: Map<string, { payload: Buffer; qos: 0 | 1; at: number }>;
  /** who may call what (the test's admin keys, unless the caller's IAM was given) */
  readonly iam: Iam;
  /** retained publishes throttled for the account's quota */
  readonly retainedThrottled: number;
  close(): Promise<void>;
}

const MAX_PAYLOAD = 128 * 1024;
const MAX_TOPIC_BYTES = 256;
const MAX_SLASHES = 7;
/** ListRetainedMessages' maxResults: "Valid Range: Minimum value of 1. Maximum value of 200." */
const MAX_LIST_RESULTS = 200;

/** nextToken: opaque to the caller; here the last topic of the page it follows. */
const pageToken = (topic: string) => Buffer.from(JSON.stringify({ after: topic })).toString('base64url');
function afterToken(token: string): string | undefined {
  try {
    const v = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { after?: unknown };
    return typeof v.after === 'string' ? v.after : undefined;
  } catch {
    return undefined;
  }
}

function fail(res: ServerResponse, status: number, type: string, message: string): void {
  const body = JSON.stringify({ message });
  res.writeHead(status, { 'content-type': 'application/json', 'x-amzn-errortype': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Why IoT Core would refuse to publish to this topic, if it would. */
function topicProblem(topic: string): string | undefined {
  if (topic.length === 0) return 'topic is empty';
  if (/[+#]/.test(topic)) return `topic ${topic} contains a wildcard`;
  if (topic.startsWith('$')) return `topic ${topic} is reserved`;
  if (Buffer.byteLength(topic) > MAX_TOPIC_BYTES) return `topic is longer than ${MAX_TOPIC_BYTES} bytes`;
  if ((topic.match(/\//g) ?? []).length > MAX_SLASHES) return `topic ${topic} has more than ${MAX_SLASHES} forward slashes`;
  return undefined;
}

/** The calls IAM authorizes for one data-plane request. */
function iotCalls(method: string | undefined, url: URL, s: Scope): Call[] {
  const arn = (type: string, encoded: string) => {
    let name = encoded;
    try {
      name = decodeURIComponent(encoded);
    } catch { /* malformed: refused later, for what it is */ }
    return `arn:${s.partition}:iot:${s.region}:${s.account}:${type}/${name}`;
  };
  const path = url.pathname;
  if (method === 'GET' && path === '/retainedMessage') return [{ action: 'iot:ListRetainedMessages', resource: '*' }];
  const retained = /^\/retainedMessage\/(.+)$/.exec(path);
  if (method === 'GET' && retained) return [{ action: 'iot:GetRetainedMessage', resource: arn('topic', retained[1]!) }];
  const client = /^\/connections\/([^/]+)$/.exec(path);
  if (method === 'DELETE' && client) return [{ action: 'iot:DeleteConnection', resource: arn('client', client[1]!) }];
  const topic = /^\/topics\/(.+)$/.exec(path);
  if (method === 'POST' && topic) {
    const resource = arn('topic', topic[1]!);
    return [{ action: 'iot:Publish', resource }, ...(url.searchParams.get('retain') === 'true' ? [{ action: 'iot:RetainPublish', resource }] : [])];
  }
  return [];
}

/**
 * retainedQuota: the account's quota when this endpoint keeps the retained
 * messages itself (with a device side that keeps them, its own applies).
 */
export async function startFakeIotData(brokerUrl: string, connections?: IotConnections, iam = new Iam(), retainedQuota?: number): Promise<FakeIotData> {
  const disconnects: FakeIotData['disconnects'] = [];
  const mq: MqttClient = await mqtt.connectAsync(brokerUrl, { clientId: `fake-iot-data-${process.pid}`, reconnectPeriod: 0 });
  const published: ForwardedPublish[] = [];
  const account = connections?.retained ?? new RetainedMessages(retainedQuota);
  const retained = account.byTopic;
  // Inside IoT Core's stand-in a publish is retained before it is answered;
  // through a plain broker, it is recorded here once the broker took it.
  const publish = connections?.retained && connections.publish
    ? connections.publish.bind(connections)
    : async (topic: string, payload: Buffer, qos: 0 | 1, retain: boolean) => {
      await mq.publishAsync(topic, payload, { qos, retain });
      if (retain) account.put(topic, payload, qos);
    };
  const json = (res: ServerResponse, value: unknown) => {
    const body = JSON.stringify(value);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const auth = String(req.headers.authorization ?? '');
    if (!/^AWS4-HMAC-SHA256 Credential=[^/]+\/\d{8}\/[a-z0-9-]+\/iotdata\/aws4_request/.test(auth)) {
      return fail(res, 403, 'ForbiddenException', 'request is not signed with SigV4 for the iotdata service');
    }
    const refused = iam.authorize(auth, (s) => iotCalls(req.method, url, s));
    if (refused) return fail(res, 403, 'ForbiddenException', refused.kind === 'denied' ? 'Forbidden' : refused.message);
    if (req.method === 'GET' && url.pathname === '/retainedMessage') {
      const maxText = url.searchParams.get('maxResults');
      const max = maxText === null ? MAX_LIST_RESULTS : Number(maxText);
      if (!Number.isInteger(max) || max < 1 || max > MAX_LIST_RESULTS) {
        return fail(res, 400, 'InvalidRequestException', `maxResults ${maxText} is not from 1 to ${MAX_LIST_RESULTS}`);
      }
      const token = url.searchParams.get('nextToken');
      const after = token === null ? undefined : afterToken(token);
      if (token !== null && after === undefined) return fail(res, 400, 'InvalidRequestException', 'nextToken is not one this API returned');
      const topics = [...retained.keys()].sort().filter((t) => after === undefined || t > after);
      const page = topics.slice(0, max).map((topic) => {
        const r = retained.get(topic)!;
        return { topic, payloadSize: r.payload.length, qos: r.qos, lastModifiedTime: r.at };
      });
      return json(res, { retainedTopics: page, ...(topics.length > max ? { nextToken: pageToken(page[page.length - 1]!.topic) } : {}) });
    }
    const g = /^\/retainedMessage\/(.+)$/.exec(url.pathname);
    if (req.method === 'GET' && g) {
      const topic = decodeURIComponent(g[1]!);
      const r = retained.get(topic);
      if (!r) return fail(res, 404, 'ResourceNotFoundException', `no retained message on ${topic}`);
      return json(res, { topic, payload: r.payload.toString('base64'), qos: r.qos, lastModifiedTime: r.at });
    }
    const c = /^\/connections\/([^/]+)$/.exec(url.pathname);
    if (req.method === 'DELETE' && c) {
      const clientId = decodeURIComponent(c[1]!);
      if (clientId.startsWith('$')) return fail(res, 400, 'InvalidRequestException', "the client ID can't start with a dollar sign ($)");
      const flag = (name: string) => {
        const v = url.searchParams.get(name);
        if (v !== null && v !== 'true' && v !== 'false') throw Object.assign(new Error(`${name} must be true or false`), { invalid: true });
        return v === 'true';
      };
      let o: { cleanSession: boolean; preventWillMessage: boolean };
      try {
        o = { cleanSession: flag('cleanSession'), preventWillMessage: flag('preventWillMessage') };
      } catch (e) {
        return fail(res, 400, 'InvalidRequestException', (e as Error).message);
      }
      const closed = connections?.disconnect(clientId, o) ?? false;
      disconnects.push({ clientId, ...o, closed });
      if (!closed) return fail(res, 404, 'ResourceNotFoundException', `client ${clientId} is not connected`);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 });
      return res.end('{}');
    }
    const m = /^\/topics\/(.+)$/.exec(url.pathname);
    if (req.method !== 'POST' || !m) return fail(res, 405, 'MethodNotAllowedException', `${req.method} ${url.pathname} is not supported`);
    const topic = decodeURIComponent(m[1]!);
    const problem = topicProblem(topic);
    if (problem) return fail(res, 400, 'InvalidRequestException', problem);
    const qosText = url.searchParams.get('qos') ?? '0';
    if (qosText !== '0' && qosText !== '1') return fail(res, 400, 'InvalidRequestException', `qos ${qosText} is not 0 or 1`);
    const qos = Number(qosText) as 0 | 1;
    const retain = url.searchParams.get('retain') === 'true';
    const body = await readBody(req);
    if (body.length > MAX_PAYLOAD) return fail(res, 413, 'RequestEntityTooLargeException', `payload of ${body.length} bytes is larger than ${MAX_PAYLOAD}`);
    if (retain && account.throttles(body.length)) {
      return fail(res, 429, 'ThrottlingException', `the account holds its maximum of ${account.quota} retained messages: retained publishes with a payload are throttled until some are deleted`);
    }
    await publish(topic, body, qos, retain);
    published.push({ topic, payload: body.toString('utf8'), qos, retain });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 });
    res.end('{}');
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => fail(res, 500, 'InternalFailureException', (e as Error).message));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    published,
    disconnects,
    retained,
    iam,
    get retainedThrottled() { return account.throttled; },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await mq.endAsync();
    },
  };
}
