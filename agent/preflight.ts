// What the agent checks before it starts anything: that it can write where
// it must. An agent that cannot keep its state would forget its subnet on
// restart, and one that cannot write subnet.env leaves every CNI call on the
// host failing with nothing in its own log; both are better refused at
// start with one line naming the path, the reason and the setting.
import { closeSync, openSync, statSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { TwillError } from '../core/errors.js';
import { makeDirs } from '../core/dirs.js';

/** Why `dir` cannot hold files this process writes, or undefined when it can. Makes it (once) when missing. */
function unwritableDir(dir: string): string | undefined {
  try {
    makeDirs(dir, 0o700);
    if (!statSync(dir).isDirectory()) return 'it is not a directory';
    // The agent writes each file as a temporary one renamed into place (subnet-env.ts): that is what must work.
    const probe = join(dir, `.twill-probe-${process.pid}`);
    closeSync(openSync(probe, 'wx', 0o600));
    unlinkSync(probe);
    return undefined;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    return err.code ? `${err.code}${err.syscall ? ` (${err.syscall})` : ''}` : err.message;
  }
}

export function checkWritable(opts: { stateDir: string; subnetFile: string }): void {
  const state = unwritableDir(opts.stateDir);
  if (state) throw new TwillError('StateDir', `state directory ${opts.stateDir} cannot be written: ${state}; set --state-dir (stateDir in the agent config) to a directory the agent may write`);
  if (opts.subnetFile.endsWith('/')) throw new TwillError('SubnetFile', `subnet file ${opts.subnetFile} names a directory; set --subnet-file to a file path such as /run/flannel/subnet.env`);
  try {
    if (statSync(opts.subnetFile).isDirectory()) throw new TwillError('SubnetFile', `subnet file ${opts.subnetFile} is a directory; set --subnet-file to a file path such as /run/flannel/subnet.env`);
  } catch (e) {
    if (e instanceof TwillError) throw e;
    // missing: written on the first lease
  }
  const sub = unwritableDir(dirname(opts.subnetFile));
  if (sub) throw new TwillError('SubnetFile', `subnet file ${opts.subnetFile} cannot be written: its directory: ${sub}; set --subnet-file (subnetFile in the agent config) to a path the agent may write`);
}
