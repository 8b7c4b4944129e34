import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readNetConf } from '../core/config.js';
import { TwillError } from '../core/errors.js';
import { createLogger } from '../core/log.js';
import { Topics } from '../core/topics.js';
import { Controller } from '../functions/controller.js';
import { SqliteStore } from '../functions/store/sqlite.js';
import { DEFAULT_DATA_DIR, parse } from './args.js';
import { publishedByController } from './lease.js';
import { REMOTE_OPTIONS, callApi, remoteFrom } from './remote.js';

export const NETWORK_USAGE = 'twill network set NAME FILE [--data-dir .twill | --api URL]   (FILE: flannel\'s net-conf.json)';

/** Creates or updates a network from a net-conf.json (what the serverless deployment uses instead of --network). */
export async function networkCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, { 'data-dir': { type: 'string', default: DEFAULT_DATA_DIR }, ...REMOTE_OPTIONS }, 2);
  const [name, file] = positionals;
  if (sub !== 'set' || !name || !file) throw new TwillError('Usage', NETWORK_USAGE);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new TwillError('NoConfig', `cannot read ${file}: ${(e as Error).message}`);
  }
  const remote = remoteFrom(values);
  if (remote) {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (e) {
      throw new TwillError('InvalidConfig', `${file} is not valid JSON: ${(e as Error).message}`);
    }
    const r = await callApi<{ revision: number; warnings?: string[] }>(remote, 'PUT', `/v1/networks/${encodeURIComponent(name)}`, body);
    process.stderr.write((r.warnings ?? []).map((w) => `${file}: warning: ${w}\n`).join(''));
    process.stdout.write(`network ${name} stored (revision ${r.revision})\n`);
    return 0;
  }
  const store = new SqliteStore(join(values['data-dir'], 'twill.db'));
  try {
    const controller = new Controller(store, publishedByController, { topics: new Topics(), log: createLogger('network') });
    const { config, warnings } = readNetConf(text);
    process.stderr.write(warnings.map((w) => `${file}: warning: ${w}\n`).join(''));
    const rec = await controller.applyNetwork(name, config);
    process.stdout.write(`network ${name} stored (revision ${rec.revision})\n`);
    return 0;
  } finally {
    await store.close();
  }
}
