import { Agent } from '../agent/agent.js';
import { agentOptions, readAgentFile } from '../agent/config.js';
import { createLogger } from '../core/log.js';
import { parse } from './args.js';
import { TwillError } from '../core/errors.js';

export const AGENT_USAGE = `twill agent --config FILE [--broker URL] [--network NET] [--node NAME] [--username U] [--password P] [--authorizer NAME]
            [--iface NAME|ADDR]... [--iface-regex RE]... [--public-ip IP] [--ip-masq] [--iptables-forward-rules=true|false]
            [--subnet-file /run/flannel/subnet.env] [--state-dir /var/lib/twill]
            [--metrics-addr 127.0.0.1:9464] [--resync-interval 10s] [--renew-margin 1h] [--poll-interval 5m]`;

function parseBool(flag: string, v: string | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  if (v === 'true' || v === 'false') return v === 'true';
  throw new TwillError('Usage', `${flag} must be true or false, not ${JSON.stringify(v)}`);
}

export async function agentCommand(args: string[]): Promise<number> {
  const { values } = parse(args, {
    config: { type: 'string' },
    broker: { type: 'string' },
    network: { type: 'string' },
    node: { type: 'string' },
    username: { type: 'string' },
    password: { type: 'string' },
    authorizer: { type: 'string' },
    prefix: { type: 'string' },
    iface: { type: 'string', multiple: true },
    'iface-regex': { type: 'string', multiple: true },
    'public-ip': { type: 'string' },
    'public-ipv6': { type: 'string' },
    'ip-masq': { type: 'boolean' },
    'iptables-forward-rules': { type: 'string' },
    'subnet-file': { type: 'string' },
    'state-dir': { type: 'string' },
    'metrics-addr': { type: 'string' },
    'resync-interval': { type: 'string' },
    'renew-margin': { type: 'string' },
    'poll-interval': { type: 'string' },
  });
  const log = createLogger('agent');
  const file = values.config ? readAgentFile(values.config) : {};
  const opts = agentOptions(
    file,
    {
      broker: values.broker,
      network: values.network,
      node: values.node,
      username: values.username,
      password: values.password,
      authorizer: values.authorizer,
      prefix: values.prefix,
      iface: values.iface,
      ifaceRegex: values['iface-regex'],
      publicIP: values['public-ip'],
      publicIPv6: values['public-ipv6'],
      ipMasq: values['ip-masq'],
      iptablesForwardRules: parseBool('--iptables-forward-rules', values['iptables-forward-rules']),
      subnetFile: values['subnet-file'],
      stateDir: values['state-dir'],
      metricsAddr: values['metrics-addr'],
      resyncInterval: values['resync-interval'],
      renewMargin: values['renew-margin'],
      pollInterval: values['poll-interval'],
    },
    log,
  );
  const agent = new Agent(opts);
  await agent.start();
  if (agent.address) log.info('serving /healthz /readyz /metrics', { addr: agent.address });
  agent.fatal.catch(() => {}); // observed below; keeps an early failure from being "unhandled"
  const outcome = await Promise.race([
    new Promise<'signal'>((resolve) => {
      process.once('SIGINT', () => resolve('signal'));
      process.once('SIGTERM', () => resolve('signal'));
    }),
    agent.fatal,
  ]).catch((e: Error) => e);
  await agent.stop();
  // The agent has stopped: nothing left (a socket a library still holds, a
  // timer) may keep the process alive past this.
  setTimeout(() => process.exit(), 1000).unref();
  if (outcome instanceof Error) throw outcome;
  return 0;
}
