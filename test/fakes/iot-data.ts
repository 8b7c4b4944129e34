// A fake AWS IoT data-plane endpoint: the REST shape of Publish
// (POST /topics/{topic}?qos=1&retain=true, the payload as the body, SigV4
// signed for the "iotdata" service), forwarded into a real MQTT broker so
// that a subscriber there sees exactly what IoT Core subscribers would.
// It refuses what IoT Core refuses, with IoT's error types, so a topic that
// would break IoT's limits fails here too: wildcards or a leading '$' in a
// published topic, more than 7 slashes, more than 256 bytes, a payload over
// 128 KB, QoS other than 0 or 1, an unsigned request.
// GetRetainedMessage (GET /retainedMessage/{topic}) and ListRetainedMessages
// (GET /retainedMessage) answer from the retained state this endpoint itself
// published (an empty retained payload deletes it, as on IoT Core); retained
// messages that MQTT clients publish straight to the broker are not seen.
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

/** The device side DeleteConnection acts on (the IoT Core stand-in, test/fakes/iot-core.ts). */
export interface IotConnections {
  /** closes the client's connection; false when it is not connected */
  disconnect(clientId: string, o: { cleanSession: boolean; preventWillMessage: boolean }): boolean;
}

export interface FakeIotData {
  endpoint: string;
  /** Every publish forwarded to the broker, in order. */
  readonly published: ForwardedPublish[];
  /** Every DeleteConnection asked for, in order, and whether a connection was closed. */
  readonly disconnects: { clientId: string; cleanSession: boolean; preventWillMessage: boolean; closed: boolean }[];
  /** The retained messages published through this endpoint, by topic. */
  readonly retained: Map<string, { payload: Buffer; qos: 0 | 1; at: number }>;
  /** who may call what (the test's admin keys, unless the caller's IAM was given) */
  readonly iam: Iam;
  close(): Promise<void>;
}

const MAX_PAYLOAD = 128 * 1024;
const MAX_TOPIC_BYTES = 256;
const MAX_SLASHES = 7;

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

export async function startFakeIotData(brokerUrl: string, connections?: IotConnections, iam = new Iam()): Promise<FakeIotData> {
  const disconnects: FakeIotData['disconnects'] = [];
  const mq: MqttClient = await mqtt.connectAsync(brokerUrl, { clientId: `fake-iot-data-${process.pid}`, reconnectPeriod: 0 });
  const published: ForwardedPublish[] = [];
  const retained = new Map<string, { payload: Buffer; qos: 0 | 1; at: number }>();
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
      const topics = [...retained.keys()].sort();
      const start = Number(url.searchParams.get('nextToken') ?? '0');
      const max = Math.min(200, Number(url.searchParams.get('maxResults') ?? '200'));
      const page = topics.slice(start, start + max).map((topic) => {
        const r = retained.get(topic)!;
        return { topic, payloadSize: r.payload.length, qos: r.qos, lastModifiedTime: r.at };
      });
      return json(res, { retainedTopics: page, ...(start + max < topics.length ? { nextToken: String(start + max) } : {}) });
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
    await mq.publishAsync(topic, body, { qos, retain });
    published.push({ topic, payload: body.toString('utf8'), qos, retain });
    if (retain && body.length === 0) retained.delete(topic);
    else if (retain) retained.set(topic, { payload: body, qos, at: Date.now() });
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
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await mq.endAsync();
    },
  };
}
