// The local data directory the CLI works on. Only `twill controller` and
// `twill network set` make one; every other command needs it to exist
// already, so a typo in --data-dir (or a command run in the wrong
// directory) says where it looked instead of answering from an empty,
// freshly made store.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TwillError } from '../core/errors.js';
import { SqliteStore } from '../functions/store/sqlite.js';
import { isLocked } from '../functions/local/lock.js';
import type { Remote } from './remote.js';

export function openDataDir(dataDir: string): SqliteStore {
  const file = join(dataDir, 'twill.db');
  if (!existsSync(file)) {
    throw new TwillError(
      'NoDataDir',
      `no twill data directory at ${resolve(dataDir)} (no twill.db there): start twill controller --data-dir ${dataDir} first, or give --data-dir (or --api) the one it uses`,
    );
  }
  return new SqliteStore(file);
}

/** Where the controller running on a data directory says it serves (written at start, functions/local/server.ts). */
export const ENDPOINTS_FILE = 'endpoints.json';

/** The broker URL agents of this data directory's controller are given; undefined when no controller has said. */
export function servedBroker(dataDir: string): string | undefined {
  try {
    const v = JSON.parse(readFileSync(join(dataDir, ENDPOINTS_FILE), 'utf8')) as { broker?: unknown };
    return typeof v.broker === 'string' ? v.broker : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The admin API of the controller running on this data directory, if one
 * holds it now: a command that must act at once on live sessions (node
 * remove, a rotation) goes through it rather than writing the store behind
 * the controller's back. Its address is what the controller said at start;
 * its token, the data directory's admin token.
 */
export function servingController(dataDir: string): Remote | undefined {
  if (!isLocked(dataDir)) return undefined;
  try {
    const api = (JSON.parse(readFileSync(join(dataDir, ENDPOINTS_FILE), 'utf8')) as { api?: unknown }).api;
    const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
    return typeof api === 'string' && token ? { url: api, token } : undefined;
  } catch {
    return undefined; // a controller still starting: the store, and its one-second sweep
  }
}
