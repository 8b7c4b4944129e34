// The agent's retained status (agent/status.ts): what it costs the broker,
// and when it is said at once because a controller waits on it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Status } from '../../core/messages.js';
import { silentLogger } from '../../core/log.js';
import { StatusReport } from '../../agent/status.js';

function rig() {
  let revision = 1;
  const sent: Status[] = [];
  const report = new StatusReport(silentLogger, () => ({ v: 2, state: 'online', subnet: '10.60.1.0/24', revision, inSync: true, peers: 3 }));
  const sink = { connected: true, publishStatus: async (s: Status) => void sent.push(s) };
  return { report, sink, sent, bump: () => revision++ };
}

test('a newer applied revision alone waits for the status pace; a change of meaning goes at once', async () => {
  const { report, sink, sent, bump } = rig();
  try {
    await report.publish(sink);
    assert.equal(sent.length, 1);
    bump();
    await report.publish(sink);
    assert.equal(sent.length, 1, 'a revision alone is held: every membership change would otherwise cost every member a status');
    report.setErrors(['something broke']);
    await report.publish(sink);
    assert.equal(sent.length, 2);
    assert.deepEqual(sent[1]?.errors, ['something broke']);
  } finally {
    report.stop();
  }
});

test('a revision a controller waits on (a move to the overlay applied) is said at once, once', async () => {
  const { report, sink, sent, bump } = rig();
  try {
    await report.publish(sink);
    bump();
    await report.publish(sink, true);
    assert.equal(sent.length, 2);
    assert.equal(sent[1]?.revision, 2);
    await report.publish(sink, true);
    assert.equal(sent.length, 2, 'nothing new: nothing sent');
  } finally {
    report.stop();
  }
});
