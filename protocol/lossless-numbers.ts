/**
 * JSON numbers that a JS number cannot carry back as they were written.
 *
 * Python's json writes an int as all its digits (10**30 → 31 digits; 2**64+1) and a float as its repr (`1.0`,
 * `-0.0`, `1e+16`, `1.5e-07`, `Infinity`, `NaN`). JSON.parse turns each into a double, and JSON.stringify of that
 * double writes something else: `1e+30` (Python then reads a float, not an int), `18446744073709552000` (other
 * digits), `1` for `1.0` (an int), `0` for `-0.0`, `10000000000000000` for `1e+16`; `Infinity`/`NaN` (what
 * kombu writes for float inf/nan, and Python reads back) are not JSON at all and JSON.parse refuses them.
 *
 * So a body is scanned first (needsLosslessParse): only when some number token would not be written back the
 * same (or inf/nan appear) is it parsed here, each such token becoming a LosslessNumber that keeps its text.
 * Everything else stays a plain JS number. Plugins see the JS number (LosslessNumber.toJSON, used when the event
 * is serialized into the isolate); restoreLosslessNumbers puts the original back wherever a plugin returned the
 * same value at the same place, and stringifyForPython (json.ts) writes a LosslessNumber as its original text.
 */
import type { JsonObject, JsonValue } from './types';

/** A number token kept as written. Immutable. */
export class LosslessNumber {
  /** What a plugin sees (see toJSON), fixed at construction. */
  private readonly seen: number | null;

  /** `text` is a JSON number token, or `Infinity`, `-Infinity`, `NaN` (Python's spellings). */
  constructor(readonly text: string) {
    const n = Number(text);
    // A double as JSON carries it: -0 is written "0"; inf and nan (and 1e400, inf once parsed) become null.
    this.seen = Number.isFinite(n) ? n + 0 : null;
    Object.freeze(this);
  }

  /** The value as a JS number (NaN/±Infinity included); may have lost digits. */
  get value(): number {
    return Number(this.text);
  }

  /** True when Python reads the token as an int (no fraction, no exponent, not inf/nan). */
  get isInteger(): boolean {
    return /^-?\d+$/.test(this.text);
  }

  /** What JSON.stringify writes for it, i.e. what a plugin receives: the nearest double, or null for inf/nan. */
  toJSON(): number | null {
    return this.seen;
  }
}

/** Containers (objects, arrays) that hold a LosslessNumber, directly or deeper down. */
const HOLDERS = new WeakSet<object>();

/** Whether `value` is an object or array with a LosslessNumber somewhere inside. */
export function holdsLosslessNumbers(value: unknown): boolean {
  return value !== null && typeof value === 'object' && HOLDERS.has(value);
}

/** Records that `container` holds LosslessNumbers (for a container built from parts of a parsed one). */
export function markLosslessHolder(container: object): void {
  HOLDERS.add(container);
}

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

// ------------------------------------------------------------------------------------------------ the scan

/**
 * True when `digits`, a number token, is not written back the same after JSON.parse and JSON.stringify.
 * Integers of at most 15 digits (below 2^53, printed as digits) always are, except `-0`.
 */
function tokenChanges(text: string, start: number, end: number, plainInteger: boolean): boolean {
  const digits = end - start - (text.charCodeAt(start) === 45 /* - */ ? 1 : 0);
  if (plainInteger && digits <= 15) return digits === 1 && end - start === 2 && text.charCodeAt(start + 1) === 48; // -0
  const token = text.slice(start, end);
  return JSON.stringify(Number(token)) !== token;
}

/** Index just past the string literal whose opening quote is at `open` (text.length when unterminated). */
function endOfString(text: string, open: number): number {
  let close = text.indexOf('"', open + 1);
  while (close > 0) {
    let backslashes = 0;
    while (text.charCodeAt(close - 1 - backslashes) === 92 /* \ */) backslashes++;
    if (backslashes % 2 === 0) return close + 1;
    close = text.indexOf('"', close + 1);
  }
  return text.length;
}

/**
 * False when JSON.parse gives every number of `text` exactly (JSON.stringify writes each token back unchanged)
 * and the text has no `Infinity`/`NaN` outside strings; true otherwise, or maybe for text that is not JSON (the
 * lossless parser then reports the syntax error). Skips string literals with indexOf, so it costs a fraction of
 * JSON.parse on the same text.
 */
export function needsLosslessParse(text: string): boolean {
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 34 /* " */) {
      i = endOfString(text, i);
    } else if (c === 45 /* - */ || (c >= 48 && c <= 57)) {
      let j = i + 1;
      let plainInteger = true;
      for (; j < n; j++) {
        const d = text.charCodeAt(j);
        if (d >= 48 && d <= 57) continue;
        // . e E + - : a fraction or an exponent (or a malformed token, which the parser will refuse)
        if (d === 46 || d === 101 || d === 69 || d === 43 || d === 45) plainInteger = false;
        else break;
      }
      if (tokenChanges(text, i, j, plainInteger)) return true;
      i = j;
    } else if (c === 73 /* I */ || c === 78 /* N */) {
      return true; // Infinity, NaN: not JSON, but what Python's json writes for float inf and nan
    } else {
      i++;
    }
  }
  return false;
}

// ------------------------------------------------------------------------------------------------ the parser

const NUMBER_TOKEN = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|-?Infinity|NaN/y;
const LITERALS: ReadonlyArray<readonly [string, JsonValue]> = [
  ['true', true],
  ['false', false],
  ['null', null],
];

interface Frame {
  container: JsonObject | JsonValue[];
  /** The key whose value comes next (objects only). */
  key: string;
  /** A LosslessNumber was put into this container (or into one inside it). */
  holds: boolean;
}

/**
 * JSON.parse with lossless numbers: what JSON.parse returns, except that number tokens JSON.stringify would not
 * write back the same are LosslessNumbers, and `Infinity`, `-Infinity`, `NaN` are accepted as Python's json
 * accepts them. Objects are passed through `reviveObject` when closed (bottom-up, as kombu's object_hook).
 * Iterative: any nesting depth JSON.parse takes is taken. Throws SyntaxError for text that is not JSON.
 */
export function parseLosslessJson(text: string, reviveObject: (o: JsonObject) => JsonValue = (o) => o): JsonValue {
  const n = text.length;
  let i = 0;
  const stack: Frame[] = [];
  const fail = (what: string): never => {
    throw new SyntaxError(
      i >= n ? `Unexpected end of JSON input (${what})` : `Unexpected token ${JSON.stringify(text[i])} in JSON at position ${i} (${what})`,
    );
  };
  const skipSpace = (): void => {
    for (; i < n; i++) {
      const c = text.charCodeAt(i);
      if (c !== 32 && c !== 10 && c !== 13 && c !== 9) return;
    }
  };
  const readString = (): string => {
    const end = endOfString(text, i);
    if (text.charCodeAt(end - 1) !== 34 || end === i + 1) fail('unterminated string');
    const literal = text.slice(i, end);
    i = end;
    // JSON.parse checks the escapes and control characters and decodes exactly as it does everywhere else.
    return JSON.parse(literal) as string;
  };
  const readKey = (): string => {
    skipSpace();
    if (text.charCodeAt(i) !== 34) fail('expected a property name');
    const key = readString();
    skipSpace();
    if (text.charCodeAt(i) !== 58 /* : */) fail('expected ":"');
    i++;
    return key;
  };
  const put = (frame: Frame, value: JsonValue): void => {
    if (value instanceof LosslessNumber || holdsLosslessNumbers(value)) frame.holds = true;
    const c = frame.container;
    if (Array.isArray(c)) c.push(value);
    else if (frame.key === '__proto__') {
      // As JSON.parse: an own data property, never the prototype.
      Object.defineProperty(c, frame.key, { value, writable: true, enumerable: true, configurable: true });
    } else c[frame.key] = value;
  };

  let result: JsonValue = null;
  parsing: for (;;) {
    skipSpace();
    const c = text.charCodeAt(i);
    let value: JsonValue;
    if (c === 123 /* { */) {
      i++;
      skipSpace();
      if (text.charCodeAt(i) === 125 /* } */) {
        i++;
        value = reviveObject({});
      } else {
        stack.push({ container: {}, key: readKey(), holds: false });
        continue;
      }
    } else if (c === 91 /* [ */) {
      i++;
      skipSpace();
      if (text.charCodeAt(i) === 93 /* ] */) {
        i++;
        value = [];
      } else {
        stack.push({ container: [], key: '', holds: false });
        continue;
      }
    } else if (c === 34) {
      value = readString();
    } else if (c === 45 || (c >= 48 && c <= 57) || c === 73 || c === 78) {
      NUMBER_TOKEN.lastIndex = i;
      const m = NUMBER_TOKEN.exec(text);
      if (m === null) fail('invalid number');
      const token = (m as RegExpExecArray)[0];
      const start = i;
      i += token.length;
      const plainInteger = !/[.eEIN]/.test(token);
      value = tokenChanges(text, start, i, plainInteger) ? new LosslessNumber(token) : Number(token);
    } else {
      const literal = LITERALS.find(([word]) => text.startsWith(word, i));
      if (literal === undefined) fail('expected a value');
      i += (literal as readonly [string, JsonValue])[0].length;
      value = (literal as readonly [string, JsonValue])[1];
    }

    // Put the value into its container; close every container that ends here.
    for (;;) {
      const top = stack[stack.length - 1];
      if (top === undefined) {
        result = value;
        break parsing;
      }
      put(top, value);
      skipSpace();
      const d = text.charCodeAt(i);
      const isArray = Array.isArray(top.container);
      if (d === 44 /* , */) {
        i++;
        if (!isArray) top.key = readKey();
        continue parsing;
      }
      if (d !== (isArray ? 93 : 125)) fail(isArray ? 'expected "," or "]"' : 'expected "," or "}"');
      i++;
      stack.pop();
      value = isArray ? top.container : reviveObject(top.container as JsonObject);
      if (top.holds && value !== null && typeof value === 'object') HOLDERS.add(value);
    }
  }
  skipSpace();
  if (i < n) fail('unexpected text after the JSON value');
  return result;
}

// ------------------------------------------------------------------------------------------------ plugins

/**
 * Puts the LosslessNumbers of `original` back into `updated` (a plugin's result parsed from JSON) wherever
 * `updated` has, at the same key path, exactly the value the plugin was given for it: the plugin left it alone
 * (or set the same value again, which cannot be told apart). Values a plugin changed, moved or removed stay as
 * the plugin made them. Visits only the paths leading to LosslessNumbers; returns `updated`.
 */
export function restoreLosslessNumbers<T extends JsonValue>(original: JsonValue, updated: T): T {
  if (!holdsLosslessNumbers(original) || updated === null || typeof updated !== 'object') return updated;
  if (Array.isArray(original) !== Array.isArray(updated)) return updated;
  const from = original as Record<string, JsonValue>;
  const into = updated as Record<string, JsonValue>;
  let restored = false;
  const visit = (key: string | number): void => {
    const o = from[key];
    if (!hasOwn(into, String(key))) return;
    const u = into[key];
    if (o instanceof LosslessNumber) {
      if ((typeof u === 'number' || u === null) && u === o.toJSON()) {
        into[key] = o;
        restored = true;
      }
    } else if (holdsLosslessNumbers(o)) {
      restoreLosslessNumbers(o, u);
      restored ||= holdsLosslessNumbers(u);
    }
  };
  if (Array.isArray(original)) for (let k = 0; k < original.length; k++) visit(k);
  else for (const k of Object.keys(from)) visit(k);
  if (restored) HOLDERS.add(updated);
  return updated;
}
