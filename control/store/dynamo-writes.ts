// The DynamoDB store's writes of the lease-write protocol: each executes a
// plan of control/store/lease-write.ts (what to write, under which
// conditions) as DynamoDB requests.
//
// ## Conditional writes
// Every lease write is one TransactWriteItems of
//   the lease item  (create: attribute_not_exists; replace/delete: revision = expected;
//     a replace that keeps the expiry, or a delete at expiry, on expiresMs too),
//   one claim item per family taken (attribute_not_exists) or released
//     (owned by this node, or already gone; never another node's),
//   the network item: revision, leaseCount and leaseHash, conditioned on the
//     revision this writer read. The hash is an XOR that DynamoDB cannot
//     compute in an update expression, so the writer computes it from the
//     network item it read, and the condition makes that read still true.
//   the change item of the new revision.
// A cancelled transaction tells which item failed (CancellationReasons, in
// request order). A failed lease or claim condition is a real conflict for the
// caller: ConflictError, and the controller retries with fresh reads. A failed
// network condition (or TransactionConflict) only means another lease of the
// same network was written meanwhile: nothing the caller asked about changed,
// so the store re-reads the network and tries again itself, with jittered
// backoff. A throttled call (ThrottlingException, or a transaction cancelled
// with ThrottlingError: on-demand tables answer both) is sent again with its
// own, longer backoff, after the SDK's own retries; anything else (a missing
// table, a validation error) propagates as it is.
// Every write that bumps a network's revision also puts that revision's
// change item in the same transaction, so the change log never misses or
// invents a revision; changesSince reads it with one Query and checks that
// no revision is missing (TTL removes old changes lazily and in any order).
// A renewal (renewLease) is the exception: it moves only the lease item's
// expiry (conditioned on its revision), never the network item, since nothing
// peers use changed; the delete at expiry is therefore conditioned on the
// expiry (expiresMs) as well as the revision.
import { UpdateItemCommand, type TransactWriteItem } from '@aws-sdk/client-dynamodb';
import type { NetConf } from '../../core/config.js';
import { ConflictError } from '../../core/errors.js';
import type { Lease } from '../../core/lease.js';
import { classifyCancellation, errorName, type DynamoTable, type Role } from './dynamo-client.js';
import { getLease, getNetwork } from './dynamo-reads.js';
import { changeItem, claimPk, claimSk, expiryAttributes, key, leaseItem, leaseKey, N, networkItem, networkKey, S, TTL_ATTRIBUTE } from './dynamo-layout.js';
import { isRefusal, leaseRefusal, planLeaseWrite, planNetworkPut, planRenew, refusalError, type Claim, type LeaseRead, type LeaseRequest, type LeaseWritePlan } from './lease-write.js';
import type { NetworkRecord } from './store.js';

export async function putNetwork(t: DynamoTable, name: string, config: NetConf, expectedRevision: number | undefined): Promise<NetworkRecord> {
  // A new network is not read: the condition that it does not exist yet is the check.
  const read = expectedRevision === undefined ? undefined : await getNetwork(t, name);
  const plan = planNetworkPut(read, name, config, expectedRevision, Date.now());
  if (isRefusal(plan)) throw refusalError(plan);
  const rec = plan.record;
  const write: TransactWriteItem = plan.create
    ? { Put: { TableName: t.name, Item: networkItem(rec), ConditionExpression: 'attribute_not_exists(pk)' } }
    : {
        // Only config and revision: the lease count and hash belong to the lease writes.
        Update: {
          TableName: t.name,
          Key: networkKey(name),
          UpdateExpression: 'SET #config = :config, #rev = :rev, #updated = :updated',
          ConditionExpression: '#rev = :expected',
          ExpressionAttributeNames: { '#config': 'config', '#rev': 'revision', '#updated': 'updatedAt' },
          ExpressionAttributeValues: { ':config': S(JSON.stringify(rec.config)), ':rev': N(rec.revision), ':updated': S(rec.updatedAt), ':expected': N(plan.expectedRevision!) },
        },
      };
  try {
    await t.transact([write, { Put: { TableName: t.name, Item: changeItem(name, plan.change, plan.at) } }]);
    return rec;
  } catch (e) {
    // The network's condition failed or another transaction crossed it: the caller reads again.
    if (classifyCancellation(e, ['network', 'change'])) throw refusalError(plan.failed);
    throw e;
  }
}

/** What a lease write reads: a delete its lease first (gone or moved: nothing else to read), a create or replace its network. */
async function readFor(t: DynamoTable, req: LeaseRequest): Promise<LeaseRead> {
  if (req.kind === 'delete') {
    const lease = await getLease(t, req.network, req.node);
    return { lease, network: leaseRefusal(req, lease) ? undefined : await getNetwork(t, req.network) };
  }
  const network = await getNetwork(t, req.lease.network);
  // A create's lease is not read: the condition that it does not exist is the check.
  return { network, lease: network && req.kind === 'replace' ? await getLease(t, req.lease.network, req.lease.node) : undefined };
}

/**
 * A lease write (create, replace or delete): read, plan, one transaction;
 * again while other writes of the network win. undefined: a delete found
 * nothing to delete.
 */
export async function writeLease(t: DynamoTable, ttlGraceSeconds: number, req: LeaseRequest): Promise<LeaseWritePlan | undefined> {
  const [network, node] = req.kind === 'delete' ? [req.network, req.node] : [req.lease.network, req.lease.node];
  for (let attempt = 0; ; attempt++) {
    const plan = planLeaseWrite(await readFor(t, req), req, Date.now());
    if (isRefusal(plan)) {
      if (plan.refuse === 'gone') return undefined;
      throw refusalError(plan);
    }
    const { items, roles } = leaseTransaction(t.name, plan, ttlGraceSeconds);
    try {
      await t.transact(items);
      return plan;
    } catch (e) {
      const outcome = classifyCancellation(e, roles);
      if (!outcome) throw e;
      if (outcome.kind !== 'retry') {
        const failed = plan.failed[outcome.kind];
        if (failed !== 'read-again') throw refusalError(failed);
      }
      if (attempt + 1 >= t.writeAttempts) {
        throw new ConflictError(`network ${network} kept changing: ${t.writeAttempts} tries to ${plan.deletes ? 'delete' : 'write'} the lease of ${node} lost to other writes`);
      }
      // A delete whose lease moved reads again at once (with an expected
      // revision, that read answers "changed meanwhile"); a busy network waits a little.
      if (outcome.kind === 'retry') await t.backoff(attempt);
    }
  }
}

/** The plan as one TransactWriteItems, and the role of each item (to read a cancellation's reasons). */
function leaseTransaction(table: string, plan: LeaseWritePlan, ttlGraceSeconds: number): { items: TransactWriteItem[]; roles: Role[] } {
  const { network, lease } = plan;
  const items: TransactWriteItem[] = [];
  const roles: Role[] = [];
  const add = (role: Role, item: TransactWriteItem) => { roles.push(role); items.push(item); };
  const cond = plan.leaseCondition;
  if ('absent' in cond) {
    add('lease', { Put: { TableName: table, Item: leaseItem(lease, ttlGraceSeconds), ConditionExpression: 'attribute_not_exists(pk)' } });
  } else if (!plan.deletes) {
    // A replace that keeps the expiry it read: also on that expiry, which a renewal meanwhile moves but not the revision.
    const exp = cond.expiresAt;
    add('lease', {
      Put: {
        TableName: table,
        Item: leaseItem(lease, ttlGraceSeconds),
        ConditionExpression: exp === undefined ? '#rev = :expected' : exp === null ? '#rev = :expected AND attribute_not_exists(#exp)' : '#rev = :expected AND #exp = :exp',
        ExpressionAttributeNames: { '#rev': 'revision', ...(exp !== undefined && { '#exp': 'expiresMs' }) },
        ExpressionAttributeValues: { ':expected': N(cond.revision), ...(typeof exp === 'string' && { ':exp': N(Date.parse(exp)) }) },
      },
    });
  } else {
    const by = cond.expiredBy;
    add('lease', {
      Delete: {
        TableName: table,
        Key: leaseKey(network.name, lease.node),
        // At expiry, also on the expiry read: a renewal meanwhile moves it but not the revision.
        ConditionExpression: by === undefined ? '#rev = :expected' : '#rev = :expected AND (attribute_not_exists(#exp) OR #exp <= :by)',
        ExpressionAttributeNames: { '#rev': 'revision', ...(by !== undefined && { '#exp': 'expiresMs' }) },
        ExpressionAttributeValues: { ':expected': N(cond.revision), ...(by !== undefined && { ':by': N(by) }) },
      },
    });
  }
  for (const family of [4, 6] as const) {
    for (const c of plan.release) if (c.family === family) add('release', claimDelete(table, network.name, c, lease.node));
    for (const c of plan.take) if (c.family === family) add('claim', claimPut(table, network.name, c, lease.node));
  }
  add('network', {
    Update: {
      TableName: table,
      Key: networkKey(network.name),
      UpdateExpression: 'SET #rev = :rev, #count = :count, #hash = :hash, #updated = :updated',
      // The hash is an XOR DynamoDB cannot compute: the plan's, from the network read, kept true by this condition.
      ConditionExpression: '#rev = :read',
      ExpressionAttributeNames: { '#rev': 'revision', '#count': 'leaseCount', '#hash': 'leaseHash', '#updated': 'updatedAt' },
      ExpressionAttributeValues: { ':rev': N(network.revision), ':count': N(network.leaseCount), ':hash': S(network.leaseHash), ':updated': S(network.updatedAt), ':read': N(network.readRevision) },
    },
  });
  add('change', { Put: { TableName: table, Item: changeItem(network.name, plan.change, plan.at) } });
  return { items, roles };
}

function claimPut(table: string, network: string, claim: Claim, node: string): TransactWriteItem {
  const sk = claimSk(claim);
  return { Put: { TableName: table, Item: { ...key(claimPk(network, sk), sk), node: S(node) }, ConditionExpression: 'attribute_not_exists(pk)' } };
}

/** Never releases another node's claim; one already gone is no reason to block the write. */
function claimDelete(table: string, network: string, claim: Claim, node: string): TransactWriteItem {
  const sk = claimSk(claim);
  return {
    Delete: {
      TableName: table,
      Key: key(claimPk(network, sk), sk),
      ConditionExpression: 'attribute_not_exists(pk) OR #node = :node',
      ExpressionAttributeNames: { '#node': 'node' },
      ExpressionAttributeValues: { ':node': S(node) },
    },
  };
}

/** A renewal: one item, no transaction, no index key; neither the network item nor gsi1 is touched. */
export async function renewLease(t: DynamoTable, ttlGraceSeconds: number, network: string, node: string, revision: number, expiresAt: string): Promise<Lease | undefined> {
  const plan = planRenew(await getLease(t, network, node), revision, expiresAt);
  if (isRefusal(plan)) return undefined;
  const attrs = expiryAttributes(plan.expiresMs, ttlGraceSeconds);
  try {
    await t.call(() => t.client.send(new UpdateItemCommand({
      TableName: t.name,
      Key: leaseKey(network, node),
      UpdateExpression: 'SET #lease = :lease, #exp = :exp, #ttl = :ttl',
      ConditionExpression: '#rev = :rev',
      ExpressionAttributeNames: { '#lease': 'lease', '#exp': 'expiresMs', '#ttl': TTL_ATTRIBUTE, '#rev': 'revision' },
      ExpressionAttributeValues: { ':lease': S(JSON.stringify(plan.lease)), ':exp': attrs.expiresMs!, ':ttl': attrs[TTL_ATTRIBUTE]!, ':rev': N(plan.revision) },
    })));
    return plan.lease;
  } catch (e) {
    if (errorName(e) === 'ConditionalCheckFailedException') return undefined;
    throw e;
  }
}
