// Prometheus text exposition, written by hand: a handful of gauges and
// counters do not need a client library.
export type Labels = Record<string, string>;

interface Series { help: string; type: 'gauge' | 'counter'; values: Map<string, number> }

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

export class Metrics {
  private series = new Map<string, Series>();

  private get(name: string, help: string, type: 'gauge' | 'counter'): Series {
    let s = this.series.get(name);
    if (!s) {
      s = { help, type, values: new Map() };
      this.series.set(name, s);
    }
    return s;
  }

  /** Drops a metric's series, for an info metric whose labels change. */
  clear(name: string): void {
    this.series.get(name)?.values.clear();
  }

  /** Drops one series, e.g. a node's gauge once the node is gone. */
  remove(name: string, labels: Labels = {}): void {
    this.series.get(name)?.values.delete(labelText(labels));
  }

  set(name: string, help: string, value: number, labels: Labels = {}): void {
    this.get(name, help, 'gauge').values.set(labelText(labels), value);
  }

  inc(name: string, help: string, by = 1, labels: Labels = {}): void {
    const s = this.get(name, help, 'counter');
    const key = labelText(labels);
    s.values.set(key, (s.values.get(key) ?? 0) + by);
  }

  /** Declares a counter at zero so it is scraped before its first event. */
  declare(name: string, help: string, labels: Labels = {}): void {
    const s = this.get(name, help, 'counter');
    if (!s.values.has(labelText(labels))) s.values.set(labelText(labels), 0);
  }

  render(): string {
    const out: string[] = [];
    for (const [name, s] of this.series) {
      out.push(`# HELP ${name} ${s.help}`, `# TYPE ${name} ${s.type}`);
      for (const [labels, v] of s.values) out.push(`${name}${labels} ${v}`);
    }
    return out.join('\n') + '\n';
  }
}
