import winston from 'winston';

export type Logger = winston.Logger;
export type LogFormat = 'pretty' | 'json';

/**
 * Much of what is logged comes from outside: message bodies and headers, set-aside reasons quoting them, plugin
 * console lines and errors. One record must stay one line whatever it holds (no forged lines, no terminal escape
 * sequences) and of bounded size, in both formats. So every record is cut down (safeRecord) and written with
 * every line-breaking or control character escaped (escapeText for pretty text, jsonLine for JSON).
 */

/** Longest message text of one record; the rest is cut. Plugin console lines are at most 4 KB. */
export const MAX_LOG_MESSAGE_CHARS = 8192;
/** Longest string anywhere in a record's metadata (a stack trace, a quoted message). */
export const MAX_LOG_META_STRING_CHARS = 2048;
/** Metadata deeper than this, or with more items than this per object or array, is summarised. */
const MAX_META_DEPTH = 4;
const MAX_META_ITEMS = 50;

/**
 * Characters that end or break a line for some reader, or drive a terminal: C0 controls (\n, \r, ESC, …), DEL,
 * C1 controls (NEL \x85 included), the Unicode line and paragraph separators, and lone surrogates (not text, and
 * refused by strict UTF-8 readers). JSON.stringify escapes only the C0 controls and lone surrogates.
 */
const UNSAFE_CHARS =
  /[\u0000-\u001f\u007f-\u009f\u2028\u2029]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;
const UNSAFE_AFTER_JSON = /[\u007f-\u009f\u2028\u2029]/g;

const NAMED_ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

function hexEscape(c: string): string {
  const code = c.charCodeAt(0);
  return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
}

/** Text with every unsafe character written as an escape (`\n`, `\x1b`, `\u2028`): one line, no control codes. */
export function escapeText(text: string): string {
  return text.replace(UNSAFE_CHARS, (c) => NAMED_ESCAPES[c] ?? hexEscape(c));
}

/** JSON text of a value on one line: also escapes the characters JSON.stringify leaves as they are. */
export function jsonLine(value: unknown): string {
  return JSON.stringify(value).replace(UNSAFE_AFTER_JSON, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** At most `max` characters (never ending in half a surrogate pair), saying how much was cut. */
export function cutText(text: string, max: number): string {
  if (text.length <= max) return text;
  let end = max;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end--;
  return `${text.slice(0, end)}…(${text.length - end} more characters)`;
}

/** Metadata cut to bounded size and depth, made of plain data only (what JSON can write without throwing). */
export function safeValue(value: unknown, depth = 0): unknown {
  switch (typeof value) {
    case 'string':
      return cutText(value, MAX_LOG_META_STRING_CHARS);
    case 'number':
    case 'boolean':
    case 'undefined':
      return value;
    case 'bigint':
      return String(value);
    case 'symbol':
    case 'function':
      return undefined;
  }
  if (value === null) return null;
  if (value instanceof Error) {
    const e: Record<string, unknown> = {
      name: safeValue(value.name, depth + 1),
      message: safeValue(value.message, depth + 1),
    };
    if (value.stack !== undefined) e.stack = safeValue(value.stack, depth + 1);
    return e;
  }
  if (Buffer.isBuffer(value)) return `<${value.length} bytes>`;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? 'Invalid Date' : value.toISOString();
  if (depth >= MAX_META_DEPTH) return Array.isArray(value) ? `[array of ${value.length}]` : '[object]';
  try {
    if (Array.isArray(value)) {
      const items = value.slice(0, MAX_META_ITEMS).map((v) => safeValue(v, depth + 1) ?? null);
      if (value.length > MAX_META_ITEMS) items.push(`…(${value.length - MAX_META_ITEMS} more items)`);
      return items;
    }
    const keys = Object.keys(value as object);
    const out: Record<string, unknown> = {};
    for (const k of keys.slice(0, MAX_META_ITEMS))
      out[cutText(k, 256)] = safeValue((value as Record<string, unknown>)[k], depth + 1);
    if (keys.length > MAX_META_ITEMS) out['…'] = `${keys.length - MAX_META_ITEMS} more keys`;
    return out;
  } catch (err) {
    // A getter or proxy that throws must not take the log call (and its caller) down.
    return `[unreadable: ${cutText(String((err as Error)?.message ?? err), 200)}]`;
  }
}

/** The record's metadata (everything but level, message and timestamp), made safe. */
function safeMeta(info: winston.Logform.TransformableInfo): Record<string, unknown> {
  const meta: Record<string, unknown> = {};
  for (const key of Object.keys(info)) {
    if (key === 'level' || key === 'message' || key === 'timestamp') continue;
    meta[cutText(key, 256)] = safeValue(info[key], 1);
  }
  return meta;
}

function messageText(message: unknown): string {
  return cutText(typeof message === 'string' ? message : String(message), MAX_LOG_MESSAGE_CHARS);
}

/** `pretty`: `time level message {meta as JSON}` on one line. */
export function prettyLine(info: winston.Logform.TransformableInfo): string {
  const meta = safeMeta(info);
  const rest = Object.keys(meta).length ? ' ' + jsonLine(meta) : '';
  return `${String(info.timestamp)} ${info.level} ${escapeText(messageText(info.message))}${rest}`;
}

/** `json`: one object per line, `level`, `message`, the metadata, `timestamp`. */
export function jsonRecordLine(info: winston.Logform.TransformableInfo): string {
  return jsonLine({
    level: info.level,
    message: messageText(info.message),
    ...safeMeta(info),
    timestamp: info.timestamp,
  });
}

/**
 * One winston logger for the process. Human-readable on a terminal, JSON lines otherwise when asked
 * (`--log-format json` / LOG_FORMAT=json). Logs go to stderr so that `replay` can write results to stdout.
 */
export function createLogger(level = 'info', format: LogFormat = 'pretty'): Logger {
  return winston.createLogger({
    level,
    format:
      format === 'json'
        ? winston.format.combine(
            winston.format.timestamp(),
            winston.format.errors({ stack: true }),
            winston.format.printf(jsonRecordLine),
          )
        : winston.format.combine(
            winston.format.timestamp({ format: 'HH:mm:ss.SSS' }),
            winston.format.errors({ stack: true }),
            ...(process.stderr.isTTY ? [winston.format.colorize()] : []),
            winston.format.printf(prettyLine),
          ),
    transports: [new winston.transports.Console({ stderrLevels: Object.keys(winston.config.npm.levels) })],
  });
}

/** A logger that drops everything, for tests and library use. */
export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console()] });
}
