// A small EC2 endpoint speaking the Query API: form-encoded Action=...,
// XML answers with EC2's element names, and EC2's error XML and codes
// (RouteLimitExceeded, RouteAlreadyExists, InvalidRoute.NotFound,
// RequestLimitExceeded as HTTP 503). Route tables enforce their limit the way
// AWS counts it: every route that is not propagated.
// IAM (test/fakes/iam.ts) on every call: ec2:<Action> on the route table for
// CreateRoute, ReplaceRoute and DeleteRoute, on the interface for
// ModifyNetworkInterfaceAttribute, on "*" for the Describe calls, which have
// no resource-level permissions (Service Authorization Reference, "Actions,
// resources, and condition keys for Amazon EC2"); refused as EC2 refuses:
// UnauthorizedOperation, HTTP 403 ("Troubleshoot API request errors",
// Amazon EC2 developer guide), or AuthFailure for an unknown access key.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { FakeCloud } from './fake.js';
import { Iam, type Call, type Scope } from './iam.js';

export interface Ec2Instance {
  id: string;
  state: 'pending' | 'running' | 'stopping' | 'stopped' | 'shutting-down' | 'terminated';
  privateIp: string;
  subnetId: string;
  vpcId: string;
  eniId: string;
  sourceDestCheck: boolean;
  tags: Record<string, string>;
}

export interface Ec2Route {
  destinationCidrBlock: string;
  networkInterfaceId?: string;
  instanceId?: string;
  gatewayId?: string;
  vpcPeeringConnectionId?: string;
  origin: 'CreateRouteTable' | 'CreateRoute' | 'EnableVgwRoutePropagation';
  /** forced blackhole, e.g. a gateway that was deleted; routes to missing interfaces are blackholes by themselves */
  blackhole?: boolean;
}

export interface Ec2RouteTable {
  id: string;
  vpcId: string;
  main: boolean;
  subnets: string[];
  routes: Ec2Route[];
}

const STATE_CODES: Record<Ec2Instance['state'], number> = { pending: 0, running: 16, 'shutting-down': 32, terminated: 48, stopping: 64, stopped: 80 };
const MUTATING = new Set(['CreateRoute', 'ReplaceRoute', 'DeleteRoute', 'ModifyNetworkInterfaceAttribute']);

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const el = (name: string, v: string | number | boolean | undefined) => (v === undefined ? '' : `<${name}>${esc(String(v))}</${name}>`);
const set = (name: string, items: string[]) => `<${name}>${items.map((i) => `<item>${i}</item>`).join('')}</${name}>`;

/** Thrown inside a handler; answered as EC2's error XML. */
class Ec2Error extends Error {
  constructor(readonly code: string, message: string, readonly status = 400) {
    super(message);
  }
}

/** Filter.N.Name / Filter.N.Value.M, as the SDK sends them. */
function filters(p: URLSearchParams): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (let n = 1; p.has(`Filter.${n}.Name`); n++) {
    const values: string[] = [];
    for (let m = 1; p.has(`Filter.${n}.Value.${m}`); m++) values.push(p.get(`Filter.${n}.Value.${m}`) as string);
    out.set(p.get(`Filter.${n}.Name`) as string, values);
  }
  return out;
}

/** The calls IAM authorizes for one EC2 request. */
function ec2Calls(action: string, p: URLSearchParams, s: Scope): Call[] {
  const arn = (type: string, id: string | null) => `arn:${s.partition}:ec2:${s.region}:${s.account}:${type}/${id ?? ''}`;
  if (['CreateRoute', 'ReplaceRoute', 'DeleteRoute'].includes(action)) return [{ action: `ec2:${action}`, resource: arn('route-table', p.get('RouteTableId')) }];
  if (action === 'ModifyNetworkInterfaceAttribute') return [{ action: `ec2:${action}`, resource: arn('network-interface', p.get('NetworkInterfaceId')) }];
  return [{ action: `ec2:${action}`, resource: '*' }];
}

function indexed(p: URLSearchParams, prefix: string): string[] {
  const out: string[] = [];
  for (let n = 1; p.has(`${prefix}.${n}`); n++) out.push(p.get(`${prefix}.${n}`) as string);
  return out;
}

export class FakeEc2 extends FakeCloud {
  protected mutating = MUTATING;
  readonly instances = new Map<string, Ec2Instance>();
  readonly tables = new Map<string, Ec2RouteTable>();
  /** routes per table (non-propagated), as AWS counts them */
  routeLimit = 50;
  /** who may call what: the test's admin keys, or the serverless world's IAM (functions' grants) */
  iam = new Iam();
  private seq = 0;

  // ---- set-up helpers for tests ----

  addTable(t: Partial<Ec2RouteTable> & { id: string; vpcId: string }): Ec2RouteTable {
    const table: Ec2RouteTable = {
      main: false,
      subnets: [],
      routes: [{ destinationCidrBlock: '172.31.0.0/16', gatewayId: 'local', origin: 'CreateRouteTable' }],
      ...t,
    };
    this.tables.set(table.id, table);
    return table;
  }

  addInstance(i: Partial<Ec2Instance> & { id: string; network?: string }): Ec2Instance {
    this.seq++;
    const { network, ...rest } = i;
    const inst: Ec2Instance = {
      state: 'running',
      privateIp: `172.31.${this.seq >> 8}.${this.seq & 255}`,
      subnetId: 'subnet-a',
      vpcId: 'vpc-1',
      eniId: `eni-${i.id.replace(/^i-/, '')}`,
      sourceDestCheck: true,
      tags: network ? { 'twill-network': network } : {},
      ...rest,
    };
    this.instances.set(inst.id, inst);
    return inst;
  }

  routesOf(tableId: string): Ec2Route[] {
    return this.tables.get(tableId)?.routes ?? [];
  }

  /** destination -> target, of the routes a tool made (not the local route) */
  routeMap(tableId: string): Record<string, string> {
    return Object.fromEntries(
      this.routesOf(tableId)
        .filter((r) => r.origin === 'CreateRoute')
        .map((r) => [r.destinationCidrBlock, r.networkInterfaceId ?? r.instanceId ?? r.gatewayId ?? r.vpcPeeringConnectionId ?? '?']),
    );
  }

  // ---- the wire protocol ----

  private isBlackhole(r: Ec2Route): boolean {
    if (r.blackhole) return true;
    const eni = r.networkInterfaceId;
    const inst = r.instanceId;
    if (!eni && !inst) return false;
    const owner = [...this.instances.values()].find((i) => (eni ? i.eniId === eni : i.id === inst));
    return !owner || owner.state === 'terminated' || owner.state === 'shutting-down' || owner.state === 'stopped';
  }

  protected async handle(req: IncomingMessage, body: string, res: ServerResponse): Promise<void> {
    const p = new URLSearchParams(req.method === 'GET' ? (req.url ?? '').split('?')[1] ?? '' : body);
    const action = p.get('Action') ?? '';
    const requestId = randomUUID();
    const reply = (status: number, xml: string) => {
      res.writeHead(status, { 'content-type': 'text/xml;charset=UTF-8' });
      res.end(`<?xml version="1.0" encoding="UTF-8"?>\n${xml}`);
    };
    const fail = (e: Ec2Error) =>
      reply(e.status, `<Response><Errors><Error><Code>${esc(e.code)}</Code><Message>${esc(e.message)}</Message></Error></Errors><RequestID>${requestId}</RequestID></Response>`);
    this.count(action);
    if (await this.dropped(action)) return;
    if (!(req.headers.authorization ?? '').startsWith('AWS4-HMAC-SHA256 Credential=')) {
      return fail(new Ec2Error('AuthFailure', 'AWS was not able to validate the provided access credentials', 401));
    }
    const refused = this.iam.authorize(req.headers.authorization, (s) => ec2Calls(action, p, s));
    if (refused?.kind === 'unknown-key') return fail(new Ec2Error('AuthFailure', 'AWS was not able to validate the provided access credentials', 401));
    if (refused) {
      const encoded = Buffer.from(JSON.stringify({ allowed: false, action: refused.action, resource: refused.resource })).toString('base64url');
      return fail(new Ec2Error('UnauthorizedOperation', `You are not authorized to perform this operation. ${refused.message}. Encoded authorization failure message: ${encoded}`, 403));
    }
    if (this.takeThrottle(action)) return fail(new Ec2Error('RequestLimitExceeded', 'Request limit exceeded.', 503));
    try {
      const inner = this.act(action, p);
      reply(200, `<${action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>${requestId}</requestId>${inner}</${action}Response>`);
    } catch (e) {
      if (e instanceof Ec2Error) return fail(e);
      throw e;
    }
  }

  private page<T>(items: T[], p: URLSearchParams): { items: T[]; next?: string } {
    const start = Number(p.get('NextToken') ?? '0');
    const max = Number(p.get('MaxResults') ?? '1000');
    const end = start + max;
    return { items: items.slice(start, end), next: end < items.length ? String(end) : undefined };
  }

  private act(action: string, p: URLSearchParams): string {
    switch (action) {
      case 'DescribeInstances': return this.describeInstances(p);
      case 'DescribeRouteTables': return this.describeRouteTables(p);
      case 'CreateRoute': return this.createRoute(p);
      case 'ReplaceRoute': return this.replaceRoute(p);
      case 'DeleteRoute': return this.deleteRoute(p);
      case 'ModifyNetworkInterfaceAttribute': return this.modifyEni(p);
      default: throw new Ec2Error('InvalidAction', `The action ${action} is not valid for this web service.`);
    }
  }

  private describeInstances(p: URLSearchParams): string {
    const f = filters(p);
    const ids = indexed(p, 'InstanceId');
    for (const id of ids) {
      if (!this.instances.has(id)) throw new Ec2Error('InvalidInstanceID.NotFound', `The instance ID '${id}' does not exist`);
    }
    let list = [...this.instances.values()];
    if (ids.length) list = list.filter((i) => ids.includes(i.id));
    for (const [name, values] of f) {
      if (name.startsWith('tag:')) list = list.filter((i) => values.includes(i.tags[name.slice(4)] ?? '\u0000'));
      else if (name === 'instance-state-name') list = list.filter((i) => values.includes(i.state));
      else if (name === 'instance-id') list = list.filter((i) => values.includes(i.id));
      else throw new Ec2Error('InvalidParameterValue', `The filter '${name}' is invalid`);
    }
    const { items, next } = this.page(list, p);
    const inst = (i: Ec2Instance) => {
      const gone = i.state === 'terminated';
      return [
        el('instanceId', i.id),
        `<instanceState>${el('code', STATE_CODES[i.state])}${el('name', i.state)}</instanceState>`,
        gone ? '' : el('privateIpAddress', i.privateIp),
        gone ? '' : el('subnetId', i.subnetId),
        gone ? '' : el('vpcId', i.vpcId),
        gone ? '' : el('sourceDestCheck', i.sourceDestCheck),
        gone
          ? '<networkInterfaceSet/>'
          : set('networkInterfaceSet', [
              el('networkInterfaceId', i.eniId) + el('subnetId', i.subnetId) + el('vpcId', i.vpcId) + el('privateIpAddress', i.privateIp) +
                el('sourceDestCheck', i.sourceDestCheck) + `<attachment>${el('attachmentId', `eni-attach-${i.id}`)}${el('deviceIndex', 0)}${el('status', 'attached')}</attachment>`,
            ]),
        set('tagSet', Object.entries(i.tags).map(([k, v]) => el('key', k) + el('value', v))),
      ].join('');
    };
    // One reservation per instance, as instances launched one at a time have.
    const reservations = items.map((i) => el('reservationId', `r-${i.id}`) + el('ownerId', '123456789012') + set('instancesSet', [inst(i)]));
    return set('reservationSet', reservations) + el('nextToken', next);
  }

  private describeRouteTables(p: URLSearchParams): string {
    const f = filters(p);
    const ids = indexed(p, 'RouteTableId');
    for (const id of ids) {
      if (!this.tables.has(id)) throw new Ec2Error('InvalidRouteTableID.NotFound', `The routeTable ID '${id}' does not exist`);
    }
    let list = [...this.tables.values()];
    if (ids.length) list = list.filter((t) => ids.includes(t.id));
    let destFilter: string[] | undefined;
    for (const [name, values] of f) {
      if (name === 'route-table-id') list = list.filter((t) => values.includes(t.id));
      else if (name === 'vpc-id') list = list.filter((t) => values.includes(t.vpcId));
      else if (name === 'association.subnet-id') list = list.filter((t) => t.subnets.some((s) => values.includes(s)));
      else if (name === 'association.main') list = list.filter((t) => values.includes(String(t.main)));
      else if (name === 'route.destination-cidr-block') {
        destFilter = values;
        list = list.filter((t) => t.routes.some((r) => values.includes(r.destinationCidrBlock)));
      } else throw new Ec2Error('InvalidParameterValue', `The filter '${name}' is invalid`);
    }
    void destFilter; // AWS filters tables, not routes: a matching table comes with all its routes
    const { items, next } = this.page(list, p);
    const table = (t: Ec2RouteTable) => {
      const routes = t.routes.map((r) =>
        [
          el('destinationCidrBlock', r.destinationCidrBlock),
          el('gatewayId', r.gatewayId),
          el('instanceId', r.instanceId ?? (r.networkInterfaceId ? [...this.instances.values()].find((i) => i.eniId === r.networkInterfaceId && i.state !== 'terminated')?.id : undefined)),
          r.instanceId || r.networkInterfaceId ? el('instanceOwnerId', '123456789012') : '',
          el('networkInterfaceId', r.networkInterfaceId ?? (r.instanceId ? this.instances.get(r.instanceId)?.eniId : undefined)),
          el('vpcPeeringConnectionId', r.vpcPeeringConnectionId),
          el('state', this.isBlackhole(r) ? 'blackhole' : 'active'),
          el('origin', r.origin),
        ].join(''),
      );
      const assoc = [
        ...(t.main ? [el('routeTableAssociationId', `rtbassoc-${t.id}-main`) + el('routeTableId', t.id) + el('main', true)] : []),
        ...t.subnets.map((s) => el('routeTableAssociationId', `rtbassoc-${t.id}-${s}`) + el('routeTableId', t.id) + el('subnetId', s) + el('main', false)),
      ].map((a) => a + '<associationState><state>associated</state></associationState>');
      return el('routeTableId', t.id) + el('vpcId', t.vpcId) + el('ownerId', '123456789012') + set('routeSet', routes) + set('associationSet', assoc) + '<tagSet/>';
    };
    return set('routeTableSet', items.map(table)) + el('nextToken', next);
  }

  private table(p: URLSearchParams): Ec2RouteTable {
    const id = p.get('RouteTableId') ?? '';
    const t = this.tables.get(id);
    if (!t) throw new Ec2Error('InvalidRouteTableID.NotFound', `The routeTable ID '${id}' does not exist`);
    return t;
  }

  private target(p: URLSearchParams): Pick<Ec2Route, 'networkInterfaceId' | 'instanceId' | 'gatewayId'> {
    const eni = p.get('NetworkInterfaceId') ?? undefined;
    const inst = p.get('InstanceId') ?? undefined;
    const gw = p.get('GatewayId') ?? undefined;
    if ([eni, inst, gw].filter(Boolean).length !== 1) {
      throw new Ec2Error('InvalidParameterCombination', 'The request must contain exactly one of gatewayId, natGatewayId, networkInterfaceId, vpcPeeringConnectionId, egressOnlyInternetGatewayId, transitGatewayId, localGatewayId, carrierGatewayId, coreNetworkArn or instanceId');
    }
    if (eni && ![...this.instances.values()].some((i) => i.eniId === eni && i.state !== 'terminated')) {
      throw new Ec2Error('InvalidNetworkInterfaceID.NotFound', `The networkInterface ID '${eni}' does not exist`);
    }
    return { networkInterfaceId: eni, instanceId: inst, gatewayId: gw };
  }

  private createRoute(p: URLSearchParams): string {
    const t = this.table(p);
    const dest = p.get('DestinationCidrBlock') ?? '';
    const target = this.target(p);
    if (t.routes.some((r) => r.destinationCidrBlock === dest)) {
      throw new Ec2Error('RouteAlreadyExists', `The route identified by ${dest} already exists.`);
    }
    const used = t.routes.filter((r) => r.origin !== 'EnableVgwRoutePropagation').length;
    if (used >= this.routeLimit) throw new Ec2Error('RouteLimitExceeded', 'The maximum number of routes has been reached.');
    t.routes.push({ destinationCidrBlock: dest, ...target, origin: 'CreateRoute' });
    return el('return', true);
  }

  private replaceRoute(p: URLSearchParams): string {
    const t = this.table(p);
    const dest = p.get('DestinationCidrBlock') ?? '';
    const target = this.target(p);
    const i = t.routes.findIndex((r) => r.destinationCidrBlock === dest);
    if (i < 0) throw new Ec2Error('InvalidRoute.NotFound', `no route with destination-cidr-block ${dest} in route table ${t.id}`);
    t.routes[i] = { destinationCidrBlock: dest, ...target, origin: 'CreateRoute' };
    return el('return', true);
  }

  private deleteRoute(p: URLSearchParams): string {
    const t = this.table(p);
    const dest = p.get('DestinationCidrBlock') ?? '';
    const i = t.routes.findIndex((r) => r.destinationCidrBlock === dest);
    if (i < 0) throw new Ec2Error('InvalidRoute.NotFound', `no route with destination-cidr-block ${dest} in route table ${t.id}`);
    t.routes.splice(i, 1);
    return el('return', true);
  }

  private modifyEni(p: URLSearchParams): string {
    const eni = p.get('NetworkInterfaceId') ?? '';
    const inst = [...this.instances.values()].find((i) => i.eniId === eni);
    if (!inst) throw new Ec2Error('InvalidNetworkInterfaceID.NotFound', `The networkInterface ID '${eni}' does not exist`);
    const v = p.get('SourceDestCheck.Value');
    if (v !== null) inst.sourceDestCheck = v === 'true';
    return el('return', true);
  }
}
