// `twill agent`'s command line: twill's own flags and flanneld's, read with
// Go's flag syntax as flanneld reads its own (`-iface eth0`, `--iface=eth0`,
// `--ip-masq`, `--ip-masq=true`, `-iptables-forward-rules=false`), and every
// flanneld flag also from its FLANNELD_* variable (the flag's name in upper
// case, dashes as underscores), which the command line beats, as in flanneld
// (its flagutil.SetFlagsFromEnv). flanneld's flags that make no sense with
// twill (the Kubernetes and etcd subnet managers, net-config-path) are
// refused with a sentence saying what twill does instead. One table (FLAGS)
// makes the parser, the help text and the README's compatibility rows, so
// they cannot disagree; the defaults help shows are read from the agent's own
// table (AGENT_DEFAULTS), the one agentOptions() fills from. Pure: the
// environment is a parameter.
import { TwillError } from '../core/errors.js';
import { closestName } from '../core/go-json.js';
import type { Level as LogLevel } from '../core/log.js';
import { AGENT_DEFAULTS, type AgentFile } from '../agent/config.js';
import { parseDuration } from '../core/duration.js';

type Kind = 'string' | 'bool' | 'int' | 'list';
type Value = string | boolean | number | string[];

/** What the command line asks of the agent: its config file fields, and what is not a field of it. */
export interface AgentFlags {
  file: Partial<AgentFile>;
  config?: string;
  logLevel?: LogLevel;
  version?: boolean;
  help?: boolean;
  /** flags accepted and without effect (klog's), to say once at start */
  ignored: string[];
}

/** How a flanneld flag fares in twill: the README's compatibility table says the same. */
export type FlannelFate = 'same' | 'converted' | 'refused' | 'ignored';

export interface FlagSpec {
  name: string;
  kind: Kind;
  /** the value's placeholder in help, e.g. NAME */
  arg?: string;
  help: string;
  /** set when flanneld has this flag: how twill treats it (and its FLANNELD_* variable) */
  flannel?: FlannelFate;
  /** the default, as help shows it (an option's from AGENT_DEFAULTS, in this flag's unit) */
  default?: string;
  /** puts the value where it belongs; where names the flag or variable it came from, for messages */
  set(out: AgentFlags, v: Value, ctx: { seen: ReadonlySet<string>; where: string }): void;
}

const KUBE = 'twill does not use the Kubernetes API to lease subnets: the twill controller leases them; run the agent with the node config `twill node add` printed (--config FILE)';
const ETCD = 'twill has no etcd: the twill controller keeps the leases in its own store (SQLite, or DynamoDB when deployed); run the agent with the node config `twill node add` printed (--config FILE)';
const NETCONF = 'the agent reads no net-conf.json: give it to the controller (twill controller --network NAME=FILE); every agent receives its network\'s config from the control plane';

/** The value into a field of the agent's config; a list flag adds to what earlier ones gave. */
const field = <K extends keyof AgentFile>(key: K) => (out: AgentFlags, v: Value) => {
  const file = out.file as Record<string, unknown>;
  const prev = file[key];
  file[key] = Array.isArray(v) && Array.isArray(prev) ? [...(prev as string[]), ...v] : v;
};
const D = AGENT_DEFAULTS;
/** A duration default in a flanneld flag's unit (its seconds or minutes). */
const inUnits = (duration: string, unitMs: number) => String(parseDuration(duration, 'default') / unitMs);

/** A flag flanneld has and twill refuses: any value but false or empty says why. */
const refused = (why: string) => (_out: AgentFlags, v: Value, ctx: { where: string }) => {
  if (v === false || v === '') return;
  throw new TwillError('Usage', `${ctx.where} is flanneld's and means nothing to twill: ${why}`);
};

export const FLAGS: readonly FlagSpec[] = [
  { name: 'config', kind: 'string', arg: 'FILE', help: 'the node config `twill node add` printed (broker, network, node, credentials)', set: (o, v) => { o.config = v as string; } },
  { name: 'broker', kind: 'string', arg: 'URL', help: 'the MQTT broker (mqtt://, mqtts://, ws://, wss://)', set: field('broker') },
  { name: 'network', kind: 'string', arg: 'NAME', help: 'the network this node belongs to', set: field('network') },
  { name: 'node', kind: 'string', arg: 'NAME', help: 'this node\'s name', set: field('node') },
  { name: 'username', kind: 'string', arg: 'U', help: 'the broker username (default the node name)', set: field('username') },
  { name: 'password', kind: 'string', arg: 'P', help: 'the broker password (prefer --config: a flag shows in ps)', set: field('password') },
  { name: 'authorizer', kind: 'string', arg: 'NAME', help: 'AWS IoT Core: the custom authorizer\'s name', set: field('authorizer') },
  { name: 'prefix', kind: 'string', arg: 'P', help: 'the topic prefix of the control plane', set: field('prefix') },
  {
    name: 'iface', kind: 'list', arg: 'NAME|ADDR', flannel: 'same',
    help: 'the interface (name or address) peers reach this host by; repeat to try several, the first found wins', set: field('iface'),
  },
  { name: 'iface-regex', kind: 'list', arg: 'RE', flannel: 'same', help: 'the first interface whose name or address matches, after --iface', set: field('ifaceRegex') },
  { name: 'iface-can-reach', kind: 'string', arg: 'ADDR', flannel: 'same', help: 'the interface this host\'s routes use to reach ADDR, as `ip route get ADDR` says', set: field('ifaceCanReach') },
  { name: 'public-ip', kind: 'string', arg: 'IP', flannel: 'same', help: 'the IPv4 address peers reach this host at (default the interface\'s)', set: field('publicIP') },
  { name: 'public-ipv6', kind: 'string', arg: 'IP', flannel: 'same', help: 'the IPv6 address peers reach this host at (default the interface\'s)', set: field('publicIPv6') },
  { name: 'ip-masq', kind: 'bool', flannel: 'same', default: String(D.ipMasq), help: 'masquerade pods\' traffic leaving the network', set: field('ipMasq') },
  {
    name: 'ip-masq-fully-random-disable', kind: 'bool', flannel: 'same', default: String(!D.ipMasqRandomFully),
    help: 'masquerade without --random-fully', set: (o, v) => { o.file.ipMasqRandomFully = !(v as boolean); },
  },
  { name: 'iptables-forward-rules', kind: 'bool', flannel: 'same', default: String(D.iptablesForwardRules), help: 'accept the network\'s traffic in FORWARD (for a DROP policy)', set: field('iptablesForwardRules') },
  {
    name: 'iptables-resync', kind: 'int', arg: 'SECONDS', flannel: 'converted', default: inUnits(D.resyncInterval, 1000),
    help: 'how often the rules are checked: twill checks rules and kernel together, so this sets --resync-interval',
    set: (o, v, { seen }) => {
      if (seen.has('resync-interval')) throw new TwillError('Usage', '--iptables-resync and --resync-interval both set the resync interval: give one');
      if ((v as number) < 1) throw new TwillError('Usage', `--iptables-resync ${v} must be at least 1 (seconds)`);
      o.file.resyncInterval = `${v}s`;
    },
  },
  { name: 'ip-blackhole-route', kind: 'bool', flannel: 'same', default: String(D.ipBlackholeRoute), help: 'a blackhole route for this node\'s own subnet, so traffic to its unused addresses goes nowhere', set: field('ipBlackholeRoute') },
  { name: 'subnet-file', kind: 'string', arg: 'FILE', flannel: 'same', default: D.subnetFile, help: 'where subnet.env is written', set: field('subnetFile') },
  {
    name: 'subnet-lease-renew-margin', kind: 'int', arg: 'MINUTES', flannel: 'same', default: inUnits(D.renewMargin, 60_000),
    help: 'renew the lease this many minutes before it expires (1 to 1439)',
    set: (o, v, { seen }) => {
      if (seen.has('renew-margin')) throw new TwillError('Usage', '--subnet-lease-renew-margin and --renew-margin both set the renewal margin: give one');
      const m = v as number;
      if (m < 1 || m >= 24 * 60) throw new TwillError('Usage', `--subnet-lease-renew-margin ${m} is out of range: from 1 to 1439 minutes, as in flanneld`);
      o.file.renewMargin = `${m}m`;
    },
  },
  { name: 'renew-margin', kind: 'string', arg: 'DURATION', default: D.renewMargin, help: 'renew the lease this long before it expires', set: field('renewMargin') },
  { name: 'healthz-ip', kind: 'string', arg: 'IP', flannel: 'same', default: D.healthzIP, help: 'where --healthz-port listens', set: (o, v) => { o.file.healthzIP = v as string; } },
  {
    name: 'healthz-port', kind: 'int', arg: 'PORT', flannel: 'same', default: String(D.healthzPort),
    help: 'serve /healthz and /readyz on this port as well (0: not)',
    set: (o, v) => {
      const p = v as number;
      if (p < 0 || p > 65535) throw new TwillError('Usage', `--healthz-port ${p} is not a port: from 0 (off) to 65535`);
      o.file.healthzPort = p;
    },
  },
  { name: 'state-dir', kind: 'string', arg: 'DIR', default: D.stateDir, help: 'where the agent keeps its lease, VTEP MAC and config', set: field('stateDir') },
  { name: 'metrics-addr', kind: 'string', arg: 'HOST:PORT', default: D.metricsAddr, help: '/healthz, /readyz and /metrics (empty: off)', set: field('metricsAddr') },
  { name: 'resync-interval', kind: 'string', arg: 'DURATION', default: D.resyncInterval, help: 'how often the kernel and the rules are checked and repaired', set: field('resyncInterval') },
  { name: 'poll-interval', kind: 'string', arg: 'DURATION', default: D.pollInterval, help: 'how often the node API is asked for a change the broker may have lost (at least 30s)', set: field('pollInterval') },
  {
    name: 'log-level', kind: 'string', arg: 'LEVEL', default: 'info', help: 'error, warn, info or debug (also TWILL_LOG_LEVEL)',
    set: (o, v) => {
      if (!['error', 'warn', 'info', 'debug'].includes(v as string)) throw new TwillError('Usage', `--log-level ${JSON.stringify(v)} is not one of error, warn, info, debug`);
      o.logLevel = v as LogLevel;
    },
  },
  {
    name: 'v', kind: 'int', arg: 'N', flannel: 'converted', default: '0',
    help: 'flanneld\'s log verbosity: 0 is --log-level info, 1 or more debug',
    set: (o, v) => { o.logLevel ??= (v as number) >= 1 ? 'debug' : 'info'; },
  },
  { name: 'vmodule', kind: 'string', arg: 'SPEC', flannel: 'ignored', help: 'klog\'s per-file verbosity: accepted and ignored', set: (o) => { o.ignored.push('vmodule'); } },
  { name: 'log_backtrace_at', kind: 'string', arg: 'FILE:LINE', flannel: 'ignored', help: 'klog\'s backtrace point: accepted and ignored', set: (o) => { o.ignored.push('log_backtrace_at'); } },
  { name: 'version', kind: 'bool', flannel: 'same', help: 'print the version and exit', set: (o, v) => { o.version = v as boolean; } },
  { name: 'help', kind: 'bool', help: 'this help', set: (o, v) => { o.help = v as boolean; } },
  { name: 'kube-subnet-mgr', kind: 'bool', flannel: 'refused', help: KUBE, set: refused(KUBE) },
  { name: 'kube-api-url', kind: 'string', flannel: 'refused', help: KUBE, set: refused(KUBE) },
  { name: 'kube-annotation-prefix', kind: 'string', flannel: 'refused', help: KUBE, set: refused(KUBE) },
  { name: 'kubeconfig-file', kind: 'string', flannel: 'refused', help: KUBE, set: refused(KUBE) },
  { name: 'set-node-network-unavailable', kind: 'bool', flannel: 'refused', help: KUBE, set: refused(KUBE) },
  ...['etcd-endpoints', 'etcd-prefix', 'etcd-keyfile', 'etcd-certfile', 'etcd-cafile', 'etcd-username', 'etcd-password'].map(
    (name): FlagSpec => ({ name, kind: 'string', flannel: 'refused', help: ETCD, set: refused(ETCD) }),
  ),
  { name: 'net-config-path', kind: 'string', flannel: 'refused', help: NETCONF, set: refused(NETCONF) },
];

const BY_NAME = new Map(FLAGS.map((f) => [f.name, f]));
/** The short forms twill has always had. */
const ALIASES: Record<string, string> = { h: 'help' };

/** The variable flanneld reads a flag from: FLANNELD_ and the name in upper case, dashes as underscores. */
export function envName(flag: string): string {
  return `FLANNELD_${flag.toUpperCase().replaceAll('-', '_')}`;
}

/** Go's strconv.ParseBool, which flag uses for a boolean's value. */
function parseGoBool(text: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(text)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(text)) return false;
  return undefined;
}

function valueOf(spec: FlagSpec, text: string, where: string): Value {
  switch (spec.kind) {
    case 'bool': {
      const b = parseGoBool(text);
      if (b === undefined) throw new TwillError('Usage', `${where} must be true or false, not ${JSON.stringify(text)}`);
      return b;
    }
    case 'int': {
      if (!/^[+-]?\d+$/.test(text)) throw new TwillError('Usage', `${where} must be a whole number, not ${JSON.stringify(text)}`);
      return Number(text);
    }
    case 'list':
      return [text];
    case 'string':
      return text;
  }
}

function unknownFlag(name: string): TwillError {
  const near = closestName(name, FLAGS.map((f) => f.name));
  return new TwillError('Usage', `unknown flag -${name.length > 1 ? '-' : ''}${name}${near ? `: did you mean --${near}?` : ''} (twill agent --help lists them)`);
}

/**
 * Reads the agent's arguments as Go's flag package would, then the FLANNELD_*
 * variables of the flanneld flags the arguments did not set. twill does
 * better than Go in two places: a boolean may also take its value as the
 * next argument (`--ip-masq false`, which Go would read as the end of the
 * flags) since the agent takes no positional arguments, and an unknown flag
 * names the closest known one.
 */
export function parseAgentArgs(args: readonly string[], env: Record<string, string | undefined> = {}): AgentFlags {
  const out: AgentFlags = { file: {}, ignored: [] };
  const seen = new Set<string>();
  const apply = (spec: FlagSpec, v: Value, where: string) => {
    spec.set(out, v, { seen, where });
    seen.add(spec.name);
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === '--') {
      if (i + 1 < args.length) throw new TwillError('Usage', `unexpected argument ${JSON.stringify(args[i + 1])}: twill agent takes flags only`);
      break;
    }
    const m = /^--?([^=]+)(?:=(.*))?$/s.exec(arg);
    if (!m || arg === '-') throw new TwillError('Usage', `unexpected argument ${JSON.stringify(arg)}: twill agent takes flags only`);
    const name = ALIASES[m[1] as string] ?? (m[1] as string);
    const spec = BY_NAME.get(name);
    if (!spec) throw unknownFlag(m[1] as string);
    const where = `--${name}`;
    let text = m[2];
    if (text === undefined) {
      if (spec.kind === 'bool') {
        const next = args[i + 1];
        if (next !== undefined && parseGoBool(next) !== undefined && !next.startsWith('-')) {
          text = next;
          i++;
        } else {
          text = 'true';
        }
      } else {
        const next = args[i + 1];
        if (next === undefined) throw new TwillError('Usage', `${where} needs a value${spec.arg ? ` (${spec.arg})` : ''}`);
        text = next;
        i++;
      }
    }
    apply(spec, valueOf(spec, text, where), where);
  }
  // flanneld's variables for its flags the command line left unset, in table order.
  for (const spec of FLAGS) {
    if (!spec.flannel || seen.has(spec.name)) continue;
    const text = env[envName(spec.name)];
    if (text === undefined || text === '') continue;
    apply(spec, valueOf(spec, text, envName(spec.name)), envName(spec.name));
  }
  return out;
}

/** The agent's help, from the same table. */
export function agentHelp(): string {
  const lines = FLAGS.filter((f) => f.flannel !== 'refused').map((f) => {
    const arg = f.kind === 'bool' ? '' : ` ${f.arg ?? 'VALUE'}`;
    const def = f.default === undefined ? '' : ` (default ${f.default})`;
    const env = f.flannel ? `; also ${envName(f.name)}` : '';
    return `  --${f.name}${arg}\n      ${f.help}${def}${env}`;
  });
  const refusedNames = FLAGS.filter((f) => f.flannel === 'refused').map((f) => `--${f.name}`);
  return [
    'twill agent --config FILE [flags]',
    '',
    'Flags take Go\'s syntax as in flanneld (-flag VALUE, --flag=VALUE, --bool, --bool=false); flanneld\'s also',
    'come from their FLANNELD_* variables, which a flag on the command line overrides.',
    '',
    ...lines,
    '',
    `flanneld's ${refusedNames.join(', ')} are refused, with what twill does instead.`,
  ].join('\n');
}
