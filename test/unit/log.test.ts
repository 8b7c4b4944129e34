// Log lines: the text a terminal reads, and the JSON CloudWatch Logs Insights
// queries by field; in both, what a node sent can neither start a line of its
// own nor reach the terminal as an escape sequence.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../core/log.js';

const hostile = 'x\n2026-01-01T00:00:00.000Z error forged: line\u001b[2J\u2028';

test('text: one line per call, fields as k=v, hostile values quoted and escaped', () => {
  const lines: string[] = [];
  createLogger('controller', 'info', (l) => lines.push(l), 'text').child('api').warn('publish refused', { node: hostile, count: 3, skipped: undefined });
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /^\S+Z warn controller\/api: publish refused node="x\\n2026.*\\u001b\[2J\\u2028" count=3$/);
  assert.ok(!/[\n\u001b\u2028]/.test(lines[0]!));
});

test('json: one object per line with time, level, component, msg and the fields as values', () => {
  const lines: string[] = [];
  const log = createLogger('lambda', 'info', (l) => lines.push(l), 'json');
  log.child('schedule').error('scheduled task failed', { what: 'aws', reason: new Error('denied'), n: 2, node: hostile });
  log.debug('not at info');
  assert.equal(lines.length, 1);
  assert.ok(!/[\n\u001b\u2028]/.test(lines[0]!), 'no raw control character or line separator');
  const doc = JSON.parse(lines[0]!) as Record<string, unknown>;
  assert.equal(typeof doc.time, 'string');
  assert.deepEqual({ ...doc, time: undefined }, { time: undefined, level: 'error', component: 'lambda/schedule', msg: 'scheduled task failed', what: 'aws', reason: 'denied', n: 2, node: hostile });
});
