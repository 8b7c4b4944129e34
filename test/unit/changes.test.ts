// changeRun: when a read of the change log is the whole story since a revision.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { changeRun, type Change } from '../../control/store/store.js';

const c = (...revs: number[]): Change[] => revs.map((revision) => ({ revision, config: true }));

test('a run with no missing revision up to the current one is complete', () => {
  assert.deepEqual(changeRun(3, 6, c(4, 5, 6), 10), { revision: 6, changes: c(4, 5, 6), more: false });
  assert.deepEqual(changeRun(6, 6, [], 10), { revision: 6, changes: [], more: false });
});

test('a limit cuts the run and says there is more', () => {
  assert.deepEqual(changeRun(3, 9, c(4, 5, 6), 2), { revision: 9, changes: c(4, 5), more: true });
});

test('a missing revision, a log that starts too late or ends too early, or an ask from the future cannot be answered', () => {
  assert.equal(changeRun(3, 6, c(4, 6), 10), undefined, 'hole in the middle');
  assert.equal(changeRun(3, 6, c(5, 6), 10), undefined, 'the log no longer reaches back to 4');
  assert.equal(changeRun(3, 6, c(4, 5), 10), undefined, 'the log ends before the current revision');
  assert.equal(changeRun(3, 6, [], 10), undefined, 'nothing logged at all');
  assert.equal(changeRun(7, 6, [], 10), undefined, 'asked from ahead of the network');
});
