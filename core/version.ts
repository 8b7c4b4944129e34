import { existsSync, readFileSync } from 'node:fs';

// This module runs from core/ (sources) and from dist/core/ (the build).
const packageJson = [new URL('../package.json', import.meta.url), new URL('../../package.json', import.meta.url)].find(
  (u) => existsSync(u) && (JSON.parse(readFileSync(u, 'utf8')) as { name?: string }).name === 'twill',
);

/** twill's version, from package.json, sent in every hello and status. */
export const VERSION: string = packageJson ? (JSON.parse(readFileSync(packageJson, 'utf8')) as { version: string }).version : '0.0.0';
