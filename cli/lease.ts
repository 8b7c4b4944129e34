import { TwillError } from '../core/errors.js';
import type { Lease } from '../core/lease.js';
import { DEFAULT_DATA_DIR, parse } from './args.js';
import { openDataDir, storePlane } from './data-dir.js';
import { REMOTE_OPTIONS, callApi, remoteFrom } from './remote.js';

export const LEASE_USAGE = `twill lease reserve NETWORK --node NAME --subnet CIDR [--public-ip IP] [--data-dir .twill | --api URL [--token-file F]]
twill lease release NETWORK --node NAME [--data-dir .twill | --api URL [--token-file F]]`;

/** Every flag twill lease takes (its help and the README are checked against it). */
export const LEASE_OPTIONS = {
  node: { type: 'string' },
  subnet: { type: 'string' },
  'public-ip': { type: 'string' },
  'data-dir': { type: 'string', default: DEFAULT_DATA_DIR },
  ...REMOTE_OPTIONS,
} as const;

export async function leaseCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, LEASE_OPTIONS, 1);
  const network = positionals[0];
  if (!network || !values.node || (sub !== 'reserve' && sub !== 'release')) throw new TwillError('Usage', LEASE_USAGE);
  const path = `/v1/leases/${encodeURIComponent(network)}/${encodeURIComponent(values.node)}`;
  const remote = remoteFrom(values);
  const store = remote ? undefined : openDataDir(values['data-dir']);
  const controller = store && storePlane(store, 'lease').controller;
  try {
    if (sub === 'reserve') {
      if (!values.subnet) throw new TwillError('Usage', 'twill lease reserve needs --subnet CIDR');
      const lease = remote
        ? await callApi<Lease>(remote, 'PUT', path, { subnet: values.subnet, publicIP: values['public-ip'] })
        : await controller!.reserve(network, values.node, values.subnet, values['public-ip']);
      process.stdout.write(`reserved ${lease.subnet ?? lease.ipv6Subnet} for node ${lease.node} in network ${network}\n`);
      return 0;
    }
    if (remote) await callApi(remote, 'DELETE', path);
    else if (!(await controller!.release(network, values.node))) throw new TwillError('NotFound', `node ${values.node} holds no lease in network ${network}`);
    process.stdout.write(`released the lease of node ${values.node} in network ${network}\n`);
    return 0;
  } finally {
    await store?.close();
  }
}
