#!/usr/bin/env node
// The twill command. Sources are TypeScript, loaded through tsx so that there
// is no build step between a checkout and a running controller or agent.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
