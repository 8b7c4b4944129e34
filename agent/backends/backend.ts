// The interface every data-plane backend implements, modelled on flannel's
// (pkg/backend/common.go) but level-triggered: instead of reacting to lease
// events one by one, reconcile() is handed the whole desired state each time
// and makes the kernel match it.
import type { BackendType, NetConf } from '../../core/config.js';
import type { Lease } from '../../core/lease.js';
import type { Logger } from '../../core/log.js';
import type { External } from '../iface.js';
import type { Metrics } from '../../core/metrics.js';
import type { StateDir } from '../state.js';
import type { KernelIO } from '../kernel/io.js';
import type { IptablesIO } from '../iptables.js';
import type { HostIO } from '../reverse-path.js';
import type { NftIO } from '../nftables.js';

export interface BackendContext {
  /** the network's config as every node sees it (secrets arrive in reconcile) */
  config: NetConf;
  external: External;
  state: StateDir;
  log: Logger;
  metrics: Metrics;
  /** where routes, neighbours, fdb entries and devices are read and written */
  kernel: KernelIO;
  /** flanneld's --ip-blackhole-route: the node's own subnets get a blackhole route (common.ts ownEntries) */
  blackholeRoute?: boolean;
  /** iptables and the host's sysctls and policy rules, where a backend keeps settings beyond routes (a cloud network's overlay); default this host's */
  iptables?: IptablesIO;
  host?: HostIO;
  /** nft for the reverse-path mark's own table (EnableNFTables on a cloud network with an overlay); default this host's */
  rpfNft?: NftIO;
}

/** What a backend reports of one reconcile (distinct from the kernel pass report it may build on). */
export interface BackendReport {
  /** problems a person should see in status, one line each (e.g. a peer that is not on-link) */
  errors: string[];
  /**
   * This pass applied a change the control plane waits on (a member moved
   * from its cloud route to the overlay, whose route is deleted only once
   * every agent has applied the move): the agent says its applied revision
   * at once instead of at its usual pace.
   */
  confirm?: boolean;
}

/**
 * What a backend adds to the agent's retained status (core/messages.ts
 * statusSchema): for wireguard, what runs its devices and the rotation
 * token whose key pair it runs.
 */
export interface BackendStatus {
  implementation?: 'kernel' | 'wireguard-go';
  keyToken?: string;
}

export interface Backend {
  readonly type: BackendType;
  /** the MTU pods should use, for subnet.env */
  mtu(): number;
  /** published in this node's lease for peers (e.g. VtepMAC); never secrets */
  backendData(): Record<string, string | number | boolean>;
  /**
   * Makes the kernel match the desired state: this node's lease and every
   * peer's. config is the full config from the node's own topic (with secrets).
   * changed, when given, names the only peers whose leases changed since the
   * last call: a backend may then apply just their entries; without it, the
   * backend compares everything with the kernel (the periodic resync).
   */
  reconcile(config: NetConf, own: Lease, peers: ReadonlyMap<string, Lease>, changed?: ReadonlySet<string>): Promise<BackendReport>;
  /** What the agent's status says of the backend, given the node's lease; most have nothing to add. */
  status?(own: Lease): BackendStatus;
  /**
   * The network no longer wants this backend (its config changed): removes
   * what it added to the host. Backends that add nothing beyond their
   * devices and routes have none.
   */
  retire?(): Promise<void>;
  /** Stops background work. Never removes kernel state: the data plane outlives the agent. */
  close(): Promise<void>;
}

export type BackendFactory = (ctx: BackendContext) => Promise<Backend>;
