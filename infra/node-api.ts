// The node API agents list their network from (protocol v2's list, then
// watch): a function URL over the table, authenticated by each node's own
// credentials in the function (HTTP Basic, checked against the same hashes as
// the IoT authorizer). Its URL goes into the environment of every function
// that publishes a node's own lease, which tells the agent where to list.
import { defaults, environment, grants } from './functions.js';

export const nodeApi = new sst.aws.Function('NodeApi', {
  handler: 'functions/handlers/node-api.handler',
  ...defaults,
  url: { cors: false },
  environment: environment(),
  // A node added by an earlier version has a scrypt hash: its first request verifies it (16 MB, a CPU).
  memory: '512 MB',
  permissions: [grants.tableGetItem, grants.tableRead],
});

/** For the functions that publish own leases. */
export const nodeApiEnvironment = { TWILL_NODE_API_URL: nodeApi.url };
