// Node statuses on DynamoDB, and the agent counts kept with them: a status
// write that changes the node's state moves its shard's counts in the same
// transaction (see "Agent counts" in control/store/dynamo-layout.ts).
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import { ConflictError } from '../../core/errors.js';
import { agentState, AGENT_STATES, noAgents, type AgentCounts, type AgentState } from '../../core/fabric.js';
import { cancellationCodes, errorName, type DynamoTable } from './dynamo-client.js';
import { AGENTS_SK, byNetworkNode, key, N, S, SHARD_LIST, STATUS_PREFIX, statusKey, statusPkOf, toStatus, type Item } from './dynamo-layout.js';
import type { StatusRecord } from './store.js';

export async function putStatus(t: DynamoTable, rec: StatusRecord): Promise<void> {
  const state = agentState(rec.status);
  const k = statusKey(rec.network, rec.node);
  const item: Item = {
    ...k,
    network: S(rec.network),
    node: S(rec.node),
    status: S(JSON.stringify(rec.status)),
    agent: S(state),
    updatedAt: S(rec.updatedAt),
  };
  const names = { '#agent': 'agent' };
  for (let attempt = 0; ; attempt++) {
    // Most statuses keep the node's state (a newer revision, other errors):
    // one conditional put, and the counts stay as they are.
    try {
      await t.call(() => t.client.send(new PutItemCommand({
        TableName: t.name, Item: item, ConditionExpression: '#agent = :state', ExpressionAttributeNames: names, ExpressionAttributeValues: { ':state': S(state) },
      })));
      return;
    } catch (e) {
      if (errorName(e) !== 'ConditionalCheckFailedException') throw e;
    }
    // A new node, or a new state: the status and its shard's counts move together, from the state read.
    const was = (await t.getItem(k))?.agent?.S as AgentState | undefined;
    if (was === state) continue;
    try {
      await t.transact([
        {
          Put: {
            TableName: t.name,
            Item: item,
            ...(was
              ? { ConditionExpression: '#agent = :was', ExpressionAttributeNames: names, ExpressionAttributeValues: { ':was': S(was) } }
              : { ConditionExpression: 'attribute_not_exists(pk)' }),
          },
        },
        {
          Update: {
            TableName: t.name,
            Key: key(k.pk.S!, AGENTS_SK),
            UpdateExpression: was ? 'ADD #now :one, #was :less' : 'ADD #now :one',
            ExpressionAttributeNames: { '#now': state, ...(was && { '#was': was }) },
            ExpressionAttributeValues: { ':one': N(1), ...(was && { ':less': N(-1) }) },
          },
        },
      ]);
      return;
    } catch (e) {
      // Another status of this node landed between the read and the write: read it again.
      const codes = cancellationCodes(e);
      if (!codes.some((c) => c === 'ConditionalCheckFailed' || c === 'TransactionConflict')) throw e;
      if (attempt + 1 >= t.writeAttempts) throw new ConflictError(`status of node ${rec.node} in network ${rec.network} kept changing: ${t.writeAttempts} tries lost to other writes`);
      await t.backoff(attempt);
    }
  }
}

/** The statuses of the networks named, by network and node. */
export async function listStatus(t: DynamoTable, networks: string[]): Promise<StatusRecord[]> {
  const items = (await Promise.all(networks.map((n) => t.queryShards(statusPkOf, n, STATUS_PREFIX)))).flat();
  return items.map(toStatus).sort(byNetworkNode);
}

export async function agentCounts(t: DynamoTable, network: string): Promise<AgentCounts> {
  const counts = noAgents();
  for (const item of await t.batchGet(SHARD_LIST.map((s) => key(statusPkOf(network, s), AGENTS_SK)))) {
    for (const state of AGENT_STATES) counts[state] += Number(item[state]?.N ?? 0);
  }
  return counts;
}
