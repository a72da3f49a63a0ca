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
import type { JsonObject, JsonValue } from './types';

/** Raised for a tagged value we cannot convert; JSON syntax errors stay SyntaxError. */
export class KombuTagError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KombuTagError';
  }
}

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

/** True for an object (not array) whose own keys are exactly `__type__` and `__value__`. */
export function isTaggedShape(value: unknown): value is { __type__: unknown; __value__: unknown } {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  if (!hasOwn(value, '__type__') || !hasOwn(value, '__value__')) return false;
  return Object.keys(value).length === 2;
}

const STRICT_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

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
      if (!STRICT_BASE64.test(text)) {
        throw new KombuTagError(`tagged base64 value is not valid base64: ${JSON.stringify(truncate(text, 60))}`);
      }
      return Buffer.from(text, 'base64').toString('utf8');
    }
    default:
      throw new KombuTagError(
        `unknown kombu tagged value __type__ ${typeof type === 'string' ? JSON.stringify(type) : describe(type)}`,
      );
  }
}

/**
 * JSON.parse plus kombu ≥5.3 tagged-value conversion (bottom-up, like kombu's object_hook).
 * Throws SyntaxError for malformed JSON and KombuTagError for a tag it cannot convert.
 */
export function parseKombuJson(text: string): JsonValue {
  return JSON.parse(text, function reviver(_key: string, value: unknown) {
    return isTaggedShape(value) ? convertTagged(value) : value;
  }) as JsonValue;
}

/**
 * Converts tagged values inside an already-parsed value (for data parsed with plain JSON.parse, e.g. Redis
 * envelope headers). Returns a new value; the input is not modified.
 */
export function reviveKombuTags(value: JsonValue): JsonValue {
  if (value === null || typeof value !== 'object') return value;
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
  let text: string | undefined;
  try {
    text = JSON.stringify(value, function replacer(this: unknown, key: string, v: unknown) {
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
    });
  } catch (err) {
    throw new TypeError(`value is not serializable for Python: ${(err as Error).message}`);
  }
  if (text === undefined) {
    throw new TypeError(`value is not serializable for Python: top-level ${describe(value)} has no JSON form`);
  }
  return text;
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
  return typeof value;
}

export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}
