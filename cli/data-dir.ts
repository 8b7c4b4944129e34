// The local data directory the CLI works on. Only `twill controller` and
// `twill network set` make one; every other command needs it to exist
// already, so a typo in --data-dir (or a command run in the wrong
// directory) says where it looked instead of answering from an empty,
// freshly made store.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TwillError } from '../core/errors.js';
import { createLogger } from '../core/log.js';
import { Topics } from '../core/topics.js';
import { createControlPlane, type ControlPlane } from '../control/plane.js';
import type { Publisher } from '../control/publish/publisher.js';
import { SqliteStore } from '../control/store/sqlite.js';
import { isLocked } from '../control/local/lock.js';
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

/** Where the controller running on a data directory says it serves (written at start, control/local/server.ts). */
export const ENDPOINTS_FILE = 'endpoints.json';

/** What the controller on this data directory said at start; empty when none has. */
function endpoints(dataDir: string): { broker?: unknown; api?: unknown } {
  try {
    return JSON.parse(readFileSync(join(dataDir, ENDPOINTS_FILE), 'utf8')) as { broker?: unknown; api?: unknown };
  } catch {
    return {};
  }
}

/** The broker URL agents of this data directory's controller are given; undefined when no controller has said. */
export function servedBroker(dataDir: string): string | undefined {
  const { broker } = endpoints(dataDir);
  return typeof broker === 'string' ? broker : undefined;
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
  const { api } = endpoints(dataDir);
  let token = '';
  try {
    token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
  } catch {
    // not ours to read: the store, and the controller's one-second sweep
  }
  // (a controller still starting has not said where it serves yet)
  return typeof api === 'string' && token ? { url: api, token } : undefined;
}

// Without --api the CLI only writes the store. The running controller sees
// the network's revision move on its next sync and publishes the change.
const publishedByController: Publisher = { publish: async () => {} };

/** The control plane over a data directory's store, for a command run without a controller: it writes, the controller publishes. */
export function storePlane(store: SqliteStore, command: string): ControlPlane {
  return createControlPlane({ store, publisher: publishedByController, topics: new Topics(), log: createLogger(command) });
}
