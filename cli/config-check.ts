// `twill config check FILE`: reads a net-conf.json as the controller would and
// shows the effective config, so a mistake is found before it reaches a network.
//
// Exit codes: 0 the file is valid (effective config on stdout, secrets masked;
// what flannel ignores, such as unknown fields, as warnings on stderr, and
// what twill adds to flannel's file, such as a cloud network's overlay, as
// notes on stderr);
// 1 the file is invalid or cannot be read (reasons on stderr, one a line);
// 2 the command was used wrongly (usage on stderr).
import { readFile } from 'node:fs/promises';
import { maskSecrets, readNetConf } from '../core/config.js';
import { ConfigError, errorMessage } from '../core/errors.js';
import { explainOverlay } from '../core/backends/overlay.js';

const USAGE = 'usage: twill config check FILE';

function readError(file: string, e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return `${file}: no such file`;
  if (code === 'EISDIR') return `${file}: is a directory, not a net-conf.json file`;
  if (code === 'EACCES') return `${file}: permission denied`;
  return `${file}: cannot read: ${errorMessage(e)}`;
}

export async function configCheck(args: string[]): Promise<number> {
  if (args.length === 1 && (args[0] === '-h' || args[0] === '--help')) {
    process.stdout.write(`${USAGE}\n  prints the effective config of a flannel net-conf.json, or every rule it breaks\n`);
    return 0;
  }
  const file = args[0];
  if (args.length !== 1 || file === undefined || file === '') {
    process.stderr.write(`${USAGE}\n`);
    return 2;
  }
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    process.stderr.write(`twill config check: ${readError(file, e)}\n`);
    return 1;
  }
  try {
    const { config, warnings } = readNetConf(text, process.env);
    process.stderr.write(warnings.map((line) => `${file}: warning: ${line}\n`).join(''));
    process.stderr.write(explainOverlay(config).map((line) => `${file}: note: ${line}\n`).join(''));
    process.stdout.write(`${JSON.stringify(maskSecrets(config), null, 2)}\n`);
    return 0;
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    process.stderr.write(e.errors.map((line) => `${file}: ${line}\n`).join(''));
    return 1;
  }
}
