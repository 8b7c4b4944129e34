import { chmodSync, writeFileSync } from 'node:fs';
import { TwillError } from '../core/errors.js';
import { addNode, removeNode, rotateNodeKey, type AgentConfig, type KeyRotation } from '../control/http/admin.js';
import { SqliteStore } from '../control/store/sqlite.js';
import { DEFAULT_DATA_DIR, parse, wantsJson } from './args.js';
import { openDataDir, servedBroker, servingController, storePlane } from './data-dir.js';
import { REMOTE_OPTIONS, callApi, remoteFrom } from './remote.js';
import { table } from './table.js';

export const NODE_USAGE = `twill node add NAME --network NET [--rotate] [--output FILE] [--broker URL (default: what the controller serves)] [--prefix P] [--data-dir .twill | --api URL [--token-file F]]
twill node list [-o table|json] [--data-dir .twill | --api URL [--token-file F]]
twill node remove NAME [--data-dir .twill | --api URL [--token-file F]]
twill node rotate-key NAME [--data-dir .twill | --api URL [--token-file F]]   (wireguard: the node makes a new key pair)`;

/** Every flag twill node takes (its help and the README are checked against it). */
export const NODE_OPTIONS = {
  network: { type: 'string' },
  broker: { type: 'string' },
  prefix: { type: 'string' },
  rotate: { type: 'boolean' },
  output: { type: 'string', short: 'o' },
  'data-dir': { type: 'string', default: DEFAULT_DATA_DIR },
  ...REMOTE_OPTIONS,
} as const;

export async function nodeCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, NODE_OPTIONS, 1);
  // Removing or rotating a node on a data directory a controller is serving
  // goes through that controller, so the node's sessions close before this returns.
  const live = !values.api && !process.env.TWILL_API && (sub === 'remove' || sub === 'rotate-key' || (sub === 'add' && values.rotate && !values.broker && !values.prefix))
    ? servingController(values['data-dir']) : undefined;
  const remote = remoteFrom(values) ?? live;
  const store = remote ? undefined : openDataDir(values['data-dir']);
  try {
    if (sub === 'add') {
      const name = positionals[0] ?? '';
      if (!values.network) throw new TwillError('Usage', 'twill node add needs --network NET');
      const config = remote
        ? await callApi<AgentConfig>(remote, 'POST', '/v1/nodes', { name, network: values.network, ...(values.rotate && { rotate: true }) })
        : await addNode(store as SqliteStore, {
          name, network: values.network, prefix: values.prefix, rotate: values.rotate,
          // the broker the controller on this data directory serves, as it said at start
          broker: values.broker ?? servedBroker(values['data-dir']) ?? 'mqtt://127.0.0.1:1883',
        });
      const text = JSON.stringify(config, null, 2) + '\n';
      if (values.output) {
        // The password is in it: readable by its owner only, from the first byte on.
        writeFileSync(values.output, text, { mode: 0o600 });
        chmodSync(values.output, 0o600);
        process.stderr.write(`agent config for node ${name} written to ${values.output} (mode 0600)\n`);
      } else {
        process.stdout.write(text);
      }
      return 0;
    }
    if (sub === 'list') {
      const nodes = remote
        ? await callApi<{ name: string; network: string; createdAt: string }[]>(remote, 'GET', '/v1/nodes')
        : await (store as SqliteStore).listNodes();
      // (-o is the format here; on node add, --output is the file the config goes to)
      const rows = nodes.map((n) => ({ name: n.name, network: n.network, createdAt: n.createdAt }));
      process.stdout.write(wantsJson(values.output) ? JSON.stringify(rows, null, 2) + '\n' : table(['NODE', 'NETWORK', 'ADDED'], rows.map((n) => [n.name, n.network, n.createdAt])));
      return 0;
    }
    if (sub === 'remove') {
      const name = positionals[0] ?? '';
      const { released } = remote
        ? await callApi<{ released: boolean }>(remote, 'DELETE', `/v1/nodes/${encodeURIComponent(name)}`)
        : await removeNode(store as SqliteStore, name, storePlane(store as SqliteStore, 'node').controller);
      process.stdout.write(`node ${name} removed: its credentials no longer work, its sessions are closed${released ? ', and its lease is released' : ''}\n`);
      return 0;
    }
    if (sub === 'rotate-key') {
      const name = positionals[0];
      if (!name) throw new TwillError('Usage', `twill node rotate-key needs the node's NAME\n${NODE_USAGE}`);
      const r = remote
        ? await callApi<KeyRotation>(remote, 'POST', `/v1/nodes/${encodeURIComponent(name)}/rotate-key`)
        : await rotateNodeKey(store as SqliteStore, name, storePlane(store as SqliteStore, 'node').controller);
      process.stdout.write(`key rotation asked of node ${r.node} in network ${r.network} (token ${r.token}, lease revision ${r.revision}): `
        + 'its agent makes a new key pair when it next applies its lease, and its peers switch to the new public key as it publishes it\n');
      return 0;
    }
    throw new TwillError('Usage', `unknown node command ${sub ?? ''}\n${NODE_USAGE}`);
  } finally {
    await store?.close();
  }
}
