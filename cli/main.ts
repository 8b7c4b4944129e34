// The twill command line: picks a subcommand and returns the exit code.
// Subcommands live in their own files and are loaded only when used, so a
// quick command does not pay for the controller's or the agent's imports.
import { TwillError, errorMessage } from '../core/errors.js';
import { VERSION } from '../core/version.js';

/** Each command and what it does: twill --help is made from it (and checked against the README). */
export const COMMAND_SUMMARIES: [string, string][] = [
  ['controller', 'run the control plane on this machine (embedded broker and store, web dashboard)'],
  ['agent', 'run the agent on a host: hold a lease, write subnet.env, program the kernel'],
  ['network set|list|remove', "create or update a network from flannel's net-conf.json; list or remove them"],
  ['node add|list|remove|rotate-key', "manage node credentials (add prints the agent's config file); ask a wireguard node for a new key pair"],
  ['lease reserve|release', "reserve a subnet for a node forever, or drop a node's lease"],
  ['status', 'networks, leases (with their VPC route) and agents, as tables (-o json: as JSON)'],
  ['sim instance|routes', 'drive the simulated cloud of twill controller --cloud sim'],
  ['config check FILE', 'print the effective config of a net-conf.json, or every rule it breaks'],
  ['aws check', 'before npx sst deploy: what in the AWS account or the stage\'s settings would make the deploy or the fabric fail'],
  ['version', "print twill's version (also -v, --version)"],
];

const USAGE = `usage: twill COMMAND

${COMMAND_SUMMARIES.map(([name, what]) => (name.length < 21 ? `  ${name.padEnd(21)}${what}` : `  ${name}\n${' '.repeat(23)}${what}`)).join('\n')}

network, node, lease and status work on the local data directory (--data-dir), or on a
deployed control plane with --api URL (or TWILL_API) and the admin token in TWILL_API_TOKEN.
Every list, and status, takes -o json.

Run twill COMMAND --help for a command's flags.`;

type Command = (args: string[]) => Promise<number>;

const commands: Record<string, () => Promise<{ run: Command; usage: string }>> = {
  controller: async () => { const m = await import('./controller.js'); return { run: m.controllerCommand, usage: m.CONTROLLER_USAGE }; },
  agent: async () => { const m = await import('./agent.js'); return { run: m.agentCommand, usage: m.AGENT_USAGE }; },
  node: async () => { const m = await import('./node.js'); return { run: m.nodeCommand, usage: m.NODE_USAGE }; },
  lease: async () => { const m = await import('./lease.js'); return { run: m.leaseCommand, usage: m.LEASE_USAGE }; },
  sim: async () => { const m = await import('./sim.js'); return { run: m.simCommand, usage: m.SIM_USAGE }; },
  status: async () => { const m = await import('./status.js'); return { run: m.statusCommand, usage: m.STATUS_USAGE }; },
  network: async () => { const m = await import('./network.js'); return { run: m.networkCommand, usage: m.NETWORK_USAGE }; },
  aws: async () => { const m = await import('./aws-check.js'); return { run: m.awsCommand, usage: m.AWS_USAGE }; },
};

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === 'config' && rest[0] === 'check') {
      const { configCheck } = await import('./config-check.js');
      return await configCheck(rest.slice(1));
    }
    if (command === 'version' || command === '--version' || command === '-v') {
      process.stdout.write(`twill ${VERSION}\n`);
      return 0;
    }
    if (command === undefined || command === 'help' || command === '-h' || command === '--help') {
      process.stdout.write(`${USAGE}\n`);
      return command === undefined ? 2 : 0;
    }
    const load = commands[command];
    if (!load) {
      process.stderr.write(`twill: unknown command ${JSON.stringify(command)}\n\n${USAGE}\n`);
      return 2;
    }
    const { run, usage } = await load();
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(`usage: ${usage}\n`);
      return 0;
    }
    return await run(rest);
  } catch (e) {
    process.stderr.write(`twill ${command}: ${errorMessage(e)}\n`);
    return e instanceof TwillError && e.code === 'Usage' ? 2 : 1;
  }
}
