// The embedded store: one SQLite file under the controller's data directory.
// WAL with synchronous=FULL: every committed transaction is on disk before the
// call returns, so SIGKILL (or a power cut) loses nothing that was answered.
// A lease or network write executes its plan (control/store/lease-write.ts)
// in one transaction: what it read there stays true until it commits.
import Database from 'better-sqlite3';
import { chmodSync, closeSync, existsSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import { ConflictError } from '../../core/errors.js';
import type { Lease, NewLease } from '../../core/lease.js';
import type { NetConf } from '../../core/config.js';
import { agentState, noAgents, type AgentCounts } from '../../core/fabric.js';
import { CHANGE_RETENTION_MS, changeRun, type Change, type ChangesSince, type NetworkRecord, type NodeRecord, type RouteStatusRecord, type RouteTablesRecord, type StatusRecord, type Store, type TakenSubnets, type LockResult, checkLockArgs } from './store.js';
import { makeDirs } from '../../core/dirs.js';
import { claimsOf, deleted, isRefusal, planLeaseWrite, planNetworkPut, planRenew, refusalError, written, type LeaseRequest, type LeaseWritePlan } from './lease-write.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS networks (
  name TEXT PRIMARY KEY,
  config TEXT NOT NULL,
  revision INTEGER NOT NULL,
  lease_count INTEGER NOT NULL,
  lease_hash TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
  network TEXT NOT NULL,
  node TEXT NOT NULL,
  subnet_key INTEGER,
  ipv6_key TEXT,
  expires_at INTEGER,
  revision INTEGER NOT NULL,
  lease TEXT NOT NULL,
  PRIMARY KEY (network, node)
);
CREATE UNIQUE INDEX IF NOT EXISTS leases_subnet ON leases (network, subnet_key) WHERE subnet_key IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS leases_ipv6 ON leases (network, ipv6_key) WHERE ipv6_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS changes (
  network TEXT NOT NULL,
  revision INTEGER NOT NULL,
  at INTEGER NOT NULL,
  change TEXT NOT NULL,
  PRIMARY KEY (network, revision)
);
CREATE INDEX IF NOT EXISTS changes_at ON changes (network, at);
CREATE TABLE IF NOT EXISTS nodes (
  name TEXT PRIMARY KEY,
  network TEXT NOT NULL,
  password_hash TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS route_status (
  network TEXT NOT NULL,
  node TEXT NOT NULL,
  state TEXT NOT NULL,
  reason TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (network, node)
);
CREATE TABLE IF NOT EXISTS route_tables (
  network TEXT PRIMARY KEY,
  tables TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS status (
  network TEXT NOT NULL,
  node TEXT NOT NULL,
  status TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  PRIMARY KEY (network, node)
);
CREATE TABLE IF NOT EXISTS locks (
  name TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  expires_at INTEGER NOT NULL
);
`;

interface NetworkRow { name: string; config: string; revision: number; lease_count: number; lease_hash: string; updated_at: string }
interface LeaseRow { lease: string }

/** Sortable keys for the unique indexes: IPv4 as an integer, IPv6 as 32 hex digits. */
function subnetKeys(lease: NewLease): { v4: number | null; v6: string | null } {
  const { v4, v6 } = claimsOf(lease);
  return { v4: v4 === undefined ? null : Number(v4), v6: v6 === undefined ? null : v6.toString(16).padStart(32, '0') };
}

function isUniqueViolation(e: unknown): boolean {
  return typeof e === 'object' && e !== null && String((e as { code?: unknown }).code).startsWith('SQLITE_CONSTRAINT');
}

export class SqliteStore implements Store {
  private db: Database.Database;
  private statements = new Map<string, Database.Statement>();

  /** Statements are prepared once: preparing on every call cost more than the query. */
  private q(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  constructor(readonly file: string) {
    if (file !== ':memory:') {
      // The store holds node password hashes and network secrets (an ipsec
      // PSK, cloud keys): its directory and files are the owner's alone.
      // SQLite gives the -wal and -shm files the database file's mode.
      makeDirs(dirname(file), 0o700);
      closeSync(openSync(file, 'a', 0o600));
      for (const f of [file, `${file}-wal`, `${file}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
    }
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    // The CLI reads and writes the same file while the controller runs.
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
  }

  private networkRow(name: string): NetworkRow | undefined {
    return this.q('SELECT * FROM networks WHERE name = ?').get(name) as NetworkRow | undefined;
  }

  private static toNetwork(r: NetworkRow): NetworkRecord {
    return {
      name: r.name,
      config: JSON.parse(r.config) as NetConf,
      revision: r.revision,
      leaseCount: r.lease_count,
      leaseHash: r.lease_hash,
      updatedAt: r.updated_at,
    };
  }

  async getNetwork(name: string): Promise<NetworkRecord | undefined> {
    const r = this.networkRow(name);
    return r && SqliteStore.toNetwork(r);
  }

  async listNetworks(): Promise<NetworkRecord[]> {
    return (this.q('SELECT * FROM networks ORDER BY name').all() as NetworkRow[]).map(SqliteStore.toNetwork);
  }

  async putNetwork(name: string, config: NetConf, expectedRevision: number | undefined): Promise<NetworkRecord> {
    return this.db.transaction(() => {
      const cur = this.networkRow(name);
      const plan = planNetworkPut(cur && SqliteStore.toNetwork(cur), name, config, expectedRevision, Date.now());
      if (isRefusal(plan)) throw refusalError(plan);
      const r = plan.record;
      if (plan.create) {
        this
          .q('INSERT INTO networks (name, config, revision, lease_count, lease_hash, updated_at) VALUES (?, ?, ?, ?, ?, ?)')
          .run(name, JSON.stringify(config), r.revision, r.leaseCount, r.leaseHash, r.updatedAt);
      } else {
        // Only config and revision: the lease count and hash belong to the lease writes.
        this.q('UPDATE networks SET config = ?, revision = ?, updated_at = ? WHERE name = ?').run(JSON.stringify(config), r.revision, r.updatedAt, name);
      }
      this.logChange(name, plan.change, plan.at);
      return r;
    })();
  }

  async getLease(network: string, node: string): Promise<Lease | undefined> {
    return this.readLease(network, node);
  }

  async listLeases(network: string): Promise<Lease[]> {
    const rows = this.q('SELECT lease FROM leases WHERE network = ? ORDER BY node').all(network) as LeaseRow[];
    return rows.map((r) => JSON.parse(r.lease) as Lease);
  }

  async listLeasesPage(network: string, after: string | undefined, limit: number): Promise<Lease[]> {
    const rows = this.q('SELECT lease FROM leases WHERE network = ? AND node > ? ORDER BY node LIMIT ?').all(network, after ?? '', limit) as LeaseRow[];
    return rows.map((r) => JSON.parse(r.lease) as Lease);
  }

  async takenSubnets(network: string): Promise<TakenSubnets> {
    const keys = (sql: string) => this.q(sql).pluck().all(network) as (number | string)[];
    const v4 = keys('SELECT subnet_key FROM leases WHERE network = ? AND subnet_key IS NOT NULL ORDER BY subnet_key').map((k) => BigInt(k));
    const v6 = keys('SELECT ipv6_key FROM leases WHERE network = ? AND ipv6_key IS NOT NULL ORDER BY ipv6_key').map((k) => BigInt('0x' + k));
    return { v4, v6 };
  }

  /** The change of the write at revision, in its transaction; changes past their retention go. */
  private logChange(network: string, change: Change, at: number): void {
    this.q('INSERT INTO changes (network, revision, at, change) VALUES (?, ?, ?, ?)').run(network, change.revision, at, JSON.stringify(change));
    this.q('DELETE FROM changes WHERE network = ? AND at < ?').run(network, at - CHANGE_RETENTION_MS);
  }

  async changesSince(network: string, after: number, limit: number): Promise<ChangesSince | undefined> {
    return this.db.transaction(() => {
      const net = this.networkRow(network);
      if (!net) return undefined;
      const rows = this.q('SELECT change FROM changes WHERE network = ? AND revision > ? ORDER BY revision LIMIT ?').pluck().all(network, after, limit + 1) as string[];
      return changeRun(after, net.revision, rows.map((r) => JSON.parse(r) as Change), limit);
    })();
  }

  private readLease(network: string, node: string): Lease | undefined {
    const r = this.q('SELECT lease FROM leases WHERE network = ? AND node = ?').get(network, node) as LeaseRow | undefined;
    return r && (JSON.parse(r.lease) as Lease);
  }

  /**
   * A lease write in one transaction: what it reads there stays true until
   * it commits, so the plan's conditions hold; only a subnet another lease
   * holds (the unique indexes are the claims) can still refuse it.
   */
  private leaseWrite(req: LeaseRequest): LeaseWritePlan | undefined {
    const [network, node] = req.kind === 'delete' ? [req.network, req.node] : [req.lease.network, req.lease.node];
    const row = this.networkRow(network);
    const plan = planLeaseWrite({ network: row && SqliteStore.toNetwork(row), lease: this.readLease(network, node) }, req, Date.now());
    if (isRefusal(plan)) {
      if (plan.refuse === 'gone') return undefined;
      throw refusalError(plan);
    }
    const n = plan.network;
    this
      .q('UPDATE networks SET revision = ?, lease_count = ?, lease_hash = ?, updated_at = ? WHERE name = ? AND revision = ?')
      .run(n.revision, n.leaseCount, n.leaseHash, n.updatedAt, network, n.readRevision);
    this.logChange(network, plan.change, plan.at);
    if (plan.deletes) {
      this.q('DELETE FROM leases WHERE network = ? AND node = ?').run(network, node);
      return plan;
    }
    const lease = plan.lease;
    const keys = subnetKeys(lease);
    try {
      this
        .q(
          `INSERT INTO leases (network, node, subnet_key, ipv6_key, expires_at, revision, lease) VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (network, node) DO UPDATE SET subnet_key = excluded.subnet_key, ipv6_key = excluded.ipv6_key,
             expires_at = excluded.expires_at, revision = excluded.revision, lease = excluded.lease`,
        )
        .run(network, node, keys.v4, keys.v6, plan.expiresMs, lease.revision, JSON.stringify(lease));
    } catch (e) {
      if (isUniqueViolation(e)) throw refusalError(plan.failed.claim);
      throw e;
    }
    return plan;
  }

  async createLease(lease: NewLease): Promise<Lease> {
    return this.db.transaction(() => written(this.leaseWrite({ kind: 'create', lease })!))();
  }

  async replaceLease(lease: NewLease, expectedRevision: number, opts: { keepExpiry?: boolean } = {}): Promise<Lease> {
    return this.db.transaction(() => written(this.leaseWrite({ kind: 'replace', lease, expectedRevision, ...opts })!))();
  }

  async renewLease(network: string, node: string, revision: number, expiresAt: string): Promise<Lease | undefined> {
    return this.db.transaction(() => {
      const plan = planRenew(this.readLease(network, node), revision, expiresAt);
      if (isRefusal(plan)) return undefined;
      this.q('UPDATE leases SET expires_at = ?, lease = ? WHERE network = ? AND node = ?').run(plan.expiresMs, JSON.stringify(plan.lease), network, node);
      return plan.lease;
    })();
  }

  async deleteLease(network: string, node: string, expectedRevision?: number, expiredBy?: number): Promise<{ lease: Lease; revision: number } | undefined> {
    return this.db.transaction(() => {
      const plan = this.leaseWrite({ kind: 'delete', network, node, expectedRevision, expiredBy });
      return plan && deleted(plan);
    })();
  }

  async listExpired(now: number): Promise<Lease[]> {
    const rows = this.q('SELECT lease FROM leases WHERE expires_at IS NOT NULL AND expires_at <= ? ORDER BY expires_at').all(now) as LeaseRow[];
    return rows.map((r) => JSON.parse(r.lease) as Lease);
  }

  async putNode(node: NodeRecord): Promise<void> {
    this
      .q(
        `INSERT INTO nodes (name, network, password_hash, created_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET network = excluded.network, password_hash = excluded.password_hash`,
      )
      .run(node.name, node.network, node.passwordHash, node.createdAt);
  }

  async getNode(name: string): Promise<NodeRecord | undefined> {
    const r = this.q('SELECT * FROM nodes WHERE name = ?').get(name) as
      | { name: string; network: string; password_hash: string; created_at: string }
      | undefined;
    return r && { name: r.name, network: r.network, passwordHash: r.password_hash, createdAt: r.created_at };
  }

  async listNodes(): Promise<NodeRecord[]> {
    const rows = this.q('SELECT * FROM nodes ORDER BY name').all() as { name: string; network: string; password_hash: string; created_at: string }[];
    return rows.map((r) => ({ name: r.name, network: r.network, passwordHash: r.password_hash, createdAt: r.created_at }));
  }

  async deleteNode(name: string): Promise<boolean> {
    return this.q('DELETE FROM nodes WHERE name = ?').run(name).changes > 0;
  }

  async putStatus(rec: StatusRecord): Promise<void> {
    // A status is the agent's own report, sent again whenever it changes: it
    // need not wait for the disk (WAL with synchronous NORMAL: a power loss
    // may forget the last ones, never corrupt). Leases keep FULL. Every
    // agent of a fleet reporting at once made an fsync each the controller's
    // largest cost after the broker in bench/storm.
    this.db.pragma('synchronous = NORMAL');
    try {
      this
        .q(
          `INSERT INTO status (network, node, status, updated_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (network, node) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at`,
        )
        .run(rec.network, rec.node, JSON.stringify(rec.status), rec.updatedAt);
    } finally {
      this.db.pragma('synchronous = FULL');
    }
  }

  async listStatus(network?: string): Promise<StatusRecord[]> {
    // Statuses of networks that exist, as the DynamoDB store (which lists them per network) has them.
    const rows = (network === undefined
      ? this.q('SELECT s.* FROM status s JOIN networks n ON n.name = s.network ORDER BY s.network, s.node').all()
      : this.q('SELECT s.* FROM status s JOIN networks n ON n.name = s.network WHERE s.network = ? ORDER BY s.node').all(network)) as { network: string; node: string; status: string; updated_at: string }[];
    return rows.map((r) => ({ network: r.network, node: r.node, status: JSON.parse(r.status), updatedAt: r.updated_at }));
  }

  async agentCounts(network: string): Promise<AgentCounts> {
    // Counted at each read: a local fleet is small, and the statuses are on this disk.
    const counts = noAgents();
    for (const text of this.q('SELECT status FROM status WHERE network = ?').pluck().all(network) as string[]) counts[agentState(JSON.parse(text))]++;
    return counts;
  }

  async putRouteStatus(rec: RouteStatusRecord): Promise<void> {
    this.q(
      `INSERT INTO route_status (network, node, state, reason, updated_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (network, node) DO UPDATE SET state = excluded.state, reason = excluded.reason, updated_at = excluded.updated_at`,
    ).run(rec.network, rec.node, rec.state, rec.reason, rec.updatedAt);
  }

  async deleteRouteStatus(network: string, node: string): Promise<void> {
    this.q('DELETE FROM route_status WHERE network = ? AND node = ?').run(network, node);
  }

  async listRouteStatus(network?: string): Promise<RouteStatusRecord[]> {
    const rows = (network === undefined
      ? this.q('SELECT * FROM route_status ORDER BY network, node').all()
      : this.q('SELECT * FROM route_status WHERE network = ? ORDER BY node').all(network)) as { network: string; node: string; state: string; reason: string; updated_at: string }[];
    return rows.map((r) => ({ network: r.network, node: r.node, state: r.state as RouteStatusRecord['state'], reason: r.reason, updatedAt: r.updated_at }));
  }

  async putRouteTables(rec: RouteTablesRecord): Promise<void> {
    this.q(
      `INSERT INTO route_tables (network, tables, updated_at) VALUES (?, ?, ?)
       ON CONFLICT (network) DO UPDATE SET tables = excluded.tables, updated_at = excluded.updated_at`,
    ).run(rec.network, JSON.stringify(rec.tables), rec.updatedAt);
  }

  async getRouteTables(network: string): Promise<RouteTablesRecord | undefined> {
    const r = this.q('SELECT * FROM route_tables WHERE network = ?').get(network) as { network: string; tables: string; updated_at: string } | undefined;
    return r && { network: r.network, tables: JSON.parse(r.tables), updatedAt: r.updated_at };
  }

  async deleteNetwork(name: string): Promise<boolean> {
    return this.db.transaction(() => {
      const row = this.networkRow(name);
      if (!row) return false;
      // Checked in the transaction that deletes: a lease taken meanwhile keeps the network.
      if (row.lease_count > 0) throw new ConflictError(`network ${name} still holds ${row.lease_count} lease(s)`);
      for (const table of ['changes', 'status', 'route_status', 'route_tables']) this.q(`DELETE FROM ${table} WHERE network = ?`).run(name);
      this.q('DELETE FROM networks WHERE name = ?').run(name);
      return true;
    })();
  }

  // ---- locks ----
  // One row per name. Taking it is one upsert whose WHERE lets it through
  // only when the row is expired or already the owner's; SQLite serializes
  // writers on the file, so two processes on one file never both win.

  async tryLock(name: string, owner: string, ttlMs: number, now = Date.now()): Promise<LockResult> {
    checkLockArgs(name, owner, ttlMs);
    const expiresAt = now + ttlMs;
    const taken = this.q(
      `INSERT INTO locks (name, owner, expires_at) VALUES (?, ?, ?)
       ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
       WHERE locks.expires_at <= ? OR locks.owner = excluded.owner`,
    ).run(name, owner, expiresAt, now).changes > 0;
    if (taken) return { acquired: true, expiresAt };
    const held = this.q('SELECT owner, expires_at FROM locks WHERE name = ?').get(name) as { owner: string; expires_at: number } | undefined;
    // Released between the two statements: free now, the caller's next try takes it.
    return { acquired: false, owner: held?.owner ?? '', expiresAt: held?.expires_at ?? now };
  }

  async unlock(name: string, owner: string): Promise<boolean> {
    checkLockArgs(name, owner);
    return this.q('DELETE FROM locks WHERE name = ? AND owner = ?').run(name, owner).changes > 0;
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
