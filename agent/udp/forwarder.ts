// The main thread's handle on the udp data plane: owns the UDP socket and the
// TUN descriptor, runs the worker thread that forwards both ways, hands it
// each new forwarding table, and sums its counters. Nothing here touches a
// packet.
import { Worker } from 'node:worker_threads';
import type { Logger } from '../../core/log.js';
import { c, openTun, openUdp, udpOffloads } from './libc.js';
import { layout } from './wire.mjs';
import { COUNTER_SLOTS, COUNTERS, GEN, type Direction, type TableMessage, type WorkerData, type WorkerMessage } from './worker.mjs';

export type CounterName = keyof typeof COUNTERS;
export type Counters = Record<Direction, Record<CounterName, number>>;

/** worker.mjs is plain JavaScript, so it starts without tsx (see there). */
function spawnWorker(data: WorkerData): Worker {
  return new Worker(new URL('./worker.mjs', import.meta.url), { workerData: data });
}

interface Running {
  worker: Worker;
  counters: Record<Direction, Float64Array>;
  exited: Promise<void>;
}

const DIRECTIONS = ['out', 'in'] as const;
const zero = (): Record<CounterName, number> => Object.fromEntries(Object.keys(COUNTERS).map((k) => [k, 0])) as Record<CounterName, number>;

export class Forwarder {
  private readonly control = new Int32Array(new SharedArrayBuffer(4));
  private running?: Running;
  private tunFd = -1;
  private readonly udpFd: number;
  private readonly gso: boolean;
  private table: TableMessage;
  /** counts of the workers that have stopped, so totals survive a reattach */
  private past: Counters = { out: zero(), in: zero() };
  /** set when the worker died: the next attach() starts it again */
  private broken = false;

  constructor(
    private readonly tunName: string,
    ip: number,
    port: number,
    /** UDP payload bytes per datagram: the underlay MTU less the outer IPv4 and UDP headers */
    private readonly segment: number,
    private readonly log: Logger,
  ) {
    layout(segment); // refuses an underlay too small to carry anything
    this.udpFd = openUdp(ip, port);
    const { gso, gro } = udpOffloads(this.udpFd, segment);
    this.gso = gso;
    if (!gso || !gro) log.warn('the kernel lacks UDP GSO or GRO: the udp backend sends and reads one datagram at a time', { gso, gro });
    this.table = { port, peers: [] };
  }

  get attached(): boolean {
    return this.tunFd >= 0 && !this.broken;
  }

  /** (Re)attaches to the TUN device and (re)starts the worker on it. */
  async attach(): Promise<void> {
    await this.stopWorker();
    if (this.tunFd >= 0) c.close(this.tunFd);
    this.tunFd = -1;
    this.tunFd = openTun(this.tunName);
    this.broken = false;
    this.running = this.start();
  }

  private start(): Running {
    const counters = { out: new SharedArrayBuffer(COUNTER_SLOTS * 8), in: new SharedArrayBuffer(COUNTER_SLOTS * 8) };
    const worker = spawnWorker({ tunFd: this.tunFd, udpFd: this.udpFd, control: this.control.buffer as SharedArrayBuffer, counters, table: this.table, segment: this.segment, gso: this.gso });
    const exited = new Promise<void>((resolve) => {
      worker.once('exit', () => resolve());
      worker.once('error', (e) => {
        this.log.error('udp forwarding worker failed; restarting it at the next reconcile', { reason: e.message });
        this.broken = true;
        resolve();
      });
    });
    worker.unref();
    return { worker, counters: { out: new Float64Array(counters.out), in: new Float64Array(counters.in) }, exited };
  }

  private post(msg: WorkerMessage): void {
    this.running?.worker.postMessage(msg);
    Atomics.add(this.control, GEN, 1);
    Atomics.notify(this.control, GEN);
  }

  /** Gives the worker a new table; takes effect before its next packet. */
  update(table: TableMessage): void {
    this.table = table;
    this.post({ type: 'table', table });
  }

  private async stopWorker(): Promise<void> {
    const r = this.running;
    if (!r) return;
    this.post({ type: 'stop' });
    await Promise.race([r.exited, new Promise((res) => setTimeout(res, 2000))]);
    this.past = this.counters();
    this.running = undefined;
    await r.worker.terminate().catch(() => {});
  }

  counters(): Counters {
    const out: Counters = { out: { ...this.past.out }, in: { ...this.past.in } };
    const r = this.running;
    if (r) for (const dir of DIRECTIONS) for (const k of Object.keys(COUNTERS) as CounterName[]) out[dir][k] += r.counters[dir][COUNTERS[k]] ?? 0;
    return out;
  }

  async close(): Promise<void> {
    await this.stopWorker();
    if (this.tunFd >= 0) c.close(this.tunFd);
    this.tunFd = -1;
    c.close(this.udpFd);
  }
}
