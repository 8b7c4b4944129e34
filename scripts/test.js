#!/usr/bin/env node
// Runs the whole suite (or the files given) with node's test runner under tsx,
// passes its report through, and ends with the plain line CI reads:
// "N passed, N failed".
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

function find(dir) {
  const out = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...find(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const given = process.argv.slice(2);
const files = given.length ? given : find('test');
const counts = { pass: 0, fail: 0, skipped: 0, cancelled: 0 };

// The whole suite also needs its Debian packages and a clean type-check; the
// type-check counts as one test in the final line.
if (!given.length) {
  const deps = spawnSync('bash', ['scripts/test-deps.sh'], { stdio: 'inherit' });
  if (deps.status !== 0) {
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
  const tsc = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '--noEmit', '-p', 'tsconfig.json'], { stdio: 'inherit' });
  if (tsc.status === 0) {
    console.log('✔ typecheck (tsc --noEmit)');
    counts.pass++;
  } else {
    console.log('✖ typecheck (tsc --noEmit) failed');
    counts.fail++;
  }
}
const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', ...files], {
  stdio: ['ignore', 'pipe', 'inherit'],
  env: { ...process.env, AWS_EC2_METADATA_DISABLED: 'true' },
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
  process.exit(code === 0 && failed === 0 && counts.pass > 0 ? 0 : 1);
});
