// Message schemas for every topic. Every payload that arrives is parsed here,
// once, at the edge; the rest of twill handles typed values only.
import { z } from 'zod';
import { BACKEND_TYPES } from './config.js';
import { parseCidr, parseIPv4, parseIPv6 } from './cidr.js';
import { NAME_RE } from './topics.js';
import type { Lease } from './lease.js';
import type { NetConf } from './config.js';

/** Larger payloads are refused before parsing; a lease is well under 2 KB. */
export const MAX_PAYLOAD_BYTES = 16 * 1024;
/**
 * A batch of changes on a network's changes topic may be larger: under AWS
 * IoT Core's 128 KB per message ("AWS IoT Core message broker and protocol
 * limits and quotas"), with room for the topic.
 */
export const MAX_CHANGES_BYTES = 96 * 1024;

const name = z.string().regex(NAME_RE, 'must be 1 to 63 letters, digits, ".", "_" or "-"');
const ipv4 = z.string().refine((s) => parseIPv4(s) !== undefined, 'must be an IPv4 address');
const ipv6 = z.string().refine((s) => parseIPv6(s) !== undefined, 'must be an IPv6 address');
/**
 * A node's public address, which every peer sends the overlay to: one host's
 * unicast address. "This network" (0.0.0.0/8), multicast (224.0.0.0/4) and
 * the reserved block with the broadcast address (240.0.0.0/4) would have
 * every peer send its pods' traffic to no host, or to all of them.
 * Loopback stays allowed: a single-host lab runs every node on 127.0.0.0/8.
 */
const unicast4 = z.string().refine((s) => parseIPv4(s) !== undefined, 'must be an IPv4 address').refine((s) => {
  const v = parseIPv4(s);
  // (not an address at all is said above)
  return v === undefined || (v >> 24n !== 0n && v >> 28n < 0xen);
}, 'must be a unicast address of the host: not 0.0.0.0/8, multicast 224.0.0.0/4, or reserved and broadcast 240.0.0.0/4');
const unicast6 = z.string().refine((s) => parseIPv6(s) !== undefined, 'must be an IPv6 address').refine((s) => {
  const v = parseIPv6(s);
  return v === undefined || (v !== 0n && v >> 120n !== 0xffn);
}, 'must be a unicast address of the host: not :: or multicast ff00::/8');
const cidr4 = z.string().refine((s) => parseCidr(s, true)?.family === 4, 'must be an IPv4 subnet like 10.1.2.0/24');
const cidr6 = z.string().refine((s) => parseCidr(s, true)?.family === 6, 'must be an IPv6 subnet like fc00:0:0:1::/64');
const isoTime = z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'must be an ISO time');
/** Backend data is small, flat and public: strings, numbers and booleans only. */
const backendData = z.record(z.string().max(64), z.union([z.string().max(512), z.number(), z.boolean()], { error: 'must be a string, a number or a boolean' })).refine(
  (o) => Object.keys(o).length <= 16,
  'must have at most 16 fields',
);

/**
 * A key rotation's token (Lease.rotateKey, and the one a node reports it has
 * honoured): opaque, short, and plain enough to print anywhere as it is.
 */
const KEY_TOKEN_RE = /^[A-Za-z0-9._:-]{1,64}$/;
const keyToken = z.string().regex(KEY_TOKEN_RE, 'must be 1 to 64 letters, digits, ".", "_", ":" or "-"');

/** The longest overlay reason a lease carries: a few words for status lines, never an error's whole text. */
export const MAX_REACH_WHY = 120;
/**
 * Lease.reach (core/backends/overlay.ts): written by the route controller
 * only, parsed like everything else on a topic every member reads. The
 * reason is one short printable line.
 */
const reachSchema = z.discriminatedUnion('via', [
  z.strictObject({ via: z.literal('route') }),
  z.strictObject({ via: z.literal('overlay'), why: z.string().regex(/^[\x20-\x7e]{1,120}$/, `must be 1 to ${MAX_REACH_WHY} printable ASCII characters`) }),
]);

export const leaseSchema = z.object({
  network: name,
  node: name,
  subnet: cidr4.nullable(),
  ipv6Subnet: cidr6.nullable(),
  publicIP: ipv4.nullable(),
  publicIPv6: ipv6.nullable(),
  backendType: z.enum(BACKEND_TYPES),
  backendData,
  expiresAt: isoTime.nullable(),
  createdAt: isoTime,
  revision: z.number().int().nonnegative(),
  rotateKey: keyToken.optional(),
  reach: reachSchema.optional(),
});

export const helloSchema = z.strictObject({
  v: z.literal(2),
  agentVersion: z.string().max(64),
  publicIP: unicast4.optional(),
  publicIPv6: unicast6.optional(),
  backendType: z.enum(BACKEND_TYPES).optional(),
  backendData: backendData.default({}),
  previousSubnet: cidr4.optional(),
  previousIPv6Subnet: cidr6.optional(),
});
export type Hello = z.infer<typeof helloSchema>;

/**
 * On a network's changes topic, and in the node API's changes: one write a
 * peer uses, with the network revision it made. A lease of null is a removal;
 * config says the network's config changed (read it from its topic).
 */
const changeSchema = z.strictObject({
  v: z.literal(2).optional(),
  revision: z.number().int().positive(),
  node: name.optional(),
  lease: leaseSchema.nullable().optional(),
  config: z.literal(true).optional(),
}).refine((c) => (c.config === true) !== (c.node !== undefined && c.lease !== undefined), 'must name a node and its lease (or null), or say config: true');
export type ChangeMessage = z.infer<typeof changeSchema>;

/**
 * What the changes topic carries: one change, or (when writes come faster
 * than the broker takes them) a batch of changes in one message, so that a
 * storm of joins costs each member a message per batch, not per join.
 */
export const changesMessageSchema = z.union([
  changeSchema,
  z.strictObject({ v: z.literal(2), changes: z.array(changeSchema).min(1).max(1000) }),
]);
/** The changes in a message of the changes topic. */
export function changesIn(m: z.infer<typeof changesMessageSchema>): ChangeMessage[] {
  return 'changes' in m ? m.changes : [m];
}

/** The node API's answers (control/http/node-api.ts), as an agent parses them. */
export const snapshotPageSchema = z.object({
  v: z.literal(2),
  network: name,
  revision: z.number().int().nonnegative(),
  config: z.record(z.string(), z.unknown()),
  leases: z.array(leaseSchema).max(5000),
  next: name.nullable(),
});
export const changesPageSchema = z.object({
  v: z.literal(2),
  network: name,
  revision: z.number().int().nonnegative(),
  changes: z.array(changeSchema).max(5000),
  more: z.boolean(),
});

export const statusSchema = z.strictObject({
  v: z.literal(2),
  state: z.enum(['online', 'offline']),
  agentVersion: z.string().max(64).optional(),
  backend: z.enum(BACKEND_TYPES).optional(),
  subnet: cidr4.nullable().optional(),
  ipv6Subnet: cidr6.nullable().optional(),
  /** the network revision whose view the agent applied last */
  revision: z.number().int().nonnegative().optional(),
  /** the agent holds a complete view of the network and has applied it */
  inSync: z.boolean().optional(),
  peers: z.number().int().nonnegative().optional(),
  errors: z.array(z.string().max(1024)).max(32).default([]),
  time: isoTime.optional(),
  /**
   * Backends with keys (wireguard): the lease's rotateKey token whose key
   * pair the node runs now, sent once it has made that pair and its lease
   * carries the new public key; absent: it has honoured none. A lease whose
   * rotateKey differs has a rotation still to come.
   */
  keyToken: keyToken.optional(),
  /** wireguard: what runs its devices, the kernel's WireGuard or wireguard-go (the agent's twill_wireguard_device_info says the same) */
  implementation: z.enum(['kernel', 'wireguard-go']).optional(),
});
export type Status = z.infer<typeof statusSchema>;

/** On a node's own topic: its lease and the config with the secrets its backend needs (core/config.ts nodeConfig), or why it has none. */
export interface NodeLeaseMessage {
  v: 2;
  lease: Lease | null;
  config?: NetConf;
  /** where the node API is (control/http/node-api.ts): the agent lists its network there */
  api?: string;
  error?: string;
}
export const nodeLeaseSchema = z.object({
  v: z.literal(2),
  lease: leaseSchema.nullable(),
  config: z.record(z.string(), z.unknown()).optional(),
  api: z.string().max(2048).refine((u) => /^https?:\/\//.test(u), 'must be an http(s) URL').optional(),
  error: z.string().max(4096).optional(),
});

export const netConfigSchema = z.object({ v: z.literal(2), revision: z.number().int().nonnegative(), config: z.record(z.string(), z.unknown()) });

export class MessageError extends Error {
  constructor(what: string, detail: string) {
    super(`${what}: ${detail}`);
    this.name = 'MessageError';
  }
}

/** Parses JSON bytes with a schema; errors name the message and the field. */
export function parseMessage<T extends z.ZodType>(schema: T, payload: Uint8Array | string, what: string, maxBytes = MAX_PAYLOAD_BYTES): z.infer<T> {
  const size = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength;
  if (size > maxBytes) throw new MessageError(what, `${size} bytes is too large: at most ${maxBytes}`);
  let value: unknown;
  try {
    value = JSON.parse(typeof payload === 'string' ? payload : Buffer.from(payload).toString('utf8'));
  } catch (e) {
    throw new MessageError(what, `not valid JSON (${(e as Error).message})`);
  }
  const r = schema.safeParse(value);
  if (!r.success) {
    const detail = r.error.issues.map((i) => `${i.path.join('.') || '(message)'} ${i.message}`).join('; ');
    throw new MessageError(what, detail);
  }
  return r.data;
}
