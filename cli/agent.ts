import { Agent } from '../agent/agent.js';
import { agentOptions, readAgentFile } from '../agent/config.js';
import { checkWritable } from '../agent/preflight.js';
import { createLogger } from '../core/log.js';
import { VERSION } from '../core/version.js';
import { agentHelp, parseAgentArgs } from './agent-flags.js';

export const AGENT_USAGE = agentHelp();

/** how long the agent may take to stop after SIGTERM or SIGINT */
const STOP_DEADLINE_MS = 4_000;

export async function agentCommand(args: string[]): Promise<number> {
  const flags = parseAgentArgs(args, process.env);
  if (flags.help) {
    process.stdout.write(`usage: ${AGENT_USAGE}\n`);
    return 0;
  }
  if (flags.version) {
    process.stdout.write(`twill ${VERSION}\n`);
    return 0;
  }
  const log = createLogger('agent', flags.logLevel);
  for (const name of flags.ignored) log.warn('flag accepted and ignored: it is klog\'s, and twill does not use klog', { flag: `--${name}` });
  const file = flags.config ? readAgentFile(flags.config) : {};
  const opts = agentOptions(file, flags.file, log);
  checkWritable(opts);
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
  // Whatever it is waiting on (a broker that went away, a kernel call), the
  // agent is gone within STOP_DEADLINE_MS of the signal, and at once on a second one.
  const deadline = setTimeout(() => {
    log.warn('stopping took too long: exiting now', { afterMs: STOP_DEADLINE_MS });
    process.exit(outcome instanceof Error ? 1 : 0);
  }, STOP_DEADLINE_MS);
  deadline.unref();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(outcome instanceof Error ? 1 : 0));
  await agent.stop();
  // The agent has stopped: nothing left (a socket a library still holds, a
  // timer) may keep the process alive past this.
  setTimeout(() => process.exit(), 1000).unref();
  if (outcome instanceof Error) throw outcome;
  return 0;
}
