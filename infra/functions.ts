// What every twill function shares: runtime, bundling, environment, and the
// IAM statements, each function's own (least privilege; sst's linking would
// grant broader defaults).
import { account, parameters, partition, prefix, region, settings } from './config.js';
import { fill, GRANTS, type FunctionName } from './grants.js';
import { table } from './storage.js';

/** The account's IoT data endpoint (ATS): where the functions publish and agents connect. */
export const iotEndpoint = aws.iot.getEndpointOutput({ endpointType: 'iot:Data-ATS' }).endpointAddress;

/**
 * Bundling: ESM with code splitting, so each cloud's SDK is a chunk loaded
 * only when a network of that cloud is reconciled (GCE's alone is ~70 MB of
 * generated code; the authorizer's cold start never reads it).
 */
export const defaults = {
  // Node.js 24: Lambda deprecated nodejs20.x when Node 20 reached end of life
  // (2026-04-30) and blocks creating functions on it ("Lambda runtimes", deprecation policy).
  runtime: 'nodejs24.x',
  // Graviton: the same code, about 20% cheaper per GB-second; nothing here is native.
  architecture: 'arm64',
  memory: '256 MB',
  timeout: '30 seconds',
  // JSON, so that Lambda filters by level ("Log-level filtering", Lambda
  // developer guide: it needs the JSON log format). twill's lines are JSON
  // objects with a "level" (TWILL_LOG_FORMAT below) and the metrics' EMF
  // documents are JSON objects too: both pass through as they are.
  logging: { retention: '1 month', format: 'json' },
  transform: {
    // System logs at WARN: no START, END and REPORT lines for every
    // invocation. At 10,000 nodes the functions run ~70 million times a
    // month; those three lines (~330 bytes) would be ~20 GB of CloudWatch
    // Logs (~$11 a month), more than twill's own lines. Duration, errors and
    // throttles stay in CloudWatch's Lambda metrics, which the alarms read.
    function: (args) => {
      if (args.loggingConfig) args.loggingConfig = $output(args.loggingConfig).apply((c) => ({ ...c, systemLogLevel: 'WARN' }));
    },
  },
  nodejs: { format: 'esm', splitting: true },
} satisfies Partial<sst.aws.FunctionArgs>;

/** The environment control/lambda/runtime.ts reads. */
export function environment(extra: Record<string, $util.Input<string>> = {}): Record<string, $util.Input<string>> {
  return {
    TWILL_TABLE: table.name,
    TWILL_PREFIX: prefix,
    TWILL_IOT_ENDPOINT: $interpolate`https://${iotEndpoint}`,
    TWILL_LEASE_TTL: '24h',
    TWILL_LOG_LEVEL: 'info',
    // one JSON object a line: CloudWatch Logs Insights queries the fields
    TWILL_LOG_FORMAT: 'json',
    ...extra,
  };
}

/** Cloud settings, for the functions that reconcile gce and ali-vpc networks. */
export const cloudEnvironment = {
  TWILL_GCE_PROJECT: settings.gceProject.value,
  TWILL_GCE_CREDENTIALS: settings.gceCredentials.value,
  TWILL_ALI_REGION: settings.aliRegion.value,
};

// Each function's IAM statements are written once, as plain data, in
// infra/grants.ts (the tests' AWS stand-ins enforce the same table): here they
// get this deployment's values.
const grantValues = {
  partition,
  region,
  account,
  table: table.name,
  prefix,
  adminTokenParameter: parameters.adminToken.name,
  aliEventTokenParameter: parameters.aliEventToken.name,
};

/**
 * A function's IAM statements (infra/grants.ts), for this deployment: nothing
 * else is granted. `more`: values of resources made after this module (the
 * events queue), for the grants that name them.
 */
export function permissions(fn: FunctionName, more: { eventsQueue?: $util.Input<string> } = {}): sst.aws.FunctionPermissionArgs[] {
  const values = $resolve({ ...grantValues, ...more });
  return GRANTS[fn].map((g) => ({ actions: [...g.actions], resources: g.resources.map((r) => values.apply((v) => fill(r, v))) }));
}
