// node:test reporter used inside user-mode-linux (plain JavaScript: the test
// runner loads reporters before tsx's hooks). One line per finished test,
// "@@twill-test {json}", which the host side (uml.ts) turns back into
// subtests of its own as they arrive. Suites are flattened into the test
// names ("suite > test"); a suite reports on its own only when it failed for
// a reason of its own (a before() hook), not because a child failed. What the
// tests print passes through as plain lines.
const EVENT_PREFIX = '@@twill-test ';

function errorText(e) {
  if (!e) return 'failed';
  const inner = e.cause instanceof Error ? e.cause : e;
  return inner instanceof Error ? (inner.stack ?? inner.message) : String(inner);
}

export default async function* umlReporter(source) {
  const path = [];
  for await (const ev of source) {
    if (ev.type === 'test:start') {
      path.length = ev.data.nesting;
      path.push(ev.data.name);
    } else if (ev.type === 'test:pass' || ev.type === 'test:fail') {
      const d = ev.data;
      const details = d.details ?? {};
      const failed = ev.type === 'test:fail';
      const error = failed ? errorText(details.error) : undefined;
      if (details.type === 'suite' && (!failed || /^\d+ subtests? failed$/.test(error ?? ''))) continue;
      const name = [...path.slice(0, d.nesting), d.name].join(' > ');
      const skip = typeof d.skip === 'string' ? d.skip : d.skip ? 'skipped' : undefined;
      const out = { name, passed: !failed, durationMs: Math.round(details.duration_ms ?? 0), ...(skip && { skip }), ...(error && { error }) };
      yield `${EVENT_PREFIX}${JSON.stringify(out)}\n`;
    } else if (ev.type === 'test:stdout' || ev.type === 'test:stderr') {
      yield ev.data.message.endsWith('\n') ? ev.data.message : `${ev.data.message}\n`;
    }
  }
}
