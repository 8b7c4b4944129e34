// When the agent says hello (agent/watch/hello.ts), on node:test's simulated
// clock: asked again with backoff until the controller answers, later after a
// refusal, and a renewal when the lease nears its end, never over a hello that
// is still outstanding.
import { afterEach, beforeEach, mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { silentLogger } from '../../core/log.js';
import { HelloSchedule } from '../../agent/watch/hello.js';

const RETRY = 1000;
const MARGIN = 60_000;
/** the renewal check runs every quarter of the margin */
const CHECK = MARGIN / 4;

/** Moves the simulated clock a second at a time, so a timer armed by another fires when it is due. */
function pass(ms: number): void {
  for (let t = 0; t < ms; t += 1000) mock.timers.tick(Math.min(1000, ms - t));
}

/** hellos sent, and hellos tried (sent or not) */
let sent = 0;
let tried = 0;
/** the simulated time of the first hello sent */
let firstAt: number | undefined;
let connected = true;
let hellos: HelloSchedule;

beforeEach(() => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: 0 });
  sent = 0;
  tried = 0;
  firstAt = undefined;
  connected = true;
  hellos = new HelloSchedule({ helloRetryMs: RETRY, renewMarginMs: MARGIN, log: silentLogger }, () => {
    tried++;
    if (connected) firstAt ??= Date.now();
    if (connected) sent++;
    return connected;
  });
  hellos.start();
});
afterEach(() => {
  hellos.stop();
  mock.timers.reset();
});

test('an unanswered hello is said again, the backoff doubling to a minute, each wait between it and twice it', () => {
  hellos.sayHello();
  assert.equal(sent, 1);
  pass(2 * RETRY);
  assert.equal(sent, 2, 'the first wait is 1 to 2 retry periods');
  pass(4 * RETRY);
  assert.equal(sent, 3, 'the second 2 to 4');
  pass(8 * RETRY);
  assert.equal(sent, 4);
  // the backoff stops doubling at a minute: from then on each wait is 1 to 2 minutes
  pass(10 * 60_000);
  const after = sent;
  pass(8 * 60_000);
  assert.ok(sent - after >= 4 && sent - after <= 8, `${sent - after} hellos in eight minutes`);
});

test('an answer ends the retries; a grant starts the backoff over', () => {
  hellos.sayHello();
  pass(2 * RETRY);
  pass(4 * RETRY);
  assert.equal(sent, 3);
  hellos.answered();
  hellos.granted(null);
  pass(10 * 60_000);
  assert.equal(sent, 3, 'answered, and a reservation never needs renewing');
  hellos.sayHello();
  pass(2 * RETRY);
  assert.equal(sent, 5, 'the wait is back to 1 to 2 retry periods');
});

test('after a refusal the hello waits at least 10 s, the operator having something to fix', () => {
  hellos.sayHello();
  hellos.answered();
  hellos.refused();
  pass(9_999);
  assert.equal(sent, 1);
  pass(1);
  assert.equal(sent, 2);
});

test('a lease is renewed when less than the margin (plus up to half of it, drawn per lease) is left, and not before', () => {
  const expires = 10 * MARGIN;
  hellos.granted(new Date(expires).toISOString());
  pass(expires);
  assert.ok(firstAt !== undefined, 'renewed');
  assert.ok(firstAt > expires - 1.5 * MARGIN, `not before 1.5 margins are left: ${expires - firstAt} ms were`);
  assert.ok(firstAt <= expires - MARGIN + CHECK, `at the first check once a margin is left: ${expires - firstAt} ms were`);
});

test('renewal never speaks over an outstanding hello, even one that could not be sent', () => {
  hellos.granted(new Date(MARGIN / 2).toISOString());
  hellos.refused();
  connected = false;
  // the lease is due at every check; the refused hello's retry comes at 10 s and finds no session
  pass(5 * CHECK);
  assert.equal(tried, 1, 'only the retry tried; a hello is still wanted, and renewal waits for it');
  hellos.answered();
  connected = true;
  pass(CHECK);
  assert.equal(sent, 1, 'answered: the next check renews');
  assert.equal(tried, 2);
});
