// The node API agents list their network from (protocol v2's list, then
// watch): a function URL over the table, authenticated by each node's own
// credentials in the function (HTTP Basic, checked against the same hashes as
// the IoT authorizer). Its URL goes into the environment of every function
// that publishes a node's own lease, which tells the agent where to list.
import { defaults, environment, permissions } from './functions.js';

export const nodeApi = new sst.aws.Function('NodeApi', {
  handler: 'functions/node-api.handler',
  ...defaults,
  url: { cors: false },
  environment: environment(),
  // Every poll of every agent lands here (most of the deployment's
  // invocations, docs/serverless.md), so it runs small: a salted SHA-256 and
  // a few reads. A node added by an earlier version has a scrypt hash (16 MB);
  // its first request in a container verifies it, a few hundred ms here.
  memory: '256 MB',
  permissions: permissions('NodeApi'),
});

/** For the functions that publish own leases. */
export const nodeApiEnvironment = { TWILL_NODE_API_URL: nodeApi.url };
