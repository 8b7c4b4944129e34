#!/usr/bin/env node
// npm run build: type-checks everything and writes dist/ in one tsc run, then
// copies the plain JavaScript modules tsc does not emit (the udp worker
// thread and its wire format run without any loader). Exits non-zero, with
// tsc's messages, when a file does not type-check.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';

const root = join(import.meta.dirname, '..');
const tsc = spawnSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.json')], { stdio: 'inherit' });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);
for (const dir of ['agent/udp']) {
  for (const name of readdirSync(join(root, dir))) {
    if (!name.endsWith('.mjs')) continue;
    const to = join(root, 'dist', dir, name);
    mkdirSync(dirname(to), { recursive: true });
    copyFileSync(join(root, dir, name), to);
  }
}
