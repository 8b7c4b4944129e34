// The DynamoDB table the store needs: its definition (what infra must create)
// and its creation for tests and deployments without infra code.
import { CreateTableCommand, DescribeTableCommand, PutItemCommand, UpdateTimeToLiveCommand, type CreateTableCommandInput, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GSI1, layoutItem, TTL_ATTRIBUTE } from './dynamo-layout.js';

/** The table: its key schema and the one index. Also what infra must create. */
export function tableDefinition(tableName: string): CreateTableCommandInput {
  return {
    TableName: tableName,
    AttributeDefinitions: [
      { AttributeName: 'pk', AttributeType: 'S' },
      { AttributeName: 'sk', AttributeType: 'S' },
      { AttributeName: 'gsi1pk', AttributeType: 'S' },
      { AttributeName: 'gsi1sk', AttributeType: 'S' },
    ],
    KeySchema: [
      { AttributeName: 'pk', KeyType: 'HASH' },
      { AttributeName: 'sk', KeyType: 'RANGE' },
    ],
    GlobalSecondaryIndexes: [
      {
        IndexName: GSI1,
        KeySchema: [
          { AttributeName: 'gsi1pk', KeyType: 'HASH' },
          { AttributeName: 'gsi1sk', KeyType: 'RANGE' },
        ],
        // Keys only: the items are read back consistently anyway, and a
        // projection of all attributes would cost an index write on every
        // update of a network's revision.
        Projection: { ProjectionType: 'KEYS_ONLY' },
      },
    ],
    BillingMode: 'PAY_PER_REQUEST',
  };
}

/**
 * Creates the table (tests, or a deployment without infra code) and waits
 * until it is ACTIVE, then turns on TTL on `ttl` and writes the layout item.
 * Point-in-time recovery is the deployment's business (infra turns it on);
 * it changes nothing here. SST equivalent: sst.aws.Dynamo with fields {pk,
 * sk, gsi1pk, gsi1sk: string}, primaryIndex {hashKey: pk, rangeKey: sk},
 * globalIndexes {gsi1: {hashKey: gsi1pk, rangeKey: gsi1sk, projection:
 * keys-only}}, ttl: 'ttl' (a table made so gets its layout item from the
 * first function that finds it empty).
 */
export async function createTable(client: DynamoDBClient, tableName: string, opts: { timeoutMs?: number } = {}): Promise<void> {
  await client.send(new CreateTableCommand(tableDefinition(tableName)));
  const end = Date.now() + (opts.timeoutMs ?? 120_000);
  for (;;) {
    const d = await client.send(new DescribeTableCommand({ TableName: tableName }));
    const indexesActive = (d.Table?.GlobalSecondaryIndexes ?? []).every((i) => i.IndexStatus === 'ACTIVE');
    if (d.Table?.TableStatus === 'ACTIVE' && indexesActive) break;
    if (Date.now() > end) throw new Error(`table ${tableName} is still ${d.Table?.TableStatus ?? 'missing'} after ${opts.timeoutMs ?? 120_000} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
  await client.send(new UpdateTimeToLiveCommand({
    TableName: tableName,
    TimeToLiveSpecification: { Enabled: true, AttributeName: TTL_ATTRIBUTE },
  }));
  await client.send(new PutItemCommand({ TableName: tableName, Item: layoutItem() }));
}
