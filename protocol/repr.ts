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
  const w = new StringWriter(Infinity);
  writeRepr(w, value);
  return w.out;
}

/**
 * `pythonRepr` truncated Celery-style to `max` characters. Rendering stops as soon as the limit is passed, so a
 * large event costs no more than a small one (this runs for every published task).
 */
export function truncatedRepr(value: JsonValue, max: number = REPR_MAX_LENGTH): string {
  if (Number.isInteger(max) && max >= 3 && max <= LATIN1_WRITER_MAX_LIMIT) {
    const latin1 = new Latin1Writer(max);
    writeRepr(latin1, value);
    const text = latin1.text();
    if (text !== null) return text;
  }
  const w = new StringWriter(max);
  writeRepr(w, value);
  return truncateRepr(w.out, max);
}

interface Writer {
  /** Characters written so far (the whole text, also what a writer leaves out past the limit). */
  readonly length: number;
  /** Stop once length exceeds this (the result is then cut Celery-style). */
  readonly limit: number;
  put(text: string): void;
}

/** Appends to a string: any text, but every append allocates a concatenation node. */
class StringWriter implements Writer {
  out = '';
  constructor(readonly limit: number) {}
  get length(): number {
    return this.out.length;
  }
  put(text: string): void {
    this.out += text;
  }
}

/** Limits above this are rendered into a string (the scratch buffer is kept for the process's life). */
const LATIN1_WRITER_MAX_LIMIT = 65_536;

/** Where Latin1Writer copies characters; grown to the largest limit asked for, then reused (one call at a time). */
let latin1Scratch = Buffer.allocUnsafeSlow(REPR_MAX_LENGTH + 1);

/**
 * Copies characters into a scratch buffer, as long as they are Latin-1 (all ASCII text is), and makes
 * one flat string of the cut text at the end: a ~1 KB repr costs one ~1 KB string instead of a concatenation
 * node per part plus the flattening of their tree (together ~6 KB per process_event kwargs repr).
 */
class Latin1Writer implements Writer {
  length = 0;
  private readonly buf: Buffer;
  private latin1 = true;

  constructor(readonly limit: number) {
    // One more character than the limit tells whether the text was cut.
    if (latin1Scratch.length < limit + 1) latin1Scratch = Buffer.allocUnsafeSlow(limit + 1);
    this.buf = latin1Scratch;
  }

  put(text: string): void {
    const end = Math.min(text.length, this.limit + 1 - this.length);
    const buf = this.buf;
    const at = this.length;
    for (let i = 0; i < end; i++) {
      const c = text.charCodeAt(i);
      if (c > 0xff) {
        // Not Latin-1: give up (text() says so); a length past the limit stops the rendering.
        this.latin1 = false;
        this.length = Infinity;
        return;
      }
      buf[at + i] = c;
    }
    this.length += text.length;
  }

  /** The repr, cut Celery-style; null when a character was not Latin-1. */
  text(): string | null {
    if (!this.latin1) return null;
    if (this.length <= this.limit) return this.buf.toString('latin1', 0, this.length);
    this.buf.write('...', this.limit - 3, 'latin1');
    return this.buf.toString('latin1', 0, this.limit);
  }
}

function writeRepr(w: Writer, value: JsonValue | undefined): void {
  if (w.length > w.limit) return;
  if (value === null || value === undefined) w.put('None');
  else if (value === true) w.put('True');
  else if (value === false) w.put('False');
  else if (typeof value === 'number') w.put(pythonNumberRepr(value));
  else if (typeof value === 'string') {
    // Escaping never shortens text, so rendering a prefix one longer than the room left is enough.
    const room = w.limit - w.length + 1;
    const text = Number.isFinite(room) && value.length > room ? value.slice(0, room) : value;
    if (PLAIN_REPR.test(text)) {
      // pythonStrRepr's own fast path, without the quoted copy.
      w.put("'");
      w.put(text);
      w.put("'");
    } else w.put(pythonStrRepr(text));
  } else if (value instanceof LosslessNumber) w.put(pythonTokenRepr(value));
  else if (Array.isArray(value)) {
    w.put('[');
    for (let i = 0; i < value.length && w.length <= w.limit; i++) {
      if (i > 0) w.put(', ');
      writeRepr(w, value[i]);
    }
    w.put(']');
  } else {
    w.put('{');
    let sep = false;
    const keys = Object.keys(value);
    for (let i = 0; i < keys.length; i++) {
      if (w.length > w.limit) break;
      const key = keys[i];
      const item = value[key];
      if (item === undefined) continue; // omitted by JSON.stringify, so Python never sees it
      if (sep) w.put(', ');
      sep = true;
      w.put(keyRepr(key));
      writeRepr(w, item);
    }
    w.put('}');
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
