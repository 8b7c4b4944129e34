// Plain, greppable log lines on stderr: "time level component: message k=v"
// (or one JSON object a line, for CloudWatch Logs).
// Callers pass fields explicitly; nothing here ever serialises a payload, so a
// secret cannot slip in by accident.

export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(component: string): Logger;
}

function fmt(v: unknown): string {
  const s = typeof v === 'string' ? v : v instanceof Error ? v.message : JSON.stringify(v);
  // Quoted (and so escaped) when it holds a space, a quote, an = or any
  // control character: a value a node sent can never start a line of its
  // own or send an escape sequence to the terminal reading the log.
  return /[\s"=\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(s ?? '') ? JSON.stringify(s).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) : String(s);
}

/**
 * text: the line above, for a terminal and journald; json: one JSON object
 * per line (time, level, component, msg, then the fields), which CloudWatch
 * Logs Insights queries by field. TWILL_LOG_FORMAT=json picks it (the
 * deployment's functions set it).
 */
export type LogFormat = 'text' | 'json';

export function createLogger(
  component: string,
  level: Level = (process.env.TWILL_LOG_LEVEL as Level) || 'info',
  write: (line: string) => void = (l) => process.stderr.write(l + '\n'),
  format: LogFormat = process.env.TWILL_LOG_FORMAT === 'json' ? 'json' : 'text',
): Logger {
  const min = ORDER[level] ?? ORDER.info;
  const emit = (lvl: Level, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[lvl] < min) return;
    const given = fields ? Object.entries(fields).filter(([, v]) => v !== undefined) : [];
    if (format === 'json') {
      // Field values as they are (an Error as its message); JSON escapes every control character.
      const doc: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, component, msg };
      for (const [k, v] of given) if (!(k in doc)) doc[k] = v instanceof Error ? v.message : v;
      return write(JSON.stringify(doc).replace(/[\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16)}`));
    }
    const kv = given.map(([k, v]) => ` ${k}=${fmt(v)}`).join('');
    write(`${new Date().toISOString()} ${lvl} ${component}: ${msg}${kv}`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (c) => createLogger(`${component}/${c}`, level, write, format),
  };
}

export const silentLogger: Logger = {
  debug() {}, info() {}, warn() {}, error() {},
  child() { return silentLogger; },
};
