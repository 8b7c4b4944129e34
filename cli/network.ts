import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readNetConf } from '../core/config.js';
import { TwillError } from '../core/errors.js';
import { SqliteStore } from '../control/store/sqlite.js';
import { DEFAULT_DATA_DIR, OUTPUT_OPTION, parse, wantsJson } from './args.js';
import { openDataDir, servingController, storePlane } from './data-dir.js';
import { table } from './table.js';
import { networkSummary } from '../control/http/api.js';
import { REMOTE_OPTIONS, callApi, remoteFrom } from './remote.js';

export const NETWORK_USAGE = `twill network set NAME FILE [--data-dir .twill | --api URL [--token-file F]]   (FILE: flannel's net-conf.json)
twill network list [-o table|json] [--data-dir .twill | --api URL [--token-file F]]
twill network remove NAME [--force] [--data-dir .twill | --api URL [--token-file F]]   (--force: release its leases and remove its nodes too)`;

/** Every flag twill network takes (its help and the README are checked against it). */
export const NETWORK_OPTIONS = { 'data-dir': { type: 'string', default: DEFAULT_DATA_DIR }, force: { type: 'boolean' }, ...OUTPUT_OPTION, ...REMOTE_OPTIONS } as const;

/** Creates or updates a network from a net-conf.json (what the serverless deployment uses instead of --network); lists them. */
export async function networkCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const { values, positionals } = parse(rest, NETWORK_OPTIONS, 2);
  if (sub === 'list') return listNetworks(values);
  if (sub === 'remove') return removeNetwork(positionals[0], values);
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
    const controller = storePlane(store, 'network').controller;
    const { config, warnings } = readNetConf(text);
    process.stderr.write(warnings.map((w) => `${file}: warning: ${w}\n`).join(''));
    const rec = await controller.applyNetwork(name, config);
    process.stdout.write(`network ${name} stored (revision ${rec.revision})\n`);
    return 0;
  } finally {
    await store.close();
  }
}

async function removeNetwork(name: string | undefined, values: { force?: boolean; 'data-dir': string } & Parameters<typeof remoteFrom>[0]): Promise<number> {
  if (!name) throw new TwillError('Usage', 'twill network remove needs the network\'s NAME');
  // On a data directory a controller is serving, through that controller:
  // it tells the agents and closes the removed nodes' sessions before this returns.
  const remote = remoteFrom(values) ?? (!process.env.TWILL_API ? servingController(values['data-dir']) : undefined);
  let r: { released: number; nodes: string[] };
  if (remote) {
    r = await callApi(remote, 'DELETE', `/v1/networks/${encodeURIComponent(name)}${values.force ? '?force=true' : ''}`);
  } else {
    const store = openDataDir(values['data-dir']);
    try {
      // No controller runs here: there is no broker to tell (one that starts reads the store).
      const controller = storePlane(store, 'network').controller;
      r = await controller.removeNetwork(name, { force: values.force });
    } finally {
      await store.close();
    }
  }
  process.stdout.write(`network ${name} removed${r.released || r.nodes.length ? ` (released ${r.released} lease(s), removed ${r.nodes.length} node(s))` : ''}\n`);
  return 0;
}

async function listNetworks(values: { output?: string; 'data-dir': string } & Parameters<typeof remoteFrom>[0]): Promise<number> {
  const json = wantsJson(values.output);
  const remote = remoteFrom(values);
  let list: ReturnType<typeof networkSummary>[];
  if (remote) {
    list = await callApi<ReturnType<typeof networkSummary>[]>(remote, 'GET', '/v1/networks');
  } else {
    const store = openDataDir(values['data-dir']);
    try {
      list = (await store.listNetworks()).map(networkSummary);
    } finally {
      await store.close();
    }
  }
  process.stdout.write(json
    ? JSON.stringify(list, null, 2) + '\n'
    : table(['NAME', 'NETWORK', 'IPV6 NETWORK', 'BACKEND', 'LEASES', 'REVISION'], list.map((n) => [n.name, n.network ?? '-', n.ipv6Network ?? '-', n.backend, String(n.leases), String(n.revision)])));
  return 0;
}
