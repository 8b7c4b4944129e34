// A small Alibaba Cloud endpoint speaking RPC: Action in the query string,
// HMAC-SHA1 signature checked against the test's secret, JSON answers and
// JSON Code errors (QuotaExceeded, TaskConflict, IncorrectRouteEntryStatus,
// IncorrectStatus.VpcRouteEntry, InvalidRouteEntry.NotFound, Throttling.User,
// Forbidden.RAM). One endpoint serves both products twill uses: ECS
// (DescribeInstances) and VPC (DescribeRouteTableList, DescribeRouteEntryList,
// CreateRouteEntry, DeleteRouteEntry).
//
// Route changes are asynchronous, as Alibaba's VPC API reference says of
// CreateRouteEntry and DeleteRouteEntry ("an asynchronous operation ... you
// can call DescribeRouteEntryList to query the status"; "If the route is in
// the Deleting state, the route is being deleted. If you cannot query the
// route entry, the route entry is deleted."): a new entry is Pending, a
// deleted one Deleting, each for a few describes that show it (pendingPolls,
// deletingPolls), then Available or gone. Meanwhile (same reference, error
// codes):
//   - only an Available entry can be deleted: IncorrectStatus.VpcRouteEntry;
//   - a change in a route table holding a Pending entry:
//     IncorrectRouteEntryStatus ("Some route entry status blocked this
//     operation.": routes in the Pending or Modifying state);
//   - a change in a VPC "in which a vSwitch or another route entry is being
//     created or deleted": TaskConflict.
// Every such refusal counts in `conflicts`: a client that waits for its
// changes to settle, one VPC change at a time, never gets one.
//
// The limit is Alibaba's: 200 custom entries per route table by default
// ("VPC quotas", vpc_quota_route_entrys_num; CreateRouteEntry: "A route table
// can contain up to 200 custom route entries"), routeLimit when a test raises
// or lowers it. Quota Center reads it (API version 2020-05-10, "GetProductQuota":
// ProductCode and QuotaActionCode required, Dimensions.N.Key/Value; the answer's
// Quota.TotalQuota and TotalUsage), with Quota Center's error codes ("Error
// codes", Quota Center API): MissingProductCode, QUOTA.NOT.FOUND for a quota
// that does not exist, QUOTA.DIMENSION.UNSUPPORT for a dimension key it does
// not have, QUOTA.DIMENSION.MISS without the regionId the VPC quotas are set
// per, and RAM.PERMISSION.DENIED (HTTP 400) for a key without
// quotas:GetProductQuota (forbid.GetProductQuota).
import { createHmac, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { FakeCloud } from './fake.js';

export interface AliInstance {
  id: string;
  status: 'Pending' | 'Starting' | 'Running' | 'Stopping' | 'Stopped';
  vpcId: string;
  vSwitchId: string;
  privateIp: string;
  tags: Record<string, string>;
}

export interface AliTable {
  id: string;
  vpcId: string;
  type: 'System' | 'Custom';
  vSwitches: string[];
}

export interface AliEntry {
  id: string;
  tableId: string;
  destination: string;
  type: 'System' | 'Custom';
  /** DescribeRouteEntryList's Status: Pending, Available, Modifying, Deleting */
  status: 'Pending' | 'Available' | 'Deleting';
  nextHopType: string;
  nextHopId: string;
  name: string;
  description: string;
  /** describes left that still show it Pending or Deleting */
  pendingLeft: number;
}

const MUTATING = new Set(['CreateRouteEntry', 'DeleteRouteEntry']);
/** Quota Center's actions (quotas 2020-05-10), served on the same endpoint as ECS and VPC here. */
const QUOTA_ACTIONS = new Set(['GetProductQuota']);
const ROUTE_ENTRIES = { product: 'vpc', quota: 'vpc_quota_route_entrys_num' };
const BUSY = new Set(['TaskConflict', 'IncorrectRouteEntryStatus', 'IncorrectStatus.VpcRouteEntry']);

class AliError extends Error {
  constructor(readonly code: string, message: string, readonly status = 400) {
    super(message);
  }
}

/** RFC 3986 encoding as the RPC signature wants it. */
function enc(s: string): string {
  return encodeURIComponent(s).replace(/!/g, '%21').replace(/'/g, '%27').replace(/\(/g, '%28').replace(/\)/g, '%29').replace(/\*/g, '%2A');
}

export class FakeAli extends FakeCloud {
  protected mutating = MUTATING;
  readonly instances = new Map<string, AliInstance>();
  readonly tables = new Map<string, AliTable>();
  readonly entries = new Map<string, AliEntry>();
  /** custom entries per route table: the quota Quota Center answers, and what CreateRouteEntry enforces */
  routeLimit = 200;
  /** describes that show a new entry Pending before it is Available */
  pendingPolls = 1;
  /** describes that show a deleted entry Deleting before it is gone */
  deletingPolls = 1;
  /** the next N calls of an action answer TaskConflict */
  readonly conflict: Record<string, number> = {};
  /** busy refusals (TaskConflict, IncorrectRouteEntryStatus, IncorrectStatus.VpcRouteEntry), injected or real */
  conflicts = 0;
  /** the next N calls of an action are refused as RAM refuses a key without the permission */
  readonly forbid: Record<string, number> = {};
  private seq = 0;

  constructor(readonly secrets: Record<string, string> = { AKIDFAKEFAKEFAKE: 'fake-secret-for-tests' }) {
    super();
  }

  addTable(t: Partial<AliTable> & { id: string; vpcId: string }): AliTable {
    const table: AliTable = { type: 'Custom', vSwitches: [], ...t };
    this.tables.set(table.id, table);
    // Every table has the system entries of its VPC's vSwitches, which do not count against the limit.
    this.entries.set(`rte-sys-${table.id}`, {
      id: `rte-sys-${table.id}`, tableId: table.id, destination: '192.168.0.0/24', type: 'System', status: 'Available',
      nextHopType: 'local', nextHopId: '', name: '', description: '', pendingLeft: 0,
    });
    return table;
  }

  addInstance(i: Partial<AliInstance> & { id: string; network?: string }): AliInstance {
    this.seq++;
    const { network, ...rest } = i;
    const inst: AliInstance = {
      status: 'Running',
      vpcId: 'vpc-1',
      vSwitchId: 'vsw-a',
      privateIp: `192.168.${this.seq >> 8}.${this.seq & 255}`,
      tags: network ? { 'twill-network': network } : {},
      ...rest,
    };
    this.instances.set(inst.id, inst);
    return inst;
  }

  addEntry(e: Partial<AliEntry> & { tableId: string; destination: string; nextHopId: string }): AliEntry {
    this.seq++;
    const entry: AliEntry = { id: `rte-${this.seq}`, type: 'Custom', status: 'Available', nextHopType: 'Instance', name: '', description: '', pendingLeft: 0, ...e };
    this.entries.set(entry.id, entry);
    return entry;
  }

  /** destination -> next hop, of the custom entries of a table */
  routeMap(tableId: string): Record<string, string> {
    return Object.fromEntries([...this.entries.values()].filter((e) => e.tableId === tableId && e.type === 'Custom').map((e) => [e.destination, e.nextHopId]));
  }

  private checkSignature(q: URLSearchParams, method: string): void {
    const id = q.get('AccessKeyId') ?? '';
    const secret = this.secrets[id];
    if (!secret) throw new AliError('InvalidAccessKeyId.NotFound', 'Specified access key is not found.', 404);
    const pairs = [...q.entries()].filter(([k]) => k !== 'Signature').sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const canonical = pairs.map(([k, v]) => `${enc(k)}=${enc(v)}`).join('&');
    const expected = createHmac('sha1', `${secret}&`).update(`${method}&${enc('/')}&${enc(canonical)}`).digest('base64');
    if (q.get('Signature') !== expected) {
      throw new AliError('SignatureDoesNotMatch', 'Specified signature is not matched with our calculation.', 400);
    }
  }

  protected async handle(req: IncomingMessage, body: string, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const q = req.method === 'POST' ? new URLSearchParams(body) : url.searchParams;
    const action = q.get('Action') ?? '';
    const requestId = randomUUID().toUpperCase();
    const send = (status: number, json: object) => {
      res.writeHead(status, { 'content-type': 'application/json;charset=utf-8' });
      res.end(JSON.stringify({ RequestId: requestId, ...json }));
    };
    const fail = (e: AliError) => send(e.status, { HostId: 'vpc.aliyuncs.com', Code: e.code, Message: e.message, Recommend: 'https://api.aliyun.com/troubleshoot' });
    // Waiting for one entry to be Available is counted apart from listing a table.
    this.count(action === 'DescribeRouteEntryList' && q.get('RouteEntryId') ? 'DescribeRouteEntryList(wait)' : action);
    if (await this.dropped(action)) return;
    try {
      this.checkSignature(q, req.method ?? 'GET');
      if (this.takeThrottle(action)) throw new AliError('Throttling.User', 'Request was denied due to user flow control.', 400);
      if ((this.forbid[action] ?? 0) > 0) {
        this.forbid[action]!--;
        if (QUOTA_ACTIONS.has(action)) throw new AliError('RAM.PERMISSION.DENIED', 'You do not have access.');
        throw new AliError('Forbidden.RAM', 'User not authorized to operate on the specified resource, or this API doesn\'t support RAM.', 403);
      }
      if ((this.conflict[action] ?? 0) > 0) {
        this.conflict[action]!--;
        throw new AliError('TaskConflict', 'The operation is too frequent, please wait a moment and try again.', 400);
      }
      send(200, this.act(action, q));
    } catch (e) {
      if (e instanceof AliError) {
        if (BUSY.has(e.code)) this.conflicts++;
        return fail(e);
      }
      throw e;
    }
  }

  private act(action: string, q: URLSearchParams): object {
    if (QUOTA_ACTIONS.has(action)) return this.productQuota(q);
    if (!q.get('RegionId')) throw new AliError('MissingRegionId', 'RegionId is mandatory for this action.');
    switch (action) {
      case 'DescribeInstances': return this.describeInstances(q);
      case 'DescribeRouteTableList': return this.describeTables(q);
      case 'DescribeRouteEntryList': return this.describeEntries(q);
      case 'CreateRouteEntry': return this.createEntry(q);
      case 'DeleteRouteEntry': return this.deleteEntry(q);
      default: throw new AliError('InvalidAction.NotFound', `Specified api is not found, please check your url and method.`, 404);
    }
  }

  /** Quota Center's GetProductQuota, for the one quota this stand-in has: the route entries per route table. */
  private productQuota(q: URLSearchParams): object {
    if (q.get('Version') !== '2020-05-10') throw new AliError('InvalidVersion', `Specified parameter Version ${q.get('Version') ?? '(none)'} is not valid for Quota Center.`);
    const product = q.get('ProductCode');
    if (!product) throw new AliError('MissingProductCode', 'ProductCode is missing');
    const code = q.get('QuotaActionCode');
    if (product !== ROUTE_ENTRIES.product || code !== ROUTE_ENTRIES.quota) throw new AliError('QUOTA.NOT.FOUND', 'The quota does not exist.');
    const dims = new Map<string, string>();
    for (let n = 1; q.has(`Dimensions.${n}.Key`); n++) dims.set(q.get(`Dimensions.${n}.Key`) as string, q.get(`Dimensions.${n}.Value`) ?? '');
    for (const k of dims.keys()) if (k !== 'regionId') throw new AliError('QUOTA.DIMENSION.UNSUPPORT', 'The entered quota dimension key is not supported.');
    if (!dims.get('regionId')) throw new AliError('QUOTA.DIMENSION.MISS', 'The entered quota dimension is incomplete,Please complete the dimension.');
    const fullest = Math.max(0, ...[...this.tables.keys()].map((t) => [...this.entries.values()].filter((e) => e.tableId === t && e.type === 'Custom').length));
    return {
      Quota: {
        ProductCode: product, QuotaActionCode: code, QuotaName: 'Maximum number of custom route entries per route table',
        TotalQuota: this.routeLimit, TotalUsage: fullest, QuotaUnit: 'Count', Adjustable: true, Consumable: true,
        QuotaType: 'normal', QuotaCategory: 'CommonQuota', Dimensions: Object.fromEntries(dims),
      },
    };
  }

  private describeInstances(q: URLSearchParams): object {
    let list = [...this.instances.values()];
    const ids = q.get('InstanceIds');
    if (ids) {
      const want = JSON.parse(ids) as string[];
      list = list.filter((i) => want.includes(i.id));
    }
    for (let n = 1; q.has(`Tag.${n}.Key`); n++) {
      const k = q.get(`Tag.${n}.Key`) as string;
      const v = q.get(`Tag.${n}.Value`);
      list = list.filter((i) => k in i.tags && (v === null || i.tags[k] === v));
    }
    const max = Math.min(Number(q.get('MaxResults') ?? '10'), 100);
    const start = Number(q.get('NextToken') || '0');
    const items = list.slice(start, start + max);
    const next = start + max < list.length ? String(start + max) : '';
    return {
      TotalCount: list.length,
      NextToken: next,
      Instances: {
        Instance: items.map((i) => ({
          InstanceId: i.id,
          InstanceName: i.id,
          Status: i.status,
          RegionId: 'cn-hangzhou',
          InstanceNetworkType: 'vpc',
          VpcAttributes: { VpcId: i.vpcId, VSwitchId: i.vSwitchId, PrivateIpAddress: { IpAddress: [i.privateIp] } },
          Tags: { Tag: Object.entries(i.tags).map(([TagKey, TagValue]) => ({ TagKey, TagValue })) },
        })),
      },
    };
  }

  private describeTables(q: URLSearchParams): object {
    let list = [...this.tables.values()];
    const vpc = q.get('VpcId');
    if (vpc) list = list.filter((t) => t.vpcId === vpc);
    const id = q.get('RouteTableId');
    if (id) list = list.filter((t) => t.id === id);
    const size = Math.min(Number(q.get('PageSize') ?? '10'), 50);
    const pageNo = Number(q.get('PageNumber') ?? '1');
    const items = list.slice((pageNo - 1) * size, pageNo * size);
    return {
      Success: true,
      Code: '200',
      TotalCount: list.length,
      PageNumber: pageNo,
      PageSize: size,
      RouterTableList: {
        RouterTableListType: items.map((t) => ({
          RouteTableId: t.id, VpcId: t.vpcId, RouteTableType: t.type, RouterType: 'VRouter', RouterId: `vrt-${t.vpcId}`, Status: 'Available',
          VSwitchIds: { VSwitchId: t.vSwitches },
        })),
      },
    };
  }

  private describeEntries(q: URLSearchParams): object {
    const tableId = q.get('RouteTableId') ?? '';
    if (!this.tables.has(tableId)) throw new AliError('InvalidRouteTableId.NotFound', 'Specified route table does not exist.');
    let list = [...this.entries.values()].filter((e) => e.tableId === tableId);
    const id = q.get('RouteEntryId');
    if (id) list = list.filter((e) => e.id === id);
    const dest = q.get('DestinationCidrBlock');
    if (dest) list = list.filter((e) => e.destination === dest);
    const max = Math.min(Number(q.get('MaxResult') ?? '50'), 100);
    const start = Number(q.get('NextToken') || '0');
    const items = list.slice(start, start + max);
    const next = start + max < list.length ? String(start + max) : '';
    const out = items.map((e) => {
      const shown = e.status;
      // A Pending entry becomes Available after being seen Pending pendingPolls
      // times; a Deleting one is gone after deletingPolls.
      if (e.status === 'Pending' && --e.pendingLeft <= 0) e.status = 'Available';
      if (e.status === 'Deleting' && --e.pendingLeft <= 0) this.entries.delete(e.id);
      return {
        RouteEntryId: e.id, RouteTableId: e.tableId, DestinationCidrBlock: e.destination, Type: e.type, Status: shown, IpVersion: 'ipv4',
        RouteEntryName: e.name, Description: e.description,
        NextHops: { NextHop: e.nextHopType === 'local' ? [] : [{ NextHopType: e.nextHopType, NextHopId: e.nextHopId, Enabled: 1, Weight: 0 }] },
      };
    });
    return { NextToken: next, TotalCount: list.length, RouteEntrys: { RouteEntry: out } };
  }

  /** Refuses a change to a table while its VPC is still settling an earlier one. */
  private checkIdle(tableId: string, vpcId: string): void {
    const unsettled = [...this.entries.values()].filter((e) => e.status !== 'Available');
    if (unsettled.some((e) => e.tableId === tableId && e.status === 'Pending')) {
      throw new AliError('IncorrectRouteEntryStatus', 'Some route entry status blocked this operation.');
    }
    if (unsettled.some((e) => this.tables.get(e.tableId)?.vpcId === vpcId)) {
      throw new AliError('TaskConflict', 'The operation is too frequent, please wait a moment and try again.');
    }
  }

  private createEntry(q: URLSearchParams): object {
    const tableId = q.get('RouteTableId') ?? '';
    const table = this.tables.get(tableId);
    if (!table) throw new AliError('InvalidRouteTableId.NotFound', 'Specified route table does not exist.');
    const dest = q.get('DestinationCidrBlock') ?? '';
    const hopType = q.get('NextHopType') ?? '';
    const hop = q.get('NextHopId') ?? '';
    if (hopType === 'Instance') {
      const inst = this.instances.get(hop);
      if (!inst || inst.vpcId !== table.vpcId) throw new AliError('InvalidInstanceId.NotFound', `The specified instance ${hop} does not exist in the VPC.`);
    }
    this.checkIdle(tableId, table.vpcId);
    if ([...this.entries.values()].some((e) => e.tableId === tableId && e.destination === dest)) {
      throw new AliError('RouterEntryConflict.Duplicated', 'Specified CIDR block is already exists.');
    }
    const used = [...this.entries.values()].filter((e) => e.tableId === tableId && e.type === 'Custom').length;
    if (used >= this.routeLimit) throw new AliError('QuotaExceeded', `Route entry quota exceeded in this route table (${this.routeLimit}).`);
    this.seq++;
    const entry: AliEntry = {
      id: `rte-${this.seq}`, tableId, destination: dest, type: 'Custom', status: this.pendingPolls > 0 ? 'Pending' : 'Available',
      nextHopType: hopType, nextHopId: hop, name: q.get('RouteEntryName') ?? '', description: q.get('Description') ?? '', pendingLeft: this.pendingPolls,
    };
    this.entries.set(entry.id, entry);
    return { RouteEntryId: entry.id };
  }

  private deleteEntry(q: URLSearchParams): object {
    const id = q.get('RouteEntryId');
    const tableId = q.get('RouteTableId');
    const dest = q.get('DestinationCidrBlock');
    const entry = [...this.entries.values()].find((e) => (id ? e.id === id : e.tableId === tableId && e.destination === dest));
    if (!entry || entry.type !== 'Custom') throw new AliError('InvalidRouteEntry.NotFound', 'Specified route entry does not exist.');
    if (entry.status !== 'Available') throw new AliError('IncorrectStatus.VpcRouteEntry', 'The status of the specified routeEntry is invalid.');
    this.checkIdle(entry.tableId, this.tables.get(entry.tableId)?.vpcId ?? '');
    if (this.deletingPolls > 0) {
      entry.status = 'Deleting';
      entry.pendingLeft = this.deletingPolls;
    } else {
      this.entries.delete(entry.id);
    }
    return {};
  }
}
