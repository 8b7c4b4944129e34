// `twill sim`: drives the simulated cloud that `twill controller --cloud sim`
// reconciles, from another process, through the same file in the data
// directory. Instances start, stop and terminate as on a real cloud; the
// controller's next reconcile gives them leases and routes, or takes them away.
import { TwillError } from '../core/errors.js';
import { SimVpc, simFile, simTable } from '../control/routes/clouds/sim.js';
import { DEFAULT_DATA_DIR, parse } from './args.js';
import { table } from './table.js';

export const SIM_USAGE = `twill sim instance start|stop|terminate NAME --network NET [--data-dir .twill]
       twill sim instance list [--network NET] [--data-dir .twill]
       twill sim routes [--network NET] [--data-dir .twill]
       twill sim route delete CIDR --network NET [--data-dir .twill]   (as another tool or a person would)`;

export async function simCommand(args: string[]): Promise<number> {
  const [what, ...rest] = args;
  if (what === 'instance') return instanceCommand(rest);
  if (what === 'routes') return routesCommand(rest);
  if (what === 'route') return routeCommand(rest);
  throw new TwillError('Usage', `${what === undefined ? 'no subcommand' : `${JSON.stringify(what)} is not a subcommand`}: expected instance, routes or route\nusage: ${SIM_USAGE}`);
}

function withVpc<T>(dataDir: string, fn: (vpc: SimVpc) => T): T {
  const vpc = new SimVpc(simFile(dataDir));
  try {
    return fn(vpc);
  } finally {
    vpc.close();
  }
}

/** Every flag twill sim takes (its help and the README are checked against it). */
export const SIM_OPTIONS = { network: { type: 'string' }, 'data-dir': { type: 'string', default: DEFAULT_DATA_DIR } } as const;

async function instanceCommand(args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  const { values, positionals } = parse(rest, SIM_OPTIONS, verb === 'list' ? 0 : 1);
  const dataDir = values['data-dir'];
  if (verb === 'list') {
    const rows = withVpc(dataDir, (vpc) => vpc.instances(values.network));
    process.stdout.write(table(['INSTANCE', 'NETWORK', 'STATE', 'PRIVATE IP', 'SRC/DST CHECK'], rows.map((i) => [i.id, i.network, i.state, i.privateIP, i.sourceDestCheck ? 'on' : 'off'])));
    return 0;
  }
  const name = positionals[0];
  if (verb !== 'start' && verb !== 'stop' && verb !== 'terminate') {
    throw new TwillError('Usage', `instance ${verb ?? ''}: expected start, stop, terminate or list`);
  }
  if (!name) throw new TwillError('Usage', `instance ${verb}: name the instance, e.g. twill sim instance ${verb} web-1 --network demo`);
  if (verb === 'start' && !values.network) throw new TwillError('Usage', 'instance start: --network NET is required (the instance is tagged twill-network=NET)');
  const inst = withVpc(dataDir, (vpc) => (verb === 'start' ? vpc.start(name, values.network as string) : verb === 'stop' ? vpc.stop(name, values.network) : vpc.terminate(name, values.network)));
  process.stdout.write(`instance ${inst.id} (${inst.privateIP}) in network ${inst.network}: ${inst.state}\n`);
  return 0;
}

async function routesCommand(args: string[]): Promise<number> {
  const { values } = parse(args, SIM_OPTIONS);
  const rows = withVpc(values['data-dir'], (vpc) => vpc.routes(values.network === undefined ? undefined : simTable(values.network)));
  process.stdout.write(table(['TABLE', 'DESTINATION', 'TARGET', 'HOP'], rows.map((r) => [r.table, r.destination, r.target, r.hop])));
  return 0;
}

/** Deletes one route behind the controller's back, as another tool would: the next reconcile finds it gone. */
async function routeCommand(args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  if (verb !== 'delete') {
    const what = verb === undefined || verb.startsWith('-') ? 'route' : `route ${verb}`;
    throw new TwillError('Usage', `${what}: expected delete, e.g. twill sim route delete 10.60.3.0/24 --network demo`);
  }
  const { values, positionals } = parse(rest, SIM_OPTIONS, 1);
  const destination = positionals[0];
  if (!destination) throw new TwillError('Usage', 'route delete: name the destination CIDR, e.g. twill sim route delete 10.60.3.0/24 --network demo');
  if (!values.network) throw new TwillError('Usage', 'route delete: --network NET is required (each network has its own route table)');
  const network = values.network;
  const gone = withVpc(values['data-dir'], (vpc) => {
    const table = simTable(network);
    const route = vpc.routes(table).find((r) => r.destination === destination);
    if (!route) {
      const have = vpc.routes(table).map((r) => r.destination);
      throw new TwillError('RouteNotFound', `no route ${destination} in ${table}${have.length ? `: it holds ${have.join(', ')}` : ': it is empty'}`);
    }
    vpc.deleteRoute(table, destination);
    return route;
  });
  process.stdout.write(`route ${gone.destination} (to ${gone.target}) deleted from ${gone.table}\n`);
  return 0;
}
