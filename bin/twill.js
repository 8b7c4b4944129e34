#!/usr/bin/env node
// The twill command runs the JavaScript that `npm run build` writes to dist/
// (npm start, npm test and CI build first), so a command starts without
// compiling anything. A checkout that was never built (or TWILL_FROM_SOURCE=1)
// runs the TypeScript sources through tsx, which is slower to start.
import { existsSync } from 'node:fs';

const built = new URL('../dist/cli/main.js', import.meta.url);
let main;
if (existsSync(built) && process.env.TWILL_FROM_SOURCE !== '1') {
  ({ main } = await import(built.href));
} else {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../cli/main.ts'));
}
process.exitCode = await main(process.argv.slice(2));
