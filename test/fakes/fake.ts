// What every fake cloud endpoint shares: a plain HTTP server on a free
// loopback port, calls counted by action, throttling injected on demand, and a
// simulated budget for mutating calls so a benchmark can report how long a
// rate-limited cloud would take without sleeping through it.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

export interface Budget {
  /** mutating calls per second, per action (AWS documents about 5) */
  perSecond: number;
}

export abstract class FakeCloud {
  readonly calls: Record<string, number> = {};
  /** the next N calls of an action are refused as throttled */
  readonly throttle: Record<string, number> = {};
  /** calls refused as throttled so far */
  throttled = 0;
  budget?: Budget;
  /**
   * Called with each call's action before it is answered; 'drop' leaves the
   * request unanswered, e.g. while a test kills the client that made it.
   */
  onAction?: (action: string) => Promise<'drop' | void> | 'drop' | void;
  private server?: Server;
  url = '';

  // Simulated time, in seconds. A call arrives no earlier than the latest
  // answer already sent (the client may have waited for it), and a mutating
  // call is served no earlier than its action's budget allows.
  private lastAnswer = 0;
  private nextFree: Record<string, number> = {};

  protected abstract mutating: ReadonlySet<string>;
  protected abstract handle(req: IncomingMessage, body: string, res: ServerResponse): Promise<void> | void;

  count(action: string): void {
    this.calls[action] = (this.calls[action] ?? 0) + 1;
    let at = this.lastAnswer;
    if (this.budget && this.mutating.has(action)) {
      at = Math.max(at, this.nextFree[action] ?? 0);
      this.nextFree[action] = at + 1 / this.budget.perSecond;
    }
    this.lastAnswer = Math.max(this.lastAnswer, at);
  }

  /** Runs onAction; true when the request must go unanswered. */
  async dropped(action: string): Promise<boolean> {
    return (await this.onAction?.(action)) === 'drop';
  }

  /** Consumes one injected throttle for the action, if any is left. */
  takeThrottle(action: string): boolean {
    const n = this.throttle[action] ?? 0;
    if (n <= 0) return false;
    this.throttle[action] = n - 1;
    this.throttled++;
    return true;
  }

  get simulatedSeconds(): number {
    return this.lastAnswer;
  }

  resetCounters(): void {
    for (const k of Object.keys(this.calls)) delete this.calls[k];
    this.lastAnswer = 0;
    this.nextFree = {};
    this.throttled = 0;
  }

  /** Sum of calls, or of the calls of the actions named. */
  total(actions?: Iterable<string>): number {
    const names = actions ? [...actions] : Object.keys(this.calls);
    return names.reduce((n, a) => n + (this.calls[a] ?? 0), 0);
  }

  mutatingCalls(): number {
    return this.total(this.mutating);
  }

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (d: string) => (body += d));
      req.on('end', () => {
        Promise.resolve(this.handle(req, body, res)).catch((e: unknown) => {
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`fake cloud failed: ${e instanceof Error ? e.stack : String(e)}`);
        });
      });
    });
    await new Promise<void>((resolve, reject) => {
      this.server?.once('error', reject);
      this.server?.listen(0, '127.0.0.1', () => resolve());
    });
    const a = this.server.address();
    this.url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
    return this.url;
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}
