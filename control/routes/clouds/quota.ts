// Each cloud's route limit as the account has it: read through the cloud's
// own quota API (aws.ts: Service Quotas, gce.ts: the project's ROUTES quota,
// ali.ts: Quota Center), kept for a while, and turned into the limit a
// network's pools carry with where it came from. Backend.RouteLimit still
// wins and then nothing is read. When the quota cannot be read (no
// permission, above all), the documented default is used and the reconcile
// warns, once per network and reason in this process: a warning on every
// pass would bury the log, and the status says it every time anyway.
//
// Why cache, and for how long: a quota changes only when a person asks for
// an increase and the cloud grants it, which takes from minutes to days, a
// few times in an account's life. A reconcile runs every 30 s (the local
// controller) or every scheduled run and on every instance event (the
// functions), for each network: asking each time would cost a quota call per
// pass for a number that does not move, against quota APIs whose own rate
// limits are low. Read again after QUOTA_TTL_MS (15 minutes), a raised quota
// is used at most 15 minutes after it is granted; a failed read is tried
// again after QUOTA_RETRY_MS (1 minute), so a grant just added or a passing
// outage costs at most a minute, and a read that fails after a good one keeps
// the good one (a quota does not fall back to its default because the quota
// API had a bad minute).
import type { CloudBackendType, LimitSource, NetworkRef } from './cloud.js';
import { defaultRouteLimit, isCloudBackend } from './cloud.js';

export const QUOTA_TTL_MS = 15 * 60_000;
export const QUOTA_RETRY_MS = 60_000;

/** What one read of an account's quota gave. */
export type QuotaReading =
  | { ok: true; limit: number; usage?: number }
  /** denied: the caller may not read it (the permission named in why) */
  | { ok: false; denied: boolean; why: string };

/** A pool's limit and where it came from. */
export interface PoolLimit {
  limit: number;
  source: LimitSource;
  /** why the documented default: what kept the quota from being read */
  why?: string;
}

export interface LimitAnswer {
  limit: PoolLimit;
  /** the quota's own count of what uses it (GCE), when read by this very call */
  usage?: number;
  /** said once per network and reason in this process; the reconcile logs it */
  warning?: string;
}

interface Entry {
  reading: QuotaReading;
  at: number;
}

export interface QuotaCacheOptions {
  ttlMs?: number;
  retryMs?: number;
  now?: () => number;
}

/** The quota readings of one cloud (one per process), by what they are read for (a region, a project, an account). */
export class AccountLimits {
  private readonly entries = new Map<string, Entry>();
  private readonly good = new Map<string, Entry>();
  private readonly inFlight = new Map<string, Promise<QuotaReading>>();
  private readonly warned = new Set<string>();
  private readonly ttlMs: number;
  private readonly retryMs: number;
  private readonly now: () => number;

  constructor(opts: QuotaCacheOptions = {}) {
    this.ttlMs = opts.ttlMs ?? QUOTA_TTL_MS;
    this.retryMs = opts.retryMs ?? QUOTA_RETRY_MS;
    this.now = opts.now ?? Date.now;
  }

  /**
   * The limit for the network's pools: Backend.RouteLimit when set (nothing
   * is read), else the quota read under key (read() is called only when no
   * reading is fresh, once however many networks ask at the same time), else
   * the documented default and why. read() must not throw: it says what
   * failed in its QuotaReading.
   */
  async limitOf(net: NetworkRef, key: string, read: () => Promise<QuotaReading>): Promise<LimitAnswer> {
    const b = net.config.Backend;
    if (!isCloudBackend(b.Type)) throw new Error(`backend ${b.Type} has no VPC routes`);
    if ('RouteLimit' in b && b.RouteLimit) return { limit: { limit: b.RouteLimit, source: 'RouteLimit' } };
    const { reading, fresh } = await this.reading(key, read);
    if (reading.ok) return { limit: { limit: reading.limit, source: 'quota' }, ...(fresh && reading.usage !== undefined ? { usage: reading.usage } : {}) };
    const last = this.good.get(key)?.reading;
    if (last?.ok) return { limit: { limit: last.limit, source: 'quota' } };
    const limit: PoolLimit = { limit: defaultRouteLimit(b.Type), source: 'default', why: reading.why };
    return { limit, ...this.warnOnce(net.name, b.Type, limit) };
  }

  private async reading(key: string, read: () => Promise<QuotaReading>): Promise<{ reading: QuotaReading; fresh: boolean }> {
    const e = this.entries.get(key);
    if (e && this.now() - e.at < (e.reading.ok ? this.ttlMs : this.retryMs)) return { reading: e.reading, fresh: false };
    let p = this.inFlight.get(key);
    if (!p) {
      p = read().finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, p);
    }
    const reading = await p;
    const entry = { reading, at: this.now() };
    this.entries.set(key, entry);
    if (reading.ok) this.good.set(key, entry);
    return { reading, fresh: true };
  }

  private warnOnce(network: string, type: CloudBackendType, l: PoolLimit): { warning?: string } {
    const k = `${network}\u0000${l.why ?? ''}`;
    if (this.warned.has(k)) return {};
    this.warned.add(k);
    return { warning: `${type} network ${network}: the route limit is the documented default, ${l.limit}, because ${l.why}; set Backend.RouteLimit to give the limit by hand` };
  }
}
