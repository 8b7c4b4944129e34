import { formatDuration } from '../core/duration.js';
import { expiryText, statusReport, type KeyView, type StatusReport } from '../control/http/admin.js';
import { limitLabel } from '../control/routes/clouds/cloud.js';
import { DEFAULT_DATA_DIR, OUTPUT_OPTION, parse, wantsJson } from './args.js';
import { openDataDir } from './data-dir.js';
import { REMOTE_OPTIONS, callApi, remoteFrom } from './remote.js';
import { table } from './table.js';

export const STATUS_USAGE = 'twill status [--data-dir .twill | --api URL [--token-file F]] [-o table|json] (--json: -o json)';

function rotationText(k: KeyView): string {
  if (k.rotation === 'none') return '-';
  return k.rotation === 'done' ? `done (token ${k.token})` : `asked (token ${k.token}): the agent has not reported it yet`;
}

/**
 * How a lease's node is reached. A network with an overlay says it as the
 * lease does ("route", "overlay (route table full (2 of 2))"); a route in
 * error says so first, whatever carries the traffic meanwhile. Other cloud
 * networks: the route's state, and why when it has none.
 */
function routeText(l: StatusReport['leases'][number]): string {
  if (l.route?.state === 'error') return `error: ${l.route.reason}${l.reach?.via === 'overlay' ? ' (reached over the overlay meanwhile)' : ''}`;
  // The route status says more than the lease's few words when it has them (the table's count, the limit's source).
  if (l.reach) return l.reach.via === 'route' ? 'route' : l.route?.reason.startsWith('overlay (') ? l.route.reason : `overlay (${l.reach.why})`;
  if (!l.route) return '-';
  return l.route.state === 'ok' ? 'ok' : l.route.reason;
}

export function renderStatus(r: StatusReport, now = Date.now()): string {
  const out: string[] = [];
  out.push('NETWORKS\n' + table(
    ['NAME', 'NETWORK', 'IPV6 NETWORK', 'BACKEND', 'LEASES', 'REVISION'],
    r.networks.map((n) => [n.name, n.network ?? '-', n.ipv6Network ?? '-', n.backend, String(n.leases), String(n.revision)]),
  ));
  let pending = 0;
  let overlay = 0;
  const rows = r.leases.map((l) => {
    // Cloud networks (aws-vpc, gce, ali-vpc) show whether each lease has its VPC route, and why not.
    if (l.route?.state === 'pending') pending++;
    if (l.reach?.via === 'overlay') overlay++;
    return [l.network, l.node, l.subnet ?? '-', l.ipv6Subnet ?? '-', l.publicIP ?? l.publicIPv6 ?? '-', l.backendType, expiryText(l.expiresAt, now), routeText(l)];
  });
  out.push('LEASES\n' + table(['NETWORK', 'NODE', 'SUBNET', 'IPV6 SUBNET', 'PUBLIC IP', 'BACKEND', 'EXPIRES', 'ROUTE'], rows));
  // Each route table's (or project's) routes against its limit, and where the limit came from.
  if (r.routeTables?.length) {
    out.push('ROUTE TABLES\n' + table(
      ['NETWORK', 'TABLE', 'USED', 'LIMIT', 'LIMIT FROM'],
      r.routeTables.map((t) => [t.network, t.what, String(t.used), String(t.limit), `${limitLabel(t.source ?? 'default')}${t.why ? ` (${t.why})` : ''}`]),
    ));
  }
  // Networks with keys (wireguard): each node's public key, and a rotation asked of it until its agent reports it honoured.
  const keyed = r.leases.filter((l) => l.key);
  if (keyed.length) {
    out.push('KEYS\n' + table(
      ['NETWORK', 'NODE', 'PUBLIC KEY', 'DEVICE', 'ROTATION'],
      keyed.map((l) => [l.network, l.node, l.key!.publicKey ?? '-', l.key!.implementation ?? '-', rotationText(l.key!)]),
    ));
  }
  out.push('AGENTS\n' + table(
    ['NETWORK', 'NODE', 'STATE', 'IN SYNC', 'VERSION', 'APPLIED', 'PEERS', 'SEEN', 'ERRORS'],
    r.agents.map((a) => [
      a.network,
      a.node,
      a.status.state,
      // Sent the moment it changes: an agent online and in sync holds and has
      // applied the newest revision. APPLIED and PEERS are refreshed at most
      // every 10 minutes (agent/agent.ts REVISION_STATUS_MS).
      a.status.state !== 'online' || a.status.inSync === undefined ? '-' : a.status.inSync ? 'yes' : 'no',
      a.status.agentVersion ?? '-',
      a.status.revision === undefined ? '-' : String(a.status.revision),
      a.status.peers === undefined ? '-' : String(a.status.peers),
      `${formatDuration(now - Date.parse(a.updatedAt))} ago`,
      a.status.errors.join('; ') || '-',
    ]),
  ));
  const online = r.agents.filter((a) => a.status.state === 'online').length;
  out.push(`${r.networks.length} network(s), ${rows.length} lease(s), ${online} agent(s) online${pending ? `, ${pending} route(s) pending` : ''}${overlay ? `, ${overlay} node(s) over the overlay` : ''}\n`);
  return out.join('\n');
}

/** Every flag twill status takes (its help and the README are checked against it). */
export const STATUS_OPTIONS = { 'data-dir': { type: 'string', default: DEFAULT_DATA_DIR }, json: { type: 'boolean' }, ...OUTPUT_OPTION, ...REMOTE_OPTIONS } as const;

export async function statusCommand(args: string[]): Promise<number> {
  const { values } = parse(args, STATUS_OPTIONS);
  const json = wantsJson(values.output, values.json);
  const remote = remoteFrom(values);
  let report: StatusReport;
  if (remote) {
    report = await callApi<StatusReport>(remote, 'GET', '/v1/status');
  } else {
    const store = openDataDir(values['data-dir']);
    try {
      report = await statusReport(store);
    } finally {
      await store.close();
    }
  }
  process.stdout.write(json ? JSON.stringify(report, null, 2) + '\n' : renderStatus(report));
  return 0;
}
