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
import { LosslessNumber } from './lossless-number';
import type { JsonObject, JsonValue } from './types';

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

const isDigit = (c: number): boolean => c >= 48 && c <= 57;
/** Characters of a number token: digits . e E + - */
const isTokenChar = (c: number): boolean => isDigit(c) || c === 46 || c === 101 || c === 69 || c === 43 || c === 45;
const isSpace = (c: number): boolean => c === 32 || c === 10 || c === 13 || c === 9;

/**
 * Whether the run of number characters around `at` is a number token in a value position (after `:`, `,`, `[`
 * or at the start, before `,`, `]`, `}` or the end, spaces aside) that JSON.parse would change. Inside a string
 * such a run is almost never delimited that way; when it is, the answer is only a needless "maybe".
 */
function changesAt(text: string, at: number): boolean {
  const n = text.length;
  let start = at;
  while (start > 0 && isTokenChar(text.charCodeAt(start - 1))) start--;
  let end = at + 1;
  while (end < n && isTokenChar(text.charCodeAt(end))) end++;
  const first = text.charCodeAt(start);
  if (first !== 45 && !isDigit(first)) return false;
  let before = start - 1;
  while (before >= 0 && isSpace(text.charCodeAt(before))) before--;
  if (before >= 0) {
    const c = text.charCodeAt(before);
    if (c !== 58 /* : */ && c !== 44 /* , */ && c !== 91 /* [ */) return false;
  }
  let after = end;
  while (after < n && isSpace(text.charCodeAt(after))) after++;
  if (after < n) {
    const c = text.charCodeAt(after);
    if (c !== 44 && c !== 93 /* ] */ && c !== 125 /* } */) return false;
  }
  let plainInteger = true;
  for (let i = start + 1; i < end && plainInteger; i++) plainInteger = isDigit(text.charCodeAt(i));
  return tokenChanges(text, start, end, plainInteger);
}

/** A lower-case exponent mark: `e` before a sign or a digit. (A regex starting with a literal is a fast search.) */
const EXPONENT = /e[-+\d]/g;

/**
 * False when no number token of `text` with a fraction or an exponent would be changed by JSON.parse and
 * JSON.stringify, and the text has no `Infinity`/`NaN`; true otherwise, and sometimes for look-alikes inside
 * strings (the lossless parser then decides, with the same result). Runs on every message body, so it never
 * walks the text character by character: `.`, exponent marks and the two words are found by native searches
 * (indexOf, a regex with a literal first character), and each `.` or mark is judged where it stands.
 * The other tokens JSON.parse changes, integers of 16 digits or more and `-0`, are told by their values
 * (holdsUnsafeInteger), after JSON.parse.
 */
export function needsLosslessParse(text: string): boolean {
  if (text.indexOf('Infinity') >= 0 || text.indexOf('NaN') >= 0) return true;
  // In a number token, `.` has digits on both sides and an exponent mark a digit before it: most `.` and `e`
  // (in URLs, versions, words) fail that at once.
  for (let p = text.indexOf('.'); p >= 0; p = text.indexOf('.', p + 1)) {
    if (isDigit(text.charCodeAt(p - 1)) && isDigit(text.charCodeAt(p + 1)) && changesAt(text, p)) return true;
  }
  for (let p = text.indexOf('E'); p >= 0; p = text.indexOf('E', p + 1)) {
    if (isDigit(text.charCodeAt(p - 1)) && changesAt(text, p)) return true;
  }
  EXPONENT.lastIndex = 0;
  while (EXPONENT.test(text)) {
    const mark = EXPONENT.lastIndex - 2;
    if (isDigit(text.charCodeAt(mark - 1)) && changesAt(text, mark)) {
      EXPONENT.lastIndex = 0;
      return true;
    }
  }
  return false;
}

/** Deeper than this holdsUnsafeInteger answers "maybe" (the iterative lossless parser then decides). */
const MAX_WALK_DEPTH = 256;

/**
 * True when a number in a value parsed by JSON.parse from a text that passed needsLosslessParse may not be
 * what its token said: an integer token of 16 digits or more is exact and printed back as written only below
 * 2^53, and `-0` parses to -0 (printed "0"). Other numbers of such a text are exact.
 */
export function holdsUnsafeInteger(value: unknown, depth = 0): boolean {
  if (typeof value === 'number') return value >= 9007199254740992 || value <= -9007199254740992 || Object.is(value, -0);
  if (value === null || typeof value !== 'object') return false;
  if (depth > MAX_WALK_DEPTH) return true;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (holdsUnsafeInteger(value[i], depth + 1)) return true;
    return false;
  }
  const o = value as Record<string, unknown>;
  for (const k in o) if (holdsUnsafeInteger(o[k], depth + 1)) return true;
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
      i >= n
        ? `Unexpected end of JSON input (${what})`
        : `Unexpected token ${JSON.stringify(text[i])} in JSON at position ${i} (${what})`,
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
