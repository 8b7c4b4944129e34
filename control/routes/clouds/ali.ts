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
// inferred as on AWS (see control/routes/routes.ts): a custom entry whose next hop
// is an instance, for exactly one /SubnetLen subnet of the network, pointing
// to an instance of the network or to the target recorded in that subnet's
// lease, or carrying twill's description. Entries to other next hop types
// (VPN, router interfaces, NAT, ...) are never twill's.
//
// Rate: a VPC changes one entry at a time. CreateRouteEntry and
// DeleteRouteEntry are asynchronous: an entry is Pending, then Available;
// Deleting, then gone; meanwhile every other change of that VPC is refused
// (Alibaba's VPC API reference, DeleteRouteEntry and CreateRouteEntry: "You
// cannot delete a route entry of a VPC in which a vSwitch or another route
// entry is being created or deleted"; error codes TaskConflict,
// IncorrectRouteEntryStatus, IncorrectStatus.VpcRouteEntry). So each change
// holds its VPC's lock until the entry has settled: in-process (KeyedMutex)
// and, when given, across processes and function instances (the store's
// lock, control/store/locks.ts). Busy answers and throttling are retried with
// backoff within the change's deadline (changeTimeoutMs, and the caller's
// own deadline, e.g. the Lambda invocation's end): a change that cannot
// finish in time fails for this reconcile, and the next one makes it.
//
// Limit: the account's custom route entries per route table as Quota Center
// has it (GetProductQuota vpc/vpc_quota_route_entrys_num in the region,
// "VPC quotas": 200 by default), with the network's own key, kept as quota.ts
// says; the key needs quotas:GetProductQuota. Without it, the documented 200.
import RPCClient from '@alicloud/pop-core';
import type { AliVpcBackend } from '../../../core/config.js';
import { TwillError, errorMessage } from '../../../core/errors.js';
import { type Locks } from '../../store/locks.js';
import {
  CloudError, KeyedMutex, MEMBER_TAG, ROUTE_DESCRIPTION, RouteLimitError, callError, routeName, sleep, withRetry,
  type Cloud, type CloudInstance, type CloudRoute, type DesiredRoute, type InstanceRef, type InstanceState,
  type NetworkRef, type NetworkSnapshot, type RoutePool, type RouteTable,
} from './cloud.js';
import { AccountLimits, type QuotaReading } from './quota.js';

export interface AliOptions {
  /** default: ALIBABA_CLOUD_REGION_ID or ALICLOUD_REGION */
  region?: string;
  /** one endpoint for ECS, VPC and Quota Center, e.g. a local one; default https://ecs.<region>.aliyuncs.com, https://vpc.<region>.aliyuncs.com and https://quotas.aliyuncs.com */
  endpoint?: string;
  /** for reading an instance named by an event, when no network's credentials apply; default ACCESS_KEY_ID / ACCESS_KEY_SECRET */
  accessKeyId?: string;
  accessKeySecret?: string;
  /** mutating calls in flight at once across VPCs (one per VPC at most); default 4 */
  concurrency?: number;
  /** wait between polls of a Pending entry, in ms; default 1000 */
  pollMs?: number;
  /** attempts per read on throttling; default 8 (a change retries until its deadline instead) */
  attempts?: number;
  /** first backoff, in ms; default 500 */
  backoffMs?: number;
  /** the most one change may take: waiting for its VPC, retries, and the entry settling; default 120 s */
  changeTimeoutMs?: number;
  /** when the caller must be done (epoch ms), e.g. the Lambda invocation's end; a change never runs past it */
  deadline?: () => number | undefined;
  /** a VPC lock shared with other processes or function instances (the store's); without it, changes are serialized in this process only */
  locks?: Locks;
  /** how long quota readings are kept (quota.ts) */
  limits?: AccountLimits;
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
const QUOTAS_VERSION = '2020-05-10';
/** Quota Center's code of "custom route entries per route table" (Alibaba Cloud's "VPC quotas"). */
export const ROUTE_ENTRIES_QUOTA = { ProductCode: 'vpc', QuotaActionCode: 'vpc_quota_route_entrys_num' } as const;
const QUOTA_PERMISSION = 'quotas:GetProductQuota';
// Quota Center's own refusal (its error codes: RAM.PERMISSION.DENIED), and the gateway's.
const isDenied = (e: unknown) => /^(RAM\.PERMISSION\.DENIED|RAM\.VERIFICATION\.ERROR|Forbidden\.RAM|Forbidden|NoPermission)$/.test(codeOf(e));

const codeOf = (e: unknown): string => (typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : '');
// The VPC (or the entry) is busy with another change, or Alibaba throttled
// or failed the call: worth another try. ("Incorrcet" is how Alibaba's
// DeleteRouteEntry reference spells one of its codes.)
const isBusy = (e: unknown) => /^(TaskConflict|OperationConflict|Throttling|ServiceUnavailable|SystemBusy|InternalError|IncorrectStatus|IncorrectRouteEntryStatus|IncorrcetRouteEntryStatus|IncorrectVpcStatus|OperationFailed\.DistibuteLock|LastTokenProcessing)/.test(codeOf(e));

/** How long one RPC may take (pop-core's timeout): a lock is held this much past its holder's deadline. */
const REQUEST_TIMEOUT_MS = 15_000;

/** The error pop-core throws carries the URL, signature included: never show it. */
function aliError(what: string, e: unknown): TwillError {
  const code = codeOf(e);
  const data = (e as { data?: { Message?: string } })?.data;
  if (code) return callError(what, new Error(`${code}: ${data?.Message ?? 'no message'}`));
  return callError(what, new Error(errorMessage(e).replace(/, URL: .*$/s, '')));
}

interface Clients { ecs: RPCClient; vpc: RPCClient; quotas: RPCClient }

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
  private readonly limits: AccountLimits;
  readonly region: string;

  constructor(opts: AliOptions = {}) {
    this.opts = opts;
    this.limits = opts.limits ?? new AccountLimits();
    this.concurrency = opts.concurrency ?? 4;
    const region = opts.region ?? process.env.ALIBABA_CLOUD_REGION_ID ?? process.env.ALICLOUD_REGION;
    if (!region) throw new TwillError('NoRegion', 'no Alibaba Cloud region: set --cloud-region or ALIBABA_CLOUD_REGION_ID (e.g. cn-hangzhou)');
    this.region = region;
  }

  private clientsFor(accessKeyId: string, accessKeySecret: string): Clients {
    let c = this.clients.get(accessKeyId);
    if (!c) {
      const make = (host: string, apiVersion: string) =>
        new RPCClient({ endpoint: this.opts.endpoint ?? `https://${host}`, apiVersion, accessKeyId, accessKeySecret });
      // Quota Center has one endpoint for every region; the quota's region is a dimension of the request.
      c = { ecs: make(`ecs.${this.region}.aliyuncs.com`, ECS_VERSION), vpc: make(`vpc.${this.region}.aliyuncs.com`, VPC_VERSION), quotas: make('quotas.aliyuncs.com', QUOTAS_VERSION) };
      this.clients.set(accessKeyId, c);
    }
    return c;
  }

  private netClients(net: NetworkRef): Clients {
    const b = net.config.Backend as AliVpcBackend;
    return this.clientsFor(b.AccessKeyID, b.AccessKeySecret);
  }

  /** One RPC, retried while busy: up to `attempts` times, or (for a change) until its deadline. */
  private async call<T>(client: RPCClient, action: string, params: Record<string, unknown>, until?: number): Promise<T> {
    const request = () => client.request<T>(action, { RegionId: this.region, ...params }, { timeout: REQUEST_TIMEOUT_MS });
    const baseMs = this.opts.backoffMs ?? 500;
    if (until === undefined) return withRetry(request, { attempts: this.opts.attempts ?? 8, baseMs, maxMs: 20_000, retryable: isBusy });
    for (let attempt = 1; ; attempt++) {
      try {
        return await request();
      } catch (e) {
        const cap = Math.min(20_000, baseMs * 2 ** (attempt - 1));
        const delay = cap / 2 + Math.random() * (cap / 2);
        if (!isBusy(e) || Date.now() + delay >= until) throw e;
        await sleep(delay);
      }
    }
  }

  /** The account's custom route entries per route table in this region, or why it could not be read. */
  private async readQuota(c: Clients): Promise<QuotaReading> {
    const { ProductCode, QuotaActionCode } = ROUTE_ENTRIES_QUOTA;
    try {
      const r = await withRetry(
        () => c.quotas.request<{ Quota?: { TotalQuota?: number; TotalUsage?: number } }>('GetProductQuota', {
          ProductCode, QuotaActionCode, Dimensions: [{ Key: 'regionId', Value: this.region }],
        }, { method: 'POST', timeout: REQUEST_TIMEOUT_MS }),
        { attempts: 3, baseMs: this.opts.backoffMs ?? 500, maxMs: 5_000, retryable: isBusy },
      );
      const total = Number(r.Quota?.TotalQuota);
      if (!(total >= 1)) return { ok: false, denied: false, why: `Quota Center gave no value for ${ProductCode}/${QuotaActionCode} in ${this.region}` };
      return { ok: true, limit: Math.floor(total) };
    } catch (e) {
      if (isDenied(e)) return { ok: false, denied: true, why: `no permission to read the account's quota of route entries per route table (grant ${QUOTA_PERMISSION})` };
      return { ok: false, denied: false, why: aliError(`the quota ${ProductCode}/${QuotaActionCode} could not be read (GetProductQuota)`, e).message };
    }
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

    const b = net.config.Backend as AliVpcBackend;
    const { limit, warning } = await this.limits.limitOf(net, `${this.region}\u0000${b.AccessKeyID}`, () => this.readQuota(c));
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
      pools.push({ id, what: `route table ${id}`, ...limit, used: entries.filter((e) => e.Type === 'Custom').length });
      for (const e of entries) {
        if (e.Type !== 'Custom' || !e.DestinationCidrBlock || e.DestinationCidrBlock.includes(':')) continue;
        // Going away already (another process's delete): not a route to keep or delete; it still counts above until gone.
        if (e.Status === 'Deleting') continue;
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
    return { instances, tables: outTables, pools, routes, ...(warning ? { warnings: [warning] } : {}) };
  }

  private lockKey(table: string): string {
    return this.tableVpc.get(table) ?? table;
  }

  /**
   * Runs one change of a route table holding its VPC: first this process's
   * lock (no two of our own calls poll the store for it), then the shared
   * one, until the change's deadline. fn gets that deadline.
   */
  private async change(table: string, what: string, fn: (until: number) => Promise<void>): Promise<void> {
    const vpc = this.lockKey(table);
    const timeout = this.opts.changeTimeoutMs ?? 120_000;
    // Too little time to send a change and see it settle: do not start one.
    const minStart = Math.min(3_000, timeout / 2);
    await this.locks.run(vpc, async () => {
      const until = Math.min(Date.now() + timeout, this.opts.deadline?.() ?? Infinity);
      if (until - Date.now() < minStart) {
        throw new CloudError(`${what} was not started: ${Math.max(0, Math.round(until - Date.now()))} ms were left before the deadline; the next reconcile makes it`);
      }
      const shared = this.opts.locks;
      if (!shared) return fn(until);
      await shared.run(`ali-vpc/${vpc}`, { waitUntil: until - minStart, holdMs: until - Date.now() + REQUEST_TIMEOUT_MS }, () => fn(until));
    });
  }

  async createRoute(net: NetworkRef, r: DesiredRoute): Promise<void> {
    const c = this.netClients(net);
    const what = `CreateRouteEntry ${r.destination} -> ${r.target} in ${r.table}`;
    await this.change(r.table, what, async (until) => {
      let id: string | undefined;
      try {
        const res = await this.call<{ RouteEntryId?: string }>(c.vpc, 'CreateRouteEntry', {
          RouteTableId: r.table,
          DestinationCidrBlock: r.destination,
          NextHopType: 'Instance',
          NextHopId: r.target,
          RouteEntryName: routeName(net.name, r.destination),
          Description: ROUTE_DESCRIPTION,
        }, until);
        id = res.RouteEntryId;
      } catch (e) {
        const code = codeOf(e);
        if (code.startsWith('QuotaExceeded')) {
          throw new RouteLimitError(`route table ${r.table} is full: Alibaba Cloud refused the entry (${code}); raise the route entry quota or lower Backend.RouteLimit to match it`);
        }
        // Made by an earlier attempt whose answer was lost: the next reconcile checks its next hop.
        if (code === 'RouterEntryConflict.Duplicated') return;
        throw aliError(`${what} failed`, e);
      }
      if (id) await this.settle(c, r.table, { RouteEntryId: id }, 'Available', until);
    });
  }

  /**
   * Polls the entry until it is Available (a create) or gone (a delete): the
   * VPC accepts its next change only then.
   */
  private async settle(c: Clients, table: string, which: Record<string, string>, want: 'Available' | 'gone', until: number): Promise<void> {
    const label = which.RouteEntryId ?? which.DestinationCidrBlock;
    let status: string | undefined;
    for (;;) {
      let entries: AliEntry[];
      try {
        entries = await this.listEntries(c, table, which);
      } catch (e) {
        throw aliError(`waiting for route entry ${label} in ${table} (DescribeRouteEntryList) failed`, e);
      }
      const entry = entries.find((x) => x.Type !== 'System');
      status = entry?.Status;
      if (want === 'gone' ? entry === undefined : status === undefined || status === 'Available') return;
      const poll = this.opts.pollMs ?? 1000;
      if (Date.now() + poll >= until) break;
      await sleep(poll);
    }
    throw new CloudError(`route entry ${label} in ${table} is still ${status ?? 'there'} at the change's deadline (${want === 'gone' ? 'DeleteRouteEntry' : 'CreateRouteEntry'} is asynchronous): the next reconcile looks again`);
  }

  async deleteRoute(net: NetworkRef, r: CloudRoute): Promise<void> {
    const c = this.netClients(net);
    const which: Record<string, string> = r.ref ? { RouteEntryId: r.ref } : { DestinationCidrBlock: r.destination };
    await this.change(r.table, `DeleteRouteEntry ${r.destination} from ${r.table}`, async (until) => {
      try {
        await this.call(c.vpc, 'DeleteRouteEntry', {
          RouteTableId: r.table,
          ...(r.ref ? { RouteEntryId: r.ref } : { DestinationCidrBlock: r.destination, ...(r.target ? { NextHopId: r.target } : {}) }),
        }, until);
      } catch (e) {
        if (codeOf(e) === 'InvalidRouteEntry.NotFound') return; // already gone: the outcome wanted
        throw aliError(`DeleteRouteEntry ${r.destination} from ${r.table} failed`, e);
      }
      // Deleting until it is gone: the VPC takes no other change meanwhile.
      await this.settle(c, r.table, which, 'gone', until);
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
