/**
 * A Python-`repr()`-like rendering of JSON values, for the `argsrepr` / `kwargsrepr` headers.
 *
 * Python only uses these headers for logs, events and Flower, never to run the task, so an approximation is
 * harmless; being close to what Python itself writes keeps logs from both worlds looking the same. The
 * rendering describes the value *as Python will decode it* from our JSON: an integral JS number is written as
 * a JSON integer, so Python sees an int; other numbers become floats.
 */
import { LosslessNumber } from './lossless-number';
import type { JsonValue } from './types';

/** Celery's `argsrepr_maxsize` / `kwargsrepr_maxsize`. */
export const REPR_MAX_LENGTH = 1024;

// Characters Python's str.isprintable() rejects: categories Cc, Cf, Co, Cn, Zl, Zp and Zs except the space
// (Zs listed explicitly; surrogates, category Cs, are handled by the caller). Unicode versions of V8 and
// Python differ slightly for unassigned code points; harmless for a log string.
const NON_PRINTABLE = /^[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Zl}\p{Zp}\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]$/u;

function escapeCodePoint(cp: number): string {
  if (cp < 0x100) return `\\x${cp.toString(16).padStart(2, '0')}`;
  if (cp < 0x10000) return `\\u${cp.toString(16).padStart(4, '0')}`;
  return `\\U${cp.toString(16).padStart(8, '0')}`;
}

/** Printable ASCII except ' and \: such a text is its own repr body, in single quotes. */
const PLAIN_REPR = /^[\x20-\x26\x28-\x5b\x5d-\x7e]*$/;

/** Python's repr of a str. */
export function pythonStrRepr(s: string): string {
  // By far the most common case, in one regex test: nothing to escape, and single quotes.
  if (PLAIN_REPR.test(s)) return `'${s}'`;
  // Python prefers single quotes; it switches to double quotes only if the text has ' and no ".
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  // Printable ASCII with quotes or backslashes: only those need escaping.
  if (/^[\x20-\x7e]*$/.test(s)) {
    return quote + s.replace(quote === "'" ? /[\\']/g : /\\/g, (c) => `\\${c}`) + quote;
  }
  let out = quote;
  // Iterate by UTF-16 units so lone surrogates (valid in JS strings, and in Python str) are seen and escaped.
  for (let i = 0; i < s.length; i++) {
    const code = s.charCodeAt(i);
    let ch = s[i];
    let cp = code;
    if (code >= 0xd800 && code <= 0xdbff && i + 1 < s.length) {
      const next = s.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        cp = (code - 0xd800) * 0x400 + (next - 0xdc00) + 0x10000;
        ch = s.slice(i, i + 2);
        i++;
      }
    }
    if (ch === '\\') out += '\\\\';
    else if (ch === quote) out += `\\${quote}`;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (cp >= 0xd800 && cp <= 0xdfff)
      out += escapeCodePoint(cp); // lone surrogate (category Cs)
    else if (NON_PRINTABLE.test(ch)) out += escapeCodePoint(cp);
    else out += ch;
  }
  return out + quote;
}

/** Python's repr of the int or float that Python decodes from JSON.stringify(n). */
export function pythonNumberRepr(n: number): string {
  // Fast paths, giving the same text as the general code below:
  // - an integer of magnitude below 1e21: JSON.stringify and String both write its digits (-0 as "0"), and
  //   Python decodes an int;
  // - a non-integer of magnitude at least 1e-4 (hence below 2^53 < 1e16, where every double is an integer):
  //   String writes the shortest round-trip digits positionally, with a fractional part, which is exactly
  //   Python's float repr for decimal exponents -4…15.
  if (Number.isInteger(n)) {
    if (n < 1e21 && n > -1e21) return String(n);
  } else if (n >= 1e-4 || n <= -1e-4) {
    if (Number.isFinite(n)) return String(n);
  }
  if (!Number.isFinite(n)) return pythonFloatRepr(n);
  const json = JSON.stringify(n);
  // JSON.stringify writes integers below 1e21 without exponent or dot: Python decodes those as int.
  if (/^-?\d+$/.test(json)) return json;
  return pythonFloatRepr(n);
}

/** Python's repr of the float n. */
export function pythonFloatRepr(n: number): string {
  if (!Number.isFinite(n)) return n > 0 ? 'inf' : n < 0 ? '-inf' : 'nan';
  if (Object.is(n, -0)) return '-0.0';
  // Both languages print the shortest round-trip digits; only the layout differs: Python uses scientific
  // notation when the decimal exponent is < -4 or >= 16, and always shows a float as one (1.0, 1e+16).
  const [mantissa, expText] = n.toExponential().split('e');
  const exp = Number(expText);
  const negative = mantissa.startsWith('-');
  const digits = mantissa.replace('-', '').replace('.', '');
  const sign = negative ? '-' : '';
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = `${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
    return `${sign}${m}e${e}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const intPart = digits.slice(0, exp + 1).padEnd(exp + 1, '0');
  const frac = digits.slice(exp + 1);
  return `${sign}${intPart}.${frac === '' ? '0' : frac}`;
}

/** Python's repr of what Python's json reads from a kept number token: an int's digits, or a float. */
export function pythonTokenRepr(n: LosslessNumber): string {
  if (n.isInteger) return BigInt(n.text).toString();
  return pythonFloatRepr(n.value);
}

/** Python repr of a JSON value as Python will decode it (dict/list/str/int/float/bool/None). */
export function pythonRepr(value: JsonValue): string {
  const w: Writer = { out: '', limit: Infinity };
  writeRepr(w, value);
  return w.out;
}

/**
 * `pythonRepr` truncated Celery-style to `max` characters. Rendering stops as soon as the limit is passed, so a
 * large event costs no more than a small one (this runs for every published task).
 */
export function truncatedRepr(value: JsonValue, max: number = REPR_MAX_LENGTH): string {
  const w: Writer = { out: '', limit: max };
  writeRepr(w, value);
  return truncateRepr(w.out, max);
}

interface Writer {
  out: string;
  /** Stop once out.length exceeds this (the result is then cut by truncateRepr). */
  limit: number;
}

function writeRepr(w: Writer, value: JsonValue | undefined): void {
  if (w.out.length > w.limit) return;
  if (value === null || value === undefined) w.out += 'None';
  else if (value === true) w.out += 'True';
  else if (value === false) w.out += 'False';
  else if (typeof value === 'number') w.out += pythonNumberRepr(value);
  else if (typeof value === 'string') {
    // Escaping never shortens text, so rendering a prefix one longer than the room left is enough.
    const room = w.limit - w.out.length + 1;
    w.out += pythonStrRepr(Number.isFinite(room) && value.length > room ? value.slice(0, room) : value);
  } else if (value instanceof LosslessNumber) w.out += pythonTokenRepr(value);
  else if (Array.isArray(value)) {
    w.out += '[';
    for (let i = 0; i < value.length && w.out.length <= w.limit; i++) {
      if (i > 0) w.out += ', ';
      writeRepr(w, value[i]);
    }
    w.out += ']';
  } else {
    w.out += '{';
    let sep = '';
    const keys = Object.keys(value);
    for (let i = 0; i < keys.length; i++) {
      if (w.out.length > w.limit) break;
      const key = keys[i];
      const item = value[key];
      if (item === undefined) continue; // omitted by JSON.stringify, so Python never sees it
      w.out += sep + keyRepr(key);
      sep = ', ';
      writeRepr(w, item);
    }
    w.out += '}';
  }
}

/**
 * `repr(key): ` for a dict key. Memoized: events carry the same property names over and over, so this saves a
 * regex test and a concatenation per key. A pure function of an immutable string, so caching cannot change any
 * output; bounded (short keys only, emptied when full), so odd inputs cannot grow it.
 */
const KEY_REPRS = new Map<string, string>();
const KEY_REPRS_MAX_ENTRIES = 4096;
const KEY_REPRS_MAX_KEY_LENGTH = 64;

function keyRepr(key: string): string {
  let r = KEY_REPRS.get(key);
  if (r === undefined) {
    r = `${pythonStrRepr(key)}: `;
    if (key.length <= KEY_REPRS_MAX_KEY_LENGTH) {
      if (KEY_REPRS.size >= KEY_REPRS_MAX_ENTRIES) KEY_REPRS.clear();
      KEY_REPRS.set(key, r);
    }
  }
  return r;
}

/** Celery-style truncation: at most `max` characters, ending in "..." when cut. */
export function truncateRepr(text: string, max: number = REPR_MAX_LENGTH): string {
  if (text.length <= max) return text;
  return `${text.slice(0, Math.max(0, max - 3))}...`;
}
