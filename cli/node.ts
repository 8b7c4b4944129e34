import { join } from 'node:path';
import { TwillError } from '../core/errors.js';
import { checkName } from '../core/topics.js';
import { generatePassword, hashPassword } from '../functions/credentials.js';
import { SqliteStore } from '../functions/store/sqlite.js';
import { DEFAULT_DATA_DIR, parse } from './args.js';
import { table } from './table.js';

export const NODE_USAGE = `twill node add NAME --network NET [--broker mqtt://127.0.0.1:1883] [--data-dir .twill]
twill node list [--data-dir .twill]
twill node remove NAME [--data-dir .twill]`;

export async function nodeCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(
    rest,
    {
      network: { type: 'string' },
      broker: { type: 'string', default: 'mqtt://127.0.0.1:1883' },
      prefix: { type: 'string' },
      'data-dir': { type: 'string', default: DEFAULT_DATA_DIR },
    },
    1,
  );
  const store = new SqliteStore(join(values['data-dir'], 'twill.db'));
  try {
    if (sub === 'add') {
      const name = checkName('node', positionals[0] ?? '');
      if (!values.network) throw new TwillError('Usage', 'twill node add needs --network NET');
      if (!(await store.getNetwork(values.network))) {
        throw new TwillError('NotFound', `network ${values.network} does not exist: start the controller with --network ${values.network}=FILE first`);
      }
      const existing = await store.getNode(name);
      if (existing && existing.network !== values.network) {
        throw new TwillError('Exists', `node ${name} already belongs to network ${existing.network}`);
      }
      // Adding an existing node again issues a new password: the old one stops working.
      const password = generatePassword();
      await store.putNode({ name, network: values.network, passwordHash: await hashPassword(password), createdAt: existing?.createdAt ?? new Date().toISOString() });
      const config = {
        broker: values.broker,
        network: values.network,
        node: name,
        username: name,
        password,
        ...(values.prefix ? { prefix: values.prefix } : {}),
      };
      process.stdout.write(JSON.stringify(config, null, 2) + '\n');
      return 0;
    }
    if (sub === 'list') {
      const nodes = await store.listNodes();
      process.stdout.write(table(['NODE', 'NETWORK', 'ADDED'], nodes.map((n) => [n.name, n.network, n.createdAt])));
      return 0;
    }
    if (sub === 'remove') {
      const name = checkName('node', positionals[0] ?? '');
      if (!(await store.deleteNode(name))) throw new TwillError('NotFound', `node ${name} does not exist`);
      process.stdout.write(`node ${name} removed: its credentials no longer work; its lease expires on its own or with twill lease release\n`);
      return 0;
    }
    throw new TwillError('Usage', `unknown node command ${sub ?? ''}\n${NODE_USAGE}`);
  } finally {
    await store.close();
  }
}
