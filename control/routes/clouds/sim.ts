// The simulated cloud: a VPC with instances and one route table per network,
// enforcing the same limits as the real ones, so a newcomer can watch routes
// appear, disappear and stop at the limit on one machine without an account.
// Its state is a SQLite file beside the controller's store (sim.db in the data
// directory), so `twill sim instance start|stop|terminate` in another process
// drives the same VPC the controller reconciles. It behaves like AWS: routes
// carry no owner, a route to a terminated instance is a blackhole, a route is
// retargeted in place, and every instance starts with its source/destination
// check on, so it drops traffic that is neither from nor to its own address
// until the route controller turns the check off (Amazon EC2 API reference,
// ModifyInstanceAttribute, SourceDestCheck: on by default, and to be turned
// off on an instance that routes, translates or filters others' traffic).
// The sim only records the check; a lab that plays the VPC's
// router (test/helpers/vpc-lab.ts) enforces it on the instances' packets.
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { formatIPv4 } from '../../../core/cidr.js';
import { TwillError } from '../../../core/errors.js';
import { checkName } from '../../../core/topics.js';
import {
  ROUTE_DESCRIPTION, RouteLimitError, routeLimit,
  type Cloud, type CloudInstance, type CloudRoute, type DesiredRoute, type InstanceRef, type NetworkRef, type NetworkSnapshot,
} from './cloud.js';
import { makeDirs } from '../../../core/dirs.js';

const routeLimitSet = (net: NetworkRef): boolean => 'RouteLimit' in net.config.Backend && !!net.config.Backend.RouteLimit;

export type SimState = 'running' | 'stopped' | 'terminated';

export interface SimInstance {
  id: string;
  network: string;
  state: SimState;
  privateIP: string;
  createdAt: string;
  /** EC2's SourceDestCheck: on (the default) drops what is neither from nor to privateIP */
  sourceDestCheck: boolean;
}

export interface SimRoute {
  table: string;
  destination: string;
  target: string;
  /** 'instance' for routes to an instance; anything else (e.g. 'gateway') is another kind of next hop */
  hop: string;
  description: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS instances (
  id TEXT PRIMARY KEY,
  network TEXT NOT NULL,
  state TEXT NOT NULL,
  private_ip TEXT NOT NULL,
  created_at TEXT NOT NULL,
  source_dest_check INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS routes (
  table_id TEXT NOT NULL,
  destination TEXT NOT NULL,
  target TEXT NOT NULL,
  hop TEXT NOT NULL,
  description TEXT NOT NULL,
  PRIMARY KEY (table_id, destination)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
`;

interface InstanceRow { id: string; network: string; state: SimState; private_ip: string; created_at: string; source_dest_check: number }
interface RouteRow { table_id: string; destination: string; target: string; hop: string; description: string }

const toInstance = (r: InstanceRow): SimInstance => ({
  id: r.id, network: r.network, state: r.state, privateIP: r.private_ip, createdAt: r.created_at, sourceDestCheck: r.source_dest_check !== 0,
});
const toRoute = (r: RouteRow): SimRoute => ({ table: r.table_id, destination: r.destination, target: r.target, hop: r.hop, description: r.description });

export function simFile(dataDir: string): string {
  return join(dataDir, 'sim.db');
}

/** The one route table the sim gives each network. */
export function simTable(network: string): string {
  return `rtb-sim-${network}`;
}

/** The simulated VPC itself: what the CLI drives and the cloud adapter reads and writes. */
export class SimVpc {
  private db: Database.Database;

  constructor(readonly file: string) {
    if (file !== ':memory:') makeDirs(join(file, '..'));
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    // A sim.db made before the check was modelled: its instances start with it on, as EC2's do.
    const columns = this.db.prepare('PRAGMA table_info(instances)').all() as { name: string }[];
    if (!columns.some((c) => c.name === 'source_dest_check')) this.db.exec('ALTER TABLE instances ADD COLUMN source_dest_check INTEGER NOT NULL DEFAULT 1');
  }

  close(): void {
    this.db.close();
  }

  /** Starts an instance, creating it first when it does not exist; a running one is left as it is. */
  start(id: string, network: string): SimInstance {
    checkName('instance', id);
    checkName('network', network);
    return this.db.transaction(() => {
      const cur = this.db.prepare('SELECT * FROM instances WHERE id = ?').get(id) as InstanceRow | undefined;
      if (cur && cur.state === 'terminated') {
        throw new TwillError('InstanceTerminated', `instance ${id} is terminated: a terminated instance cannot start again; start one with another name`);
      }
      if (cur && cur.network !== network) {
        throw new TwillError('WrongNetwork', `instance ${id} belongs to network ${cur.network}, not ${network}`);
      }
      if (cur) {
        this.db.prepare("UPDATE instances SET state = 'running' WHERE id = ?").run(id);
      } else {
        // Private addresses are handed out in order from 172.31.0.10, never reused.
        const n = ((this.db.prepare("SELECT value FROM counters WHERE name = 'ip'").get() as { value: number } | undefined)?.value ?? 0) + 1;
        this.db.prepare("INSERT INTO counters (name, value) VALUES ('ip', ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value").run(n);
        const ip = formatIPv4((172n << 24n) | (31n << 16n) + BigInt(9 + n));
        this.db.prepare('INSERT INTO instances (id, network, state, private_ip, created_at) VALUES (?, ?, ?, ?, ?)').run(id, network, 'running', ip, new Date().toISOString());
      }
      return toInstance(this.db.prepare('SELECT * FROM instances WHERE id = ?').get(id) as InstanceRow);
    })();
  }

  private setState(id: string, state: SimState, network?: string): SimInstance {
    const cur = this.db.prepare('SELECT * FROM instances WHERE id = ?').get(id) as InstanceRow | undefined;
    if (!cur || (network !== undefined && cur.network !== network)) {
      throw new TwillError('NoSuchInstance', `instance ${id} does not exist${network ? ` in network ${network}` : ''}: start it first with twill sim instance start ${id} --network NET`);
    }
    if (cur.state === 'terminated') return toInstance(cur);
    this.db.prepare('UPDATE instances SET state = ? WHERE id = ?').run(state, id);
    return { ...toInstance(cur), state };
  }

  stop(id: string, network?: string): SimInstance {
    return this.setState(id, 'stopped', network);
  }

  terminate(id: string, network?: string): SimInstance {
    return this.setState(id, 'terminated', network);
  }

  /** ModifyInstanceAttribute SourceDestCheck: allowed running or stopped, refused once terminated. */
  setSourceDestCheck(id: string, on: boolean): SimInstance {
    const cur = this.db.prepare('SELECT * FROM instances WHERE id = ?').get(id) as InstanceRow | undefined;
    if (!cur) throw new TwillError('NoSuchInstance', `instance ${id} does not exist`);
    if (cur.state === 'terminated') throw new TwillError('IncorrectInstanceState', `instance ${id} is terminated: its source/destination check can no longer change`);
    this.db.prepare('UPDATE instances SET source_dest_check = ? WHERE id = ?').run(on ? 1 : 0, id);
    return { ...toInstance(cur), sourceDestCheck: on };
  }

  instances(network?: string): SimInstance[] {
    const rows = network === undefined
      ? this.db.prepare('SELECT * FROM instances ORDER BY id').all()
      : this.db.prepare('SELECT * FROM instances WHERE network = ? ORDER BY id').all(network);
    return (rows as InstanceRow[]).map(toInstance);
  }

  instance(id: string): SimInstance | undefined {
    const r = this.db.prepare('SELECT * FROM instances WHERE id = ?').get(id) as InstanceRow | undefined;
    return r && toInstance(r);
  }

  routes(table?: string): SimRoute[] {
    const rows = table === undefined
      ? this.db.prepare('SELECT * FROM routes ORDER BY table_id, destination').all()
      : this.db.prepare('SELECT * FROM routes WHERE table_id = ? ORDER BY destination').all(table);
    return (rows as RouteRow[]).map(toRoute);
  }

  /** Adds a route as the cloud's API would: refused when the table is full or the destination taken. */
  addRoute(r: SimRoute, limit: number): void {
    this.db.transaction(() => {
      const n = (this.db.prepare('SELECT COUNT(*) AS n FROM routes WHERE table_id = ?').get(r.table) as { n: number }).n;
      const cur = this.db.prepare('SELECT * FROM routes WHERE table_id = ? AND destination = ?').get(r.table, r.destination) as RouteRow | undefined;
      if (cur) {
        if (cur.target === r.target && cur.hop === r.hop) return;
        throw new TwillError('RouteAlreadyExists', `the route ${r.destination} in ${r.table} already exists with target ${cur.target}`);
      }
      if (n >= limit) throw new RouteLimitError(`route table ${r.table} is full (${n} of ${limit})`);
      this.db.prepare('INSERT INTO routes (table_id, destination, target, hop, description) VALUES (?, ?, ?, ?, ?)').run(r.table, r.destination, r.target, r.hop, r.description);
    })();
  }

  replaceRoute(table: string, destination: string, target: string): void {
    const res = this.db.prepare("UPDATE routes SET target = ?, hop = 'instance' WHERE table_id = ? AND destination = ?").run(target, table, destination);
    if (res.changes === 0) throw new TwillError('RouteNotFound', `no route ${destination} in ${table} to replace`);
  }

  /** Deleting a route that is already gone succeeds: the outcome is the same. */
  deleteRoute(table: string, destination: string): void {
    this.db.prepare('DELETE FROM routes WHERE table_id = ? AND destination = ?').run(table, destination);
  }
}

/** The cloud adapter over a SimVpc: the same interface the real clouds implement. */
export class SimCloud implements Cloud {
  readonly kind = 'sim' as const;
  readonly ownership = 'inferred' as const;
  readonly canReplace = true;
  readonly concurrency = 4;
  /** every call by name, as the fakes of the real clouds count them */
  readonly calls: Record<string, number> = {};

  constructor(readonly vpc: SimVpc) {}

  private count(action: string): void {
    this.calls[action] = (this.calls[action] ?? 0) + 1;
  }

  async snapshot(net: NetworkRef): Promise<NetworkSnapshot> {
    this.count('DescribeInstances');
    const table = simTable(net.name);
    const all = new Map(this.vpc.instances().map((i) => [i.id, i]));
    const instances: CloudInstance[] = [];
    for (const i of all.values()) {
      if (i.network !== net.name || i.state === 'terminated') continue;
      instances.push({ id: i.id, state: i.state, privateIP: i.privateIP, target: i.id, tables: [table], needsPrepare: i.sourceDestCheck });
    }
    this.count('DescribeRouteTables');
    const rows = this.vpc.routes(table);
    const routes: CloudRoute[] = rows.map((r) => {
      const instanceHop = r.hop === 'instance';
      const live = all.get(r.target);
      return {
        table: r.table,
        destination: r.destination,
        target: r.target,
        instanceHop,
        blackhole: instanceHop && (!live || live.state === 'terminated'),
        marked: r.description === ROUTE_DESCRIPTION,
      };
    });
    return {
      instances,
      tables: [{ id: table, pool: table }],
      // The simulated account has no quota to read: the limit is Backend.RouteLimit or the cloud's documented default.
      pools: [{ id: table, what: 'route table', limit: routeLimit(net.config), source: routeLimitSet(net) ? 'RouteLimit' : 'default', used: rows.length }],
      routes,
    };
  }

  /** As on EC2: an instance routes pods' traffic only once its source/destination check is off. */
  async prepareInstance(_net: NetworkRef, inst: CloudInstance): Promise<void> {
    this.count('ModifyInstanceAttribute');
    this.vpc.setSourceDestCheck(inst.id, false);
  }

  async createRoute(net: NetworkRef, r: DesiredRoute): Promise<void> {
    this.count('CreateRoute');
    this.vpc.addRoute({ table: r.table, destination: r.destination, target: r.target, hop: 'instance', description: ROUTE_DESCRIPTION }, routeLimit(net.config));
  }

  async replaceRoute(_net: NetworkRef, r: DesiredRoute): Promise<void> {
    this.count('ReplaceRoute');
    this.vpc.replaceRoute(r.table, r.destination, r.target);
  }

  async deleteRoute(_net: NetworkRef, r: CloudRoute): Promise<void> {
    this.count('DeleteRoute');
    this.vpc.deleteRoute(r.table, r.destination);
  }

  async instanceNetworks(ref: InstanceRef): Promise<string[] | undefined> {
    const i = this.vpc.instance(ref.instanceId);
    return i && i.state !== 'terminated' ? [i.network] : undefined;
  }

  async close(): Promise<void> {
    this.vpc.close();
  }
}
