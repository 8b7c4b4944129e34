// The controller's output boundary, recorded: what it asked the broker to
// publish, in order, so a test can assert what agents would receive.
import type { Publisher } from '../../control/publish/publisher.js';

export interface Publication { topic: string; payload: string; retain: boolean }

export class RecordingPublisher implements Publisher {
  readonly sent: Publication[] = [];
  async publish(topic: string, payload: string, retain: boolean): Promise<void> {
    this.sent.push({ topic, payload, retain });
  }
  /** What a subscriber joining now would get: the last retained payload per topic. */
  retained(topic: string): string | undefined {
    for (let i = this.sent.length - 1; i >= 0; i--) {
      const p = this.sent[i]!;
      if (p.topic === topic && p.retain) return p.payload;
    }
    return undefined;
  }
  since(mark: number): Publication[] {
    return this.sent.slice(mark);
  }
  /** The changes published on a topic (protocol v2's changes), in order, batches opened (each change with its v). */
  changes(topic: string, mark = 0): { revision: number; node?: string; lease?: { revision: number; subnet: string | null } | null; config?: true }[] {
    return this.sent.slice(mark).filter((p) => p.topic === topic).flatMap((p) => {
      const m = JSON.parse(p.payload);
      return m.changes ? m.changes.map((c: object) => ({ v: m.v, ...c })) : [m];
    });
  }
}
