// CloudWatch metrics from the serverless functions, in the embedded metric
// format: one JSON line on stdout per document, which CloudWatch Logs turns
// into metrics with no API call and no extra permission. The rules a
// document must follow ("Specification: Embedded metric format", CloudWatch
// user guide) are checked here, so a bad document is an error in the tests
// rather than a metric that silently never appears: the root is one JSON
// object whose _aws holds a Timestamp (epoch ms) and CloudWatchMetrics
// directives; each directive names a Namespace, dimension sets of at most 30
// dimensions each (every one a string member of the root) and at most 100
// metrics (every one a number member of the root, with a CloudWatch unit); a
// log event is at most 256 KB.

export const NAMESPACE = 'twill';

/** CloudWatch's units (MetricDatum.Unit), the ones twill uses. */
export type Unit = 'Count' | 'Milliseconds' | 'Seconds' | 'None';

export interface MetricValue {
  name: string;
  value: number;
  unit: Unit;
}

const MAX_METRICS = 100;
const MAX_DIMENSIONS = 30;
const MAX_EVENT_BYTES = 256 * 1024;
const NAME_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,254}$/;

export interface EmfDocument {
  _aws: { Timestamp: number; CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string; Unit: Unit }[] }[] };
  [member: string]: unknown;
}

/** One document: these metrics under these dimensions (e.g. { Stage, Network }). Throws on anything the format forbids. */
export function emfDocument(dimensions: Record<string, string>, metrics: MetricValue[], now = Date.now()): EmfDocument {
  const dims = Object.keys(dimensions);
  if (dims.length > MAX_DIMENSIONS) throw new Error(`an EMF dimension set holds at most ${MAX_DIMENSIONS} dimensions, not ${dims.length}`);
  if (metrics.length === 0 || metrics.length > MAX_METRICS) throw new Error(`an EMF directive holds 1 to ${MAX_METRICS} metrics, not ${metrics.length}`);
  const doc: EmfDocument = {
    _aws: { Timestamp: now, CloudWatchMetrics: [{ Namespace: NAMESPACE, Dimensions: [dims], Metrics: metrics.map((m) => ({ Name: m.name, Unit: m.unit })) }] },
  };
  for (const [k, v] of Object.entries(dimensions)) {
    if (!NAME_RE.test(k) || typeof v !== 'string' || v.length === 0 || v.length > 1024) throw new Error(`EMF dimension ${k}=${JSON.stringify(v)} is not a name and a non-empty string`);
    doc[k] = v;
  }
  for (const m of metrics) {
    if (!NAME_RE.test(m.name) || m.name in doc) throw new Error(`EMF metric name ${JSON.stringify(m.name)} is invalid or used twice`);
    if (!Number.isFinite(m.value)) throw new Error(`EMF metric ${m.name} has no finite value`);
    doc[m.name] = m.value;
  }
  if (Buffer.byteLength(JSON.stringify(doc)) > MAX_EVENT_BYTES) throw new Error(`an EMF document is at most ${MAX_EVENT_BYTES} bytes`);
  return doc;
}

/**
 * Writes a document as one log line when running in Lambda (which sends
 * stdout to CloudWatch Logs); elsewhere (the functions run in tests and
 * benches too) nothing reads it, and nothing is written.
 */
export function emitMetrics(dimensions: Record<string, string>, metrics: MetricValue[], write: (line: string) => void = (l) => process.stdout.write(l + '\n')): void {
  const doc = emfDocument(dimensions, metrics);
  if (process.env.AWS_LAMBDA_FUNCTION_NAME) write(JSON.stringify(doc));
}
