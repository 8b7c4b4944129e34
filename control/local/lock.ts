// One controller per data directory. Two on the same directory would both
// serve, both expire leases and both publish, each behind the other's back.
// The lock is an SQLite database held in exclusive mode: the kernel drops
// its lock when the process ends however it ends (kill -9 included), so a
// crashed controller never leaves a stale lock behind, and no pid file has
// to be guessed about.
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { TwillError } from '../../core/errors.js';

export interface DataDirLock {
  release(): void;
}

export function lockDataDir(dataDir: string): DataDirLock {
  const file = join(dataDir, 'controller.lock');
  const owner = join(dataDir, 'controller.pid');
  closeSync(openSync(file, 'a', 0o600)); // private like everything in the data directory
  const db = new Database(file, { timeout: 0 });
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    // The first write takes the exclusive lock and, in this mode, keeps it until the database is closed.
    db.exec('CREATE TABLE IF NOT EXISTS lock (pid INTEGER)');
    db.exec('BEGIN EXCLUSIVE');
    db.exec('COMMIT');
  } catch (e) {
    db.close();
    if ((e as { code?: string }).code !== 'SQLITE_BUSY') throw e;
    let pid = '';
    try {
      pid = readFileSync(owner, 'utf8').trim();
    } catch {
      // written right after the lock is taken: a start under way
    }
    throw new TwillError('DataDirLocked', `another twill controller${pid ? ` (pid ${pid})` : ''} is serving the data directory ${dataDir}: stop it first, or give this one its own --data-dir`);
  }
  writeFileSync(owner, `${process.pid}\n`, { mode: 0o600 });
  return { release: () => db.close() };
}

/** Whether a controller holds the data directory's lock now (without taking it for long). */
export function isLocked(dataDir: string): boolean {
  const file = join(dataDir, 'controller.lock');
  if (!existsSync(file)) return false;
  const db = new Database(file, { timeout: 0 });
  try {
    db.exec('BEGIN EXCLUSIVE');
    db.exec('COMMIT');
    return false;
  } catch (e) {
    if ((e as { code?: string }).code === 'SQLITE_BUSY') return true;
    throw e;
  } finally {
    db.close();
  }
}
