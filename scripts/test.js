#!/usr/bin/env node
// Runs the test suite with node's test runner under tsx, passes its report
// through, and ends with the plain line CI reads: "N passed, N failed".
//
//   node scripts/test.js                 everything (npm test, CI): Debian packages, build, every tier
//   node scripts/test.js --tier unit     one tier (npm run test:unit, ...), see TIERS
//   node scripts/test.js FILE...         just these files
//
// The unit tier, and any run of test/unit files alone, is the loop to run
// after each edit: it runs the sources under tsx without building, and any
// twill command it starts runs the sources too (TWILL_FROM_SOURCE=1), never a
// dist/ an earlier build left. tsx does not type-check: a type error fails
// npm run build and npm test, not the unit tier.
//
// Every other run builds first (npm run build: the type-check and dist/, which
// the twill processes those tests start are run from), so no test ever runs an
// old build. The build counts as one test in the final line.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { join, resolve, sep } from 'node:path';

// The suite runs on the Node.js 24 of devDependencies (node_modules/.bin/node),
// as npm's scripts do, also when this file is run as `node scripts/test.js`
// by a machine's older Node: the product is tested on the Node it ships for.
const pinned = join(import.meta.dirname, '..', 'node_modules', '.bin', 'node');
if (existsSync(pinned) && realpathSync(pinned) !== realpathSync(process.execPath)) {
  const r = spawnSync(pinned, [import.meta.filename, ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
if (Number(process.versions.node.split('.')[0]) < 22) {
  console.error(`the tests run on Node 22 or 24, not ${process.version}: run npm install (it brings Node 24 as a devDependency), then npm test`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}
// better-sqlite3 built for this Node: scripts/native.js rebuilds it when an
// install left it built for another. Tried here first, in this process, so
// that a run where it loads (nearly every run) starts no process for it.
function sqliteLoads() {
  try {
    createRequire(import.meta.url)('better-sqlite3')(':memory:').close();
    return true;
  } catch {
    return false;
  }
}
if (!sqliteLoads() && spawnSync(process.execPath, [join(import.meta.dirname, 'native.js')], { stdio: 'inherit' }).status !== 0) {
  console.log('0 passed, 1 failed');
  process.exit(1);
}

/** Each tier is a folder of test/; the README says what each needs. */
const TIERS = {
  unit: 'in-process, no root, no Debian packages, no build: the fast loop',
  integration: 'twill processes over real MQTT, Mosquitto, dynalite, the SST check',
  kernel: 'root: network namespaces, real devices, iptables',
  e2e: 'root: hosts as namespaces with CNI pods, and user-mode-linux for ipip and ipsec',
};

function find(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...find(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const args = process.argv.slice(2);
let files;
let whole = false;
if (args[0] === '--tier') {
  const tier = args[1];
  if (!tier || !(tier in TIERS)) {
    console.error(`unknown tier ${JSON.stringify(tier)}: one of ${Object.keys(TIERS).join(', ')}`);
    process.exit(2);
  }
  files = find(join('test', tier));
} else if (args.length) {
  files = args;
} else {
  whole = true;
  files = Object.keys(TIERS).flatMap((t) => find(join('test', t)));
}
const counts = { pass: 0, fail: 0, skipped: 0, cancelled: 0 };
const unitDir = resolve(import.meta.dirname, '..', 'test', 'unit') + sep;
const unitOnly = !whole && files.every((f) => resolve(f).startsWith(unitDir));
const env = { ...process.env, AWS_EC2_METADATA_DISABLED: 'true' };
const runnerArgs = [];
if (unitOnly) {
  env.TWILL_FROM_SOURCE = '1';
  // A unit test file mostly waits (on loopback sockets, the stand-ins, its
  // timers), so a few files at once keep a small machine's cores busy where
  // node's default (one fewer than the cores) runs them one by one on two.
  runnerArgs.push(`--test-concurrency=${Math.max(4, availableParallelism())}`);
  console.log('unit tests from the sources: not built and not type-checked (npm run build does both)');
}

if (whole) {
  const deps = spawnSync('bash', ['scripts/test-deps.sh'], { stdio: 'inherit' });
  if (deps.status !== 0) {
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
}
if (!unitOnly) {
  const build = spawnSync(process.execPath, ['scripts/build.js'], { stdio: 'inherit' });
  if (build.status === 0) {
    console.log('✔ build and type-check (npm run build)');
    counts.pass++;
  } else {
    console.log('✖ build and type-check (npm run build) failed');
    counts.fail++;
  }
}
// At least one test beyond the build must pass: a run that found no test fails.
const least = counts.pass + counts.fail;
const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', ...runnerArgs, ...files], {
  stdio: ['ignore', 'pipe', 'inherit'],
  env,
});
let buf = '';
child.stdout.on('data', (d) => {
  process.stdout.write(d);
  buf += d.toString();
  let nl;
  while ((nl = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    const m = /^ℹ (pass|fail|skipped|cancelled) (\d+)$/.exec(line.trim());
    if (m) counts[m[1]] += Number(m[2]);
  }
});
child.on('close', (code) => {
  const failed = counts.fail + counts.cancelled;
  console.log(`${counts.pass} passed, ${failed} failed` + (counts.skipped ? `, ${counts.skipped} skipped` : ''));
  process.exit(code === 0 && failed === 0 && counts.pass > least ? 0 : 1);
});
