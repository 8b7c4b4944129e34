// The data directory holds secrets: the store (password hashes, an ipsec
// PSK, cloud keys), the admin token, the endpoints and a simulated cloud's
// state. It and everything in it are the owner's alone (0700 and 0600),
// made so at creation and checked again at every controller start: a
// directory copied with cp -r, unpacked from a backup or made by hand with a
// umask of 022 is repaired, and the operator is told which file was exposed.
import { chmodSync, lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { makeDirs } from '../../core/dirs.js';

export interface Repaired {
  path: string;
  /** the mode it had, e.g. 0644 */
  was: string;
}

const octal = (mode: number) => `0${(mode & 0o777).toString(8)}`;

/**
 * Creates dir (0700) when missing, and takes group and other permissions
 * off it and off every file in it. Symbolic links are not followed (one
 * could point anywhere); subdirectories are made private the same way.
 * Returns what had to be repaired.
 */
export function makePrivate(dir: string): Repaired[] {
  makeDirs(dir, 0o700);
  const repaired: Repaired[] = [];
  const fix = (path: string, mode: number, want: number) => {
    if ((mode & 0o077) === 0) return;
    chmodSync(path, want);
    repaired.push({ path, was: octal(mode) });
  };
  const walk = (d: string) => {
    fix(d, lstatSync(d).mode, 0o700);
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile()) fix(path, lstatSync(path).mode, 0o600);
    }
  };
  walk(dir);
  return repaired;
}
