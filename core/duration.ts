// Durations as operators write them: "24h", "90s", "500ms", "1h30m".
import { TwillError } from './errors.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDuration(text: string, what = 'duration'): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g;
  let total = 0;
  let consumed = 0;
  for (const m of text.matchAll(re)) {
    if (m.index !== consumed) break;
    total += Number(m[1]) * (UNITS[m[2] as string] as number);
    consumed += m[0].length;
  }
  if (text.length === 0 || consumed !== text.length) {
    throw new TwillError('InvalidDuration', `${what} ${JSON.stringify(text)} is not a duration: write it like 24h, 10s, 500ms or 1h30m`);
  }
  return total;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return [h ? `${h}h` : '', m ? `${m}m` : '', sec || (!h && !m) ? `${sec}s` : ''].join('');
}
