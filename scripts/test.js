#!/usr/bin/env node
// Runs the whole suite (or the files given) with node's test runner under tsx,
// passes its report through, and ends with the plain line CI reads:
// "N passed, N failed".
import { spawn } from 'node:child_process';
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

const files = process.argv.slice(2).length ? process.argv.slice(2) : find('test');
const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', ...files], {
  stdio: ['ignore', 'pipe', 'inherit'],
  env: { ...process.env, AWS_EC2_METADATA_DISABLED: 'true' },
});
const counts = { pass: 0, fail: 0, skipped: 0, cancelled: 0 };
let buf = '';
child.stdout.on('data', (d) => {
  process.stdout.write(d);
  buf += d.toString();
  let nl;
  while ((nl = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    const m = /^ℹ (pass|fail|skipped|cancelled) (\d+)$/.exec(line.trim());
    if (m) counts[m[1]] = Number(m[2]);
  }
});
child.on('close', (code) => {
  const failed = counts.fail + counts.cancelled;
  console.log(`${counts.pass} passed, ${failed} failed` + (counts.skipped ? `, ${counts.skipped} skipped` : ''));
  process.exit(code === 0 && failed === 0 && counts.pass > 0 ? 0 : 1);
});
