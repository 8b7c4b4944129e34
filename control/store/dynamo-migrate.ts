// The one-off step that upgrades a table written by a twill from before the
// sharded layout (layout 1: every lease, subnet claim, status and change of a
// network under NET#<network>, statuses indexed under one gsi1 key) to the
// layout control/store/dynamo-layout.ts describes (layout 2), then writes the layout
// item. Until that item is there, the functions refuse the table rather than
// see it empty (docs/serverless.md, "a table from an earlier twill").
//
// Each item is written under its new key before the old one is deleted, so a
// run cut short loses nothing and a second run finishes it; statuses go
// through the store, which counts them (a status moved twice is counted once:
// its state does not change). Run it with the control plane's functions
// deployed (they refuse the table meanwhile) and with credentials that may
// Scan, GetItem, PutItem, UpdateItem and DeleteItem the table.
import { DeleteItemCommand, GetItemCommand, PutItemCommand, ScanCommand, type AttributeValue, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoStore } from './dynamo.js';
import { changePk, claimPk, expiryPkOf, LAYOUT_KEY, LAYOUT_VERSION, layoutItem, leasePk, shardOf } from './dynamo-layout.js';
import type { StatusRecord } from './store.js';

type Item = Record<string, AttributeValue>;

export interface MigrationReport {
  /** the table already had the current layout: nothing was done */
  current: boolean;
  moved: { leases: number; claims: number; changes: number; statuses: number };
}

/** A layout-1 item under NET#<network> and where it goes, or undefined for what stays (the network, route statuses and tables). */
function newKey(item: Item): { kind: keyof MigrationReport['moved']; network: string; pk: string } | undefined {
  const m = /^NET#([^#]+)$/.exec(item.pk?.S ?? '');
  const sk = item.sk?.S ?? '';
  if (!m) return undefined;
  const network = m[1]!;
  if (sk.startsWith('LEASE#')) return { kind: 'leases', network, pk: leasePk(network, sk.slice('LEASE#'.length)) };
  if (sk.startsWith('CLAIM#')) return { kind: 'claims', network, pk: claimPk(network, sk) };
  if (sk.startsWith('CHG#')) return { kind: 'changes', network, pk: changePk(network) };
  if (sk.startsWith('STATUS#')) return { kind: 'statuses', network, pk: '' };
  return undefined;
}

export async function migrateTable(client: DynamoDBClient, table: string, log: (line: string) => void = () => {}): Promise<MigrationReport> {
  const report: MigrationReport = { current: false, moved: { leases: 0, claims: 0, changes: 0, statuses: 0 } };
  const mark = (await client.send(new GetItemCommand({ TableName: table, Key: LAYOUT_KEY, ConsistentRead: true }))).Item?.version?.N;
  if (mark !== undefined) {
    if (Number(mark) !== LAYOUT_VERSION) throw new Error(`table ${table} holds layout ${mark}; this migration writes layout ${LAYOUT_VERSION} from layout 1 only`);
    return { ...report, current: true };
  }
  const store = new DynamoStore({ tableName: table, client, checkLayout: false });
  let start: Item | undefined;
  do {
    const page = await client.send(new ScanCommand({ TableName: table, ConsistentRead: true, ExclusiveStartKey: start }));
    for (const item of page.Items ?? []) {
      const to = newKey(item);
      if (!to) continue;
      if (to.kind === 'statuses') {
        await store.putStatus({ network: item.network!.S!, node: item.node!.S!, status: JSON.parse(item.status!.S!) as StatusRecord['status'], updatedAt: item.updatedAt!.S! });
      } else {
        const moved: Item = { ...item, pk: { S: to.pk } };
        // A lease's place in the expiry index moves to its shard's index key.
        if (to.kind === 'leases' && item.gsi1pk?.S?.startsWith('EXPIRY#')) moved.gsi1pk = { S: expiryPkOf(to.network, shardOf(item.sk!.S!.slice('LEASE#'.length))) };
        await client.send(new PutItemCommand({ TableName: table, Item: moved }));
      }
      await client.send(new DeleteItemCommand({ TableName: table, Key: { pk: item.pk!, sk: item.sk! } }));
      report.moved[to.kind]++;
    }
    start = page.LastEvaluatedKey;
    log(`${Object.entries(report.moved).map(([k, n]) => `${n} ${k}`).join(', ')} moved so far`);
  } while (start);
  await client.send(new PutItemCommand({ TableName: table, Item: layoutItem() }));
  return report;
}
