// JSON read as Go's encoding/json reads it into a struct, which is how
// flanneld reads net-conf.json, so that a flannel user's file means the same
// here: object keys match field names case-insensitively, when several keys
// land on one field the last one wins, null leaves the default, and keys no
// field asks for are left over (Go ignores them; core/config.ts warns about
// them, with the closest known name). Its own JSON text parser, because
// JSON.parse sometimes quotes the whole input in its messages (and with it a
// PSK) and merges duplicate keys before anyone can see them. No I/O.

// ---------------------------------------------------------------------------
// JSON text. Objects keep their entries as written: Go's decoder applies
// every occurrence of a key in document order.

export class JsonObject {
  constructor(readonly entries: Array<[string, unknown]>) {}
}

export class JsonSyntaxError extends Error {
  constructor(readonly at: number, reason: string) {
    super(reason);
  }
}

// Far beyond any real net-conf.json, well within the JS stack.
const MAX_DEPTH = 1000;
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const ESCAPES: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };

export function parseJson(text: string): unknown {
  let i = 0;
  const fail = (reason: string, at = i): never => {
    throw new JsonSyntaxError(at, reason);
  };
  // Only ever called outside strings, so the character shown is structure, not content.
  const found = (): string => (i >= text.length ? 'the end of the input' : JSON.stringify(text[i]));
  const skipSpace = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i] as string)) i++;
  };

  const readString = (): string => {
    const start = i++;
    let out = '';
    for (;;) {
      if (i >= text.length) fail('unterminated string', start);
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return out;
      }
      if (c < 0x20) fail('control character inside a string: write it as an escape such as \\n');
      if (c !== 0x5c) {
        out += text[i++];
        continue;
      }
      const e = text[i + 1] ?? '';
      if (e === 'u') {
        const hex = text.slice(i + 2, i + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail('invalid \\u escape: expected four hex digits');
        out += String.fromCharCode(parseInt(hex, 16));
        i += 6;
      } else if (e in ESCAPES) {
        out += ESCAPES[e];
        i += 2;
      } else {
        fail('invalid escape in a string');
      }
    }
  };

  const readValue = (depth: number): unknown => {
    if (depth > MAX_DEPTH) fail('values are nested too deeply');
    skipSpace();
    const c = text[i];
    if (c === undefined) return fail('unexpected end of input: expected a value');
    if (c === '"') return readString();
    if (c === '{') {
      i++;
      const entries: Array<[string, unknown]> = [];
      skipSpace();
      if (text[i] === '}') {
        i++;
        return new JsonObject(entries);
      }
      for (;;) {
        skipSpace();
        if (text[i] !== '"') {
          const hint = text[i] === '}' ? ' (JSON allows no comma before })' : '';
          fail(`expected a double-quoted property name, found ${found()}${hint}`);
        }
        const key = readString();
        skipSpace();
        if (text[i] !== ':') fail(`expected ':' after property name ${JSON.stringify(key)}, found ${found()}`);
        i++;
        entries.push([key, readValue(depth + 1)]);
        skipSpace();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return new JsonObject(entries);
        }
        fail(`expected ',' or '}' after the value of ${JSON.stringify(key)}, found ${found()}`);
      }
    }
    if (c === '[') {
      i++;
      const items: unknown[] = [];
      skipSpace();
      if (text[i] === ']') {
        i++;
        return items;
      }
      for (;;) {
        items.push(readValue(depth + 1));
        skipSpace();
        if (text[i] === ',') {
          i++;
          skipSpace();
          if (text[i] === ']') fail('JSON allows no comma before ]');
          continue;
        }
        if (text[i] === ']') {
          i++;
          return items;
        }
        fail(`expected ',' or ']' in an array, found ${found()}`);
      }
    }
    if (c === '-' || (c >= '0' && c <= '9')) {
      NUMBER.lastIndex = i;
      const m = NUMBER.exec(text);
      if (!m) return fail('invalid number');
      i += m[0].length;
      return Number(m[0]);
    }
    for (const [word, value] of [['true', true], ['false', false], ['null', null]] as const) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return value;
      }
    }
    if (/[A-Za-z_]/.test(c)) return fail('unquoted word: expected a value (strings are written in double quotes)');
    return fail(`expected a value, found ${found()}`);
  };

  const value = readValue(0);
  skipSpace();
  if (i < text.length) fail(`unexpected ${found()} after the end of the JSON value`);
  return value;
}

export function position(text: string, at: number): string {
  const before = text.slice(0, at);
  const line = before.split('\n').length;
  const column = at - (before.lastIndexOf('\n') + 1) + 1;
  return `line ${line}, column ${column}`;
}

// ---------------------------------------------------------------------------
// Typed fields of an object, looked up as Go's encoding/json does: keys match
// case-insensitively and, when several keys land on one field, the last wins.
// null is Go's "leave the default", so it reads as absent.

export function isObject(v: unknown): v is object {
  return v instanceof JsonObject || (typeof v === 'object' && v !== null && !Array.isArray(v));
}

export function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (isObject(v)) return 'an object';
  const t = typeof v;
  return /^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`;
}

/** A short rendering of a scalar for an error message; containers are only named by kind. */
export function shown(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return '';
}

export function typeMessage(label: string, v: unknown, expected: string, secret = false): string {
  const value = secret ? '' : shown(v);
  return `${label}${value ? ` ${value}` : ''} is ${kindOf(v)}: expected ${expected}`;
}

export class Fields {
  private readonly byKey = new Map<string, { key: string; value: unknown }>();
  private readonly taken = new Set<string>();

  constructor(
    obj: object,
    private readonly errors: string[],
    private readonly prefix = '',
  ) {
    const entries = obj instanceof JsonObject ? obj.entries : Object.entries(obj);
    for (const [key, value] of entries) {
      const folded = key.toLowerCase();
      // Re-inserting moves the key to the end, so leftovers are listed in the order last written.
      this.byKey.delete(folded);
      this.byKey.set(folded, { key, value });
    }
  }

  /** The field's name as errors show it (with the object's prefix, e.g. Backend.Overlay.MTU). */
  label(name: string): string {
    return this.prefix + name;
  }

  /** The value, undefined when absent or null; marks the field as known. */
  raw(name: string): unknown {
    const folded = name.toLowerCase();
    this.taken.add(folded);
    const v = this.byKey.get(folded)?.value;
    return v === null ? undefined : v;
  }

  has(name: string): boolean {
    return this.raw(name) !== undefined;
  }

  private typeError(name: string, v: unknown, expected: string, secret = false): undefined {
    this.errors.push(typeMessage(this.label(name), v, expected, secret));
    return undefined;
  }

  string(name: string, secret = false): string | undefined {
    const v = this.raw(name);
    if (v === undefined || typeof v === 'string') return v;
    return this.typeError(name, v, 'a string', secret);
  }

  boolean(name: string): boolean | undefined {
    const v = this.raw(name);
    if (v === undefined || typeof v === 'boolean') return v;
    return this.typeError(name, v, 'a boolean (true or false)');
  }

  integer(name: string): number | undefined {
    const v = this.raw(name);
    if (v === undefined) return undefined;
    if (typeof v !== 'number') return this.typeError(name, v, 'an integer');
    if (!Number.isSafeInteger(v)) {
      this.errors.push(`${this.label(name)} ${v} ${Number.isInteger(v) ? 'is too large' : 'is not an integer'}`);
      return undefined;
    }
    return v;
  }

  /** An integer within [lo, hi]; undefined (with an error) when outside. */
  integerIn(name: string, lo: number, hi: number): number | undefined {
    const v = this.integer(name);
    if (v === undefined || (v >= lo && v <= hi)) return v;
    this.errors.push(`${this.label(name)} ${v} is out of range: it must be from ${lo} to ${hi}`);
    return undefined;
  }

  /** Keys never asked for, as the user wrote them. */
  unknown(): string[] {
    return [...this.byKey].filter(([folded]) => !this.taken.has(folded)).map(([, e]) => e.key);
  }
}


/**
 * The name among known closest to name (case-insensitive edit distance), when
 * it is close enough to be a typo: at most a third of its letters wrong.
 */
export function closestName(name: string, known: readonly string[]): string | undefined {
  const a = name.toLowerCase();
  let best: { name: string; d: number } | undefined;
  for (const k of known) {
    const d = editDistance(a, k.toLowerCase());
    if (!best || d < best.d) best = { name: k, d };
  }
  return best && best.d > 0 && best.d <= Math.max(1, Math.floor(a.length / 3)) ? best.name : undefined;
}

/** Levenshtein distance, with a swap of two neighbours counted as one edit. */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) (d[0] as number[])[j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i] as number[];
      const up = d[i - 1] as number[];
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row[j] = Math.min((up[j] as number) + 1, (row[j - 1] as number) + 1, (up[j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) row[j] = Math.min(row[j] as number, ((d[i - 2] as number[])[j - 2] as number) + 1);
    }
  }
  return (d[a.length] as number[])[b.length] as number;
}
