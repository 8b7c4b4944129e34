// Each command's flags are defined once (the options table it parses with);
// its --help and the README's Commands table are checked against that table
// here, so neither can name a flag the command does not take, nor leave one
// out. (The agent's help is generated from its own table: agent-flags.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AWS_CHECK_OPTIONS, AWS_USAGE } from '../../cli/aws-check.js';
import { CONTROLLER_OPTIONS, CONTROLLER_USAGE } from '../../cli/controller.js';
import { LEASE_OPTIONS, LEASE_USAGE } from '../../cli/lease.js';
import { NETWORK_OPTIONS, NETWORK_USAGE } from '../../cli/network.js';
import { NODE_OPTIONS, NODE_USAGE } from '../../cli/node.js';
import { SIM_OPTIONS, SIM_USAGE } from '../../cli/sim.js';
import { STATUS_OPTIONS, STATUS_USAGE } from '../../cli/status.js';
import { COMMAND_SUMMARIES } from '../../cli/main.js';
import { ROOT } from '../helpers/procs.js';

const COMMANDS: [string, Record<string, { type: string; short?: string }>, string][] = [
  ['controller', CONTROLLER_OPTIONS, CONTROLLER_USAGE],
  ['network', NETWORK_OPTIONS, NETWORK_USAGE],
  ['node', NODE_OPTIONS, NODE_USAGE],
  ['lease', LEASE_OPTIONS, LEASE_USAGE],
  ['status', STATUS_OPTIONS, STATUS_USAGE],
  ['sim', SIM_OPTIONS, SIM_USAGE],
  ['aws', AWS_CHECK_OPTIONS, AWS_USAGE],
];

/** How a flag is written: --name, or its one-letter form. */
const written = (text: string, name: string, short?: string) => text.includes(`--${name}`) || (short !== undefined && new RegExp(`(^|[\\s\\[(])-${short}\\b`).test(text));
const flagsIn = (text: string) => new Set([...text.matchAll(/(?<![\w-])--([a-z][a-z0-9-]*)/g)].map((m) => m[1] as string));

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const commandsTable = readme.slice(readme.indexOf('## Commands'), readme.indexOf('\n## ', readme.indexOf('## Commands') + 5));

test("every command's help names each flag it takes, and no flag it does not", () => {
  const wrong: string[] = [];
  for (const [name, options, usage] of COMMANDS) {
    for (const [flag, o] of Object.entries(options)) if (!written(usage, flag, o.short)) wrong.push(`twill ${name} --help does not mention --${flag}`);
    for (const flag of flagsIn(usage)) if (!(flag in options)) wrong.push(`twill ${name} --help names --${flag}, which it does not take`);
  }
  assert.deepEqual(wrong, []);
});

test("the README's Commands table names each command and each of its flags (the data directory and --api ones once, below the table)", () => {
  const shared = ['data-dir', 'api', 'token-file'];
  const wrong: string[] = [];
  for (const s of shared) if (!commandsTable.includes(`--${s}`)) wrong.push(`the README does not say what --${s} does`);
  for (const [name, options] of COMMANDS) {
    const rows = commandsTable.split('\n').filter((l) => l.startsWith(`| \`twill ${name}`));
    if (rows.length === 0) wrong.push(`the README's Commands table has no row for twill ${name}`);
    // (a mention of another command, `twill controller --cloud sim`, is that command's)
    const text = rows.join('\n').replace(new RegExp(`\`twill (?!${name}\\b)[^\`]*\``, 'g'), '');
    for (const [flag, o] of Object.entries(options)) {
      if (shared.includes(flag) || flag === 'output' || flag === 'json') continue; // -o json has its own row
      if (!written(text, flag, o.short)) wrong.push(`the README's row for twill ${name} does not mention --${flag}`);
    }
    for (const flag of flagsIn(text)) if (!(flag in options)) wrong.push(`the README's row for twill ${name} names --${flag}, which it does not take`);
  }
  assert.deepEqual(wrong, []);
});

test('twill --help lists every command', () => {
  for (const [name] of COMMANDS) assert.ok(COMMAND_SUMMARIES.some(([n]) => n.split(' ')[0] === name), `twill --help lists ${name}`);
  for (const [n] of COMMAND_SUMMARIES) assert.ok(commandsTable.includes(`\`twill ${n.split(' ')[0]}`), `the README's Commands table has twill ${n}`);
});
