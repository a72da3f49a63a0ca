/**
 * JSON text assembled from strings (see primordials.ts): host requests and driver answers never go through
 * JSON.stringify as objects, only the strings and plugin payloads inside them do.
 */
import { fmt } from './console';
import {
  cut,
  isArray,
  isInteger,
  MathFloor,
  NumberFn,
  stringify,
  strCharCodeAt,
  StringFn,
  TypeErrorCtor,
} from './primordials';

const MAX_NAME = 200;
const MAX_MESSAGE = 4096;
const MAX_STACK = 16384;

/** Any value as a JSON string literal. */
export function q(v: unknown): string {
  return stringify(StringFn(v));
}

/** An integer argument as JSON, or throws a TypeError naming the argument. */
export function intJson(v: unknown, name: string): string {
  const n = typeof v === 'number' ? v : NumberFn(v);
  if (!isInteger(n)) throw new TypeErrorCtor(name + ' must be an integer, got ' + StringFn(v));
  return '' + n;
}

/** A count of ms or redirects as JSON: a non-negative number floored, else null. */
export function jsonNumber(v: unknown): string {
  return typeof v === 'number' && v === v && v >= 0 && v < 1e12 ? '' + MathFloor(v) : 'null';
}

/** The ErrorReport (see contract.ts) of a thrown value as JSON, with its size (what it adds to the call's answer). */
export function describe(i: number, e: unknown): { __proto__: null; json: string; size: number } {
  let name = 'Error';
  let message: unknown;
  let stack: string | undefined;
  let thrownString = false;
  try {
    if (e !== null && (typeof e === 'object' || typeof e === 'function')) {
      const o = e as { name?: unknown; message?: unknown; stack?: unknown };
      if (typeof o.name === 'string') name = o.name;
      message = typeof o.message === 'string' ? o.message : fmt(e);
      const st = o.stack;
      if (typeof st === 'string') stack = cut(st, MAX_STACK);
    } else {
      thrownString = typeof e === 'string';
      message = StringFn(e);
    }
  } catch (_) {
    message = 'unprintable error';
    stack = undefined;
  }
  if (typeof message !== 'string') message = 'unprintable error';
  let json =
    '{"i":' +
    i +
    ',"name":' +
    stringify(cut(StringFn(name), MAX_NAME)) +
    ',"message":' +
    stringify(cut(message as string, MAX_MESSAGE));
  if (stack !== undefined) json += ',"stack":' + stringify(stack);
  if (thrownString) json += ',"thrownString":true';
  json += '}';
  return { __proto__: null, json: json, size: json.length };
}

/** The JSON text of one returned event, or throws a TypeError saying what is wrong with it. */
export function eventJson(r: unknown, what: string): string {
  if (typeof r !== 'object' || isArray(r)) {
    throw new TypeErrorCtor(
      what +
        ' must return an event object (or a falsy value to drop the event), got ' +
        (isArray(r) ? 'an array' : typeof r),
    );
  }
  const s = stringify(r);
  if (typeof s !== 'string' || strCharCodeAt(s, 0) !== 123)
    throw new TypeErrorCtor('the event returned by ' + what + ' does not serialize to a JSON object');
  return s;
}

/** A RunSummary as JSON; errors: the error reports' JSONs, comma-separated. */
export function summaryJson(bytes: number, errors: string): string {
  return '{"bytes":' + bytes + ',"errors":[' + errors + ']}';
}
