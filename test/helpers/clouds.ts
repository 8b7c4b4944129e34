// Shared set-up for the cloud tests: a store, a controller and a reconcile
// function for one network, with every write and publish countable.
import { join } from 'node:path';
import { parseNetConf } from '../../core/config.js';
import { createLogger } from '../../core/log.js';
import { Metrics } from '../../core/metrics.js';
import { Topics } from '../../core/topics.js';
import { Controller } from '../../control/controller/controller.js';
import type { Cloud } from '../../control/routes/clouds/cloud.js';
import type { FakeQuota } from '../fakes/service-quotas.js';
import type { Publisher } from '../../control/publish/publisher.js';
import { reconcileNetwork, type ReconcileReport, type RouteDeps } from '../../control/routes/routes.js';
import { SqliteStore } from '../../control/store/sqlite.js';
import { tempDir } from './procs.js';

export const FAKE_CREDENTIALS = { accessKeyId: 'AKIDFAKEFAKEFAKE', secretAccessKey: 'fake-secret-for-tests' };

export class CountingPublisher implements Publisher {
  count = 0;
  async publish(): Promise<void> {
    this.count++;
  }
}

export interface World {
  dir: string;
  store: SqliteStore;
  controller: Controller;
  publisher: CountingPublisher;
  metrics: Metrics;
  logs: string[];
  deps: RouteDeps;
  reconcile(network?: string): Promise<ReconcileReport>;
  close(): Promise<void>;
}

export async function world(cloud: Cloud, networks: Record<string, object>, opts: { dir?: string; dbFile?: string } = {}): Promise<World> {
  const dir = opts.dir ?? tempDir('twill-cloud-');
  const store = new SqliteStore(opts.dbFile ?? join(dir, 'twill.db'));
  const publisher = new CountingPublisher();
  const controller = new Controller(store, publisher, { topics: new Topics(), log: createLogger('test', 'error'), leaseTtlMs: 3_600_000 });
  for (const [name, conf] of Object.entries(networks)) await controller.applyNetwork(name, parseNetConf(conf, {}));
  const metrics = new Metrics();
  const logs: string[] = [];
  const deps: RouteDeps = { controller, store, cloud, log: createLogger('routes', 'info', (l) => logs.push(l)), metrics };
  const first = Object.keys(networks)[0] as string;
  return {
    dir, store, controller, publisher, metrics, logs, deps,
    reconcile: (network = first) => reconcileNetwork(network, deps),
    close: () => store.close(),
  };
}

/**
 * Amazon VPC's "Routes per route table" as Service Quotas shows it for the
 * account whose route tables `ec2` holds: the value is the limit that EC2
 * stand-in enforces, so the quota read and the quota met are one number.
 */
export function vpcRoutesQuota(ec2: { routeLimit: number }): FakeQuota {
  return {
    code: 'L-93826ACB', name: 'Routes per route table', default: 50, adjustable: true,
    get value() {
      return ec2.routeLimit;
    },
  };
}

/** The lines logged at warn with the given message (the World's logger writes text lines: "time warn component: msg k=v"). */
export function warnings(logs: readonly string[], msg: string): string[] {
  return logs.filter((l) => / warn [\w/]+: /.test(l) && l.includes(`: ${msg}`));
}

export async function subnetOf(w: World, network: string, node: string): Promise<string> {
  const l = await w.store.getLease(network, node);
  if (!l?.subnet) throw new Error(`${node} has no lease in ${network}`);
  return l.subnet;
}

/** The calls made since a snapshot of the counters, without the zero ones. */
export function callsSince(now: Record<string, number>, before: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(now).map(([k, v]) => [k, v - (before[k] ?? 0)] as const).filter(([, v]) => v !== 0));
}

/** `twill controller` as a process, with its environment given (cluster.ts's helper, plus env). */
export async function startCloudController(opts: { dataDir: string; networks: Record<string, string>; extra: string[]; env?: NodeJS.ProcessEnv }) {
  const { freePort, startProc, waitFor, waitForStart } = await import('./procs.js');
  const port = await freePort();
  const args = ['controller', '--data-dir', opts.dataDir, '--listen', `127.0.0.1:${port}`];
  for (const [name, file] of Object.entries(opts.networks)) args.push('--network', `${name}=${file}`);
  const p = startProc([...args, ...opts.extra], { env: { TWILL_LOG_LEVEL: 'debug', ...opts.env } });
  await waitForStart('controller ready', p, (out) => out.includes('controller ready'));
  return p;
}
