/**
 * A Python-`repr()`-like rendering of JSON values, for the `argsrepr` / `kwargsrepr` headers.
 *
 * Python only uses these headers for logs, events and Flower, never to run the task, so an approximation is
 * harmless; being close to what Python itself writes keeps logs from both worlds looking the same. The
 * rendering describes the value *as Python will decode it* from our JSON: an integral JS number is written as
 * a JSON integer, so Python sees an int; other numbers become floats.
 */
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

/** Python's repr of a str. */
export function pythonStrRepr(s: string): string {
  // Python prefers single quotes; it switches to double quotes only if the text has ' and no ".
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  // Fast path for plain printable ASCII, by far the common case.
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
    else if (cp >= 0xd800 && cp <= 0xdfff) out += escapeCodePoint(cp); // lone surrogate (category Cs)
    else if (NON_PRINTABLE.test(ch)) out += escapeCodePoint(cp);
    else out += ch;
  }
  return out + quote;
}

/** Python's repr of the int or float that Python decodes from JSON.stringify(n). */
export function pythonNumberRepr(n: number): string {
  if (!Number.isFinite(n)) return n > 0 ? 'inf' : n < 0 ? '-inf' : 'nan';
  const json = JSON.stringify(n);
  // JSON.stringify writes integers below 1e21 without exponent or dot: Python decodes those as int.
  if (/^-?\d+$/.test(json)) return json;
  // Otherwise Python has a float. Both languages print the shortest round-trip digits; only the layout
  // differs: Python uses scientific notation when the decimal exponent is < -4 or >= 16.
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
  } else if (Array.isArray(value)) {
    w.out += '[';
    for (let i = 0; i < value.length && w.out.length <= w.limit; i++) {
      if (i > 0) w.out += ', ';
      writeRepr(w, value[i]);
    }
    w.out += ']';
  } else {
    w.out += '{';
    let first = true;
    for (const key of Object.keys(value)) {
      if (w.out.length > w.limit) break;
      if (value[key] === undefined) continue; // omitted by JSON.stringify, so Python never sees it
      if (!first) w.out += ', ';
      first = false;
      w.out += `${pythonStrRepr(key)}: `;
      writeRepr(w, value[key]);
    }
    w.out += '}';
  }
}

/** Celery-style truncation: at most `max` characters, ending in "..." when cut. */
export function truncateRepr(text: string, max: number = REPR_MAX_LENGTH): string {
  if (text.length <= max) return text;
  return `${text.slice(0, Math.max(0, max - 3))}...`;
}
