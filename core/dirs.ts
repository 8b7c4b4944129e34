// mkdir -p that cannot spin. Node's mkdirSync({ recursive: true }) retries a
// component that fails with ENOENT, and under /proc (where mkdir answers
// ENOENT for ever) it loops at full CPU: `--state-dir /proc/nope` made the
// agent spin for ten minutes. This walks up to the first directory that
// exists, then makes each missing one once, and throws the first real error.
// (The one file system helper in core/: every layer makes directories.)
import { mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

export function makeDirs(dir: string, mode = 0o777): void {
  const missing: string[] = [];
  for (let d = resolve(dir); ; d = dirname(d)) {
    try {
      if (statSync(d).isDirectory()) break;
      throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${d}'`), { code: 'ENOTDIR', syscall: 'mkdir', path: d });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      missing.push(d);
      if (dirname(d) === d) break;
    }
  }
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d, { mode });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e; // made meanwhile by someone else
    }
  }
}
