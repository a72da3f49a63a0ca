/**
 * Limits every message is checked against before any work that could fail on its shape: nesting depth and size.
 *
 * Why depth: JSON.parse is iterative in V8, but much of what follows a parse is recursive (JSON.stringify, kombu
 * tag revival, copies into plugin isolates, amqplib's field tables, log formatting). Nested a few thousand levels
 * deep, a value overflows the stack in the middle of a batch. Python cannot read such a message either: its json
 * module raises RecursionError below ~1,000 levels, so Celery would drop the task. 128 levels is far beyond any
 * real event (PostHog's are a handful deep) and keeps every recursive step of ours (V8 overflows at ~4,000) and
 * Python's far from its limit.
 *
 * Why size: one entry must fit through a plugin isolate (64 MB heap by default) with room to spare, and a
 * compressed body must not inflate past it. PostHog's events are kilobytes; 8 MiB is room for the largest
 * `$set`/`$snapshot` payloads.
 *
 * Pure functions, no I/O; both never throw and never recurse.
 */

/** Deepest nesting of arrays/objects accepted in a message body, its headers or a Redis envelope. */
export const MAX_NESTING_DEPTH = 128;

/** Largest message body accepted, as received and once decompressed (bytes). */
export const MAX_MESSAGE_BYTES = 8 * 1024 * 1024;

/**
 * Largest Redis envelope accepted (characters): a body of MAX_MESSAGE_BYTES in base64 plus 1 Mi for headers and
 * properties. Checked before the envelope is parsed, so outsized headers cost nothing either (on RabbitMQ the
 * headers must fit in one frame, 128 KiB by default).
 */
export const MAX_ENVELOPE_CHARS = Math.ceil(MAX_MESSAGE_BYTES / 3) * 4 + 1024 * 1024;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;

/**
 * True when the arrays/objects of JSON `text` nest deeper than `max` (brackets inside strings do not count).
 * Reads the text once without parsing it; strings are skipped with indexOf. For text that is not valid JSON the
 * answer only concerns its brackets (JSON.parse will refuse it anyway).
 */
export function jsonTextTooDeep(text: string, max: number = MAX_NESTING_DEPTH): boolean {
  // Each level takes at least one character: a short text cannot be too deep.
  if (text.length <= max) return false;
  // Nor can one with at most `max` opening brackets anywhere, strings included: counted with indexOf, this settles
  // a typical envelope or body in ~0.1-0.2 µs, a tenth of the full scan below.
  let openers = 0;
  for (let i = text.indexOf('{'); i >= 0 && openers <= max; i = text.indexOf('{', i + 1)) openers++;
  for (let i = text.indexOf('['); i >= 0 && openers <= max; i = text.indexOf('[', i + 1)) openers++;
  if (openers <= max) return false;
  let depth = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      // Jump to the closing quote: the next one not escaped by an odd run of backslashes.
      let j = i;
      for (;;) {
        j = text.indexOf('"', j + 1);
        if (j < 0) return false; // unterminated string: not JSON, and no bracket after it counts
        let k = j - 1;
        while (text.charCodeAt(k) === BACKSLASH) k--;
        if ((j - 1 - k) % 2 === 0) break;
      }
      i = j;
    } else if (c === OPEN_ARRAY || c === OPEN_OBJECT) {
      if (++depth > max) return true;
    } else if (c === CLOSE_ARRAY || c === CLOSE_OBJECT) {
      depth--;
    }
  }
  return false;
}

/**
 * True when the arrays/objects of an already-parsed value nest deeper than `max` (a scalar is depth 0, `{}` or `[]`
 * depth 1). Stops at the first path that is too deep, so the recursion is at most max + 1 calls deep; also safe on
 * cycles (a cycle is infinitely deep). Allocates nothing: it runs on every message's headers and every event a
 * plugin changed.
 */
export function valueTooDeep(value: unknown, max: number = MAX_NESTING_DEPTH): boolean {
  return nestsDeeper(value, max, 1);
}

/** valueTooDeep for a value found at depth `depth` (if it is an array or object). */
function nestsDeeper(value: unknown, max: number, depth: number): boolean {
  if (value === null || typeof value !== 'object') return false;
  if (depth > max) return true;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (nestsDeeper(value[i], max, depth + 1)) return true;
    return false;
  }
  if (Buffer.isBuffer(value)) return false;
  // for…in with the own-key check: the values Object.values would give, without its array.
  for (const key in value) {
    if (Object.hasOwn(value, key) && nestsDeeper((value as Record<string, unknown>)[key], max, depth + 1)) return true;
  }
  return false;
}

/** The refusal reason for a JSON value too deep, naming what it was. */
export function tooDeepReason(what: string, max: number = MAX_NESTING_DEPTH): string {
  return `${what} too deeply nested (more than ${max} levels)`;
}

/** The refusal reason for a message too large. */
export function tooLargeReason(what: string, size: number, max: number = MAX_MESSAGE_BYTES, unit = 'bytes'): string {
  return `${what} is ${size} ${unit}, more than the limit of ${max}`;
}
