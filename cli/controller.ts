import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readNetConf } from '../core/config.js';
import { parseDuration } from '../core/duration.js';
import { ConfigError, TwillError } from '../core/errors.js';
import { createLogger } from '../core/log.js';
import { checkName } from '../core/topics.js';
import { parseCloudKind } from '../control/routes/clouds/index.js';
import { startLocalController } from '../control/local/server.js';
import { DEFAULT_DATA_DIR, parse } from './args.js';

export const CONTROLLER_USAGE = `twill controller [--listen 127.0.0.1:1883] [--data-dir .twill] [--network NAME=FILE]...
                 [--broker URL --broker-username U --broker-password P] [--prefix twill]
                 [--lease-ttl 24h] [--sync-interval 10s] [--metrics-addr 127.0.0.1:9465]
                 [--api-listen 127.0.0.1:7080 [--admin-token-file DATA_DIR/admin-token]]
                 [--cloud aws|gce|ali|sim [--reconcile-interval 30s] [--cloud-endpoint URL]
                  [--cloud-region REGION] [--cloud-project PROJECT]]

  --cloud runs the route controller for the networks whose Backend.Type is
  aws-vpc, gce or ali-vpc (sim: all three, against a simulated VPC kept in the
  data directory and driven with twill sim). Credentials and endpoints come
  from each SDK's usual configuration (AWS: the default chain, AWS_REGION,
  AWS_ENDPOINT_URL; GCE: Application Default Credentials, GOOGLE_CLOUD_PROJECT,
  GOOGLE_OAUTH_ACCESS_TOKEN; Ali: the network's AccessKeyID/AccessKeySecret or
  ACCESS_KEY_ID/ACCESS_KEY_SECRET, ALIBABA_CLOUD_REGION_ID).`;

/** --network NAME=FILE, read and validated before anything starts. */
function readNetworks(specs: string[]) {
  return specs.map((spec) => {
    const eq = spec.indexOf('=');
    if (eq <= 0) throw new TwillError('Usage', `--network ${spec}: write it as NAME=FILE`);
    const name = checkName('network', spec.slice(0, eq));
    const file = spec.slice(eq + 1);
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new TwillError('NoConfig', `--network ${name}: cannot read ${file}: ${(e as Error).message}`);
    }
    try {
      const { config, warnings } = readNetConf(text);
      return { name, file, config, warnings };
    } catch (e) {
      if (e instanceof ConfigError) throw new TwillError('InvalidConfig', `--network ${name}: ${file}: ${e.errors.join('; ')}`);
      throw e;
    }
  });
}

/** Every flag twill controller takes: its parsing, and what the help and README are checked against. */
export const CONTROLLER_OPTIONS = {
  listen: { type: 'string', default: '127.0.0.1:1883' },
  'data-dir': { type: 'string', default: DEFAULT_DATA_DIR },
  network: { type: 'string', multiple: true, default: [] as string[] },
  broker: { type: 'string' },
  'broker-username': { type: 'string', default: process.env.TWILL_BROKER_USERNAME },
  'broker-password': { type: 'string', default: process.env.TWILL_BROKER_PASSWORD },
  prefix: { type: 'string' },
  'lease-ttl': { type: 'string', default: '24h' },
  'sync-interval': { type: 'string', default: '10s' },
  'metrics-addr': { type: 'string' },
  'api-listen': { type: 'string' },
  'admin-token-file': { type: 'string' },
  cloud: { type: 'string' },
  'cloud-endpoint': { type: 'string' },
  'cloud-region': { type: 'string' },
  'cloud-project': { type: 'string' },
  'reconcile-interval': { type: 'string', default: '30s' },
} as const;

export async function controllerCommand(args: string[]): Promise<number> {
  const { values } = parse(args, CONTROLLER_OPTIONS);
  const cloud = values.cloud === undefined ? undefined : parseCloudKind(values.cloud);
  for (const flag of ['cloud-endpoint', 'cloud-region', 'cloud-project'] as const) {
    if (values[flag] !== undefined && !cloud) throw new TwillError('Usage', `--${flag} needs --cloud`);
  }
  const log = createLogger('controller');
  const networks = readNetworks(values.network);
  // Once, at start: what flannel would have ignored silently.
  for (const n of networks) for (const w of n.warnings) log.warn('net-conf.json accepted with a warning', { network: n.name, file: n.file, warning: w });
  const ctl = await startLocalController({
    dataDir: values['data-dir'],
    listen: values.listen,
    brokerUrl: values.broker,
    brokerUsername: values['broker-username'],
    brokerPassword: values['broker-password'],
    prefix: values.prefix,
    networks,
    leaseTtlMs: parseDuration(values['lease-ttl'], '--lease-ttl'),
    syncIntervalMs: parseDuration(values['sync-interval'], '--sync-interval'),
    reconcileIntervalMs: parseDuration(values['reconcile-interval'], '--reconcile-interval'),
    metricsAddr: values['metrics-addr'],
    apiListen: values['api-listen'],
    adminTokenFile: values['admin-token-file'],
    ...(cloud ? { cloud: { kind: cloud, options: { endpoint: values['cloud-endpoint'], region: values['cloud-region'], project: values['cloud-project'] } } } : {}),
    log,
  });
  const extras = [ctl.cloud ? `, routes on ${ctl.cloud.kind}` : '', ctl.metricsUrl ? `, metrics ${ctl.metricsUrl}/metrics` : '', ctl.apiUrl ? `, admin API ${ctl.apiUrl}` : ''].join('');
  process.stdout.write(`twill controller: broker ${ctl.url}, data in ${values['data-dir']}${extras}\n`);
  // The first thing a newcomer wants to open; the token is a file's path, never the token itself.
  process.stdout.write(`dashboard: ${ctl.apiUrl}/dashboard/ (sign in with the admin token in ${values['admin-token-file'] ?? join(values['data-dir'] as string, 'admin-token')})\n`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  log.info('shutting down');
  await ctl.close();
  return 0;
}
