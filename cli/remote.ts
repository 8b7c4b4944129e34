// The CLI against the admin HTTP API (the serverless deployment, or a local
// controller started with --api-listen), instead of a local data directory.
import { readFileSync } from 'node:fs';
import { TwillError } from '../core/errors.js';

export interface Remote {
  url: string;
  token: string;
}

export const REMOTE_OPTIONS = {
  api: { type: 'string' },
  'token-file': { type: 'string' },
} as const;

/** --api URL (or TWILL_API) selects the API; the token comes from TWILL_API_TOKEN or --token-file. */
export function remoteFrom(values: { api?: string; 'token-file'?: string }): Remote | undefined {
  const url = values.api ?? process.env.TWILL_API;
  if (!url) return undefined;
  let token = process.env.TWILL_API_TOKEN;
  if (values['token-file']) {
    try {
      token = readFileSync(values['token-file'], 'utf8').trim();
    } catch (e) {
      throw new TwillError('Usage', `cannot read --token-file ${values['token-file']}: ${(e as Error).message}`);
    }
  }
  if (!token) throw new TwillError('Usage', `--api ${url} needs the admin token: set TWILL_API_TOKEN or give --token-file`);
  return { url: url.replace(/\/+$/, ''), token };
}

export async function callApi<T>(r: Remote, method: string, path: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await fetch(`${r.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${r.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new TwillError('Unreachable', `cannot reach the twill API at ${r.url}: ${(e as Error).message}`);
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new TwillError('BadResponse', `the twill API answered ${res.status} with something that is not JSON`);
  }
  if (!res.ok) {
    const err = json as { error?: string; errors?: string[] };
    const detail = err.errors?.length ? `: ${err.errors.join('; ')}` : '';
    throw new TwillError(res.status === 404 ? 'NotFound' : `Http${res.status}`, `${err.error ?? `HTTP ${res.status}`}${detail}`);
  }
  return json as T;
}
