// The shard of a per-node item is part of its DynamoDB key: the hash must
// be stable (the same in every process and release) and spread a fleet
// evenly, or one shard's partition key takes more than its share of a storm.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SHARDS, shardOf } from '../../control/store/dynamo.js';

test('shardOf is stable: the same names land on the same shards in every release', () => {
  // Pinned values (FNV-1a, modulo 32): changing the hash would move every item of every table.
  assert.deepEqual(['a', 'node-1', 'CLAIM#4#0a000100'].map(shardOf), [12, 3, 9]);
});

test('shardOf spreads 10,000 node names, instance ids and subnet claims within 20% of an even share', () => {
  const fleets = [
    Array.from({ length: 10_000 }, (_, i) => `node-${i}`),
    Array.from({ length: 10_000 }, (_, i) => `i-0${(0x100000000000 + i * 7919).toString(16)}`),
    Array.from({ length: 10_000 }, (_, i) => `CLAIM#4#${(0x0a000000 + i * 256).toString(16).padStart(8, '0')}`),
  ];
  for (const names of fleets) {
    const per = new Array<number>(SHARDS).fill(0);
    for (const n of names) per[shardOf(n)]!++;
    const even = names.length / SHARDS;
    // (a fair coin gives about ±12% at 312 a shard; 20% is a hash that does not spread)
    for (const c of per) assert.ok(Math.abs(c - even) <= even * 0.2, `${c} in one shard, ${even} would be even (${names[0]}...)`);
  }
});
