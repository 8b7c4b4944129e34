// Flag parsing for every subcommand: node's parseArgs, strict, so a mistyped
// flag is an error that names it rather than something silently ignored.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { TwillError } from '../core/errors.js';

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T, positionals = 0) {
  try {
    const r = parseArgs({ args, options, allowPositionals: positionals > 0, strict: true });
    if (r.positionals.length > positionals) throw new Error(`unexpected argument ${r.positionals[positionals]}`);
    return r;
  } catch (e) {
    throw new TwillError('Usage', (e as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
}

export const DEFAULT_DATA_DIR = '.twill';

/** `-o json` (or `--output json`) on every command that lists: the same data, for scripts. */
export const OUTPUT_OPTION = { output: { type: 'string', short: 'o' } } as const;

/** Whether -o asks for JSON; undefined or "table" is the table. Anything else is a usage error naming it. */
export function wantsJson(output: string | undefined, json?: boolean): boolean {
  if (output === undefined || output === 'table') return json === true;
  if (output === 'json') return true;
  throw new TwillError('Usage', `-o ${output}: the output formats are table and json`);
}
