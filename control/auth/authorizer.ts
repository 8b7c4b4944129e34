// IoT Core's custom authorizer, as a pure function over the store: an agent
// connects to IoT Core with the same username (its node name) and password
// as to the embedded broker, and gets a policy that allows exactly what the
// embedded broker allows it (core/acl.ts), under the deployment's topic
// prefix (app/stage: IoT Core is shared by the whole account). The Lambda
// handler around it only supplies the store, region and account.
//
// Event and response shapes: IoT Core's "Defining your Lambda function" for
// custom authentication; typed by @types/aws-lambda. The password arrives
// base64-encoded in protocolData.mqtt.password. Every refusal is logged with
// its reason and the connection id; no log line carries the password, and a
// wrong password and an unknown node cost the same hash time.
import { createHash } from 'node:crypto';
import type { IoTCustomAuthorizerEvent, IoTCustomAuthorizerResult, PolicyDocument } from 'aws-lambda';
import { clientIdOf, nodeGrants } from '../../core/acl.js';
import type { Logger } from '../../core/log.js';
import { NAME_RE, type Topics } from '../../core/topics.js';
import { DUMMY_HASH, verifyPassword } from './credentials.js';
import type { NodeRecord, Store } from '../store/store.js';

export type { IoTCustomAuthorizerEvent, IoTCustomAuthorizerResult };

export interface AuthorizerOptions {
  store: Pick<Store, 'getNode'>;
  topics: Topics;
  log: Logger;
  /** Where the policy's ARNs point: the Lambda's own region and account. */
  region: string;
  accountId: string;
  /**
   * IoT Core re-invokes the authorizer on a live connection after this many
   * seconds (300 to 86400) and disconnects it when refused: how long a removed
   * node keeps its connection at most.
   */
  refreshAfterInSeconds?: number;
  /** Connections end after this many seconds (300 to 86400) and reconnect through the authorizer. */
  disconnectAfterInSeconds?: number;
}

const DEFAULT_REFRESH_SECONDS = 3600;
const DEFAULT_DISCONNECT_SECONDS = 86_400;
/** Where the agent may put the authorizer's name: "node?x-amz-customauthorizer-name=twill". */
const QUERY_START = '?';
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const MAX_PASSWORD_BYTES = 1024;

function clamp(v: number, what: string): number {
  if (!Number.isInteger(v) || v < 300 || v > 86_400) throw new Error(`${what} must be a whole number of seconds from 300 to 86400, not ${v}`);
  return v;
}

/**
 * IoT Core accepts only [a-zA-Z0-9]{1,128}: the node name, readable in IoT's
 * logs, with every other character (and the escape letter x itself) as x and
 * two hex digits, so two names never share an id.
 */
export function principalIdOf(node: string): string {
  const id = node.replace(/[^A-Za-wyz0-9]/g, (c) => `x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return id.length <= 128 ? id : `h${createHash('sha256').update(node).digest('hex')}`;
}

/**
 * The policy a node gets: its grants as IoT Core resources. Every resource is
 * an exact topic (in IoT policies '*' is the wildcard and MQTT's '+' and '#'
 * are plain characters, and the agent needs none), so the document stays far
 * below IoT Core's 2,048 characters per policy document at the longest names
 * and prefix twill allows (test/unit/authorizer.test.ts measures it). The
 * agent sets a retained last will on its status, which IoT Core allows only
 * with the LastWill connect attribute granted ("Using connectAttributes").
 */
export function nodePolicy(topics: Topics, node: Pick<NodeRecord, 'name' | 'network'>, region: string, accountId: string, idKind: 'current' | 'legacy' = 'current'): PolicyDocument {
  const g = nodeGrants(topics, node);
  const arn = (kind: 'client' | 'topic' | 'topicfilter', rest: string) => `arn:aws:iot:${region}:${accountId}:${kind}/${rest}`;
  return {
    Version: '2012-10-17',
    Statement: [
      {
        Effect: 'Allow',
        Action: 'iot:Connect',
        // Exactly the id this connection came with (core/acl.ts): a 0.1
        // agent's during an upgrade, otherwise the deployment's own.
        Resource: arn('client', idKind === 'legacy' && g.legacyClientId ? g.legacyClientId : g.clientId),
        Condition: { 'ForAllValues:StringEquals': { 'iot:ConnectAttributes': ['LastWill'] } },
      },
      { Effect: 'Allow', Action: 'iot:Publish', Resource: g.publish.map((t) => arn('topic', t)) },
      { Effect: 'Allow', Action: 'iot:RetainPublish', Resource: g.retain.map((t) => arn('topic', t)) },
      { Effect: 'Allow', Action: 'iot:Subscribe', Resource: g.read.map((t) => arn('topicfilter', t)) },
      { Effect: 'Allow', Action: 'iot:Receive', Resource: g.read.map((t) => arn('topic', t)) },
    ],
  };
}

/** IoT Core's custom authorizer limits: each policy document at most 2,048 characters, at most 10 of them. */
export const MAX_POLICY_CHARS = 2048;
export const MAX_POLICY_DOCUMENTS = 10;

/**
 * The policy as IoT Core accepts it from an authorizer: its statements packed
 * into as few documents as keep each within MAX_POLICY_CHARS (at the longest
 * names and prefix twill allows, one document would not).
 */
export function splitPolicy(policy: PolicyDocument): PolicyDocument[] {
  const docs: PolicyDocument[] = [];
  let current: PolicyDocument = { Version: policy.Version, Statement: [] };
  for (const st of policy.Statement) {
    const next: PolicyDocument = { Version: policy.Version, Statement: [...current.Statement, st] };
    if (current.Statement.length > 0 && JSON.stringify(next).length > MAX_POLICY_CHARS) {
      docs.push(current);
      current = { Version: policy.Version, Statement: [st] };
    } else {
      current = next;
    }
  }
  if (current.Statement.length) docs.push(current);
  for (const d of docs) {
    if (JSON.stringify(d).length > MAX_POLICY_CHARS) throw new Error(`a policy statement alone is ${JSON.stringify(d).length} characters: IoT Core takes at most ${MAX_POLICY_CHARS} per document`);
  }
  if (docs.length > MAX_POLICY_DOCUMENTS) throw new Error(`the policy needs ${docs.length} documents: IoT Core takes at most ${MAX_POLICY_DOCUMENTS}`);
  return docs;
}

type Credentials = { ok: true; node: string; password: string; clientId?: string } | { ok: false; reason: string; node?: string };

/** The node name and password from the CONNECT, or why they are unusable. */
function readCredentials(event: IoTCustomAuthorizerEvent): Credentials {
  const mqtt = event?.protocolData?.mqtt;
  if (!mqtt) return { ok: false, reason: 'no MQTT credentials: connect over MQTT with the node name as username and its password' };
  const clientId = typeof mqtt.clientId === 'string' ? mqtt.clientId : undefined;
  if (typeof mqtt.username !== 'string' || mqtt.username === '') return { ok: false, reason: 'no username: it must be the node name' };
  const q = mqtt.username.indexOf(QUERY_START);
  const node = q >= 0 ? mqtt.username.slice(0, q) : mqtt.username;
  if (!NAME_RE.test(node)) return { ok: false, reason: `username ${JSON.stringify(node.slice(0, 80))} is not a node name` };
  if (typeof mqtt.password !== 'string' || mqtt.password === '') return { ok: false, node, reason: 'no password' };
  if (mqtt.password.length > 2 * MAX_PASSWORD_BYTES || !BASE64_RE.test(mqtt.password)) {
    return { ok: false, node, reason: 'password field is not base64, as IoT Core sends it' };
  }
  const bytes = Buffer.from(mqtt.password, 'base64');
  const password = bytes.toString('utf8');
  // A password that is not UTF-8 text cannot be one twill issued.
  if (bytes.length === 0 || bytes.length > MAX_PASSWORD_BYTES || !Buffer.from(password, 'utf8').equals(bytes)) {
    return { ok: false, node, reason: 'password is not a twill node password' };
  }
  return { ok: true, node, password, clientId };
}

export async function authorize(event: IoTCustomAuthorizerEvent, opts: AuthorizerOptions): Promise<IoTCustomAuthorizerResult> {
  const refresh = clamp(opts.refreshAfterInSeconds ?? DEFAULT_REFRESH_SECONDS, 'refreshAfterInSeconds');
  const disconnect = clamp(opts.disconnectAfterInSeconds ?? DEFAULT_DISCONNECT_SECONDS, 'disconnectAfterInSeconds');
  const connection = event?.connectionMetadata?.id;
  const clientField = event?.protocolData?.mqtt?.clientId;
  const refuse = (reason: string, node?: string): IoTCustomAuthorizerResult => {
    opts.log.warn('IoT connection refused', { connection, client: typeof clientField === 'string' ? clientField.slice(0, 128) : undefined, node, reason });
    return { isAuthenticated: false, principalId: 'refused', disconnectAfterInSeconds: disconnect, refreshAfterInSeconds: refresh, policyDocuments: [] };
  };

  const creds = readCredentials(event);
  if (!creds.ok) return refuse(creds.reason, creds.node);
  const record = await opts.store.getNode(creds.node);
  const matches = await verifyPassword(creds.password, record?.passwordHash ?? DUMMY_HASH);
  if (!record) return refuse('unknown node: add it with twill node add', creds.node);
  if (!matches) return refuse('wrong password', creds.node);
  const grants = nodeGrants(opts.topics, record);
  const kind = creds.clientId === undefined ? 'current' : clientIdOf(grants, creds.clientId);
  if (!kind) {
    return refuse(`client id ${JSON.stringify((creds.clientId as string).slice(0, 128))} is not this node's (${grants.clientId})`, creds.node);
  }
  if (kind === 'legacy') {
    opts.log.warn('agent connected with the client id of twill 0.1 agents: upgrade it (until then a same-named node of another stage can take over its session, and a removal cuts it off only at the next refresh)', {
      connection, client: creds.clientId, node: record.name, network: record.network, upgradedId: grants.clientId,
    });
  }
  opts.log.info('IoT connection authorized', { connection, node: record.name, network: record.network });
  return {
    isAuthenticated: true,
    principalId: principalIdOf(record.name),
    disconnectAfterInSeconds: disconnect,
    refreshAfterInSeconds: refresh,
    policyDocuments: splitPolicy(nodePolicy(opts.topics, record, opts.region, opts.accountId, kind)),
  };
}
