// The agent's config file (what `twill node add` prints), with flags on top.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { parseDuration } from '../core/duration.js';
import { TwillError } from '../core/errors.js';
import { formatHostPort } from '../core/host-port.js';
import { checkName } from '../core/topics.js';
import type { AgentOptions } from './agent.js';
import { brokerConnection, type BrokerOptions } from './connect.js';
import type { Logger } from '../core/log.js';

export const agentFileSchema = z.strictObject({
  broker: z.string().url(),
  network: z.string(),
  node: z.string(),
  username: z.string().optional(),
  password: z.string().optional(),
  /** AWS IoT Core: the custom authorizer's name (see agent/connect.ts) */
  authorizer: z.string().optional(),
  prefix: z.string().optional(),
  iface: z.union([z.string(), z.array(z.string())]).optional(),
  ifaceRegex: z.union([z.string(), z.array(z.string())]).optional(),
  publicIP: z.string().optional(),
  publicIPv6: z.string().optional(),
  subnetFile: z.string().optional(),
  stateDir: z.string().optional(),
  metricsAddr: z.string().optional(),
  ipMasq: z.boolean().optional(),
  iptablesForwardRules: z.boolean().optional(),
  resyncInterval: z.string().optional(),
  renewMargin: z.string().optional(),
  /** how often the agent asks the node API for a change its broker may have lost (15m: every 15 to 30 minutes; see pollInterval in docs/serverless.md, What it costs) */
  pollInterval: z.string().optional(),
  /** flanneld's --iface-can-reach: the interface the routes use to reach this address */
  ifaceCanReach: z.string().optional(),
  /** MASQUERADE with --random-fully (flanneld's default; --ip-masq-fully-random-disable turns it off) */
  ipMasqRandomFully: z.boolean().optional(),
  /** flanneld's --ip-blackhole-route: a blackhole route for the node's own subnet */
  ipBlackholeRoute: z.boolean().optional(),
  /** flanneld's --healthz-ip and --healthz-port: /healthz and /readyz served there too (port 0: not) */
  healthzIP: z.string().optional(),
  healthzPort: z.number().int().min(0).max(65535).optional(),
});
export type AgentFile = z.infer<typeof agentFileSchema>;

/**
 * What the agent does where neither its config file nor a flag says: the one
 * table of defaults. agentOptions() fills from it and `twill agent --help`
 * (cli/agent-flags.ts) shows it, flanneld's flags in their own units.
 */
export const AGENT_DEFAULTS = {
  subnetFile: '/run/flannel/subnet.env',
  stateDir: '/var/lib/twill',
  metricsAddr: '127.0.0.1:9464',
  ipMasq: false,
  // flanneld's default: --ip-masq-fully-random-disable turns it off
  ipMasqRandomFully: true,
  ipBlackholeRoute: false,
  iptablesForwardRules: true,
  healthzIP: '0.0.0.0',
  // 0: no second health server
  healthzPort: 0,
  resyncInterval: '10s',
  renewMargin: '1h',
  // The backstop for the rare change no later change reveals (its publish
  // lost): on IoT Core each poll is a function URL call, and at 5m the polls
  // were two fifths of a 10,000-node fabric's bill (bench/fanout).
  pollInterval: '15m',
} as const satisfies Partial<AgentFile>;

/** Ask again when a hello gets no answer in this time (doubling to a minute); no flag sets it. */
const HELLO_RETRY_MS = 5_000;

/** Polling more often than this buys nothing the revision rule does not already give, and loads the node API. */
const MIN_POLL_MS = 30_000;

export function readAgentFile(path: string): Partial<AgentFile> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new TwillError('NoConfig', `cannot read agent config ${path}: ${(e as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new TwillError('InvalidConfig', `agent config ${path} is not valid JSON: ${(e as Error).message}`);
  }
  const r = agentFileSchema.partial().safeParse(value);
  if (!r.success) {
    throw new TwillError('InvalidConfig', `agent config ${path}: ${r.error.issues.map((i) => `${i.path.join('.') || '(file)'} ${i.message}`).join('; ')}`);
  }
  return r.data;
}

const list = (v: string | string[] | undefined) => (v === undefined ? undefined : Array.isArray(v) ? v : [v]);

/** Merges file and flags (flags win) into the agent's options, with every default filled. */
export function agentOptions(file: Partial<AgentFile>, flags: Partial<AgentFile>, log: Logger): AgentOptions & BrokerOptions {
  const m = { ...file, ...Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)) } as Partial<AgentFile>;
  const missing = (['broker', 'network', 'node'] as const).filter((k) => !m[k]);
  if (missing.length) throw new TwillError('InvalidConfig', `agent needs ${missing.join(', ')}: give --config FILE (from twill node add) or --${missing[0]}`);
  // A broker the agent could never connect to is refused here, not on every reconnect.
  brokerConnection({ broker: m.broker as string, username: m.username, password: m.password, authorizer: m.authorizer });
  const d = AGENT_DEFAULTS;
  const healthzPort = m.healthzPort ?? d.healthzPort;
  return {
    broker: m.broker as string,
    network: checkName('network', m.network as string),
    node: checkName('node', m.node as string),
    username: m.username,
    password: m.password,
    authorizer: m.authorizer,
    prefix: m.prefix,
    iface: list(m.iface),
    ifaceRegex: list(m.ifaceRegex),
    ifaceCanReach: m.ifaceCanReach,
    publicIP: m.publicIP,
    publicIPv6: m.publicIPv6,
    subnetFile: m.subnetFile ?? d.subnetFile,
    stateDir: m.stateDir ?? d.stateDir,
    metricsAddr: m.metricsAddr ?? d.metricsAddr,
    ipMasq: m.ipMasq ?? d.ipMasq,
    masqRandomFully: m.ipMasqRandomFully ?? d.ipMasqRandomFully,
    blackholeRoute: m.ipBlackholeRoute ?? d.ipBlackholeRoute,
    healthzAddr: healthzPort ? formatHostPort(m.healthzIP ?? d.healthzIP, healthzPort) : undefined,
    forwardRules: m.iptablesForwardRules ?? d.iptablesForwardRules,
    resyncIntervalMs: parseDuration(m.resyncInterval ?? d.resyncInterval, 'resync interval'),
    renewMarginMs: parseDuration(m.renewMargin ?? d.renewMargin, 'renew margin'),
    helloRetryMs: HELLO_RETRY_MS,
    pollMs: pollInterval(m.pollInterval ?? d.pollInterval),
    log,
  };
}

function pollInterval(text: string): number {
  const ms = parseDuration(text, 'poll interval');
  if (ms < MIN_POLL_MS) throw new TwillError('InvalidConfig', `poll interval ${text} is too short: at least 30s (a lost change shows as a gap at the next change anyway)`);
  return ms;
}
