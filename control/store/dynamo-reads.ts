// The DynamoDB store's reads that span shards or pages: a network's leases
// (a merge of the lease shards by node name), its taken subnets (the claim
// shards), its change log, and the leases due to expire (the expiry index,
// read back consistently).
import { QueryCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { isExpired, type Lease } from '../../core/lease.js';
import { errorName, type DynamoTable } from './dynamo-client.js';
import {
  byNode, changePk, changeSk, claimOfSk, CLAIM_PREFIX, claimPkOf, expiryKey, expiryPkOf, LEASE_PREFIX, leaseKey, leasePkOf,
  networkKey, num, S, SHARD_LIST, SHARDS, str, toLease, toNetwork, type Item, type Key,
} from './dynamo-layout.js';
import { changeRun, type Change, type ChangesSince, type NetworkRecord, type TakenSubnets } from './store.js';

/** Index keys moved to their lease's real expiry at once by a sweep: a handful, so a sweep never floods a shard. */
const REINDEX_CONCURRENCY = 8;

export async function getNetwork(t: DynamoTable, name: string): Promise<NetworkRecord | undefined> {
  const item = await t.getItem(networkKey(name));
  return item && toNetwork(item);
}

export async function getLease(t: DynamoTable, network: string, node: string): Promise<Lease | undefined> {
  const item = await t.getItem(leaseKey(network, node));
  return item && toLease(item);
}

export async function listLeases(t: DynamoTable, network: string): Promise<Lease[]> {
  return (await t.queryShards(leasePkOf, network, LEASE_PREFIX)).map(toLease).sort(byNode);
}

/** A network's items of one kind, read shard by shard in node order: the cursor of one shard in a merge. */
interface ShardCursor {
  pk: string;
  buffer: Item[];
  start?: Item;
  done: boolean;
}

/**
 * A page of leases by node name: a merge of the shards, each read a little
 * past its share of the page at a time, so a page costs about what one
 * partition's page would (each Query rounds up to 4 KB, once per shard).
 */
export async function listLeasesPage(t: DynamoTable, network: string, after: string | undefined, limit: number): Promise<Lease[]> {
  const chunk = Math.ceil(limit / SHARDS) + 8;
  const cursors: ShardCursor[] = SHARD_LIST.map((s) => ({ pk: leasePkOf(network, s), buffer: [], done: false }));
  const fill = async (c: ShardCursor) => {
    const r = await t.call(() => t.client.send(new QueryCommand({
      TableName: t.name,
      // Node names are printable ASCII, so the page runs from just past `after` to the end of LEASE#.
      KeyConditionExpression: 'pk = :pk AND sk BETWEEN :from AND :to',
      ExpressionAttributeValues: { ':pk': S(c.pk), ':from': S(`${LEASE_PREFIX}${after ?? ''}\u0001`), ':to': S(`${LEASE_PREFIX}\u007f`) },
      ConsistentRead: true,
      Limit: chunk,
      ExclusiveStartKey: c.start,
    })));
    c.buffer.push(...(r.Items ?? []));
    c.start = r.LastEvaluatedKey;
    c.done = !r.LastEvaluatedKey;
  };
  const out: Lease[] = [];
  while (out.length < limit) {
    // A shard whose buffer ran dry may hold the next node: read on before choosing.
    await Promise.all(cursors.filter((c) => !c.done && c.buffer.length === 0).map(fill));
    let next: ShardCursor | undefined;
    for (const c of cursors) if (c.buffer.length && (!next || str(c.buffer[0]!, 'sk') < str(next.buffer[0]!, 'sk'))) next = c;
    if (!next) break;
    out.push(toLease(next.buffer.shift()!));
  }
  return out;
}

export async function takenSubnets(t: DynamoTable, network: string): Promise<TakenSubnets> {
  const taken: TakenSubnets = { v4: [], v6: [] };
  for (const item of await t.queryShards(claimPkOf, network, CLAIM_PREFIX, 'sk')) {
    const claim = claimOfSk(str(item, 'sk'));
    (claim.family === 4 ? taken.v4 : taken.v6).push(claim.ip);
  }
  const ascending = (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0);
  taken.v4.sort(ascending);
  taken.v6.sort(ascending);
  return taken;
}

export async function changesSince(t: DynamoTable, network: string, after: number, limit: number): Promise<ChangesSince | undefined> {
  const net = await getNetwork(t, network);
  if (!net) return undefined;
  const rows: Change[] = [];
  let start: Item | undefined;
  // (BETWEEN refuses an empty range, as DynamoDB does)
  if (after < net.revision) do {
    const from = start;
    const r = await t.call(() => t.client.send(new QueryCommand({
      TableName: t.name,
      KeyConditionExpression: 'pk = :pk AND sk BETWEEN :from AND :to',
      ExpressionAttributeValues: { ':pk': S(changePk(network)), ':from': S(changeSk(after + 1)), ':to': S(changeSk(net.revision)) },
      ConsistentRead: true,
      Limit: limit + 1 - rows.length,
      ExclusiveStartKey: from,
    })));
    for (const item of r.Items ?? []) rows.push(JSON.parse(str(item, 'change')) as Change);
    start = r.LastEvaluatedKey;
  } while (start && rows.length < limit + 1);
  return changeRun(after, net.revision, rows, limit);
}

export async function listExpired(t: DynamoTable, now: number): Promise<Lease[]> {
  // A query per lease shard of each network on the expiry index rather than
  // one index partition for every lease: index keys have a partition's rates too.
  // DynamoDB's TTL is never relied on (it is lazy, and set a week late).
  const below = expiryKey(now + 1);
  const keys: Key[] = [];
  for (const net of await t.indexKeys('NETWORKS')) {
    const name = net.pk.S!.slice('NET#'.length);
    keys.push(...(await Promise.all(SHARD_LIST.map((s) => t.indexKeys(expiryPkOf(name, s), below)))).flat());
  }
  // The index may lag a write, and holds the expiry a lease was indexed
  // with, not a later renewal's: the consistent read decides.
  const expired: Lease[] = [];
  const renewed: Item[] = [];
  for (const item of await t.batchGet(keys)) {
    const lease = toLease(item);
    if (isExpired(lease, now)) expired.push(lease);
    else if (lease.expiresAt !== null) renewed.push(item);
  }
  for (let i = 0; i < renewed.length; i += REINDEX_CONCURRENCY) await Promise.all(renewed.slice(i, i + REINDEX_CONCURRENCY).map((item) => reindexExpiry(t, item)));
  return expired.sort((a, b) => Date.parse(a.expiresAt!) - Date.parse(b.expiresAt!));
}

/**
 * Moves a renewed lease's index key to the expiry it now has; a lease
 * renewed or rewritten meanwhile keeps its key (the next sweep sees it).
 */
async function reindexExpiry(t: DynamoTable, item: Item): Promise<void> {
  const lease = toLease(item);
  await t.call(() => t.client.send(new UpdateItemCommand({
    TableName: t.name,
    Key: { pk: item.pk!, sk: item.sk! },
    UpdateExpression: 'SET gsi1sk = :sk',
    ConditionExpression: '#exp = :exp AND #rev = :rev',
    ExpressionAttributeNames: { '#exp': 'expiresMs', '#rev': 'revision' },
    ExpressionAttributeValues: { ':sk': S(`${expiryKey(num(item, 'expiresMs'))}#${lease.node}`), ':exp': item.expiresMs!, ':rev': item.revision! },
  }))).catch((e: unknown) => {
    if (errorName(e) !== 'ConditionalCheckFailedException') throw e;
  });
}
