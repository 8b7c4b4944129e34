// Instance events from the clouds, parsed once at the edge. An event is only a
// poke: it names an instance and a state, and the networks it may concern are
// reconciled in full. So a duplicated, lost or reordered event does no harm:
// every poke compares the whole cloud with the whole store, and the periodic
// reconcile catches what no event reported.
//
// Shapes accepted (extra fields are ignored, the fields used are checked):
//   AWS   EventBridge "EC2 Instance State-change Notification" (source aws.ec2)
//   GCE   a Cloud Audit Logs (Admin Activity) entry for compute instances,
//         as a Pub/Sub push delivers it: {message: {data: base64(LogEntry)}};
//         a bare LogEntry is accepted too. Only the entry that ends an
//         operation (operation.last) is acted on, or one without an operation.
//   Ali   ECS "Instance:StateChange", from CloudMonitor (product ECS, content)
//         or from EventBridge as a CloudEvent (type ecs:Instance:StateChange, data).
// The serverless handlers are thin adapters over parseEvent, networksToReconcile
// and handleEvent.
import { z } from 'zod';
import type { NetConf } from '../../core/config.js';
import { TwillError, errorMessage } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import type { CloudName } from '../../core/backends/index.js';
import { BACKEND_OF_CLOUD, type Cloud, type CloudBackendType, type InstanceRef } from './clouds/cloud.js';
import type { ReconcileReport } from './routes.js';
import type { Store } from '../store/store.js';

/** the cloud an event comes from (core/backends/spec.ts CLOUD_NAMES) */
export type EventCloud = CloudName;
/** What happened to the instance, in the same words for every cloud; 'changed' is a label or tag change. */
export type EventState = 'pending' | 'running' | 'stopping' | 'stopped' | 'terminated' | 'changed';

export interface InstanceEvent extends InstanceRef {
  cloud: EventCloud;
  state: EventState;
  /** the state or method as the cloud wrote it */
  rawState: string;
  /** when the cloud says it happened */
  time?: string;
  /** the cloud's id of the event, for logs */
  eventId?: string;
}

export type ParsedEvent = { kind: 'instance'; event: InstanceEvent } | { kind: 'ignored'; reason: string };

/** A malformed event: refused before anything changes, with what was wrong in it. */
export class EventError extends TwillError {
  constructor(message: string) {
    super('InvalidEvent', message);
  }
}

/** the backend type whose networks an event of each cloud concerns */
export const EVENT_BACKEND: Readonly<Record<EventCloud, CloudBackendType>> = BACKEND_OF_CLOUD;

/** Events are small; anything larger is not one of these. */
const MAX_EVENT_BYTES = 256 * 1024;

function issues(what: string, e: z.ZodError): EventError {
  const detail = e.issues.map((i) => `${i.path.join('.') || '(event)'}: ${i.message}`).join('; ');
  return new EventError(`${what}: ${detail}`);
}

function parseWith<T extends z.ZodType>(schema: T, value: unknown, what: string): z.infer<T> {
  const r = schema.safeParse(value);
  if (!r.success) throw issues(what, r.error);
  return r.data;
}

// ---- AWS ----

const EC2_STATES = { pending: 'pending', running: 'running', 'shutting-down': 'terminated', terminated: 'terminated', stopping: 'stopping', stopped: 'stopped' } as const;

const ec2Schema = z.object({
  source: z.literal('aws.ec2'),
  'detail-type': z.literal('EC2 Instance State-change Notification', { error: 'expected "EC2 Instance State-change Notification"' }),
  id: z.string().optional(),
  time: z.string().optional(),
  region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, 'expected an AWS region such as us-east-1'),
  detail: z.object({
    'instance-id': z.string().regex(/^i-[0-9a-f]{8,17}$/, 'expected an instance id such as i-1234567890abcdef0'),
    state: z.enum(Object.keys(EC2_STATES) as [keyof typeof EC2_STATES, ...(keyof typeof EC2_STATES)[]]),
  }),
});

export function parseEc2Event(value: unknown): InstanceEvent {
  const e = parseWith(ec2Schema, value, 'EC2 state-change event');
  return {
    cloud: 'aws',
    instanceId: e.detail['instance-id'],
    state: EC2_STATES[e.detail.state],
    rawState: e.detail.state,
    region: e.region,
    ...(e.time ? { time: e.time } : {}),
    ...(e.id ? { eventId: e.id } : {}),
  };
}

// ---- GCE ----

const GCE_METHODS: Record<string, EventState> = {
  insert: 'running', start: 'running', resume: 'running',
  stop: 'stopped', suspend: 'stopped',
  delete: 'terminated',
  setLabels: 'changed',
};

const pushSchema = z.object({
  message: z.object({
    data: z.string().min(1, 'is empty: expected a base64 audit log entry'),
    messageId: z.string().optional(),
    message_id: z.string().optional(),
    publishTime: z.string().optional(),
  }),
  subscription: z.string().optional(),
});

const auditSchema = z.object({
  protoPayload: z.object({
    methodName: z.string().min(1),
    resourceName: z.string().regex(/^projects\/[^/]+\/zones\/[^/]+\/instances\/[^/]+$/, 'expected projects/PROJECT/zones/ZONE/instances/NAME'),
    serviceName: z.string().optional(),
  }),
  resource: z.object({
    type: z.string().optional(),
    labels: z.object({ instance_id: z.string().regex(/^\d+$/, 'expected a numeric instance id').optional(), project_id: z.string().optional(), zone: z.string().optional() }).optional(),
  }).optional(),
  operation: z.object({ id: z.string().optional(), first: z.boolean().optional(), last: z.boolean().optional() }).optional(),
  timestamp: z.string().optional(),
  insertId: z.string().optional(),
});

/** A bare Cloud Audit Logs entry for a compute instance. */
export function parseGceAuditEntry(value: unknown): ParsedEvent {
  const e = parseWith(auditSchema, value, 'GCE audit log entry');
  const method = e.protoPayload.methodName;
  const m = /(?:^|\.)compute\.instances\.(\w+)$/.exec(method);
  const state = m ? GCE_METHODS[m[1] as string] : undefined;
  if (!state) return { kind: 'ignored', reason: `method ${method} does not change which instances run` };
  if (e.operation && e.operation.last !== true) {
    return { kind: 'ignored', reason: `operation ${e.operation.id ?? '?'} is not finished: waiting for the entry with operation.last` };
  }
  const [, project, , zone, , name] = e.protoPayload.resourceName.split('/') as [string, string, string, string, string, string];
  return {
    kind: 'instance',
    event: {
      cloud: 'gce',
      // The numeric id is the node id; without it (an entry that lacks the label), the name still finds the instance.
      instanceId: e.resource?.labels?.instance_id ?? name,
      name,
      zone,
      project,
      state,
      rawState: method,
      ...(e.timestamp ? { time: e.timestamp } : {}),
      ...(e.insertId ? { eventId: e.insertId } : {}),
    },
  };
}

/** A Pub/Sub push request body carrying an audit log entry. */
export function parseGcePush(value: unknown): ParsedEvent {
  const push = parseWith(pushSchema, value, 'Pub/Sub push message');
  const data = push.message.data;
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(data)) throw new EventError('Pub/Sub push message: message.data is not base64');
  let entry: unknown;
  try {
    entry = JSON.parse(Buffer.from(data, 'base64').toString('utf8'));
  } catch (err) {
    throw new EventError(`Pub/Sub push message: message.data is not base64 JSON (${errorMessage(err)})`);
  }
  return parseGceAuditEntry(entry);
}

// ---- Alibaba Cloud ----

const ALI_STATES: Record<string, EventState> = {
  Pending: 'pending', Starting: 'pending', Running: 'running', Stopping: 'stopping', Stopped: 'stopped', Deleted: 'terminated', Released: 'terminated',
};
const aliState = z.string().refine((s) => s in ALI_STATES, `expected one of ${Object.keys(ALI_STATES).join(', ')}`);
const aliInstanceId = z.string().regex(/^i-[0-9a-z]+$/, 'expected an instance id such as i-bp1ecr0000000go2go');

const cloudMonitorSchema = z.object({
  product: z.string().refine((s) => s.toUpperCase() === 'ECS', 'expected ECS'),
  name: z.literal('Instance:StateChange', { error: 'expected Instance:StateChange' }),
  regionId: z.string().min(1),
  id: z.string().optional(),
  eventTime: z.string().optional(),
  content: z.object({ resourceId: aliInstanceId, state: aliState }),
});

const cloudEventSchema = z.object({
  specversion: z.string(),
  type: z.string().regex(/(^|:)Instance:StateChange$/, 'expected ecs:Instance:StateChange'),
  source: z.string().optional(),
  id: z.string().optional(),
  time: z.string().optional(),
  aliyunregionid: z.string().min(1).optional(),
  subject: z.string().optional(),
  data: z.object({
    resourceId: aliInstanceId.optional(),
    state: aliState.optional(),
    content: z.object({ resourceId: aliInstanceId, state: aliState }).optional(),
  }),
});

export function parseAliEvent(value: unknown): InstanceEvent {
  if (typeof value === 'object' && value !== null && 'specversion' in value) {
    const e = parseWith(cloudEventSchema, value, 'Alibaba EventBridge ECS event');
    const body = e.data.content ?? e.data;
    if (!body.resourceId || !body.state) throw new EventError('Alibaba EventBridge ECS event: data.resourceId and data.state are required');
    const region = e.aliyunregionid ?? /^acs:ecs:([^:]+):/.exec(e.subject ?? '')?.[1];
    return {
      cloud: 'ali',
      instanceId: body.resourceId,
      state: ALI_STATES[body.state] as EventState,
      rawState: body.state,
      ...(region ? { region } : {}),
      ...(e.time ? { time: e.time } : {}),
      ...(e.id ? { eventId: e.id } : {}),
    };
  }
  const e = parseWith(cloudMonitorSchema, value, 'Alibaba CloudMonitor ECS event');
  return {
    cloud: 'ali',
    instanceId: e.content.resourceId,
    state: ALI_STATES[e.content.state] as EventState,
    rawState: e.content.state,
    region: e.regionId,
    ...(e.eventTime ? { time: e.eventTime } : {}),
    ...(e.id ? { eventId: e.id } : {}),
  };
}

// ---- any of them ----

const SHAPES =
  'expected an EC2 Instance State-change Notification (source aws.ec2), a Pub/Sub push of a GCE audit log entry (message.data) or a bare audit log entry (protoPayload), ' +
  'or an Alibaba ECS Instance:StateChange (CloudMonitor: product and content; EventBridge: specversion and data)';

/** Parses an event of any of the three clouds: text, bytes or a parsed value. */
export function parseEvent(input: unknown): ParsedEvent {
  let value = input;
  if (typeof input === 'string' || input instanceof Uint8Array) {
    const size = typeof input === 'string' ? Buffer.byteLength(input) : input.byteLength;
    if (size > MAX_EVENT_BYTES) throw new EventError(`event is ${size} bytes: at most ${MAX_EVENT_BYTES} are accepted`);
    const text = typeof input === 'string' ? input : Buffer.from(input).toString('utf8');
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new EventError(`event is not JSON (${errorMessage(e)})`);
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new EventError(`event is ${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value}: ${SHAPES}`);
  }
  const o = value as Record<string, unknown>;
  if (o.source === 'aws.ec2' || 'detail-type' in o) return { kind: 'instance', event: parseEc2Event(o) };
  if ('message' in o && typeof o.message === 'object') return parseGcePush(o);
  if ('protoPayload' in o) return parseGceAuditEntry(o);
  if ('specversion' in o || ('product' in o && 'content' in o) || o.name === 'Instance:StateChange') return { kind: 'instance', event: parseAliEvent(o) };
  throw new EventError(`event not recognised: ${SHAPES}`);
}

// ---- which networks an event pokes ----

export interface NetworkLike {
  name: string;
  config: NetConf;
}

export interface PokeDeps {
  /** every network the controller knows */
  networks: NetworkLike[];
  /**
   * The networks the instance's twill-network tag names, or undefined when the
   * instance cannot be read any more (Cloud.instanceNetworks).
   */
  instanceNetworks?: (ref: InstanceRef) => Promise<string[] | undefined>;
  /** the networks in which the instance holds a lease: it may have just left them */
  leasedIn?: (instanceId: string, networks: string[]) => Promise<string[]>;
}

/**
 * The networks an event may concern: those of the event's cloud that the
 * instance is tagged for or holds a lease in. When the instance can no longer
 * be read (a terminated instance whose tags are gone), every network of that
 * cloud: reconciling one too many is cheap, missing one is not.
 */
export async function networksToReconcile(event: InstanceEvent, deps: PokeDeps): Promise<string[]> {
  const type = EVENT_BACKEND[event.cloud];
  const candidates = deps.networks.filter((n) => n.config.Backend.Type === type).map((n) => n.name);
  if (candidates.length === 0) return [];
  const tagged = deps.instanceNetworks ? await deps.instanceNetworks(event) : undefined;
  if (tagged === undefined) return candidates;
  const leased = deps.leasedIn ? await deps.leasedIn(event.instanceId, candidates) : [];
  return candidates.filter((n) => tagged.includes(n) || leased.includes(n));
}

/** The networks of the candidates in which the node holds a lease, read from the store. */
export function leasedInFrom(store: Store): NonNullable<PokeDeps['leasedIn']> {
  return async (node, networks) => {
    const out: string[] = [];
    for (const n of networks) if (await store.getLease(n, node)) out.push(n);
    return out;
  };
}

export interface HandleDeps {
  store: Store;
  /** the cloud the event came from */
  cloud: Pick<Cloud, 'instanceNetworks'>;
  /** runs the full reconcile of one network (reconcileNetwork with its deps) */
  reconcile: (network: string) => Promise<ReconcileReport>;
  log: Logger;
}

export interface HandleResult {
  event?: InstanceEvent;
  ignored?: string;
  networks: string[];
  reports: ReconcileReport[];
  /** networks whose reconcile failed, with why; the periodic reconcile retries them */
  failed: Record<string, string>;
}

/**
 * Everything a serverless event handler does: parse (throwing EventError on a
 * malformed event, before anything changes), find the networks, reconcile
 * each. One network failing does not stop the others.
 */
export async function handleEvent(input: unknown, deps: HandleDeps): Promise<HandleResult> {
  const parsed = parseEvent(input);
  if (parsed.kind === 'ignored') {
    deps.log.debug('event ignored', { reason: parsed.reason });
    return { ignored: parsed.reason, networks: [], reports: [], failed: {} };
  }
  const event = parsed.event;
  const networks = await networksToReconcile(event, {
    networks: await deps.store.listNetworks(),
    instanceNetworks: (ref) => deps.cloud.instanceNetworks(ref),
    leasedIn: leasedInFrom(deps.store),
  });
  deps.log.info('instance event', { cloud: event.cloud, instance: event.instanceId, state: event.rawState, networks: networks.join(',') || 'none' });
  const reports: ReconcileReport[] = [];
  const failed: Record<string, string> = {};
  for (const n of networks) {
    try {
      reports.push(await deps.reconcile(n));
    } catch (e) {
      failed[n] = errorMessage(e);
      deps.log.warn('reconcile after an event failed', { network: n, reason: errorMessage(e) });
    }
  }
  return { event, networks, reports, failed };
}
