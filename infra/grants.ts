// What each function may call on AWS: its IAM statements, as plain data with
// no SST globals. Infra grants exactly these (infra/functions.ts fills the
// placeholders with the deployment's values) and the tests' AWS stand-ins
// enforce exactly these (test/fakes/iam.ts fills them with the test's), so a
// call a function makes without its grant fails a test, not a deployment.
//
// Each entry is what a code path of the function calls (grep control/ and functions/ for
// `new .*Command(`), as IAM authorizes it:
// - DynamoDB: every operation is the action of its name on the table's ARN;
//   a Query on an index is authorized on the index's ARN; BatchGetItem and
//   BatchWriteItem are actions of their own (not GetItem, PutItem or
//   DeleteItem); TransactWriteItems is no action itself but is authorized item
//   by item as PutItem, UpdateItem, DeleteItem or ConditionCheckItem ("Using
//   IAM with DynamoDB transactions", DynamoDB developer guide).
// - IoT data plane: a retained publish needs iot:RetainPublish as well as
//   iot:Publish; GetRetainedMessage is authorized on the topic,
//   DeleteConnection on the client, and ListRetainedMessages on "*" only
//   ("AWS IoT Core policy actions", IoT developer guide).
// - EC2: the Describe calls have no resource-level permissions ("*"); route
//   changes are authorized on the route table, ModifyNetworkInterfaceAttribute
//   on the interface (Service Authorization Reference, Amazon EC2).
// - Service Quotas: GetServiceQuota on "*" (the route limit, vpc/L-93826ACB;
//   no grant narrower than "*" is relied on: "Actions, resources, and
//   condition keys for Service Quotas", Service Authorization Reference).
// - SSM: GetParameter on the parameter (the AWS-managed key decrypts a
//   SecureString without a KMS grant).
// What SST adds by itself is not here: CloudWatch Logs (AWSLambdaBasicExecutionRole)
// for every function, and the SQS receive/delete calls of the instance-events
// queue's poller (sst.aws.Queue.subscribe), which Lambda makes, not our code.

/** Filled in by whoever grants or enforces these: infra with the deployment's values, tests with theirs. */
export interface GrantValues {
  partition: string;
  region: string;
  account: string;
  /** the DynamoDB table's name */
  table: string;
  /** the topic prefix, <app>/<stage> */
  prefix: string;
  /** SSM parameter names, with their leading slash */
  adminTokenParameter: string;
  aliEventTokenParameter: string;
  /** the instance-events queue's name (infra/events.ts); given only where a grant names it */
  eventsQueue?: string;
}

export interface Grant {
  actions: readonly string[];
  /** ARN patterns with {placeholders} of GrantValues */
  resources: readonly string[];
}

const TABLE = 'arn:{partition}:dynamodb:{region}:{account}:table/{table}';
const INDEXES = `${TABLE}/index/*`;
/** Every topic is under the deployment's prefix (core/topics.ts): IoT Core is shared by the whole account. */
const TOPICS = 'arn:{partition}:iot:{region}:{account}:topic/{prefix}/*';
/** This stage's agents' client ids, and no other stage's, start "<prefix>:" (core/acl.ts nodeClientId). */
const CLIENTS = 'arn:{partition}:iot:{region}:{account}:client/{prefix}:*';
const ROUTE_TABLES = 'arn:{partition}:ec2:{region}:{account}:route-table/*';
const INTERFACES = 'arn:{partition}:ec2:{region}:{account}:network-interface/*';
const parameter = (name: 'adminTokenParameter' | 'aliEventTokenParameter') => `arn:{partition}:ssm:{region}:{account}:parameter{${name}}`;

/**
 * The store as the controller uses it (control/store/dynamo.ts, from
 * control/controller/controller.ts): consistent item reads, partition queries, and the
 * lease transactions (a lease and its subnet claims put or deleted, the
 * network item updated, a change item put), status puts, node updates.
 */
const storeOnTable: Grant = {
  actions: ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
  resources: [TABLE],
};
/** Listing what has no partition of its own (networks, nodes, statuses, expiring leases): the index's keys, then the items read back consistently. */
const storeLists: Grant[] = [
  { actions: ['dynamodb:Query'], resources: [INDEXES] },
  { actions: ['dynamodb:BatchGetItem'], resources: [TABLE] },
];
/** Publishing retained state (and the live changes) under the prefix. */
const publish: Grant = { actions: ['iot:Publish', 'iot:RetainPublish'], resources: [TOPICS] };
/** Reconciling aws-vpc networks (control/routes/clouds/aws.ts). */
const ec2Routes: Grant[] = [
  { actions: ['ec2:DescribeInstances', 'ec2:DescribeRouteTables'], resources: ['*'] },
  { actions: ['ec2:CreateRoute', 'ec2:ReplaceRoute', 'ec2:DeleteRoute'], resources: [ROUTE_TABLES] },
  // Turning off the source/destination check of an instance's primary interface, so it may forward pod traffic.
  { actions: ['ec2:ModifyNetworkInterfaceAttribute'], resources: [INTERFACES] },
  // The account's "Routes per route table": without it the documented 50 (and a warning).
  { actions: ['servicequotas:GetServiceQuota'], resources: ['*'] },
];

export const GRANTS = {
  /**
   * The admin API (functions/api.ts): the whole store, removing a
   * network's leftover items with BatchWriteItem (deleteNetwork), publishing,
   * disconnecting a removed or rotated node, and reading the admin token.
   */
  Api: [
    storeOnTable,
    ...storeLists,
    { actions: ['dynamodb:BatchWriteItem'], resources: [TABLE] },
    publish,
    { actions: ['iot:DeleteConnection'], resources: [CLIENTS] },
    { actions: ['ssm:GetParameter'], resources: [parameter('adminTokenParameter')] },
  ],
  /** The node API (control/http/node-api.ts): a node's credentials, its network, the change log and leases, read only. */
  NodeApi: [{ actions: ['dynamodb:GetItem', 'dynamodb:Query'], resources: [TABLE] }],
  /** The IoT custom authorizer (control/auth/authorizer.ts): one node's credentials, one item. */
  Authorizer: [{ actions: ['dynamodb:GetItem'], resources: [TABLE] }],
  /** The hello and status rules (functions/iot.ts): joins, renewals, statuses, the node's own topic and the changes. */
  AgentMessages: [storeOnTable, publish],
  /**
   * GCE and Alibaba instance events (functions/push.ts): it checks
   * the caller (Alibaba's shared token) and queues the event, reconciling
   * nothing: no table, no cloud, no IoT.
   */
  Push: [
    { actions: ['sqs:SendMessage'], resources: ['arn:{partition}:sqs:{region}:{account}:{eventsQueue}'] },
    { actions: ['ssm:GetParameter'], resources: [parameter('aliEventTokenParameter')] },
  ],
  /** Instance events from the queue (functions/cloud-events.ts): EC2's, and those the push function queued; the reconcile of their networks. */
  InstanceEvents: [storeOnTable, ...storeLists, publish, ...ec2Routes],
  /**
   * The schedule (functions/schedule.ts): expiry, every cloud
   * network's reconcile, the republish that reads each network's retained
   * config and lists the account's retained topics to clear those the store
   * no longer backs (issue 20; the list takes "*" only, so it is filtered by
   * prefix in code), and the fabric's figures.
   */
  Maintenance: [
    storeOnTable,
    ...storeLists,
    publish,
    { actions: ['iot:GetRetainedMessage'], resources: [TOPICS] },
    { actions: ['iot:ListRetainedMessages'], resources: ['*'] },
    ...ec2Routes,
  ],
} satisfies Record<string, readonly Grant[]>;

export type FunctionName = keyof typeof GRANTS;
export const FUNCTIONS = Object.keys(GRANTS) as FunctionName[];

/** A pattern with its {placeholders} replaced; an unknown placeholder is a mistake in this file, never left in. */
export function fill(pattern: string, values: GrantValues): string {
  return pattern.replace(/\{(\w+)\}/g, (_, name: string) => {
    const v = (values as unknown as Record<string, string | undefined>)[name];
    if (v === undefined) throw new Error(`grant ${pattern} has an unknown placeholder {${name}}`);
    return v;
  });
}

/** A function's grants with the values filled in. */
export function grantsOf(fn: FunctionName, values: GrantValues): { actions: string[]; resources: string[] }[] {
  return GRANTS[fn].map((g) => ({ actions: [...g.actions], resources: g.resources.map((r) => fill(r, values)) }));
}
