// The local controller's inbox: one node's messages in the order they came,
// different nodes' side by side, never more than the bound at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KeyedQueue } from '../../control/controller/inbox.js';

test('tasks of one key run in order; of different keys, side by side up to the bound', async () => {
  const q = new KeyedQueue(3);
  let running = 0;
  let peak = 0;
  const order: string[] = [];
  const task = (key: string, i: number, ms: number) => q.run(key, async () => {
    running++;
    peak = Math.max(peak, running);
    await new Promise((r) => setTimeout(r, ms));
    order.push(`${key}${i}`);
    running--;
  });
  const all = [task('a', 1, 20), task('a', 2, 1), task('a', 3, 1), ...Array.from({ length: 8 }, (_, i) => task(`k${i}`, 0, 5))];
  await Promise.all(all);
  assert.deepEqual(order.filter((o) => o.startsWith('a')), ['a1', 'a2', 'a3'], 'a slow first message is not overtaken by its node\'s next');
  assert.equal(peak, 3, 'never more than the bound at once, and the bound is used');
  assert.equal(order.length, 11);
});

test('a task that fails does not stop the ones after it', async () => {
  const q = new KeyedQueue(2);
  const failed = q.run('a', async () => { throw new Error('bad message'); });
  await assert.rejects(failed, /bad message/);
  let ran = false;
  await q.run('a', async () => { ran = true; });
  assert.equal(ran, true);
  await q.idle();
});
