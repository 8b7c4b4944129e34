// The store on DynamoDB, for the serverless deployment: many function
// invocations write at once, so every multi-item change is one
// TransactWriteItems whose conditions make a lost race fail whole.
//
// In parts: the item layout and why it has that shape (dynamo-layout.ts),
// the table's definition (dynamo-table.ts), the calls sent again while
// DynamoDB throttles them and the shared reads (dynamo-client.ts), the lease
// writes, which execute the plans of lease-write.ts (dynamo-writes.ts), the
// reads across shards and pages (dynamo-reads.ts) and the node statuses with
// their agent counts (dynamo-status.ts). This file is the Store they make,
// and what needs no more than one call: nodes, route statuses and tables,
// deleting a network, locks, and the check of the table's layout.
import {
  DeleteItemCommand,
  DynamoDBClient,
  PutItemCommand,
  QueryCommand,
  UpdateItemCommand,
  type DynamoDBClientConfig,
} from '@aws-sdk/client-dynamodb';
import type { NetConf } from '../../core/config.js';
import { ConflictError } from '../../core/errors.js';
import type { AgentCounts } from '../../core/fabric.js';
import type { Lease, NewLease } from '../../core/lease.js';
import { DEFAULT_THROTTLE_ATTEMPTS, DynamoTable, errorName, sleep } from './dynamo-client.js';
import {
  byNetworkNode, GSI1, LAYOUT_KEY, LAYOUT_VERSION, layoutItem, lockKey, N, networkKey, networkPks, nodeKey, ROUTE_PREFIX, routeStatusKey,
  routeTablesKey, S, str, toNetwork, toNode, toRouteStatus, TTL_ATTRIBUTE, netPk,
} from './dynamo-layout.js';
import * as reads from './dynamo-reads.js';
import * as status from './dynamo-status.js';
import { putNetwork, renewLease, writeLease } from './dynamo-writes.js';
import { deleted, written } from './lease-write.js';
import { checkLockArgs, type ChangesSince, type LockResult, type NetworkRecord, type NodeRecord, type RouteStatusRecord, type RouteTablesRecord, type StatusRecord, type Store, type TakenSubnets } from './store.js';

// What other code imports from the DynamoDB store: the table, its layout and keys.
export { createTable, tableDefinition } from './dynamo-table.js';
export { changePk, claimPk, expiryPkOf, GSI1, LAYOUT_KEY, LAYOUT_VERSION, layoutItem, leasePk, SHARDS, shardOf, statusPk, TTL_ATTRIBUTE } from './dynamo-layout.js';
export { isThrottled } from './dynamo-client.js';

const DEFAULT_TTL_GRACE_SECONDS = 7 * 24 * 3600;
/**
 * Tries of one lease write against other writers of the same network. Each
 * lost round means another write of that network committed, so a writer only
 * runs out when this many others got in first while it backed off.
 */
const DEFAULT_WRITE_ATTEMPTS = 100;
/** A lock's item is deleted by DynamoDB's TTL this long after it expired (a lock nobody takes any more). */
const LOCK_TTL_GRACE_SECONDS = 24 * 3600;

export interface DynamoStoreOptions {
  tableName: string;
  /** A client to use (and leave open on close); otherwise one is made from clientConfig. */
  client?: DynamoDBClient;
  clientConfig?: DynamoDBClientConfig;
  /** How long after a lease's expiry DynamoDB's TTL may delete it; see `ttl` in dynamo-layout.ts. */
  ttlGraceSeconds?: number;
  /** Tries of one lease write while other writes of the same network keep winning. */
  maxWriteAttempts?: number;
  /** Sends of one call DynamoDB keeps throttling, after the SDK's own retries. */
  maxThrottleAttempts?: number;
  /** false only for the migration's own store, which writes the new layout before the layout item says so */
  checkLayout?: boolean;
  /** How the store waits between tries (a bench on simulated time passes its own). */
  sleep?: (ms: number) => Promise<void>;
}

export class DynamoStore implements Store {
  private readonly t: DynamoTable;
  private readonly ownsClient: boolean;
  private readonly ttlGrace: number;
  private layout?: Promise<void>;

  constructor(opts: DynamoStoreOptions) {
    this.ownsClient = !opts.client;
    this.t = new DynamoTable({
      client: opts.client ?? new DynamoDBClient(opts.clientConfig ?? {}),
      tableName: opts.tableName,
      writeAttempts: opts.maxWriteAttempts ?? DEFAULT_WRITE_ATTEMPTS,
      throttleAttempts: opts.maxThrottleAttempts ?? DEFAULT_THROTTLE_ATTEMPTS,
      sleep: opts.sleep ?? sleep,
    });
    this.ttlGrace = opts.ttlGraceSeconds ?? DEFAULT_TTL_GRACE_SECONDS;
    if (opts.checkLayout === false) this.layout = Promise.resolve();
  }

  /** Calls DynamoDB throttled that this store sent again (after the SDK's own retries). */
  get throttledCalls(): number {
    return this.t.throttledCalls;
  }

  /**
   * Refuses a table in an older item layout (it would look empty, and a join
   * could take a subnet an unmoved lease holds). Checked once per store; a
   * table with no network yet gets the layout item.
   */
  private ready(): Promise<void> {
    this.layout ??= this.checkLayout().catch((e: unknown) => {
      this.layout = undefined;
      throw e;
    });
    return this.layout;
  }

  private async checkLayout(): Promise<void> {
    const t = this.t;
    const version = (await t.getItem(LAYOUT_KEY))?.version?.N;
    if (version !== undefined) {
      if (Number(version) === LAYOUT_VERSION) return;
      throw new Error(`table ${t.name} holds twill's item layout ${version}, and this twill reads layout ${LAYOUT_VERSION}: deploy the twill that wrote it, or a newer one`);
    }
    const r = await t.call(() => t.client.send(new QueryCommand({
      TableName: t.name, IndexName: GSI1, KeyConditionExpression: 'gsi1pk = :p', ExpressionAttributeValues: { ':p': S('NETWORKS') }, Limit: 1,
    })));
    if ((r.Items ?? []).length > 0) {
      throw new Error(`table ${t.name} holds networks in the item layout of an earlier twill (no layout item): migrate it once with \`node --import tsx cli/migrate-table.ts --table ${t.name}\` (docs/serverless.md, "a table from an earlier twill")`);
    }
    // A new table. The mark is a convenience (the next cold start skips the
    // query), so a function not allowed to write it (the node API) goes on.
    await t.client.send(new PutItemCommand({ TableName: t.name, Item: layoutItem(), ConditionExpression: 'attribute_not_exists(pk)' })).catch(() => {});
  }

  // ---- networks ----

  async getNetwork(name: string): Promise<NetworkRecord | undefined> {
    await this.ready();
    return reads.getNetwork(this.t, name);
  }

  async listNetworks(): Promise<NetworkRecord[]> {
    await this.ready();
    return (await this.t.listIndexed('NETWORKS')).map(toNetwork).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async putNetwork(name: string, config: NetConf, expectedRevision: number | undefined): Promise<NetworkRecord> {
    await this.ready();
    return putNetwork(this.t, name, config, expectedRevision);
  }

  async changesSince(network: string, after: number, limit: number): Promise<ChangesSince | undefined> {
    await this.ready();
    return reads.changesSince(this.t, network, after, limit);
  }

  async deleteNetwork(name: string): Promise<boolean> {
    const net = await this.getNetwork(name);
    if (!net) return false;
    if (net.leaseCount > 0) throw new ConflictError(`network ${name} still holds ${net.leaseCount} lease(s)`);
    // Every lease write moves the revision: conditioned on the one read, a
    // lease taken meanwhile keeps the network, and no lease can be written
    // once its network item is gone (their updates are conditioned on it).
    try {
      await this.t.call(() => this.t.client.send(new DeleteItemCommand({
        TableName: this.t.name,
        Key: networkKey(name),
        ConditionExpression: '#rev = :rev',
        ExpressionAttributeNames: { '#rev': 'revision' },
        ExpressionAttributeValues: { ':rev': N(net.revision) },
      })));
    } catch (e) {
      if (errorName(e) === 'ConditionalCheckFailedException') throw new ConflictError(`network ${name} changed meanwhile: try again`);
      throw e;
    }
    // What is left under its keys: changes, statuses and their counts, route statuses and tables.
    const keys = (await Promise.all(networkPks(name).map((pk) => this.t.queryPartition(pk, '', 'pk, sk')))).flat().map((i) => ({ pk: i.pk!, sk: i.sk! }));
    await this.t.batchDelete(keys);
    return true;
  }

  // ---- leases ----

  async getLease(network: string, node: string): Promise<Lease | undefined> {
    await this.ready();
    return reads.getLease(this.t, network, node);
  }

  async listLeases(network: string): Promise<Lease[]> {
    await this.ready();
    return reads.listLeases(this.t, network);
  }

  async listLeasesPage(network: string, after: string | undefined, limit: number): Promise<Lease[]> {
    await this.ready();
    return reads.listLeasesPage(this.t, network, after, limit);
  }

  async takenSubnets(network: string): Promise<TakenSubnets> {
    await this.ready();
    return reads.takenSubnets(this.t, network);
  }

  async createLease(lease: NewLease): Promise<Lease> {
    await this.ready();
    return written((await writeLease(this.t, this.ttlGrace, { kind: 'create', lease }))!);
  }

  async replaceLease(lease: NewLease, expectedRevision: number, opts: { keepExpiry?: boolean } = {}): Promise<Lease> {
    await this.ready();
    return written((await writeLease(this.t, this.ttlGrace, { kind: 'replace', lease, expectedRevision, ...opts }))!);
  }

  async renewLease(network: string, node: string, revision: number, expiresAt: string): Promise<Lease | undefined> {
    await this.ready();
    return renewLease(this.t, this.ttlGrace, network, node, revision, expiresAt);
  }

  async deleteLease(network: string, node: string, expectedRevision?: number, expiredBy?: number): Promise<{ lease: Lease; revision: number } | undefined> {
    await this.ready();
    const plan = await writeLease(this.t, this.ttlGrace, { kind: 'delete', network, node, expectedRevision, expiredBy });
    return plan && deleted(plan);
  }

  async listExpired(now: number): Promise<Lease[]> {
    await this.ready();
    return reads.listExpired(this.t, now);
  }

  // ---- nodes ----

  async putNode(node: NodeRecord): Promise<void> {
    // createdAt is kept from the first put, as the SQLite store does.
    await this.t.call(() => this.t.client.send(new UpdateItemCommand({
      TableName: this.t.name,
      Key: nodeKey(node.name),
      UpdateExpression: 'SET #name = :name, #network = :network, #hash = :hash, #created = if_not_exists(#created, :created), gsi1pk = :g, gsi1sk = :name',
      ExpressionAttributeNames: { '#name': 'name', '#network': 'network', '#hash': 'passwordHash', '#created': 'createdAt' },
      ExpressionAttributeValues: { ':name': S(node.name), ':network': S(node.network), ':hash': S(node.passwordHash), ':created': S(node.createdAt), ':g': S('NODES') },
    })));
  }

  async getNode(name: string): Promise<NodeRecord | undefined> {
    const item = await this.t.getItem(nodeKey(name));
    return item && toNode(item);
  }

  async listNodes(): Promise<NodeRecord[]> {
    return (await this.t.listIndexed('NODES')).map(toNode).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async deleteNode(name: string): Promise<boolean> {
    const r = await this.t.call(() => this.t.client.send(new DeleteItemCommand({ TableName: this.t.name, Key: nodeKey(name), ReturnValues: 'ALL_OLD' })));
    return r.Attributes !== undefined;
  }

  // ---- statuses ----

  async putStatus(rec: StatusRecord): Promise<void> {
    await this.ready();
    return status.putStatus(this.t, rec);
  }

  async listStatus(network?: string): Promise<StatusRecord[]> {
    await this.ready();
    const names = network === undefined ? (await this.listNetworks()).map((n) => n.name) : (await this.getNetwork(network)) ? [network] : [];
    return status.listStatus(this.t, names);
  }

  async agentCounts(network: string): Promise<AgentCounts> {
    await this.ready();
    return status.agentCounts(this.t, network);
  }

  async putRouteStatus(rec: RouteStatusRecord): Promise<void> {
    await this.ready();
    await this.t.call(() => this.t.client.send(new PutItemCommand({
      TableName: this.t.name,
      Item: {
        ...routeStatusKey(rec.network, rec.node),
        gsi1pk: S('ROUTES'),
        gsi1sk: S(`${rec.network}#${rec.node}`),
        network: S(rec.network),
        node: S(rec.node),
        state: S(rec.state),
        reason: S(rec.reason),
        updatedAt: S(rec.updatedAt),
      },
    })));
  }

  async deleteRouteStatus(network: string, node: string): Promise<void> {
    await this.ready();
    await this.t.call(() => this.t.client.send(new DeleteItemCommand({ TableName: this.t.name, Key: routeStatusKey(network, node) })));
  }

  async listRouteStatus(network?: string): Promise<RouteStatusRecord[]> {
    await this.ready();
    const items = network === undefined ? await this.t.listIndexed('ROUTES') : await this.t.queryPartition(netPk(network), ROUTE_PREFIX);
    return items.map(toRouteStatus).sort(byNetworkNode);
  }

  async putRouteTables(rec: RouteTablesRecord): Promise<void> {
    await this.ready();
    await this.t.call(() => this.t.client.send(new PutItemCommand({
      TableName: this.t.name,
      Item: { ...routeTablesKey(rec.network), tables: S(JSON.stringify(rec.tables)), updatedAt: S(rec.updatedAt) },
    })));
  }

  async getRouteTables(network: string): Promise<RouteTablesRecord | undefined> {
    await this.ready();
    const item = await this.t.getItem(routeTablesKey(network));
    return item && { network, tables: JSON.parse(str(item, 'tables')) as RouteTablesRecord['tables'], updatedAt: str(item, 'updatedAt') };
  }

  // ---- locks ----
  // One item per lock name, in a partition of its own (LOCK#<name> / LOCK),
  // apart from the network and node items: owner, expiresMs (epoch ms) and
  // ttl. Taking it is one conditional PutItem (free, expired, or already
  // the owner's); releasing it one DeleteItem conditioned on the owner. A
  // refused take reads the item back (a read, not a write) to say who holds
  // it until when. Expiry is judged by the writer's clock: Lambda's clocks
  // are synchronized, and a lock's ttl is minutes against their
  // milliseconds of skew. `ttl` lets DynamoDB delete the item of a lock
  // nobody takes any more (a VPC gone) a day after it expired.

  async tryLock(name: string, owner: string, ttlMs: number, now = Date.now()): Promise<LockResult> {
    checkLockArgs(name, owner, ttlMs);
    const expiresAt = now + ttlMs;
    try {
      await this.t.client.send(new PutItemCommand({
        TableName: this.t.name,
        Item: {
          ...lockKey(name),
          owner: S(owner),
          expiresMs: N(expiresAt),
          [TTL_ATTRIBUTE]: N(Math.ceil(expiresAt / 1000) + LOCK_TTL_GRACE_SECONDS),
        },
        ConditionExpression: 'attribute_not_exists(pk) OR expiresMs <= :now OR #owner = :owner',
        ExpressionAttributeNames: { '#owner': 'owner' },
        ExpressionAttributeValues: { ':now': N(now), ':owner': S(owner) },
      }));
      return { acquired: true, expiresAt };
    } catch (e) {
      if (errorName(e) !== 'ConditionalCheckFailedException') throw e;
    }
    const held = await this.t.getItem(lockKey(name));
    // Released between the two calls: free now, the caller's next try takes it.
    return { acquired: false, owner: held?.owner?.S ?? '', expiresAt: held?.expiresMs?.N ? Number(held.expiresMs.N) : now };
  }

  async unlock(name: string, owner: string): Promise<boolean> {
    checkLockArgs(name, owner);
    try {
      await this.t.client.send(new DeleteItemCommand({
        TableName: this.t.name,
        Key: lockKey(name),
        ConditionExpression: '#owner = :owner',
        ExpressionAttributeNames: { '#owner': 'owner' },
        ExpressionAttributeValues: { ':owner': S(owner) },
      }));
      return true;
    } catch (e) {
      if (errorName(e) === 'ConditionalCheckFailedException') return false;
      throw e;
    }
  }

  async close(): Promise<void> {
    if (this.ownsClient) this.t.client.destroy();
  }
}
