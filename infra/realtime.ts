// MQTT on AWS IoT Core: the custom authorizer agents connect through, and the
// rules that hand their hello and status messages to the controller.
import { prefix, reservedConcurrency } from './config.js';
import { defaults, environment, permissions } from './functions.js';
import { nodeApiEnvironment } from './node-api.js';

const REALTIME = 'Realtime';

// sst.aws.Realtime grants its authorizer function iot:* on every resource.
// The authorizer only reads a node's credentials from the table (the policy
// it returns is what IoT Core enforces), so that grant is replaced with the
// one read it needs. $transform must be registered before the component is
// made; it matches the authorizer function by the name Realtime gives it.
$transform(sst.aws.Function, (args, _opts, name) => {
  if (name === `${REALTIME}AuthorizerHandler`) args.permissions = permissions('Authorizer');
});

export const realtime = new sst.aws.Realtime(REALTIME, {
  authorizer: {
    handler: 'functions/authorizer.handler',
    ...defaults,
    // Nodes added by earlier versions have scrypt hashes (N=16384: 16 MB and a
    // CPU); 512 MB gets a third of a vCPU and keeps their CONNECT well under
    // IoT Core's 5 s authorizer deadline.
    memory: '512 MB',
    timeout: '5 seconds',
    environment: environment(),
    permissions: permissions('Authorizer'),
    // Agents cannot connect without it, so a stage may reserve it capacity no
    // burst of the account's other functions can take (AuthorizerConcurrency).
    // Not by default: Lambda keeps 100 executions unreserved, and a new
    // account's quota (10 to 50) leaves nothing to reserve.
    concurrency: reservedConcurrency('authorizerConcurrency'),
  },
  transform: {
    authorizer: (args) => {
      // Username and password: the token-signing scheme is for bearer tokens
      // signed by a key IoT Core holds, which agents have none of.
      args.signingDisabled = true;
      args.status = 'ACTIVE';
    },
  },
});

/**
 * One function for both rules: Controller.handleMessage tells a hello from a
 * status by its topic, as the local controller does.
 */
export const agentMessages = new sst.aws.Function('AgentMessages', {
  handler: 'functions/iot.handler',
  ...defaults,
  environment: environment(nodeApiEnvironment),
  permissions: permissions('AgentMessages'),
  // handleMessage never throws, so a retry would only repeat a logged refusal;
  // an agent whose hello went unanswered sends it again by itself.
  retries: 0,
  // A join storm is a burst of hellos: with AgentMessagesConcurrency set it is
  // capped, so the excess waits in Lambda's queue of asynchronous events (IoT
  // rules invoke asynchronously, and a throttled event is retried) instead of
  // taking the account's concurrency. Unset by default, as above.
  concurrency: reservedConcurrency('agentMessagesConcurrency'),
});

/**
 * A rule per message kind. The SELECT passes the topic (which names network
 * and node) and the payload as IoT Core received it, base64-encoded so that
 * any bytes reach the controller's own parser unchanged, which refuses them
 * exactly as the local controller would.
 */
function agentRule(kind: 'hello' | 'status') {
  const filter = `${prefix}/v2/node/+/+/${kind}`;
  return realtime.subscribe(agentMessages.arn, {
    filter,
    transform: {
      topicRule: (args) => {
        args.sql = `SELECT topic() AS topic, clientid() AS clientId, encode(*, 'base64') AS payload FROM '${filter}'`;
        args.sqlVersion = '2016-03-23';
        args.description = `twill ${kind} messages of ${prefix} to the controller`;
      },
    },
  });
}

export const helloRule = agentRule('hello');
// Statuses too, so that `twill status` (the admin API) shows every agent's
// state; an agent publishes one only when something in it changed.
export const statusRule = agentRule('status');
