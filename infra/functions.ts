// What every twill function shares: runtime, bundling, environment, and the
// IAM statements, each written out and granted only to the functions that
// need it (least privilege; sst's linking would grant broader defaults).
import { account, parameters, partition, prefix, region, settings } from './config.js';
import { table, tableResources } from './storage.js';

/** The account's IoT data endpoint (ATS): where the functions publish and agents connect. */
export const iotEndpoint = aws.iot.getEndpointOutput({ endpointType: 'iot:Data-ATS' }).endpointAddress;

/**
 * Bundling: ESM with code splitting, so each cloud's SDK is a chunk loaded
 * only when a network of that cloud is reconciled (GCE's alone is ~70 MB of
 * generated code; the authorizer's cold start never reads it).
 */
export const defaults = {
  runtime: 'nodejs20.x',
  // Graviton: the same code, about 20% cheaper per GB-second; nothing here is native.
  architecture: 'arm64',
  memory: '256 MB',
  timeout: '30 seconds',
  logging: { retention: '1 month' },
  nodejs: { format: 'esm', splitting: true },
} satisfies Partial<sst.aws.FunctionArgs>;

/** The environment functions/handlers/runtime.ts reads. */
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

type Statement = sst.aws.FunctionPermissionArgs;

const topicArn = $interpolate`arn:${partition}:iot:${region}:${account}:topic/${prefix}/*`;

export const grants = {
  /** The authorizer reads a node's credentials: one item at a time. */
  tableGetItem: { actions: ['dynamodb:GetItem'], resources: tableResources } satisfies Statement,
  /** The node API reads leases and the change log, consistently. */
  tableRead: { actions: ['dynamodb:GetItem', 'dynamodb:Query'], resources: tableResources } satisfies Statement,
  /** Everything functions/store/dynamo.ts does (TransactWriteItems is authorized per item as these). */
  tableReadWrite: {
    actions: ['dynamodb:GetItem', 'dynamodb:BatchGetItem', 'dynamodb:Query', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
    resources: tableResources,
  } satisfies Statement,
  /** Publishing retained state, under this deployment's prefix only (retained publishes need both actions). */
  iotPublish: { actions: ['iot:Publish', 'iot:RetainPublish'], resources: [topicArn] } satisfies Statement,
  /**
   * The admin API disconnects a removed or rotated node's MQTT client.
   * DeleteConnection's resource is the client, and this stage's agents'
   * ids, and no other stage's, start "<prefix>:" (core/acl.ts nodeClientId).
   */
  iotDisconnect: { actions: ['iot:DeleteConnection'], resources: [$interpolate`arn:${partition}:iot:${region}:${account}:client/${prefix}:*`] } satisfies Statement,
  /** The scheduled republish reads each network's retained config under the prefix. */
  iotGetRetained: { actions: ['iot:GetRetainedMessage'], resources: [topicArn] } satisfies Statement,
  /**
   * The retained cleanup lists the account's retained topics (keeping those
   * under the prefix): ListRetainedMessages has no resource type, so '*'.
   */
  iotListRetained: { actions: ['iot:ListRetainedMessages'], resources: ['*'] } satisfies Statement,
  /** EC2's Describe calls have no resource-level permissions. */
  ec2Describe: { actions: ['ec2:DescribeInstances', 'ec2:DescribeRouteTables'], resources: ['*'] } satisfies Statement,
  /** Route changes, in this account and region's route tables. */
  ec2Routes: {
    actions: ['ec2:CreateRoute', 'ec2:ReplaceRoute', 'ec2:DeleteRoute'],
    resources: [$interpolate`arn:${partition}:ec2:${region}:${account}:route-table/*`],
  } satisfies Statement,
  /** Turning off the source/destination check of an instance's primary interface, so it may forward pod traffic. */
  ec2SourceDestCheck: {
    actions: ['ec2:ModifyNetworkInterfaceAttribute'],
    resources: [$interpolate`arn:${partition}:ec2:${region}:${account}:network-interface/*`],
  } satisfies Statement,
  adminToken: { actions: ['ssm:GetParameter'], resources: [parameters.adminToken.arn] } satisfies Statement,
  aliEventToken: { actions: ['ssm:GetParameter'], resources: [parameters.aliEventToken.arn] } satisfies Statement,
};

/** What reconciling a cloud network takes: the store, publishing, and the EC2 calls. */
export const reconcileGrants = [grants.tableReadWrite, grants.iotPublish, grants.ec2Describe, grants.ec2Routes, grants.ec2SourceDestCheck];
