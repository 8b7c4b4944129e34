// What every Lambda handler shares: the control plane (control/plane.ts)
// over DynamoDB and IoT Core, built from the environment once per container
// (a warm container reuses it, and its SDK clients' connections), exactly as
// the local controller builds it; and the Lambda host's own needs: secrets
// from SSM, the instance-events queue, the invocation's deadline. The
// handlers only translate events.
//
// Environment (infra/functions.ts sets it; nothing here has a default that
// reaches AWS on its own):
//   TWILL_TABLE               DynamoDB table name
//   TWILL_PREFIX              topic prefix, "<app>/<stage>" (IoT Core is shared by the account)
//   TWILL_IOT_ENDPOINT        https://<id>-ats.iot.<region>.amazonaws.com (the account's data endpoint)
//   TWILL_IOT_AUTHORIZER      the custom authorizer's name, written into agent configs
//   TWILL_NODE_API_URL        the node API's function URL, told to every agent on its own topic
//   TWILL_LEASE_TTL           lease lifetime, e.g. 24h (default 24h)
//   TWILL_ADMIN_TOKEN_PARAM   SSM SecureString holding the admin API token
//   TWILL_ALI_TOKEN_PARAM     SSM SecureString holding Alibaba EventBridge's shared token
//   TWILL_GCE_PUSH_AUDIENCE, TWILL_GCE_PUSH_SERVICE_ACCOUNT, TWILL_GCE_JWKS_URL
//                             what a GCE Pub/Sub push token must say (control/auth/push-auth.ts)
//   TWILL_GCE_PROJECT, TWILL_GCE_CREDENTIALS (a workload identity federation
//                             credential config, JSON), TWILL_GCE_ENDPOINT
//   TWILL_ALI_REGION, TWILL_ALI_ENDPOINT
//   TWILL_EVENTS_QUEUE_URL    the SQS queue instance events are reconciled from
//                             (the push function sends the GCE and Ali events there)
//   AWS_REGION and the SDK's own variables (credentials, AWS_ENDPOINT_URL_<SERVICE>)
// A value of "none" (the placeholder of an unset sst.Secret) counts as unset.
import { AsyncLocalStorage } from 'node:async_hooks';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { GetParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { parseDuration } from '../../core/duration.js';
import { TwillError } from '../../core/errors.js';
import { createLogger, type Logger } from '../../core/log.js';
import { Topics } from '../../core/topics.js';
import { nodeClientId } from '../../core/acl.js';
import { CLOUD_NAMES } from '../../core/backends/index.js';
import { cloudServing, type Cloud, type CloudKind } from '../routes/clouds/cloud.js';
import { createCloud } from '../routes/clouds/index.js';
import type { Controller } from '../controller/controller.js';
import { createControlPlane, type ControlPlane } from '../plane.js';
import { StoreLocks } from '../store/locks.js';
import { googleOidcVerifier, type AuthResult } from '../auth/push-auth.js';
import { IotPublisher } from '../publish/iot.js';
import { DynamoStore } from '../store/dynamo.js';

export interface RuntimeEnv {
  table: string;
  prefix: string;
  iotEndpoint: string;
  iotAuthorizer?: string;
  nodeApiUrl?: string;
  leaseTtlMs?: number;
  region?: string;
  adminTokenParam?: string;
  aliTokenParam?: string;
  gcePush?: { audience: string; serviceAccount: string; jwksUrl?: string };
  gceProject?: string;
  gceCredentials?: string;
  gceEndpoint?: string;
  aliRegion?: string;
  aliEndpoint?: string;
  eventsQueueUrl?: string;
}

/** How long a secret read from SSM is trusted: a rotated token takes effect within this. */
const SECRET_TTL_MS = 5 * 60_000;

function value(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const v = env[name]?.trim();
  return v && v !== 'none' ? v : undefined;
}

function required(env: NodeJS.ProcessEnv, name: string, what: string): string {
  const v = value(env, name);
  if (!v) throw new TwillError('NoConfig', `${name} is not set: it must name ${what} (infra sets it; see docs/serverless.md)`);
  return v;
}

export function readEnv(env: NodeJS.ProcessEnv = process.env): RuntimeEnv {
  const audience = value(env, 'TWILL_GCE_PUSH_AUDIENCE');
  const serviceAccount = value(env, 'TWILL_GCE_PUSH_SERVICE_ACCOUNT');
  const ttl = value(env, 'TWILL_LEASE_TTL');
  const endpoint = required(env, 'TWILL_IOT_ENDPOINT', "the account's IoT data endpoint");
  return {
    table: required(env, 'TWILL_TABLE', 'the DynamoDB table'),
    prefix: required(env, 'TWILL_PREFIX', 'the topic prefix (app/stage)'),
    iotEndpoint: /^https?:\/\//.test(endpoint) ? endpoint : `https://${endpoint}`,
    iotAuthorizer: value(env, 'TWILL_IOT_AUTHORIZER'),
    nodeApiUrl: value(env, 'TWILL_NODE_API_URL'),
    leaseTtlMs: ttl ? parseDuration(ttl, 'TWILL_LEASE_TTL') : undefined,
    region: value(env, 'AWS_REGION'),
    adminTokenParam: value(env, 'TWILL_ADMIN_TOKEN_PARAM'),
    aliTokenParam: value(env, 'TWILL_ALI_TOKEN_PARAM'),
    gcePush: audience && serviceAccount ? { audience, serviceAccount, jwksUrl: value(env, 'TWILL_GCE_JWKS_URL') } : undefined,
    gceProject: value(env, 'TWILL_GCE_PROJECT'),
    gceCredentials: value(env, 'TWILL_GCE_CREDENTIALS'),
    gceEndpoint: value(env, 'TWILL_GCE_ENDPOINT'),
    aliRegion: value(env, 'TWILL_ALI_REGION'),
    aliEndpoint: value(env, 'TWILL_ALI_ENDPOINT'),
    eventsQueueUrl: value(env, 'TWILL_EVENTS_QUEUE_URL'),
  };
}

export interface Runtime {
  env: RuntimeEnv;
  plane: ControlPlane;
  topics: Topics;
  store: DynamoStore;
  publisher: IotPublisher;
  controller: Controller;
  log(component: string): Logger;
  /** The cloud of a kind, made on first use (each SDK loads only when needed). */
  cloud(kind: CloudKind): Promise<Cloud>;
  /** An SSM SecureString, cached for a few minutes; undefined when unset. */
  secret(param: string | undefined): Promise<string | undefined>;
  /** Verifies a GCE push request's token; undefined when GCE push is not configured. */
  gceVerifier(): ((authorization: string | undefined) => Promise<AuthResult>) | undefined;
  /** Sends an instance event to the queue it is reconciled from; returns the message id. */
  enqueue(body: string): Promise<string>;
  /**
   * When the invocation must be done (epoch ms; undefined: no limit): cloud
   * route changes that could not finish by then are not started (Ali). Lambda
   * runs one invocation at a time per container, so the handler sets it.
   */
  setDeadline(at: number | undefined): void;
  close(): Promise<void>;
}

/**
 * Credentials for the AWS clients other than the SDK's default chain (which
 * reads the ones Lambda puts in the function's environment): tests run
 * several functions in one process, each with its own role's.
 */
export interface AwsAccess {
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
}

export function createRuntime(env: RuntimeEnv, aws: AwsAccess = {}): Runtime {
  const root = createLogger('lambda');
  const topics = new Topics(env.prefix);
  const store = new DynamoStore({ tableName: env.table, clientConfig: { ...aws } });
  const publisher = new IotPublisher({ clientConfig: { endpoint: env.iotEndpoint, ...(env.region ? { region: env.region } : {}), ...aws } });
  const clouds = new Map<CloudKind, Promise<Cloud>>();
  const secrets = new Map<string, { value: string | undefined; at: number }>();
  let ssm: SSMClient | undefined;
  let sqs: SQSClient | undefined;
  let verifier: ((authorization: string | undefined) => Promise<AuthResult>) | undefined;
  let deadline: number | undefined;
  // Ali's VPC lock holds across function instances: a queued event and a scheduled run may change one VPC at once.
  const locks = new StoreLocks(store, { log: root.child('locks') });

  const makeCloud = async (kind: CloudKind): Promise<Cloud> => {
    if (kind === 'gce' && env.gceCredentials && !process.env.GOOGLE_APPLICATION_CREDENTIALS) {
      // Google's libraries read credentials from a file; /tmp is the only writable place in Lambda.
      const file = join(tmpdir(), 'twill-gcp-credentials.json');
      writeFileSync(file, env.gceCredentials, { mode: 0o600 });
      process.env.GOOGLE_APPLICATION_CREDENTIALS = file;
    }
    if (kind === 'sim') throw new TwillError('WrongCloud', 'the simulated cloud runs only in the local controller');
    const options = kind === 'gce' ? { project: env.gceProject, endpoint: env.gceEndpoint }
      : kind === 'ali' ? { region: env.aliRegion, endpoint: env.aliEndpoint, locks, deadline: () => deadline }
      : { region: env.region, ...aws };
    return createCloud(kind, options);
  };

  const cloud = (kind: CloudKind): Promise<Cloud> => {
    let c = clouds.get(kind);
    if (!c) {
      c = makeCloud(kind);
      // A cloud that failed to build is tried again on the next call, not remembered.
      c.catch(() => clouds.delete(kind));
      clouds.set(kind, c);
    }
    return c;
  };
  const secret = async (param: string | undefined): Promise<string | undefined> => {
    if (!param) return undefined;
    const hit = secrets.get(param);
    if (hit && Date.now() - hit.at < SECRET_TTL_MS) return hit.value;
    ssm ??= new SSMClient({ ...(env.region ? { region: env.region } : {}), ...aws });
    const r = await ssm.send(new GetParameterCommand({ Name: param, WithDecryption: true }));
    const v = r.Parameter?.Value?.trim();
    const got = v && v !== 'none' ? v : undefined;
    secrets.set(param, { value: got, at: Date.now() });
    return got;
  };
  const apiLog = root.child('api');
  const plane = createControlPlane({
    store, publisher, topics, log: root, controllerLog: root.child('controller'), leaseTtlMs: env.leaseTtlMs,
    nodeApiUrl: env.nodeApiUrl?.replace(/\/$/, ''),
    clouds: { kindOf: (type) => cloudServing(type, CLOUD_NAMES), get: cloud },
    // IoT Core lists what it retains (ListRetainedMessages) and answers for one topic.
    retained: publisher,
    admin: {
      // Read from SSM (a SecureString, cached a few minutes), never from code or the function's configuration.
      token: () => secret(env.adminTokenParam),
      // Agent configs point at IoT Core over wss with the custom authorizer, so they work as printed.
      broker: `wss://${new URL(env.iotEndpoint).host}/mqtt`, prefix: env.prefix, authorizer: env.iotAuthorizer,
      // IoT Core keeps a connection's policy until it refreshes: a removed or rotated node is disconnected now.
      revokeSessions: async (n) => {
        if (await publisher.disconnect(nodeClientId(topics.prefix, n.network, n.name))) apiLog.info('node disconnected from IoT Core', { node: n.name, network: n.network });
      },
    },
  });

  return {
    env,
    plane,
    topics,
    store,
    publisher,
    controller: plane.controller,
    log: (component) => root.child(component),
    cloud,
    secret,
    gceVerifier() {
      if (!env.gcePush) return undefined;
      verifier ??= googleOidcVerifier(env.gcePush);
      return verifier;
    },
    async enqueue(body) {
      if (!env.eventsQueueUrl) throw new TwillError('NoConfig', 'TWILL_EVENTS_QUEUE_URL is not set: it must name the instance-events queue (infra sets it)');
      sqs ??= new SQSClient({ ...(env.region ? { region: env.region } : {}), ...aws });
      const r = await sqs.send(new SendMessageCommand({ QueueUrl: env.eventsQueueUrl, MessageBody: body }));
      return r.MessageId ?? '';
    },
    setDeadline(at) {
      deadline = at;
    },
    async close() {
      for (const c of clouds.values()) await c.then((x) => x.close?.()).catch(() => {});
      publisher.close();
      ssm?.destroy();
      sqs?.destroy();
      await store.close();
    },
  };
}

let current: Runtime | undefined;
const scoped = new AsyncLocalStorage<Runtime>();

/** The container's runtime, built on first use from the environment. */
export function runtime(): Runtime {
  const given = scoped.getStore();
  if (given) return given;
  current ??= createRuntime(readEnv());
  return current;
}

/**
 * Runs fn with rt as the runtime every handler it calls reads. Lambda runs
 * one function per container; a test runs several in one process, each with
 * its own runtime and credentials (test/helpers/serverless.ts).
 */
export function withRuntime<T>(rt: Runtime, fn: () => T): T {
  return scoped.run(rt, fn);
}

/** Drops the container's runtime (tests change the environment between cases). */
export async function resetRuntime(): Promise<void> {
  const r = current;
  current = undefined;
  await r?.close();
}
