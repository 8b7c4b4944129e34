// AWS IoT Core's stand-in wired as the deployment wires the real one: TLS
// with a certificate for localhost that agent processes trust the way a host
// trusts a private CA (NODE_EXTRA_CA_CERTS, read by each process at start,
// its options untouched), the real authorizer handler on every CONNECT, the
// two IoT rules (infra/realtime.ts) into the real hello and status handler,
// and the serverless world behind it (DynamoDB, the IoT data plane, the node
// API function URL). Each handler runs as its function (the authorizer, the
// agent-message rules' function), with that function's grants.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IoTCustomAuthorizerEvent, IoTCustomAuthorizerResult } from 'aws-lambda';
import { handler as authorizerHandler } from '../../functions/authorizer.js';
import { handler as iotHandler } from '../../functions/iot.js';
import { startFakeIotCore, type FakeIotCore, type FakeIotCoreOptions } from '../fakes/iot-core.js';
import { ACCOUNT, AUTHORIZER, PREFIX, REGION, lambdaContext, startServerless, type ServerlessWorld } from './serverless.js';

export interface IotCoreWorld {
  iot: FakeIotCore;
  w: ServerlessWorld;
  /** the CA file agents trust (NODE_EXTRA_CA_CERTS) */
  ca: string;
  close(): Promise<void>;
}

export interface IotCoreWorldOptions {
  /** the stand-in's time scale for the authorizer's refresh and disconnect clock */
  timeScale?: number;
  /** the account's retained-message quota */
  retainedQuota?: number;
  /** told as IoT Core's stand-in ends a connection on its own (test/fakes/iot-core.ts) */
  onEnded?: FakeIotCoreOptions['onEnded'];
  /** stands between IoT Core and the real authorizer handler (a test holding agents out for a while) */
  authorize?: (event: IoTCustomAuthorizerEvent, real: (e: IoTCustomAuthorizerEvent) => Promise<IoTCustomAuthorizerResult>) => Promise<IoTCustomAuthorizerResult>;
}

/** host: the address agents reach the endpoint and the node API at (default localhost). */
export async function startIotCoreWorld(dir: string, host?: string, opts: IotCoreWorldOptions = {}): Promise<IotCoreWorld> {
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', `subjectAltName=DNS:localhost${host ? `,IP:${host}` : ''}`], { stdio: 'ignore' });
  const savedCa = process.env.NODE_EXTRA_CA_CERTS;
  process.env.NODE_EXTRA_CA_CERTS = cert;
  const iot = await startFakeIotCore({
    cert: readFileSync(cert, 'utf8'),
    key: readFileSync(key, 'utf8'),
    authorizerName: AUTHORIZER,
    region: REGION,
    accountId: ACCOUNT,
    authorize: (event) => {
      // (w exists by the time an agent connects: it is made right below)
      const real = (e: IoTCustomAuthorizerEvent) => w.as('Authorizer', authorizerHandler)(e, lambdaContext('twill-test-RealtimeAuthorizerHandler'));
      return opts.authorize ? opts.authorize(event, real) : real(event);
    },
    host,
    timeScale: opts.timeScale,
    retainedQuota: opts.retainedQuota,
    onEnded: opts.onEnded,
    rules: ['hello', 'status'].map((kind) => ({ filter: `${PREFIX}/v2/node/+/+/${kind}`, invoke: (e) => w.as('AgentMessages', iotHandler)(e) })),
  });
  const w: ServerlessWorld = await startServerless(iot.internalUrl, {}, host, iot);
  return {
    iot,
    w,
    ca: cert,
    async close() {
      // IoT Core first: its rules in flight finish while the store is open, and no new one starts.
      await iot.close();
      await w.close();
      if (savedCa === undefined) delete process.env.NODE_EXTRA_CA_CERTS;
      else process.env.NODE_EXTRA_CA_CERTS = savedCa;
    },
  };
}
