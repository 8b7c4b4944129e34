// Operator actions, shared by the CLI (local store) and the HTTP API (the
// serverless deployment and the local controller): one implementation each.
import { formatDuration } from '../../core/duration.js';
import { NotFoundError, TwillError } from '../../core/errors.js';
import { backendSpec } from '../../core/backends/index.js';
import { overlayOf, type Reach } from '../../core/backends/overlay.js';
import { backendHasKeys, type Lease } from '../../core/lease.js';
import type { Status } from '../../core/messages.js';
import { checkName } from '../../core/topics.js';
import { generatePassword, hashPassword } from '../auth/credentials.js';
import type { Controller } from '../controller/controller.js';
import type { NetworkRecord, RouteStatusRecord, RouteTablesRecord, StatusRecord, Store } from '../store/store.js';

export interface AgentConfig {
  broker: string;
  network: string;
  node: string;
  username: string;
  password: string;
  prefix?: string;
  /** AWS IoT Core's custom authorizer, when the broker is IoT Core (agent/connect.ts) */
  authorizer?: string;
}

/**
 * Issues credentials for a node and returns the agent's config file, the only
 * place the password ever appears. An existing node gets a new password only
 * when asked to rotate: the old one stops working.
 */
export async function addNode(store: Store, opts: { name: string; network: string; broker: string; prefix?: string; authorizer?: string; rotate?: boolean }): Promise<AgentConfig> {
  const name = checkName('node', opts.name);
  checkName('network', opts.network);
  if (!(await store.getNetwork(opts.network))) {
    throw new NotFoundError(`network ${opts.network} does not exist: create it first (twill controller --network ${opts.network}=FILE)`);
  }
  const existing = await store.getNode(name);
  if (existing && existing.network !== opts.network) {
    throw new TwillError('Exists', `node ${name} already belongs to network ${existing.network}`);
  }
  // A running agent with the old password would be locked out: never by accident.
  if (existing && !opts.rotate) {
    throw new TwillError('Exists', `node ${name} already exists in network ${existing.network}: to issue it a new password (the old one stops working and its sessions are closed), add it again with --rotate`);
  }
  const password = generatePassword();
  await store.putNode({ name, network: opts.network, passwordHash: await hashPassword(password), createdAt: existing?.createdAt ?? new Date().toISOString() });
  return {
    broker: opts.broker, network: opts.network, node: name, username: name, password,
    ...(opts.prefix ? { prefix: opts.prefix } : {}),
    ...(opts.authorizer ? { authorizer: opts.authorizer } : {}),
  };
}

/**
 * Removes a node: its credentials, then its lease, released through the
 * controller so every peer hears of the removal (from the local CLI, a
 * controller that only writes the store, whose running controller publishes
 * it). Its live sessions are the broker's to end (control/local/server.ts
 * revokes them; a deployment's, IoT Core's authorizer refuses its reconnect).
 */
export async function removeNode(store: Store, name: string, controller?: Pick<Controller, 'release' | 'forgetNode'>): Promise<{ released: boolean; network: string }> {
  const node = await store.getNode(checkName('node', name));
  if (!node || !(await store.deleteNode(name))) throw new NotFoundError(`node ${name} does not exist`);
  const released = controller ? await controller.release(node.network, name) : false;
  // Nothing of a departed node stays retained on the broker (its status, an error it was told).
  await controller?.forgetNode(node.network, name);
  return { released, network: node.network };
}

/** What a key rotation asked: the token now on the node's lease, and the lease's revision that carries it. */
export interface KeyRotation {
  node: string;
  network: string;
  token: string;
  revision: number;
}

/**
 * Asks a node for a new key pair (wireguard): a fresh token on its lease in
 * its network, written and published through the controller like any lease
 * change, so the node hears of it on its own topic and its peers see the
 * revision move. Refused, changing nothing, for an unknown node, a node
 * without a lease, and a network whose backend has no keys.
 */
export async function rotateNodeKey(store: Store, name: string, controller: Pick<Controller, 'rotateKey'>): Promise<KeyRotation> {
  const node = await store.getNode(checkName('node', name));
  if (!node) throw new NotFoundError(`node ${name} does not exist: twill node list shows the nodes`);
  const lease = await controller.rotateKey(node.network, name);
  return { node: name, network: node.network, token: lease.rotateKey as string, revision: lease.revision };
}

/**
 * A node's key as the operator sees it (backends with keys only): its public
 * key, and whether a rotation asked of it is still to come. The node says
 * which token it has honoured in its status (core/messages.ts keyToken).
 */
export interface KeyView {
  /** null until the node has published one */
  publicKey: string | null;
  /** none: never asked; pending: the lease's token is not the one the node reports; done: it is */
  rotation: 'none' | 'pending' | 'done';
  token?: string;
  /** what runs the node's devices, as its agent last said (kernel or wireguard-go) */
  implementation?: string;
}

export function keyView(lease: Lease, status: Status | undefined): KeyView | undefined {
  if (!backendHasKeys(lease.backendType)) return undefined;
  const key = lease.backendData.PublicKey;
  const publicKey = typeof key === 'string' ? key : null;
  const implementation = status?.implementation !== undefined ? { implementation: status.implementation } : {};
  if (lease.rotateKey === undefined) return { publicKey, rotation: 'none', ...implementation };
  return { publicKey, rotation: status?.keyToken === lease.rotateKey ? 'done' : 'pending', token: lease.rotateKey, ...implementation };
}

export interface StatusReport {
  time: string;
  networks: { name: string; network: string | null; ipv6Network: string | null; backend: string; leases: number; revision: number }[];
  leases: (Pick<Lease, 'network' | 'node' | 'subnet' | 'ipv6Subnet' | 'publicIP' | 'publicIPv6' | 'backendType' | 'expiresAt' | 'createdAt'> & {
    route?: Pick<RouteStatusRecord, 'state' | 'reason'>;
    /** a cloud network with an overlay: how the node is reached, as its lease says to every member */
    reach?: Reach;
    key?: KeyView;
  })[];
  agents: StatusRecord[];
  /** cloud networks: each route table (or project quota) as the last reconcile saw it, its limit and where that came from */
  routeTables: (RouteTablesRecord['tables'][number] & { network: string; updatedAt: string })[];
}

/** Everything `twill status` shows, as data. Secrets are not part of it. */
export async function statusReport(store: Store): Promise<StatusReport> {
  const networks: NetworkRecord[] = await store.listNetworks();
  const routes = new Map((await store.listRouteStatus()).map((r) => [`${r.network}/${r.node}`, r]));
  const agents = await store.listStatus();
  const statuses = new Map(agents.map((a) => [`${a.network}/${a.node}`, a.status]));
  const leases: StatusReport['leases'] = [];
  const routeTables: StatusReport['routeTables'] = [];
  for (const n of networks) {
    const tables = backendSpec(n.config.Backend.Type).cloud ? await store.getRouteTables(n.name) : undefined;
    for (const t of tables?.tables ?? []) routeTables.push({ network: n.name, ...t, updatedAt: tables!.updatedAt });
    for (const l of await store.listLeases(n.name)) {
      const r = routes.get(`${l.network}/${l.node}`);
      const key = keyView(l, statuses.get(`${l.network}/${l.node}`));
      leases.push({
        network: l.network, node: l.node, subnet: l.subnet, ipv6Subnet: l.ipv6Subnet, publicIP: l.publicIP, publicIPv6: l.publicIPv6,
        backendType: l.backendType, expiresAt: l.expiresAt, createdAt: l.createdAt,
        ...(r ? { route: { state: r.state, reason: r.reason } } : {}),
        // A reach left from an overlay since taken out of the config says nothing any more.
        ...(l.reach && overlayOf(n.config.Backend) ? { reach: l.reach } : {}),
        ...(key ? { key } : {}),
      });
    }
  }
  return {
    time: new Date().toISOString(),
    networks: networks.map((n) => ({
      name: n.name, network: n.config.Network ?? null, ipv6Network: n.config.IPv6Network ?? null,
      backend: n.config.Backend.Type, leases: n.leaseCount, revision: n.revision,
    })),
    leases,
    agents,
    routeTables,
  };
}

export function expiryText(at: string | null, now: number): string {
  if (at === null) return 'never (reserved)';
  const left = Date.parse(at) - now;
  return left <= 0 ? 'expired' : `in ${formatDuration(left)}`;
}
