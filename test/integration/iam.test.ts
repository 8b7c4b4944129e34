// IAM in the AWS stand-ins, through the real SDK clients: a principal named
// by its access key may make exactly the calls its statements allow, action
// and resource, and is refused as each service refuses (DynamoDB's and SSM's
// AccessDeniedException, EC2's UnauthorizedOperation, the IoT data plane's
// ForbiddenException), with nothing done; an unknown access key is refused
// too. The functions' own grants (infra/grants.ts) are exercised by the
// handler tests, which run every handler as its function.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BatchWriteItemCommand, DeleteItemCommand, DynamoDBClient, GetItemCommand, PutItemCommand, QueryCommand, TransactWriteItemsCommand,
} from '@aws-sdk/client-dynamodb';
import { CreateRouteCommand, DescribeRouteTablesCommand, EC2Client } from '@aws-sdk/client-ec2';
import { DeleteConnectionCommand, IoTDataPlaneClient, ListRetainedMessagesCommand, PublishCommand } from '@aws-sdk/client-iot-data-plane';
import { GetParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { createTable } from '../../control/store/dynamo.js';
import { FUNCTIONS, GRANTS, grantsOf } from '../../infra/grants.js';
import { localClientConfig, startFakeDynamo, type FakeDynamo } from '../fakes/dynamodb.js';
import { FakeEc2 } from '../fakes/ec2.js';
import { ACCOUNT, Iam, type Statement } from '../fakes/iam.js';
import { startFakeIotData, type FakeIotData } from '../fakes/iot-data.js';
import { startFakeSsm, type FakeSsm } from '../fakes/ssm.js';
import { startMosquitto } from '../helpers/mosquitto.js';
import type { Proc } from '../helpers/procs.js';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

const REGION = 'eu-west-1';
const TABLE = 'iam-test';
const TABLE_ARN = `arn:aws:dynamodb:${REGION}:${ACCOUNT}:table/${TABLE}`;

/** A role session holding these statements, and the credentials it signs with. */
function principal(iam: Iam, name: string, statements: Statement[]) {
  const accessKeyId = `ASIA${name.toUpperCase().padEnd(16, 'X')}`;
  const p = iam.add({ arn: `arn:aws:sts::${ACCOUNT}:assumed-role/${name}/session`, statements }, [accessKeyId]);
  return { principal: p, credentials: { accessKeyId, secretAccessKey: `secret-of-${name}`, sessionToken: `session-of-${name}` } };
}

const allow = (actions: string[], resources: string[]): Statement => ({ effect: 'Allow', actions, resources });
const NOBODY = { accessKeyId: 'AKIANOBODYHOLDSTHIS1', secretAccessKey: 'whatever' };

/** The error an SDK call failed with: its name, HTTP status and message. */
async function failure(p: Promise<unknown>): Promise<{ name: string; status: number | undefined; message: string }> {
  try {
    await p;
  } catch (e) {
    const err = e as { name: string; message: string; $metadata?: { httpStatusCode?: number } };
    return { name: err.name, status: err.$metadata?.httpStatusCode, message: err.message };
  }
  assert.fail('the call succeeded');
}

describe('IAM policy evaluation', () => {
  const iam = new Iam();
  const call = (action: string, resource: string) => ({ action, resource });

  test('actions match case-insensitively, with * and ?', () => {
    const p = { arn: 'x', statements: [allow(['dynamodb:Get*', 'iot:?ublish'], ['*'])] };
    assert.equal(iam.decide(p, call('dynamodb:GetItem', 'arn:aws:dynamodb:r:1:table/t')), 'Allow');
    assert.equal(iam.decide(p, call('DynamoDB:getitem', 'arn:aws:dynamodb:r:1:table/t')), 'Allow');
    assert.equal(iam.decide(p, call('iot:Publish', 'arn:aws:iot:r:1:topic/a')), 'Allow');
    assert.equal(iam.decide(p, call('dynamodb:BatchGetItem', 'arn:aws:dynamodb:r:1:table/t')), 'ImplicitDeny', 'BatchGetItem is not GetItem');
    assert.equal(iam.decide(p, call('iot:RetainPublish', 'arn:aws:iot:r:1:topic/a')), 'ImplicitDeny');
  });

  test('resources match case-sensitively; a wildcard stays in its ARN segment unless a * ends it', () => {
    const p = { arn: 'x', statements: [allow(['*'], ['arn:aws:iot:eu-west-1:123456789012:topic/twill/test/*', 'arn:aws:dynamodb:*:123456789012:table/t', 'arn:aws:ec2:eu-*-1:123456789012:route-table/rtb-?'])] };
    assert.equal(iam.decide(p, call('iot:Publish', 'arn:aws:iot:eu-west-1:123456789012:topic/twill/test/v2/net/a/config')), 'Allow', '* spans slashes');
    assert.equal(iam.decide(p, call('iot:Publish', 'arn:aws:iot:eu-west-1:123456789012:topic/twill/TEST/v2')), 'ImplicitDeny', 'case-sensitive');
    assert.equal(iam.decide(p, call('iot:Publish', 'arn:aws:iot:eu-west-1:123456789012:topic/twill/other/v2')), 'ImplicitDeny', 'another prefix');
    assert.equal(iam.decide(p, call('dynamodb:GetItem', 'arn:aws:dynamodb:us-east-1:123456789012:table/t')), 'Allow');
    assert.equal(iam.decide(p, call('dynamodb:GetItem', 'arn:aws:dynamodb:us-east-1:123456789012:table/t/index/gsi1')), 'ImplicitDeny', 'the table is not its index');
    assert.equal(iam.decide(p, call('dynamodb:GetItem', 'arn:aws:dynamodb:us-east-1:999999999999:table/t')), 'ImplicitDeny', 'another account');
    assert.equal(iam.decide(p, call('ec2:CreateRoute', 'arn:aws:ec2:eu-west-1:123456789012:route-table/rtb-a')), 'Allow');
    assert.equal(iam.decide(p, call('ec2:CreateRoute', 'arn:aws:ec2:eu-west-1:123456789012:route-table/rtb-ab')), 'ImplicitDeny', '? is one character');
    assert.equal(iam.decide(p, call('ec2:CreateRoute', 'arn:aws:ec2:eu-x:y-1:123456789012:route-table/rtb-a')), 'ImplicitDeny', 'a * inside a segment does not cross a colon');
    assert.equal(iam.decide(p, call('iot:ListRetainedMessages', '*')), 'ImplicitDeny', 'an action without resources needs "*" in the policy');
  });

  test('an explicit Deny beats any Allow; nothing allowed is an implicit deny; the messages say which, as AWS words them', () => {
    const p = iam.add({ arn: `arn:aws:sts::${ACCOUNT}:assumed-role/r/s`, statements: [allow(['dynamodb:*'], ['*']), { effect: 'Deny', actions: ['dynamodb:DeleteItem'], resources: [TABLE_ARN] }] }, ['ASIAEVALUATIONXXXXXX']);
    assert.equal(iam.decide(p, call('dynamodb:DeleteItem', TABLE_ARN)), 'ExplicitDeny');
    assert.equal(iam.decide(p, call('dynamodb:PutItem', TABLE_ARN)), 'Allow');
    const auth = (key: string) => `AWS4-HMAC-SHA256 Credential=${key}/20261206/${REGION}/dynamodb/aws4_request, SignedHeaders=host, Signature=0`;
    const deny = iam.authorize(auth('ASIAEVALUATIONXXXXXX'), () => [call('dynamodb:PutItem', TABLE_ARN), call('dynamodb:DeleteItem', TABLE_ARN)]);
    assert.equal(deny?.message, `User: arn:aws:sts::${ACCOUNT}:assumed-role/r/s is not authorized to perform: dynamodb:DeleteItem on resource: ${TABLE_ARN} with an explicit deny in an identity-based policy`);
    const none = iam.authorize(auth('ASIAEVALUATIONXXXXXX'), () => [call('ssm:GetParameter', 'arn:aws:ssm:r:1:parameter/p')]);
    assert.equal(none?.message, `User: arn:aws:sts::${ACCOUNT}:assumed-role/r/s is not authorized to perform: ssm:GetParameter on resource: arn:aws:ssm:r:1:parameter/p because no identity-based policy allows the ssm:GetParameter action`);
    assert.equal(iam.authorize(auth('AKIAUNKNOWNKEYXXXXXX'), () => [])?.kind, 'unknown-key');
    assert.equal(iam.authorize(undefined, () => [])?.kind, 'unknown-key');
  });

  test("every function's grants fill in completely, and each resource is an ARN of the test's account or \"*\"", () => {
    const values = { partition: 'aws', region: REGION, account: ACCOUNT, table: TABLE, prefix: 'twill/test', adminTokenParameter: '/twill/test/admin-token', aliEventTokenParameter: '/twill/test/ali-event-token', eventsQueue: 'twill-test-InstanceEvents' };
    for (const fn of FUNCTIONS) {
      for (const g of grantsOf(fn, values)) {
        for (const r of g.resources) assert.ok(r === '*' || r.startsWith(`arn:aws:`) && r.includes(`:${ACCOUNT}:`) && !/[{}]/.test(r), `${fn}: ${r}`);
        for (const a of g.actions) assert.match(a, /^(dynamodb|iot|ec2|ssm|sqs|servicequotas):[A-Z][A-Za-z]+$/, `${fn}: ${a} is one action, no wildcard`);
      }
    }
    assert.deepEqual(FUNCTIONS.filter((fn) => GRANTS[fn].some((g) => g.actions.includes('dynamodb:BatchWriteItem'))), ['Api'], 'only the admin API removes networks');
    assert.deepEqual(FUNCTIONS.filter((fn) => GRANTS[fn].some((g) => g.actions.some((a) => a.startsWith('ec2:')))), ['InstanceEvents', 'Maintenance'], 'only the aws-vpc reconciles call EC2');
  });
});

describe('IAM in the AWS stand-ins', () => {
  let broker: Proc;
  let iam: Iam;
  let dynamo: FakeDynamo;
  let ec2: FakeEc2;
  let iot: FakeIotData;
  let ssm: FakeSsm;
  let admin: DynamoDBClient;

  before(async () => {
    iam = new Iam();
    dynamo = await startFakeDynamo({ iam });
    admin = new DynamoDBClient({ ...localClientConfig(dynamo.endpoint), region: REGION });
    await createTable(admin, TABLE);
    ec2 = new FakeEc2();
    ec2.iam = iam;
    await ec2.start();
    ec2.addTable({ id: 'rtb-allowed', vpcId: 'vpc-1', main: true });
    ec2.addTable({ id: 'rtb-other', vpcId: 'vpc-1' });
    ec2.addInstance({ id: 'i-0000000a' });
    const mosquitto = await startMosquitto();
    broker = mosquitto.proc;
    iot = await startFakeIotData(mosquitto.url, undefined, iam);
    ssm = await startFakeSsm(iam);
    ssm.parameters.set('/twill/test/admin-token', { value: 'the-token', type: 'SecureString' });
    ssm.parameters.set('/twill/other/admin-token', { value: 'not-yours', type: 'SecureString' });
  });

  after(async () => {
    admin?.destroy();
    await dynamo?.close();
    await ec2?.close();
    await iot?.close();
    await ssm?.close();
    await broker?.kill();
  });

  const item = (sk: string) => ({ pk: { S: 'P' }, sk: { S: sk } });
  const dynamoAs = (credentials: { accessKeyId: string; secretAccessKey: string }) => new DynamoDBClient({ endpoint: dynamo.endpoint, region: REGION, credentials, maxAttempts: 1 });
  const exists = async (sk: string) => (await admin.send(new GetItemCommand({ TableName: TABLE, Key: item(sk), ConsistentRead: true }))).Item !== undefined;

  test('DynamoDB: an unknown access key is UnrecognizedClientException, and nothing is written', async () => {
    const c = dynamoAs(NOBODY);
    const f = await failure(c.send(new PutItemCommand({ TableName: TABLE, Item: item('unknown') })));
    assert.deepEqual([f.name, f.status], ['UnrecognizedClientException', 400]);
    assert.equal(await exists('unknown'), false);
    c.destroy();
  });

  test('DynamoDB: BatchWriteItem is an action of its own; PutItem and DeleteItem do not grant it', async () => {
    const { credentials } = principal(iam, 'writer', [allow(['dynamodb:PutItem', 'dynamodb:DeleteItem', 'dynamodb:GetItem'], [TABLE_ARN])]);
    const c = dynamoAs(credentials);
    await c.send(new PutItemCommand({ TableName: TABLE, Item: item('w-1') }));
    const f = await failure(c.send(new BatchWriteItemCommand({ RequestItems: { [TABLE]: [{ DeleteRequest: { Key: item('w-1') } }] } })));
    assert.deepEqual([f.name, f.status], ['AccessDeniedException', 400]);
    assert.equal(f.message, `User: arn:aws:sts::${ACCOUNT}:assumed-role/writer/session is not authorized to perform: dynamodb:BatchWriteItem on resource: ${TABLE_ARN} because no identity-based policy allows the dynamodb:BatchWriteItem action`);
    assert.equal(await exists('w-1'), true, 'nothing of the batch was done');
    await c.send(new DeleteItemCommand({ TableName: TABLE, Key: item('w-1') }));
    assert.equal(await exists('w-1'), false);
    c.destroy();
  });

  test('DynamoDB: a transaction is authorized item by item, and a refused one applies nothing', async () => {
    await admin.send(new PutItemCommand({ TableName: TABLE, Item: item('t-old') }));
    const { credentials } = principal(iam, 'putter', [allow(['dynamodb:PutItem', 'dynamodb:UpdateItem'], [TABLE_ARN])]);
    const c = dynamoAs(credentials);
    const f = await failure(c.send(new TransactWriteItemsCommand({ TransactItems: [{ Put: { TableName: TABLE, Item: item('t-new') } }, { Delete: { TableName: TABLE, Key: item('t-old') } }] })));
    assert.equal(f.name, 'AccessDeniedException');
    assert.match(f.message, /is not authorized to perform: dynamodb:DeleteItem on resource: /);
    assert.equal(await exists('t-new'), false);
    assert.equal(await exists('t-old'), true);
    const check = await failure(c.send(new TransactWriteItemsCommand({ TransactItems: [{ Put: { TableName: TABLE, Item: item('t-new') } }, { ConditionCheck: { TableName: TABLE, Key: item('t-old'), ConditionExpression: 'attribute_exists(pk)' } }] })));
    assert.match(check.message, /dynamodb:ConditionCheckItem/);
    await c.send(new TransactWriteItemsCommand({ TransactItems: [{ Put: { TableName: TABLE, Item: item('t-new') } }] }));
    assert.equal(await exists('t-new'), true);
    c.destroy();
  });

  test("DynamoDB: a Query of an index is authorized on the index's ARN", async () => {
    const { credentials } = principal(iam, 'tablereader', [allow(['dynamodb:Query'], [TABLE_ARN])]);
    const c = dynamoAs(credentials);
    await c.send(new QueryCommand({ TableName: TABLE, KeyConditionExpression: 'pk = :p', ExpressionAttributeValues: { ':p': { S: 'P' } } }));
    const f = await failure(c.send(new QueryCommand({ TableName: TABLE, IndexName: 'gsi1', KeyConditionExpression: 'gsi1pk = :p', ExpressionAttributeValues: { ':p': { S: 'X' } } })));
    assert.match(f.message, new RegExp(`dynamodb:Query on resource: ${TABLE_ARN}/index/gsi1 because`));
    c.destroy();
  });

  test('EC2: route changes are authorized on the route table, refused with UnauthorizedOperation (403); an unknown key is AuthFailure', async () => {
    const { credentials } = principal(iam, 'router', [
      allow(['ec2:DescribeRouteTables'], ['*']),
      allow(['ec2:CreateRoute'], [`arn:aws:ec2:${REGION}:${ACCOUNT}:route-table/rtb-allowed`]),
    ]);
    const c = new EC2Client({ endpoint: ec2.url, region: REGION, credentials, maxAttempts: 1 });
    assert.equal((await c.send(new DescribeRouteTablesCommand({}))).RouteTables?.length, 2);
    await c.send(new CreateRouteCommand({ RouteTableId: 'rtb-allowed', DestinationCidrBlock: '10.9.1.0/24', NetworkInterfaceId: 'eni-0000000a' }));
    const f = await failure(c.send(new CreateRouteCommand({ RouteTableId: 'rtb-other', DestinationCidrBlock: '10.9.1.0/24', NetworkInterfaceId: 'eni-0000000a' })));
    assert.deepEqual([f.name, f.status], ['UnauthorizedOperation', 403]);
    assert.match(f.message, new RegExp(`^You are not authorized to perform this operation\\. User: arn:aws:sts::${ACCOUNT}:assumed-role/router/session is not authorized to perform: ec2:CreateRoute on resource: arn:aws:ec2:${REGION}:${ACCOUNT}:route-table/rtb-other because no identity-based policy allows the ec2:CreateRoute action\\. Encoded authorization failure message: `));
    assert.deepEqual(ec2.routeMap('rtb-other'), {}, 'no route made');
    assert.deepEqual(ec2.routeMap('rtb-allowed'), { '10.9.1.0/24': 'eni-0000000a' });
    const stranger = new EC2Client({ endpoint: ec2.url, region: REGION, credentials: NOBODY, maxAttempts: 1 });
    assert.deepEqual((await failure(stranger.send(new DescribeRouteTablesCommand({})))).name, 'AuthFailure');
    c.destroy();
    stranger.destroy();
  });

  test('IoT data: a retained publish needs iot:RetainPublish too; DeleteConnection and ListRetainedMessages need their own grants; refused with ForbiddenException (403)', async () => {
    const topic = (t: string) => `arn:aws:iot:${REGION}:${ACCOUNT}:topic/${t}`;
    const { credentials } = principal(iam, 'publisher', [allow(['iot:Publish'], [topic('twill/test/*')]), allow(['iot:ListRetainedMessages'], [topic('twill/test/*')])]);
    const c = new IoTDataPlaneClient({ endpoint: iot.endpoint, region: REGION, credentials, maxAttempts: 1 });
    const before = iot.published.length;
    await c.send(new PublishCommand({ topic: 'twill/test/live', payload: Buffer.from('x'), qos: 1 }));
    const retained = await failure(c.send(new PublishCommand({ topic: 'twill/test/kept', payload: Buffer.from('x'), qos: 1, retain: true })));
    assert.deepEqual([retained.name, retained.status, retained.message], ['ForbiddenException', 403, 'Forbidden']);
    const elsewhere = await failure(c.send(new PublishCommand({ topic: 'twill/other/live', payload: Buffer.from('x'), qos: 1 })));
    assert.equal(elsewhere.name, 'ForbiddenException');
    assert.deepEqual(iot.published.slice(before).map((p) => [p.topic, p.retain]), [['twill/test/live', false]], 'only the allowed publish went out');
    assert.ok(!iot.retained.has('twill/test/kept'));
    assert.equal((await failure(c.send(new DeleteConnectionCommand({ clientId: 'twill-a-b' })))).name, 'ForbiddenException');
    assert.equal((await failure(c.send(new ListRetainedMessagesCommand({})))).name, 'ForbiddenException', 'granted on topics, not on "*"');
    assert.deepEqual(iam.refusals.slice(-4).map((r) => [r.action, r.resource]), [
      ['iot:RetainPublish', topic('twill/test/kept')],
      ['iot:Publish', topic('twill/other/live')],
      ['iot:DeleteConnection', `arn:aws:iot:${REGION}:${ACCOUNT}:client/twill-a-b`],
      ['iot:ListRetainedMessages', '*'],
    ]);
    c.destroy();
  });

  test("SSM: GetParameter on another stage's parameter is AccessDeniedException; an unknown key is UnrecognizedClientException", async () => {
    const { credentials } = principal(iam, 'tokenreader', [allow(['ssm:GetParameter'], [`arn:aws:ssm:${REGION}:${ACCOUNT}:parameter/twill/test/admin-token`])]);
    const c = new SSMClient({ endpoint: ssm.endpoint, region: REGION, credentials, maxAttempts: 1 });
    assert.equal((await c.send(new GetParameterCommand({ Name: '/twill/test/admin-token', WithDecryption: true }))).Parameter?.Value, 'the-token');
    const f = await failure(c.send(new GetParameterCommand({ Name: '/twill/other/admin-token', WithDecryption: true })));
    assert.deepEqual([f.name, f.status], ['AccessDeniedException', 400]);
    assert.match(f.message, new RegExp(`ssm:GetParameter on resource: arn:aws:ssm:${REGION}:${ACCOUNT}:parameter/twill/other/admin-token because`));
    const stranger = new SSMClient({ endpoint: ssm.endpoint, region: REGION, credentials: NOBODY, maxAttempts: 1 });
    assert.equal((await failure(stranger.send(new GetParameterCommand({ Name: '/twill/test/admin-token' })))).name, 'UnrecognizedClientException');
    c.destroy();
    stranger.destroy();
  });
});
