// Pub/Sub's side of a push subscription: each message published is POSTed to
// the endpoint, and redelivered until the endpoint acknowledges it. As
// Google's Pub/Sub documentation says ("Push subscriptions", the Subscription
// resource, RetryPolicy and DeadLetterPolicy in the API reference):
//   - the body is {message: {data (base64), attributes, messageId,
//     message_id, publishTime, publish_time}, subscription}, plus
//     deliveryAttempt when the subscription has a dead-letter policy;
//   - with authentication, an Authorization: Bearer OIDC token;
//   - "Any of the following HTTP status codes is interpreted as success:
//     102, 200, 201, 202, 204"; any other status is a negative
//     acknowledgement;
//   - "For push delivery, this value [ackDeadlineSeconds, 10 to 600, default
//     10] is used to set the request timeout for the call to the push
//     endpoint": an answer that has not come by then counts as a nack, and
//     the message is delivered again (the endpoint may still be working on
//     the first delivery: duplicates run concurrently);
//   - redelivery waits: with a RetryPolicy, exponential from minimumBackoff
//     (default 10 s) to maximumBackoff (default 600 s); without one, push
//     backoff, exponential from 100 ms to 60 s;
//   - with a DeadLetterPolicy, a message is forwarded to the dead-letter
//     topic after maxDeliveryAttempts (5 to 100, default 5) delivery
//     attempts, an attempt being the first delivery and each nack or expired
//     deadline since.
// Time can be scaled (secondMs) so a test of the stand-in itself can watch a
// 10-second deadline expire without waiting 10 seconds; the default is real
// time.
import { randomUUID } from 'node:crypto';
import { request } from 'node:http';

export const PUSH_SUCCESS = new Set([102, 200, 201, 202, 204]);

export interface PushSubscriptionOptions {
  /** the push endpoint (loopback) */
  endpoint: string;
  /** projects/<project>/subscriptions/<name> */
  subscription: string;
  /** 10 to 600; default 10 */
  ackDeadlineSeconds?: number;
  retryPolicy?: { minimumBackoffSeconds?: number; maximumBackoffSeconds?: number };
  deadLetterPolicy?: { deadLetterTopic: string; maxDeliveryAttempts?: number };
  /** the OIDC token for each request, when authentication is enabled */
  token?: () => Promise<string>;
  /** ms per simulated second; default 1000 */
  secondMs?: number;
}

export interface Delivery {
  messageId: string;
  attempt: number;
  /** the status answered, or 'deadline' when none came within the ack deadline, or 'error' when the connection failed */
  result: number | 'deadline' | 'error';
  acked: boolean;
}

interface Pending {
  id: string;
  data: string;
  attributes: Record<string, string>;
  publishTime: string;
  attempts: number;
  settled: (how: 'acked' | 'dead-lettered') => void;
  done: Promise<'acked' | 'dead-lettered'>;
}

export class FakePushSubscription {
  readonly deliveries: Delivery[] = [];
  /** messages forwarded to the dead-letter topic */
  readonly deadLettered: { messageId: string; data: string; attempts: number }[] = [];
  private readonly pending = new Map<string, Pending>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;
  private readonly ackDeadline: number;
  private readonly maxAttempts?: number;
  private readonly sec: number;

  constructor(private readonly o: PushSubscriptionOptions) {
    this.ackDeadline = o.ackDeadlineSeconds ?? 10;
    if (!Number.isInteger(this.ackDeadline) || this.ackDeadline < 10 || this.ackDeadline > 600) {
      throw new Error(`INVALID_ARGUMENT: ackDeadlineSeconds ${this.ackDeadline} must be from 10 to 600`);
    }
    if (o.deadLetterPolicy) {
      const max = o.deadLetterPolicy.maxDeliveryAttempts ?? 5;
      if (!Number.isInteger(max) || max < 5 || max > 100) throw new Error(`INVALID_ARGUMENT: maxDeliveryAttempts ${max} must be from 5 to 100`);
      this.maxAttempts = max;
    }
    const rp = o.retryPolicy;
    for (const [k, v] of Object.entries(rp ?? {})) if (v !== undefined && (v < 0 || v > 600)) throw new Error(`INVALID_ARGUMENT: retryPolicy.${k} ${v} must be from 0 to 600 seconds`);
    this.sec = o.secondMs ?? 1000;
  }

  /** Publishes a message (data as bytes or text); returns its id. */
  publish(data: string | Buffer, attributes: Record<string, string> = {}): string {
    const id = String(10_000_000_000_000 + Math.floor(Math.random() * 1e12));
    let settled!: Pending['settled'];
    const done = new Promise<'acked' | 'dead-lettered'>((r) => (settled = r));
    const p: Pending = { id, data: Buffer.from(data).toString('base64'), attributes, publishTime: new Date().toISOString(), attempts: 0, settled, done };
    this.pending.set(id, p);
    this.deliver(p);
    return id;
  }

  /** Resolves when the message is acknowledged or dead-lettered. */
  settled(id: string): Promise<'acked' | 'dead-lettered'> {
    const p = this.pending.get(id);
    if (p) return p.done;
    if (this.deadLettered.some((d) => d.messageId === id)) return Promise.resolve('dead-lettered');
    if (this.deliveries.some((d) => d.messageId === id && d.acked)) return Promise.resolve('acked');
    return Promise.reject(new Error(`no message ${id} was published`));
  }

  deliveriesOf(id: string): Delivery[] {
    return this.deliveries.filter((d) => d.messageId === id);
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.closed) fn();
    }, ms);
    this.timers.add(t);
  }

  /** The wait before redelivery after `attempts` failed deliveries. */
  private backoffMs(attempts: number): number {
    const rp = this.o.retryPolicy;
    const [min, max] = rp ? [rp.minimumBackoffSeconds ?? 10, rp.maximumBackoffSeconds ?? 600] : [0.1, 60];
    return Math.min(max, min * 2 ** (attempts - 1)) * this.sec;
  }

  private deliver(p: Pending): void {
    p.attempts++;
    const body = JSON.stringify({
      message: { data: p.data, attributes: p.attributes, messageId: p.id, message_id: p.id, publishTime: p.publishTime, publish_time: p.publishTime },
      subscription: this.o.subscription,
      ...(this.maxAttempts ? { deliveryAttempt: p.attempts } : {}),
    });
    const attempt = p.attempts;
    void (async () => {
      const auth: Record<string, string> = this.o.token ? { authorization: `Bearer ${await this.o.token()}` } : {};
      const result = await this.post(body, auth);
      const acked = typeof result === 'number' && PUSH_SUCCESS.has(result);
      this.deliveries.push({ messageId: p.id, attempt, result, acked });
      if (acked) {
        this.pending.delete(p.id);
        return p.settled('acked');
      }
      if (this.maxAttempts && p.attempts >= this.maxAttempts) {
        this.pending.delete(p.id);
        this.deadLettered.push({ messageId: p.id, data: p.data, attempts: p.attempts });
        return p.settled('dead-lettered');
      }
      this.later(this.backoffMs(p.attempts), () => this.deliver(p));
    })();
  }

  /** One POST, given up (and the connection closed) at the ack deadline. */
  private post(body: string, headers: Record<string, string>): Promise<number | 'deadline' | 'error'> {
    return new Promise((resolve) => {
      const url = new URL(this.o.endpoint);
      let over = false;
      const req = request(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'user-agent': 'APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)', 'x-goog-request-id': randomUUID(), ...headers },
      }, (res) => {
        res.resume();
        res.on('end', () => { clearTimeout(timer); resolve(res.statusCode ?? 0); });
        res.on('error', () => { clearTimeout(timer); resolve(over ? 'deadline' : 'error'); });
      });
      const timer = setTimeout(() => { over = true; req.destroy(); resolve('deadline'); }, this.ackDeadline * this.sec);
      req.on('error', () => { clearTimeout(timer); resolve(over ? 'deadline' : 'error'); });
      req.end(body);
    });
  }
}
