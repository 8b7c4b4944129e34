// aws-vpc: routes in VPC route tables to each instance's primary network
// interface, through @aws-sdk/client-ec2.
//
// Tables: Backend.RouteTableID when given (every table gets every route of
// the instances in its VPC); otherwise, per instance, the table associated
// with its subnet, else its VPC's main table. Each lease records its VPC and
// tables, so a table keeps being cleaned after its last instance has gone.
//
// Ownership: EC2 routes carry no tag or description, so twill's are inferred
// (see control/routes/routes.ts): a route to an interface or instance, for exactly
// one /SubnetLen subnet of the network, whose target is an instance of the
// network, the target recorded in that subnet's lease, or a blackhole.
// Routes to gateways, NAT, peering, transit gateways are never twill's.
//
// Rate: EC2 allows about 5 mutating calls per second per action. The SDK's
// adaptive retry mode backs off on RequestLimitExceeded and slows the client
// down after throttling; the reconcile keeps a few calls in flight at most.
//
// Limit: the account's "Routes per route table" as Service Quotas applies it
// (GetServiceQuota vpc/L-93826ACB, "Amazon VPC quotas": 50 by default, up to
// 1,000), read through @aws-sdk/client-service-quotas and kept as quota.ts
// says; it needs servicequotas:GetServiceQuota. Without it, or when Service
// Quotas holds no applied value, the documented 50.
import {
  CreateRouteCommand, DeleteRouteCommand, DescribeInstancesCommand, DescribeRouteTablesCommand, EC2Client,
  ModifyNetworkInterfaceAttributeCommand, ReplaceRouteCommand,
  type Filter, type Instance, type RouteTable,
} from '@aws-sdk/client-ec2';
import { GetServiceQuotaCommand, ServiceQuotasClient } from '@aws-sdk/client-service-quotas';
import type { AwsVpcBackend } from '../../../core/config.js';
import { errorMessage } from '../../../core/errors.js';
import {
  CloudError, MEMBER_TAG, RouteLimitError, callError,
  type Cloud, type CloudInstance, type CloudRoute, type DesiredRoute, type InstanceRef, type InstanceState,
  type NetworkRef, type NetworkSnapshot, type RoutePool, type RouteTable as Table,
} from './cloud.js';
import { AccountLimits, type QuotaReading } from './quota.js';

export interface AwsOptions {
  /** default: the SDK's region chain (AWS_REGION, the profile) */
  region?: string;
  /**
   * EC2's endpoint and, unless quotasEndpoint is given, Service Quotas' too:
   * every call goes where it was pointed. Default: the SDK's endpoint chain
   * (AWS_ENDPOINT_URL_EC2 and AWS_ENDPOINT_URL_SERVICE_QUOTAS, AWS_ENDPOINT_URL,
   * the region's endpoints)
   */
  endpoint?: string;
  /** Service Quotas' endpoint, where it differs from endpoint */
  quotasEndpoint?: string;
  /** default: the SDK's credential chain (environment, profile, IAM role) */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** attempts per call including throttled ones; default 10 */
  maxAttempts?: number;
  /** mutating calls in flight at once; default 4 */
  concurrency?: number;
  client?: EC2Client;
  /** how long quota readings are kept (quota.ts) */
  limits?: AccountLimits;
}

/** Service Quotas' code of Amazon VPC's "Routes per route table" ("Amazon VPC quotas", Route tables). */
export const ROUTES_PER_TABLE = { ServiceCode: 'vpc', QuotaCode: 'L-93826ACB' } as const;
const QUOTA_PERMISSION = 'servicequotas:GetServiceQuota';

const STATES: Record<string, InstanceState | undefined> = { pending: 'pending', running: 'running', stopping: 'stopping', stopped: 'stopped' };
/** Instances in these states are members; shutting-down and terminated ones have left. */
const MEMBER_STATES = Object.keys(STATES);
const PAGE = 1000;

const errorName = (e: unknown): string => (typeof e === 'object' && e !== null && 'name' in e ? String((e as { name: unknown }).name) : '');

/** A failed EC2 call, said so that throttling reads as throttling. */
function ec2Error(what: string, e: unknown) {
  if (errorName(e) === 'RequestLimitExceeded' || errorName(e) === 'Throttling') {
    return callError(what, new Error(`EC2 throttled it (${errorName(e)}) through every retry; the next reconcile tries again`));
  }
  return callError(what, e);
}

function tag(i: Instance, key: string): string | undefined {
  return i.Tags?.find((t) => t.Key === key)?.Value;
}

/** The interface at device index 0: the one that carries the instance's private address. */
function primaryEni(i: Instance) {
  return i.NetworkInterfaces?.find((n) => n.Attachment?.DeviceIndex === 0) ?? i.NetworkInterfaces?.[0];
}

export class AwsCloud implements Cloud {
  readonly kind = 'aws' as const;
  readonly ownership = 'inferred' as const;
  readonly canReplace = true;
  readonly concurrency: number;
  readonly ec2: EC2Client;
  readonly quotas: ServiceQuotasClient;
  private readonly limits: AccountLimits;

  constructor(opts: AwsOptions = {}) {
    this.concurrency = opts.concurrency ?? 4;
    const common = {
      ...(opts.region ? { region: opts.region } : {}),
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
    };
    this.ec2 = opts.client ?? new EC2Client({
      ...common,
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      retryMode: 'adaptive',
      maxAttempts: opts.maxAttempts ?? 10,
    });
    const quotasEndpoint = opts.quotasEndpoint ?? opts.endpoint;
    // A few quick tries: a quota that cannot be read costs the reconcile a default, never its time.
    this.quotas = new ServiceQuotasClient({
      ...common,
      ...(quotasEndpoint ? { endpoint: quotasEndpoint } : {}),
      maxAttempts: 2,
      requestHandler: { connectionTimeout: 3_000, requestTimeout: 10_000 },
    });
    this.limits = opts.limits ?? new AccountLimits();
  }

  /** The applied "Routes per route table" of the account in this region, or why it could not be read. */
  private async readQuota(): Promise<QuotaReading> {
    const { ServiceCode, QuotaCode } = ROUTES_PER_TABLE;
    try {
      const r = await this.quotas.send(new GetServiceQuotaCommand({ ServiceCode, QuotaCode }));
      const value = r.Quota?.Value;
      if (typeof value !== 'number' || !(value >= 1)) return { ok: false, denied: false, why: `Service Quotas gave no value for ${ServiceCode}/${QuotaCode}` };
      return { ok: true, limit: Math.floor(value) };
    } catch (e) {
      const name = errorName(e);
      if (name === 'AccessDeniedException' || name === 'AccessDenied') {
        return { ok: false, denied: true, why: `no permission to read the account's quota "Routes per route table" (grant ${QUOTA_PERMISSION})` };
      }
      if (name === 'NoSuchResourceException') {
        return { ok: false, denied: false, why: `Service Quotas holds no applied value for ${ServiceCode}/${QuotaCode} in this region` };
      }
      return { ok: false, denied: false, why: `the quota could not be read (${QUOTA_PERMISSION} ${ServiceCode}/${QuotaCode}): ${errorMessage(e)}` };
    }
  }

  private async instances(filters: Filter[], ids?: string[]): Promise<Instance[]> {
    const out: Instance[] = [];
    let token: string | undefined;
    do {
      const r = await this.ec2.send(new DescribeInstancesCommand({
        ...(ids ? { InstanceIds: ids } : { Filters: filters, MaxResults: PAGE, NextToken: token }),
      }));
      for (const res of r.Reservations ?? []) out.push(...(res.Instances ?? []));
      token = ids ? undefined : r.NextToken;
    } while (token);
    return out;
  }

  private async routeTables(filters: Filter[]): Promise<RouteTable[]> {
    const out: RouteTable[] = [];
    let token: string | undefined;
    do {
      const r = await this.ec2.send(new DescribeRouteTablesCommand({ Filters: filters, MaxResults: 100, NextToken: token }));
      out.push(...(r.RouteTables ?? []));
      token = r.NextToken;
    } while (token);
    return out;
  }

  async snapshot(net: NetworkRef): Promise<NetworkSnapshot> {
    const configured = (net.config.Backend as AwsVpcBackend).RouteTableID ?? [];
    let raw: Instance[];
    try {
      raw = await this.instances([
        { Name: `tag:${MEMBER_TAG}`, Values: [net.name] },
        { Name: 'instance-state-name', Values: MEMBER_STATES },
      ]);
    } catch (e) {
      throw ec2Error(`listing the instances tagged ${MEMBER_TAG}=${net.name} (DescribeInstances) failed`, e);
    }

    // What earlier reconciles recorded: tables (and their VPCs) that may hold routes of instances now gone.
    const recordedTables = new Set<string>();
    const recordedVpcs = new Set<string>();
    for (const l of net.leases) {
      const t = l.backendData.RouteTables;
      const v = l.backendData.VpcId;
      if (typeof t === 'string' && t) for (const id of t.split(',')) recordedTables.add(id);
      if (typeof v === 'string' && v) recordedVpcs.add(v);
    }
    const vpcs = new Set([...raw.flatMap((i) => (i.VpcId ? [i.VpcId] : [])), ...recordedVpcs]);
    let tables: RouteTable[];
    try {
      tables = configured.length > 0
        ? await this.routeTables([{ Name: 'route-table-id', Values: [...new Set([...configured, ...recordedTables])] }])
        : vpcs.size > 0 ? await this.routeTables([{ Name: 'vpc-id', Values: [...vpcs] }]) : [];
    } catch (e) {
      throw ec2Error(`listing the route tables of network ${net.name} (DescribeRouteTables) failed`, e);
    }
    const byId = new Map(tables.flatMap((t) => (t.RouteTableId ? [[t.RouteTableId, t] as const] : [])));
    const bySubnet = new Map<string, string>();
    const mainOf = new Map<string, string>();
    for (const t of tables) {
      for (const a of t.Associations ?? []) {
        if (a.Main && t.VpcId && t.RouteTableId) mainOf.set(t.VpcId, t.RouteTableId);
        else if (a.SubnetId && t.RouteTableId) bySubnet.set(a.SubnetId, t.RouteTableId);
      }
    }

    const managed = new Set<string>();
    const instances: CloudInstance[] = [];
    for (const i of raw) {
      const state = STATES[i.State?.Name ?? ''];
      if (!i.InstanceId || !state) continue;
      const eni = primaryEni(i);
      let mine: string[];
      if (configured.length > 0) {
        // A table routes only to interfaces in its own VPC.
        mine = configured.filter((id) => !i.VpcId || !byId.get(id)?.VpcId || byId.get(id)?.VpcId === i.VpcId);
      } else {
        const t = (i.SubnetId && bySubnet.get(i.SubnetId)) || (i.VpcId && mainOf.get(i.VpcId));
        mine = t ? [t] : [];
      }
      for (const t of mine) managed.add(t);
      const problem = !eni?.NetworkInterfaceId
        ? `instance ${i.InstanceId} has no network interface (yet): its route waits for one`
        : mine.length === 0
          ? `no route table found for instance ${i.InstanceId} (subnet ${i.SubnetId ?? '?'}, VPC ${i.VpcId ?? '?'}): set Backend.RouteTableID or give the VPC a main route table`
          : undefined;
      instances.push({
        id: i.InstanceId,
        state,
        privateIP: i.PrivateIpAddress,
        target: eni?.NetworkInterfaceId,
        tables: mine,
        ...(problem ? { problem } : {}),
        needsPrepare: (eni?.SourceDestCheck ?? i.SourceDestCheck) !== false,
        leaseData: { ...(i.VpcId ? { VpcId: i.VpcId } : {}), RouteTables: mine.join(',') },
      });
    }
    for (const t of configured) managed.add(t);
    for (const t of recordedTables) if (byId.has(t)) managed.add(t);

    const { limit, warning } = await this.limits.limitOf(net, `${ROUTES_PER_TABLE.ServiceCode}/${ROUTES_PER_TABLE.QuotaCode}`, () => this.readQuota());
    const pools: RoutePool[] = [];
    const outTables: Table[] = [];
    const routes: CloudRoute[] = [];
    for (const id of managed) {
      const t = byId.get(id);
      if (!t) continue; // missing: every instance routed there is reported in error by the reconcile
      outTables.push({ id, pool: id });
      // AWS counts every route that was not propagated, the local route included.
      const counted = (t.Routes ?? []).filter((r) => r.Origin !== 'EnableVgwRoutePropagation');
      pools.push({ id, what: `route table ${id}`, ...limit, used: counted.length });
      for (const r of t.Routes ?? []) {
        if (!r.DestinationCidrBlock) continue; // IPv6 and prefix-list routes are never twill's
        const target = r.NetworkInterfaceId ?? r.InstanceId;
        const otherHop = r.GatewayId || r.NatGatewayId || r.TransitGatewayId || r.VpcPeeringConnectionId || r.LocalGatewayId ||
          r.CarrierGatewayId || r.EgressOnlyInternetGatewayId || r.CoreNetworkArn;
        routes.push({
          table: id,
          destination: r.DestinationCidrBlock,
          target: target ?? undefined,
          instanceHop: !!target && !otherHop && r.Origin === 'CreateRoute',
          blackhole: r.State === 'blackhole',
          marked: false,
        });
      }
    }
    return { instances, tables: outTables, pools, routes, ...(warning ? { warnings: [warning] } : {}) };
  }

  async prepareInstance(_net: NetworkRef, inst: CloudInstance): Promise<void> {
    try {
      // Without this the interface drops every packet not addressed to it: the pods' traffic.
      await this.ec2.send(new ModifyNetworkInterfaceAttributeCommand({ NetworkInterfaceId: inst.target, SourceDestCheck: { Value: false } }));
    } catch (e) {
      throw ec2Error(`disabling the source/destination check of ${inst.target} (ModifyNetworkInterfaceAttribute) failed`, e);
    }
  }

  async createRoute(_net: NetworkRef, r: DesiredRoute): Promise<void> {
    try {
      await this.ec2.send(new CreateRouteCommand({ RouteTableId: r.table, DestinationCidrBlock: r.destination, NetworkInterfaceId: r.target }));
    } catch (e) {
      const name = errorName(e);
      if (name === 'RouteLimitExceeded') {
        throw new RouteLimitError(`route table ${r.table} is full: EC2 refused the route (RouteLimitExceeded); raise the quota "Routes per route table" or lower Backend.RouteLimit to match it`);
      }
      if (name === 'RouteAlreadyExists') {
        // Another reconcile got there first. Identical is success; anything else is for the next reconcile to judge.
        const current = await this.currentTarget(r.table, r.destination);
        if (current === r.target) return;
        throw new CloudError(`route ${r.destination} already exists in ${r.table} with target ${current ?? 'unknown'}: the next reconcile decides whether it is twill's`, e);
      }
      throw ec2Error(`CreateRoute ${r.destination} -> ${r.target} in ${r.table} failed`, e);
    }
  }

  private async currentTarget(table: string, destination: string): Promise<string | undefined> {
    const [t] = await this.routeTables([{ Name: 'route-table-id', Values: [table] }]);
    const route = t?.Routes?.find((x) => x.DestinationCidrBlock === destination);
    return route?.NetworkInterfaceId ?? route?.InstanceId;
  }

  async replaceRoute(net: NetworkRef, r: DesiredRoute): Promise<void> {
    try {
      await this.ec2.send(new ReplaceRouteCommand({ RouteTableId: r.table, DestinationCidrBlock: r.destination, NetworkInterfaceId: r.target }));
    } catch (e) {
      // Deleted meanwhile: creating it is what replacing it would have achieved.
      if (errorName(e) === 'InvalidRoute.NotFound') return this.createRoute(net, r);
      throw ec2Error(`ReplaceRoute ${r.destination} -> ${r.target} in ${r.table} failed`, e);
    }
  }

  async deleteRoute(_net: NetworkRef, r: CloudRoute): Promise<void> {
    try {
      await this.ec2.send(new DeleteRouteCommand({ RouteTableId: r.table, DestinationCidrBlock: r.destination }));
    } catch (e) {
      if (errorName(e) === 'InvalidRoute.NotFound') return; // already gone: the outcome wanted
      throw ec2Error(`DeleteRoute ${r.destination} from ${r.table} failed`, e);
    }
  }

  async instanceNetworks(ref: InstanceRef): Promise<string[] | undefined> {
    try {
      const [i] = await this.instances([], [ref.instanceId]);
      const net = i && tag(i, MEMBER_TAG);
      if (!i) return undefined;
      return net ? [net] : [];
    } catch (e) {
      if (errorName(e) === 'InvalidInstanceID.NotFound' || errorName(e) === 'InvalidInstanceID.Malformed') return undefined;
      throw ec2Error(`reading instance ${ref.instanceId} (DescribeInstances) failed`, e);
    }
  }

  async close(): Promise<void> {
    this.ec2.destroy();
    this.quotas.destroy();
  }
}
