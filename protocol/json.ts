/**
 * JSON as Python's kombu writes and reads it.
 *
 * Reading: kombu ≥5.3 encodes non-JSON Python values (datetime, Decimal, UUID, bytes, …) as a tagged object
 * `{"__type__": T, "__value__": V}` and its decoder converts *every* object whose key set is exactly those two
 * keys. We do the same, turning each tag into the plain JSON value kombu ≤5.2 would have sent (strings), so the
 * rest of the worker never sees the difference between producer versions.
 *
 * Writing: a Python ≥5.3 consumer would convert any object with exactly those two keys, and raise on an unknown
 * `__type__` (the whole message then fails to decode), so we refuse to emit such objects. JSON.stringify also
 * silently turns NaN/Infinity and `undefined` array items into `null`, which would change the data Python sees:
 * refuse those too.
 */
import { LosslessNumber } from './lossless-number';
import { holdsUnsafeInteger, needsLosslessParse, parseLosslessJson } from './lossless-numbers';
import type { JsonObject, JsonValue } from './types';

/** Raised for a tagged value we cannot convert; JSON syntax errors stay SyntaxError. */
export class KombuTagError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KombuTagError';
  }
}

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

/** A JSON object: not null, not an array, not a LosslessNumber. */
export function isJsonObject(value: unknown): value is JsonObject {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof LosslessNumber);
}

/** True for an object (not array) whose own keys are exactly `__type__` and `__value__`. */
export function isTaggedShape(value: unknown): value is { __type__: unknown; __value__: unknown } {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  if (!hasOwn(value, '__type__') || !hasOwn(value, '__value__')) return false;
  return Object.keys(value).length === 2;
}

const STRICT_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Decodes strict base64 (standard alphabet, padded, no whitespace), or returns null when `text` is not that.
 * Accepts and refuses exactly what STRICT_BASE64 does. Fast path: the decoded length tells, without the regex
 * and without a copy of the text (see decodedInFull); otherwise (garbage, base64url characters, padding in the
 * middle, …) the regex decides, as before.
 */
export function decodeStrictBase64(text: string): Buffer | null {
  const bytes = Buffer.from(text, 'base64');
  if (decodedInFull(text, bytes)) return bytes;
  return STRICT_BASE64.test(text) ? bytes : null;
}

const EQUALS = 61;

/**
 * True when `bytes` (Buffer.from(text, 'base64')) proves `text` strict base64. Node's decoder skips any
 * character outside its alphabet, and without one of them fewer than 3n/4 bytes come out of n characters
 * (each character counts, and a skipped one always costs a byte: n mod 4 is never 1 here). Its alphabet also
 * has base64url's '-' and '_' and takes '=' anywhere: those are looked for here.
 */
function decodedInFull(text: string, bytes: Buffer): boolean {
  const n = text.length;
  if (n % 4 !== 0) return false;
  const pad = n === 0 || text.charCodeAt(n - 1) !== EQUALS ? 0 : text.charCodeAt(n - 2) !== EQUALS ? 1 : 2;
  if (bytes.length !== (n / 4) * 3 - pad) return false;
  const firstEquals = text.indexOf('=');
  if (firstEquals >= 0 && firstEquals < n - pad) return false;
  return !text.includes('-') && !text.includes('_');
}

/** Formats 32 hex digits (as in Python's `UUID.hex`) as the canonical 8-4-4-4-12 lowercase form. */
function formatUuidHex(input: string): string {
  // uuid.UUID(hex=...) accepts braces, a urn:uuid: prefix and hyphens anywhere; so do we.
  const hex = input
    .trim()
    .replace(/^urn:uuid:/i, '')
    .replace(/^\{|\}$/g, '')
    .replace(/-/g, '')
    .toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) {
    throw new KombuTagError(`tagged uuid has an invalid hex value ${JSON.stringify(input)}`);
  }
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function requireString(type: string, value: unknown): string {
  if (typeof value !== 'string') {
    throw new KombuTagError(`tagged ${type} must carry a string __value__, got ${describe(value)}`);
  }
  return value;
}

/** Converts one tagged object `{__type__, __value__}` to a plain JSON value. */
export function convertTagged(tagged: { __type__: unknown; __value__: unknown }): JsonValue {
  const type = tagged.__type__;
  const value = tagged.__value__;
  switch (type) {
    case 'datetime':
    case 'date':
    case 'time':
      // kombu writes isoformat(); keep it exactly as given (an aware UTC datetime keeps its "+00:00").
      return requireString(type, value);
    case 'decimal':
      // str(Decimal) keeps precision and trailing zeros ("1.10"); a JS number could not.
      return requireString(type, value);
    case 'uuid': {
      // kombu 5.3+ writes {"hex": ..., "version": ...}; accept a bare string too, which older drafts used.
      if (typeof value === 'string') return formatUuidHex(value);
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
        const hex = (value as Record<string, unknown>).hex;
        if (typeof hex === 'string') return formatUuidHex(hex);
      }
      throw new KombuTagError(`tagged uuid must carry {"hex": "<32 hex digits>"}, got ${describe(value)}`);
    }
    case 'bytes':
      // kombu uses "bytes" only for bytes that decoded as UTF-8, and stores the decoded text.
      return requireString(type, value);
    case 'base64': {
      // kombu uses "base64" for bytes that are not UTF-8. We still hand out text (the worker has no bytes
      // type in JSON): invalid sequences become U+FFFD, which is lossy but never throws.
      const text = requireString(type, value);
      const bytes = decodeStrictBase64(text);
      if (bytes === null) {
        throw new KombuTagError(`tagged base64 value is not valid base64: ${JSON.stringify(truncate(text, 60))}`);
      }
      return bytes.toString('utf8');
    }
    default:
      throw new KombuTagError(
        `unknown kombu tagged value __type__ ${typeof type === 'string' ? JSON.stringify(type) : describe(type)}`,
      );
  }
}

/**
 * A `\uXXXX` escape of one of the characters of "__type__" (`_` 5F, `e` 65, `p` 70, `t` 74, `y` 79): the only
 * way a JSON text can spell that key other than literally (`\t` and friends stand for other characters).
 */
const TYPE_KEY_OR_ESCAPE = /"__type__"|\\u00(?:5[Ff]|65|7[049])/;

/**
 * False only when no object parsed from `text` can have an own key `__type__`, i.e. when the text contains
 * neither the literal key `"__type__"` nor a `\u` escape that could spell one of its characters. True is
 * only a "maybe" (the text may be inside a string value, `\\u0074` is an escaped backslash, …).
 */
export function mayContainTaggedValue(text: string): boolean {
  // One regex pass costs less than String#includes of the key alone.
  return TYPE_KEY_OR_ESCAPE.test(text);
}

function reviver(_key: string, value: unknown): unknown {
  return isTaggedShape(value) ? convertTagged(value) : value;
}

function reviveObject(value: JsonObject): JsonValue {
  return isTaggedShape(value) ? convertTagged(value) : value;
}

/**
 * JSON.parse plus kombu ≥5.3 tagged-value conversion (bottom-up, like kombu's object_hook).
 * Throws SyntaxError for malformed JSON and KombuTagError for a tag it cannot convert.
 *
 * Numbers JSON.parse would change (2**64+1, 10**30, 1.0, -0.0, 1e+16, Infinity, NaN: see lossless-numbers.ts)
 * are kept as LosslessNumbers: a text with a fraction or exponent JSON.stringify would not write back the same
 * (a quick scan tells) is parsed by the lossless parser, one with an integer beyond 2^53 or -0 (its values tell)
 * is parsed again by it; the others are what JSON.parse returns, as before.
 *
 * A reviver makes JSON.parse several times slower, and only matters when some object has a `__type__` key
 * (every tagged shape has one); texts that cannot contain such a key are parsed plainly, with the same result
 * (with no tagged shape the reviver returns every value unchanged, and a SyntaxError is raised before any
 * reviving in both cases).
 */
export function parseKombuJson(text: string): JsonValue {
  if (needsLosslessParse(text)) return parseLosslessJson(text, reviveObject);
  const value = (mayContainTaggedValue(text) ? JSON.parse(text, reviver) : JSON.parse(text)) as JsonValue;
  // Integers beyond 2^53 and -0 are told by their values: parsed again, keeping them as written (rare).
  return holdsUnsafeInteger(value) ? parseLosslessJson(text, reviveObject) : value;
}

/** Deeper than this, the checks below give up and answer "maybe" (the full path then runs, as before). */
const MAX_CHECK_DEPTH = 256;

/**
 * True when some object inside an already-parsed value has the tagged shape (or the value is nested too deep to
 * tell cheaply). reviveKombuTags of a value without tagged shapes is a plain deep copy of it.
 */
export function containsTaggedShape(value: JsonValue, depth = 0): boolean {
  if (value === null || typeof value !== 'object' || value instanceof LosslessNumber) return false;
  if (depth > MAX_CHECK_DEPTH) return true;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (containsTaggedShape(value[i], depth + 1)) return true;
    return false;
  }
  if (hasOwn(value, '__type__') && isTaggedShape(value)) return true;
  // for…in also visits inherited enumerable keys: that can only turn a "no" into a "maybe".
  for (const k in value) if (containsTaggedShape(value[k], depth + 1)) return true;
  return false;
}

/**
 * Converts tagged values inside an already-parsed value (for data parsed with plain JSON.parse, e.g. Redis
 * envelope headers). Returns a new value; the input is not modified.
 */
export function reviveKombuTags(value: JsonValue): JsonValue {
  if (value === null || typeof value !== 'object' || value instanceof LosslessNumber) return value;
  if (Array.isArray(value)) return value.map(reviveKombuTags);
  // Object.fromEntries defines own data properties, so a "__proto__" key stays data (no prototype change).
  const out: JsonObject = Object.fromEntries(Object.keys(value).map((k) => [k, reviveKombuTags(value[k])]));
  return isTaggedShape(out) ? convertTagged(out) : out;
}

/**
 * JSON.stringify for data a Python Celery worker will read. Throws (with the offending key) instead of
 * silently producing something Python would read differently:
 * - an object whose key set is exactly {__type__, __value__} (kombu ≥5.3 would treat it as a tagged value),
 * - NaN / ±Infinity anywhere (JSON.stringify writes null),
 * - undefined, a function or a symbol as an array item (JSON.stringify writes null),
 * - a top-level value that is not serializable, and cycles / BigInt (JSON.stringify's own errors, wrapped).
 * Object properties whose value is undefined are omitted, as JSON.stringify always does.
 */
export function stringifyForPython(value: unknown): string {
  // A replacer forces V8 off its fast JSON.stringify path (one call back into JS per value, several times
  // slower). isPlainJson checks, without it, that the replacer would return every value unchanged and that
  // JSON.stringify cannot throw; only then is the plain JSON.stringify used. Anything else (NaN, an undefined
  // array item, a tagged shape, a toJSON method, BigInt, a cycle, very deep nesting, a throwing getter) takes
  // the strict path below, so errors and their messages are exactly as before.
  let text = stringifyIfPlain(value);
  if (text === null) text = stringifyStrict(value);
  if (text === undefined) {
    throw new TypeError(`value is not serializable for Python: top-level ${describe(value)} has no JSON form`);
  }
  return text;
}

/**
 * JSON.stringify(value) when that is certainly what stringifyForPython would return or, for a top-level
 * undefined/function/symbol, refuse (JSON.stringify's undefined); null when only the strict path can tell
 * (it may throw). Lets a caller serialize the parts of a larger object on its own (see buildEnvelope).
 */
export function stringifyIfPlain(value: unknown): string | undefined | null {
  try {
    if (isPlainJson(value, false, 0)) return JSON.stringify(value);
  } catch {
    // A getter or a Proxy trap threw: the strict path reports it as before.
  }
  return null;
}

function strictReplacer(this: unknown, key: string, v: unknown): unknown {
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) {
      throw new TypeError(`cannot send non-finite number ${String(v)} to Python${where(key)}`);
    }
  } else if (v === undefined || typeof v === 'function' || typeof v === 'symbol') {
    if (Array.isArray(this)) {
      throw new TypeError(`cannot send ${v === undefined ? 'undefined' : typeof v} as an array item${where(key)}`);
    }
  } else if (isTaggedShape(v)) {
    throw new TypeError(
      `cannot send an object with exactly the keys __type__ and __value__${where(key)}: ` +
        'kombu >= 5.3 would read it as a tagged value',
    );
  }
  return v;
}

/**
 * A LosslessNumber is written as a placeholder string first, then the placeholder replaced by the number's text
 * (JSON.stringify cannot write raw text). A placeholder is a string no value or key of the data starts with
 * (checked while serializing; on a clash, a new one is drawn).
 */
const PLACEHOLDER_LEAD = '\u0000lossless-number:';
const PLACEHOLDER_LEAD_JSON = '\\\\u0000lossless-number:'; // as JSON.stringify writes it, escaped for a RegExp

class PlaceholderClash extends Error {}

/** JSON.stringify with the checking replacer; its errors (and JSON.stringify's own) wrapped. */
function stringifyStrict(value: unknown): string | undefined {
  for (;;) {
    const nonce = `${Math.random().toString(36).slice(2)}:`;
    const prefix = PLACEHOLDER_LEAD + nonce;
    const texts: string[] = [];
    const replacer = function (this: unknown, key: string, v: unknown): unknown {
      // JSON.stringify has already replaced a LosslessNumber by its toJSON(); the holder still has it.
      const own = (this as Record<string, unknown>)[key];
      if (own instanceof LosslessNumber) {
        texts.push(own.text);
        return prefix + String(texts.length - 1);
      }
      if ((typeof v === 'string' && v.startsWith(prefix)) || key.startsWith(prefix)) throw new PlaceholderClash();
      return strictReplacer.call(this, key, v);
    };
    let text: string | undefined;
    try {
      text = JSON.stringify(value, replacer);
    } catch (err) {
      if (err instanceof PlaceholderClash) continue;
      throw new TypeError(`value is not serializable for Python: ${(err as Error).message}`);
    }
    if (text === undefined || texts.length === 0) return text;
    const placeholder = new RegExp(`"${PLACEHOLDER_LEAD_JSON}${nonce}(\\d+)"`, 'g');
    return text.replace(placeholder, (_m, k: string) => texts[Number(k)]);
  }
}

/**
 * True when JSON.stringify(value) with strictReplacer would call the replacer only on values it returns
 * unchanged, and would not throw: then it writes the same text as JSON.stringify(value). It visits every value
 * JSON.stringify visits (array indices up to length; for objects `for…in`, i.e. the own enumerable keys plus
 * any inherited enumerable ones, which can only make it stricter), and says false for every value the replacer
 * refuses (non-finite numbers; undefined, functions and symbols as array items; tagged shapes), for every
 * value that makes JSON.stringify throw (BigInt; cycles, which exceed MAX_CHECK_DEPTH) and for any object or
 * function with a `toJSON` (the replacer would see toJSON's result, which is not looked at here).
 * It reads every property once more than JSON.stringify: harmless for data, which is what is serialized here.
 */
function isPlainJson(v: unknown, inArray: boolean, depth: number): boolean {
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(v);
    case 'undefined':
    case 'symbol':
      return !inArray;
    case 'function':
      return !inArray && (v as { toJSON?: unknown }).toJSON === undefined;
    case 'object': {
      if (v === null) return true;
      if (depth > MAX_CHECK_DEPTH || (v as { toJSON?: unknown }).toJSON !== undefined) return false;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) if (!isPlainJson(v[i], true, depth + 1)) return false;
        return true;
      }
      const o = v as Record<string, unknown>;
      if (hasOwn(o, '__type__') && isTaggedShape(o)) return false;
      // for…in: no key array to allocate (the walk costs a third of an Object.keys loop).
      for (const k in o) if (!isPlainJson(o[k], false, depth + 1)) return false;
      return true;
    }
    default:
      return false; // bigint
  }
}

function where(key: string): string {
  return key === '' ? ' (at the top level)' : ` (at key ${JSON.stringify(key)})`;
}

/** Short human description of a value's type for error messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `array of ${value.length}`;
  if (typeof value === 'string') return `string ${JSON.stringify(truncate(value, 40))}`;
  if (typeof value === 'number' || typeof value === 'boolean') return `${typeof value} ${String(value)}`;
  if (value instanceof LosslessNumber) return `number ${truncate(value.text, 40)}`;
  return typeof value;
}

export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}
