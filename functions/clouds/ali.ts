// ali-vpc: custom route entries in VPC route tables, next hop the instance,
// through @alicloud/pop-core (RPC: ECS 2014-05-26 for instances, VPC
// 2016-04-28 for route tables).
//
// Tables: per instance, the custom table associated with its vSwitch, else
// its VPC's system table. Each lease records its VPC and tables, so a table
// keeps being cleaned after its last instance has gone.
//
// Ownership: twill writes the fixed description on its entries, but entries
// made before (flannel's, or by an older twill) have none, so ownership is
// inferred as on AWS (see functions/routes.ts): a custom entry whose next hop
// is an instance, for exactly one /SubnetLen subnet of the network, pointing
// to an instance of the network or to the target recorded in that subnet's
// lease, or carrying twill's description. Entries to other next hop types
// (VPN, router interfaces, NAT, ...) are never twill's.
//
// Rate: a VPC changes one entry at a time. Changes are serialized per VPC,
// TaskConflict (another change still running) and throttling are retried
// with backoff, and a new entry is waited for until Available.
import RPCClient from '@alicloud/pop-core';
import type { AliVpcBackend } from '../../core/config.js';
import { TwillError, errorMessage } from '../../core/errors.js';
import {
  KeyedMutex, MEMBER_TAG, ROUTE_DESCRIPTION, RouteLimitError, callError, routeLimit, routeName, sleep, withRetry,
  type Cloud, type CloudInstance, type CloudRoute, type DesiredRoute, type InstanceRef, type InstanceState,
  type NetworkRef, type NetworkSnapshot, type RoutePool, type RouteTable,
} from './cloud.js';

export interface AliOptions {
  /** default: ALIBABA_CLOUD_REGION_ID or ALICLOUD_REGION */
  region?: string;
  /** one endpoint for both ECS and VPC, e.g. a local one; default https://ecs.<region>.aliyuncs.com and https://vpc.<region>.aliyuncs.com */
  endpoint?: string;
  /** for reading an instance named by an event, when no network's credentials apply; default ACCESS_KEY_ID / ACCESS_KEY_SECRET */
  accessKeyId?: string;
  accessKeySecret?: string;
  /** mutating calls in flight at once across VPCs (one per VPC at most); default 4 */
  concurrency?: number;
  /** wait between polls of a Pending entry, in ms; default 1000 */
  pollMs?: number;
  /** attempts per call on TaskConflict or throttling; default 8 */
  attempts?: number;
  /** first backoff, in ms; default 500 */
  backoffMs?: number;
}

interface AliInstance {
  InstanceId?: string;
  Status?: string;
  VpcAttributes?: { VpcId?: string; VSwitchId?: string; PrivateIpAddress?: { IpAddress?: string[] } };
  Tags?: { Tag?: { TagKey?: string; TagValue?: string }[] };
}
interface AliTable { RouteTableId?: string; VpcId?: string; RouteTableType?: string; VSwitchIds?: { VSwitchId?: string[] } }
interface AliEntry {
  RouteEntryId?: string;
  RouteTableId?: string;
  DestinationCidrBlock?: string;
  Type?: string;
  Status?: string;
  Description?: string;
  NextHops?: { NextHop?: { NextHopType?: string; NextHopId?: string }[] };
}

const STATES: Record<string, InstanceState | undefined> = { Pending: 'pending', Starting: 'pending', Running: 'running', Stopping: 'stopping', Stopped: 'stopped' };
const ECS_VERSION = '2014-05-26';
const VPC_VERSION = '2016-04-28';

const codeOf = (e: unknown): string => (typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : '');
const isBusy = (e: unknown) => /^(TaskConflict|OperationConflict|Throttling|ServiceUnavailable|IncorrectStatus|IncorrectRouteEntryStatus|IncorrectVpcStatus|OperationFailed\.DistibuteLock|LastTokenProcessing)/.test(codeOf(e));

/** The error pop-core throws carries the URL, signature included: never show it. */
function aliError(what: string, e: unknown): TwillError {
  const code = codeOf(e);
  const data = (e as { data?: { Message?: string } })?.data;
  if (code) return callError(what, new Error(`${code}: ${data?.Message ?? 'no message'}`));
  return callError(what, new Error(errorMessage(e).replace(/, URL: .*$/s, '')));
}

interface Clients { ecs: RPCClient; vpc: RPCClient }

export class AliCloud implements Cloud {
  readonly kind = 'ali' as const;
  readonly ownership = 'inferred' as const;
  readonly canReplace = false;
  readonly concurrency: number;
  private readonly clients = new Map<string, Clients>();
  private readonly locks = new KeyedMutex();
  /** route table -> VPC, learnt from snapshots: a change locks its VPC */
  private readonly tableVpc = new Map<string, string>();
  private readonly opts: AliOptions;
  readonly region: string;

  constructor(opts: AliOptions = {}) {
    this.opts = opts;
    this.concurrency = opts.concurrency ?? 4;
    const region = opts.region ?? process.env.ALIBABA_CLOUD_REGION_ID ?? process.env.ALICLOUD_REGION;
    if (!region) throw new TwillError('NoRegion', 'no Alibaba Cloud region: set --cloud-region or ALIBABA_CLOUD_REGION_ID (e.g. cn-hangzhou)');
    this.region = region;
  }

  private clientsFor(accessKeyId: string, accessKeySecret: string): Clients {
    let c = this.clients.get(accessKeyId);
    if (!c) {
      const make = (product: 'ecs' | 'vpc', apiVersion: string) =>
        new RPCClient({ endpoint: this.opts.endpoint ?? `https://${product}.${this.region}.aliyuncs.com`, apiVersion, accessKeyId, accessKeySecret });
      c = { ecs: make('ecs', ECS_VERSION), vpc: make('vpc', VPC_VERSION) };
      this.clients.set(accessKeyId, c);
    }
    return c;
  }

  private netClients(net: NetworkRef): Clients {
    const b = net.config.Backend as AliVpcBackend;
    return this.clientsFor(b.AccessKeyID, b.AccessKeySecret);
  }

  private call<T>(client: RPCClient, action: string, params: Record<string, unknown>): Promise<T> {
    return withRetry(
      () => client.request<T>(action, { RegionId: this.region, ...params }, { timeout: 15_000 }),
      { attempts: this.opts.attempts ?? 8, baseMs: this.opts.backoffMs ?? 500, maxMs: 20_000, retryable: isBusy },
    );
  }

  private async listInstances(c: Clients, params: Record<string, unknown>): Promise<AliInstance[]> {
    const out: AliInstance[] = [];
    let token = '';
    do {
      const r = await this.call<{ Instances?: { Instance?: AliInstance[] }; NextToken?: string }>(c.ecs, 'DescribeInstances', { ...params, MaxResults: 100, ...(token ? { NextToken: token } : {}) });
      out.push(...(r.Instances?.Instance ?? []));
      token = r.NextToken ?? '';
    } while (token);
    return out;
  }

  private async listTables(c: Clients, vpcId: string): Promise<AliTable[]> {
    const out: AliTable[] = [];
    for (let page = 1; ; page++) {
      const r = await this.call<{ RouterTableList?: { RouterTableListType?: AliTable[] }; TotalCount?: number }>(c.vpc, 'DescribeRouteTableList', { VpcId: vpcId, PageSize: 50, PageNumber: page });
      const items = r.RouterTableList?.RouterTableListType ?? [];
      out.push(...items);
      if (items.length === 0 || out.length >= Number(r.TotalCount ?? 0)) return out;
    }
  }

  private async listEntries(c: Clients, tableId: string, extra: Record<string, unknown> = {}): Promise<AliEntry[]> {
    const out: AliEntry[] = [];
    let token = '';
    do {
      const r = await this.call<{ RouteEntrys?: { RouteEntry?: AliEntry[] }; NextToken?: string }>(c.vpc, 'DescribeRouteEntryList', { RouteTableId: tableId, MaxResult: 100, ...extra, ...(token ? { NextToken: token } : {}) });
      out.push(...(r.RouteEntrys?.RouteEntry ?? []));
      token = r.NextToken ?? '';
    } while (token);
    return out;
  }

  async snapshot(net: NetworkRef): Promise<NetworkSnapshot> {
    const c = this.netClients(net);
    let raw: AliInstance[];
    try {
      raw = await this.listInstances(c, { Tag: [{ Key: MEMBER_TAG, Value: net.name }] });
    } catch (e) {
      throw aliError(`listing the instances tagged ${MEMBER_TAG}=${net.name} in ${this.region} (DescribeInstances) failed`, e);
    }
    const recordedTables = new Set<string>();
    const vpcs = new Set<string>();
    for (const l of net.leases) {
      const t = l.backendData.RouteTables;
      const v = l.backendData.VpcId;
      if (typeof t === 'string' && t) for (const id of t.split(',')) recordedTables.add(id);
      if (typeof v === 'string' && v) vpcs.add(v);
    }
    for (const i of raw) if (i.VpcAttributes?.VpcId) vpcs.add(i.VpcAttributes.VpcId);

    const tables: AliTable[] = [];
    for (const vpc of vpcs) {
      try {
        tables.push(...(await this.listTables(c, vpc)));
      } catch (e) {
        throw aliError(`listing the route tables of ${vpc} (DescribeRouteTableList) failed`, e);
      }
    }
    const byVSwitch = new Map<string, string>();
    const systemOf = new Map<string, string>();
    const known = new Set<string>();
    for (const t of tables) {
      if (!t.RouteTableId || !t.VpcId) continue;
      known.add(t.RouteTableId);
      this.tableVpc.set(t.RouteTableId, t.VpcId);
      if (t.RouteTableType === 'System') systemOf.set(t.VpcId, t.RouteTableId);
      for (const v of t.VSwitchIds?.VSwitchId ?? []) byVSwitch.set(v, t.RouteTableId);
    }

    const managed = new Set<string>();
    const instances: CloudInstance[] = [];
    for (const i of raw) {
      const state = STATES[i.Status ?? ''];
      if (!i.InstanceId || !state) continue;
      const vpc = i.VpcAttributes?.VpcId;
      const vsw = i.VpcAttributes?.VSwitchId;
      const table = (vsw && byVSwitch.get(vsw)) || (vpc && systemOf.get(vpc));
      if (table) managed.add(table);
      instances.push({
        id: i.InstanceId,
        state,
        privateIP: i.VpcAttributes?.PrivateIpAddress?.IpAddress?.[0],
        target: i.InstanceId,
        tables: table ? [table] : [],
        ...(!vpc ? { problem: `instance ${i.InstanceId} is not in a VPC: ali-vpc routes only reach VPC instances` }
          : !table ? { problem: `no route table found for instance ${i.InstanceId} in ${vpc}` } : {}),
        leaseData: { ...(vpc ? { VpcId: vpc } : {}), RouteTables: table ?? '' },
      });
    }
    for (const t of recordedTables) if (known.has(t)) managed.add(t);

    const limit = routeLimit(net.config);
    const pools: RoutePool[] = [];
    const outTables: RouteTable[] = [];
    const routes: CloudRoute[] = [];
    for (const id of managed) {
      let entries: AliEntry[];
      try {
        entries = await this.listEntries(c, id);
      } catch (e) {
        throw aliError(`listing the entries of route table ${id} (DescribeRouteEntryList) failed`, e);
      }
      outTables.push({ id, pool: id });
      // Only custom entries count against the table's quota; system entries (vSwitch CIDRs) do not.
      pools.push({ id, what: `route table ${id}`, limit, used: entries.filter((e) => e.Type === 'Custom').length });
      for (const e of entries) {
        if (e.Type !== 'Custom' || !e.DestinationCidrBlock || e.DestinationCidrBlock.includes(':')) continue;
        const hops = e.NextHops?.NextHop ?? [];
        const only = hops.length === 1 ? hops[0] : undefined;
        routes.push({
          table: id,
          destination: e.DestinationCidrBlock,
          target: only?.NextHopId,
          instanceHop: only?.NextHopType === 'Instance',
          blackhole: false,
          marked: e.Description === ROUTE_DESCRIPTION,
          ref: e.RouteEntryId,
        });
      }
    }
    return { instances, tables: outTables, pools, routes };
  }

  private lockKey(table: string): string {
    return this.tableVpc.get(table) ?? table;
  }

  async createRoute(net: NetworkRef, r: DesiredRoute): Promise<void> {
    const c = this.netClients(net);
    await this.locks.run(this.lockKey(r.table), async () => {
      let id: string | undefined;
      try {
        const res = await this.call<{ RouteEntryId?: string }>(c.vpc, 'CreateRouteEntry', {
          RouteTableId: r.table,
          DestinationCidrBlock: r.destination,
          NextHopType: 'Instance',
          NextHopId: r.target,
          RouteEntryName: routeName(net.name, r.destination),
          Description: ROUTE_DESCRIPTION,
        });
        id = res.RouteEntryId;
      } catch (e) {
        const code = codeOf(e);
        if (code.startsWith('QuotaExceeded')) {
          throw new RouteLimitError(`route table ${r.table} is full: Alibaba Cloud refused the entry (${code}); raise the route entry quota or lower Backend.RouteLimit to match it`);
        }
        // Made by an earlier attempt whose answer was lost: the next reconcile checks its next hop.
        if (code === 'RouterEntryConflict.Duplicated') return;
        throw aliError(`CreateRouteEntry ${r.destination} -> ${r.target} in ${r.table} failed`, e);
      }
      if (id) await this.waitAvailable(c, r.table, id);
    });
  }

  /** The VPC accepts its next change only once this entry is Available. */
  private async waitAvailable(c: Clients, table: string, id: string): Promise<void> {
    for (let i = 0; i < 120; i++) {
      let entries: AliEntry[];
      try {
        entries = await this.listEntries(c, table, { RouteEntryId: id });
      } catch (e) {
        throw aliError(`waiting for route entry ${id} in ${table} (DescribeRouteEntryList) failed`, e);
      }
      const status = entries[0]?.Status;
      if (status === undefined || status === 'Available') return;
      await sleep(this.opts.pollMs ?? 1000);
    }
    throw new TwillError('CloudError', `route entry ${id} in ${table} is still not Available after 120 polls: the next reconcile looks again`);
  }

  async deleteRoute(net: NetworkRef, r: CloudRoute): Promise<void> {
    const c = this.netClients(net);
    await this.locks.run(this.lockKey(r.table), async () => {
      try {
        await this.call(c.vpc, 'DeleteRouteEntry', {
          RouteTableId: r.table,
          ...(r.ref ? { RouteEntryId: r.ref } : { DestinationCidrBlock: r.destination, ...(r.target ? { NextHopId: r.target } : {}) }),
        });
      } catch (e) {
        if (codeOf(e) === 'InvalidRouteEntry.NotFound') return; // already gone: the outcome wanted
        throw aliError(`DeleteRouteEntry ${r.destination} from ${r.table} failed`, e);
      }
    });
  }

  async instanceNetworks(ref: InstanceRef): Promise<string[] | undefined> {
    const id = this.opts.accessKeyId ?? process.env.ACCESS_KEY_ID;
    const secret = this.opts.accessKeySecret ?? process.env.ACCESS_KEY_SECRET;
    if (!id || !secret) return undefined; // cannot look: the caller reconciles every ali-vpc network
    try {
      const [i] = await this.listInstances(this.clientsFor(id, secret), { InstanceIds: JSON.stringify([ref.instanceId]) });
      if (!i) return undefined;
      const net = i.Tags?.Tag?.find((t) => t.TagKey === MEMBER_TAG)?.TagValue;
      return net ? [net] : [];
    } catch (e) {
      throw aliError(`reading instance ${ref.instanceId} (DescribeInstances) failed`, e);
    }
  }
}
