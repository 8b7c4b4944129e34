import { readFileSync } from 'node:fs';

/** twill's version, from package.json, sent in every hello and status. */
export const VERSION: string = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
).version;
