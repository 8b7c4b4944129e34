import { join } from 'node:path';
import { formatDuration } from '../core/duration.js';
import { SqliteStore } from '../functions/store/sqlite.js';
import { DEFAULT_DATA_DIR, parse } from './args.js';
import { table } from './table.js';

function expiry(at: string | null, now: number): string {
  if (at === null) return 'never (reserved)';
  const left = Date.parse(at) - now;
  return left <= 0 ? 'expired' : `in ${formatDuration(left)}`;
}

export async function statusCommand(args: string[]): Promise<number> {
  const { values } = parse(args, { 'data-dir': { type: 'string', default: DEFAULT_DATA_DIR } });
  const store = new SqliteStore(join(values['data-dir'], 'twill.db'));
  try {
    const now = Date.now();
    const networks = await store.listNetworks();
    const out: string[] = [];
    out.push('NETWORKS\n' + table(
      ['NAME', 'NETWORK', 'IPV6 NETWORK', 'BACKEND', 'LEASES', 'REVISION'],
      networks.map((n) => [n.name, n.config.Network ?? '-', n.config.IPv6Network ?? '-', n.config.Backend.Type, String(n.leaseCount), String(n.revision)]),
    ));
    const rows: string[][] = [];
    let pending = 0;
    for (const n of networks) {
      // Cloud networks (aws-vpc, gce, ali-vpc) show whether each lease has its VPC route, and why not.
      const routes = new Map((await store.listRouteStatus(n.name)).map((r) => [r.node, r]));
      for (const l of await store.listLeases(n.name)) {
        const r = routes.get(l.node);
        if (r?.state === 'pending') pending++;
        const route = !r ? '-' : r.state === 'ok' ? 'ok' : r.state === 'error' ? `error: ${r.reason}` : r.reason;
        rows.push([n.name, l.node, l.subnet ?? '-', l.ipv6Subnet ?? '-', l.publicIP ?? l.publicIPv6 ?? '-', l.backendType, expiry(l.expiresAt, now), route]);
      }
    }
    out.push('LEASES\n' + table(['NETWORK', 'NODE', 'SUBNET', 'IPV6 SUBNET', 'PUBLIC IP', 'BACKEND', 'EXPIRES', 'ROUTE'], rows));
    const agents = await store.listStatus();
    out.push('AGENTS\n' + table(
      ['NETWORK', 'NODE', 'STATE', 'VERSION', 'APPLIED', 'PEERS', 'SEEN', 'ERRORS'],
      agents.map((a) => [
        a.network,
        a.node,
        a.status.state,
        a.status.agentVersion ?? '-',
        a.status.appliedRevision === undefined ? '-' : String(a.status.appliedRevision),
        a.status.peers === undefined ? '-' : String(a.status.peers),
        `${formatDuration(now - Date.parse(a.updatedAt))} ago`,
        a.status.errors.join('; ') || '-',
      ]),
    ));
    const online = agents.filter((a) => a.status.state === 'online').length;
    out.push(`${networks.length} network(s), ${rows.length} lease(s), ${online} agent(s) online${pending ? `, ${pending} route(s) pending` : ''}\n`);
    process.stdout.write(out.join('\n'));
    return 0;
  } finally {
    await store.close();
  }
}
