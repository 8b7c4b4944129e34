// The table's shape, as data with no SST globals, so that test/sst.test.ts
// can check it against what the store expects (tableDefinition in
// control/store/dynamo-table.ts; the item layout is control/store/dynamo-layout.ts).
export const TABLE_SCHEMA = {
  fields: { pk: 'string', sk: 'string', gsi1pk: 'string', gsi1sk: 'string' },
  primaryIndex: { hashKey: 'pk', rangeKey: 'sk' },
  // Sparse and keys-only: the store reads the items back consistently, so
  // projecting attributes would only add an index write to every update.
  globalIndexes: { gsi1: { hashKey: 'gsi1pk', rangeKey: 'gsi1sk', projection: 'keys-only' } },
  ttl: 'ttl',
} as const;
