import { join } from 'node:path';
import { TwillError } from '../core/errors.js';
import { createLogger } from '../core/log.js';
import { Topics } from '../core/topics.js';
import { Controller } from '../functions/controller.js';
import type { Publisher } from '../functions/publish/publisher.js';
import { SqliteStore } from '../functions/store/sqlite.js';
import { DEFAULT_DATA_DIR, parse } from './args.js';

export const LEASE_USAGE = `twill lease reserve NETWORK --node NAME --subnet CIDR [--public-ip IP] [--data-dir .twill]
twill lease release NETWORK --node NAME [--data-dir .twill]`;

// The CLI only writes the store. The running controller sees the network's
// revision move on its next sync and publishes the change to every agent.
const publishedByController: Publisher = { publish: async () => {} };

export async function leaseCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(
    rest,
    {
      node: { type: 'string' },
      subnet: { type: 'string' },
      'public-ip': { type: 'string' },
      'data-dir': { type: 'string', default: DEFAULT_DATA_DIR },
    },
    1,
  );
  const network = positionals[0];
  if (!network || !values.node) throw new TwillError('Usage', LEASE_USAGE);
  const store = new SqliteStore(join(values['data-dir'], 'twill.db'));
  const controller = new Controller(store, publishedByController, { topics: new Topics(), log: createLogger('lease') });
  try {
    if (sub === 'reserve') {
      if (!values.subnet) throw new TwillError('Usage', 'twill lease reserve needs --subnet CIDR');
      const lease = await controller.reserve(network, values.node, values.subnet, values['public-ip']);
      process.stdout.write(`reserved ${lease.subnet ?? lease.ipv6Subnet} for node ${lease.node} in network ${network}\n`);
      return 0;
    }
    if (sub === 'release') {
      if (!(await controller.release(network, values.node))) throw new TwillError('NotFound', `node ${values.node} holds no lease in network ${network}`);
      process.stdout.write(`released the lease of node ${values.node} in network ${network}\n`);
      return 0;
    }
    throw new TwillError('Usage', LEASE_USAGE);
  } finally {
    await store.close();
  }
}
