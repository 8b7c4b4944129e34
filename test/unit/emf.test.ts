// CloudWatch's embedded metric format: what a document must be for
// CloudWatch Logs to extract its metrics ("Specification: Embedded metric
// format"); a document that breaks a rule is refused here, not dropped there.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { emfDocument } from '../../control/metrics/emf.js';

test('a document: the metadata directive, then each dimension and metric as a member of the root', () => {
  const d = emfDocument({ Stage: 'twill/prod', Network: 'edge' }, [{ name: 'Leases', value: 3, unit: 'Count' }], 1_796_000_000_000);
  assert.deepEqual(d, {
    _aws: { Timestamp: 1_796_000_000_000, CloudWatchMetrics: [{ Namespace: 'twill', Dimensions: [['Stage', 'Network']], Metrics: [{ Name: 'Leases', Unit: 'Count' }] }] },
    Stage: 'twill/prod', Network: 'edge', Leases: 3,
  });
});

test('what the format forbids is refused, naming the rule', () => {
  const m = (n: number) => Array.from({ length: n }, (_, i) => ({ name: `M${i}`, value: i, unit: 'Count' as const }));
  assert.throws(() => emfDocument({}, m(101)), /at most 100 metrics|1 to 100 metrics/);
  assert.throws(() => emfDocument({}, []), /1 to 100 metrics/);
  assert.throws(() => emfDocument(Object.fromEntries(Array.from({ length: 31 }, (_, i) => [`D${i}`, 'x'])), m(1)), /at most 30 dimensions/);
  assert.throws(() => emfDocument({}, [{ name: 'Leases', value: NaN, unit: 'Count' }]), /no finite value/);
  assert.throws(() => emfDocument({ Leases: 'x' }, [{ name: 'Leases', value: 1, unit: 'Count' }]), /used twice/);
  assert.throws(() => emfDocument({ Network: '' }, m(1)), /non-empty string/);
});
