/**
 * A port of Celery 5.2's `celery.utils.saferepr.saferepr` (the streaming, truncating repr behind the `argsrepr`
 * and `kwargsrepr` headers, maxlen 1024, maxlevels 3), for JSON values plus verbatim Python reprs (datetimes).
 * Only the benchmark's input generator needs it: its messages must be byte-identical to what Python sends,
 * and for events over ~1 KB Celery's truncation (`[...]` below three levels, `'abc...'` strings, `, ...}}]`)
 * differs from a plain cut of the full repr.
 */
import { pythonNumberRepr } from '../../protocol/repr';
import type { JsonValue } from '../../protocol/types';

/** A value whose Python repr is given verbatim (e.g. a datetime), as reprstream's `_repr(val)` branch. */
export interface PyRepr {
  readonly pyrepr: string;
}
export type PyValue = JsonValue | PyRepr | PyValue[] | { [key: string]: PyValue };

class Literal {
  constructor(
    readonly value: string,
    readonly truncate: boolean,
    readonly direction: number,
  ) {}
}
class Key {
  constructor(readonly value: PyValue) {}
}
class Quoted {
  constructor(readonly value: string) {}
}
class Dirty {}
type Item = PyValue | Literal | Key | Dirty;
type Token = Literal | Key | Quoted | string;

const DICT_START = new Literal('{', false, +1);
const DICT_KVSEP = new Literal(': ', true, 0);
const DICT_END = new Literal('}', false, -1);
const LIST_START = new Literal('[', false, +1);
const LIST_END = new Literal(']', false, -1);
const LIST_SEP = new Literal(', ', true, 0);
const DIRTY = new Dirty();

function isPyRepr(v: unknown): v is PyRepr {
  return (
    v !== null &&
    typeof v === 'object' &&
    !Array.isArray(v) &&
    typeof (v as { pyrepr?: unknown }).pyrepr === 'string' &&
    Object.keys(v).length === 1
  );
}

function* chainList(items: PyValue[]): Generator<Item> {
  for (let i = 0; i < items.length; i++) {
    yield items[i];
    if (i < items.length - 1) yield LIST_SEP;
  }
}

function* chainDict(obj: { [key: string]: PyValue }): Generator<Item> {
  const keys = Object.keys(obj);
  for (let i = 0; i < keys.length; i++) {
    yield new Key(keys[i]);
    yield DICT_KVSEP;
    yield obj[keys[i]];
    if (i < keys.length - 1) yield LIST_SEP;
  }
}

/** itertools.chain over iterators that may be partly consumed already (never closes them, like Python). */
function* chain(...parts: Array<Iterator<Item>>): Generator<Item> {
  for (const part of parts) {
    for (let r = part.next(); !r.done; r = part.next()) yield r.value;
  }
}

/** Celery's `truncate`: cut at maxlen, back to the last space, then "...". */
function truncate(s: string, maxlen: number | null): string {
  if (maxlen && s.length >= maxlen) {
    const cut = s.slice(0, maxlen);
    const space = cut.lastIndexOf(' ');
    return (space >= 0 ? cut.slice(0, space) : cut) + '...';
  }
  return s;
}

function formatChars(s: string, maxlen: number | null): string {
  return `'${truncate(s, maxlen).replace(/'/g, "\\'")}'`;
}

function* reprstream(stack: Array<Iterator<Item>>, maxlevels: number): Generator<[Token, Iterator<Item>]> {
  let level = 0;
  while (stack.length > 0) {
    const it = stack.shift() as Iterator<Item>;
    for (let r = it.next(); !r.done; r = it.next()) {
      const val = r.value;
      if (val instanceof Dirty) continue;
      if (val instanceof Literal) {
        level += val.direction;
        yield [val, it];
        continue;
      }
      if (val instanceof Key) {
        yield [val, it];
        continue;
      }
      if (val === null) {
        yield ['None', it];
        continue;
      }
      if (typeof val === 'number') {
        yield [pythonNumberRepr(val), it];
        continue;
      }
      if (typeof val === 'boolean') {
        yield [val ? 'True' : 'False', it];
        continue;
      }
      if (typeof val === 'string') {
        yield [new Quoted(val), it];
        continue;
      }
      if (isPyRepr(val)) {
        yield [val.pyrepr, it];
        continue;
      }
      const [start, end, items] = Array.isArray(val)
        ? [LIST_START, LIST_END, chainList(val)]
        : [DICT_START, DICT_END, chainDict(val as { [key: string]: PyValue })];
      if (maxlevels && level >= maxlevels) {
        yield [`${start.value}...${end.value}`, it];
        continue;
      }
      stack.push(chain([start][Symbol.iterator](), items, [DIRTY as Item, end as Item][Symbol.iterator](), it));
      break;
    }
  }
}

/** `saferepr(o, maxlen, maxlevels)` of Celery 5.2. */
export function celerySaferepr(o: PyValue, maxlen: number | null = 1024, maxlevels = 3): string {
  const out: string[] = [];
  const stack: Array<Iterator<Item>> = [[o as Item][Symbol.iterator]()];
  const tokens = reprstream(stack, maxlevels);
  for (let r = tokens.next(); !r.done; r = tokens.next()) {
    const [token, it] = r.value;
    if (maxlen !== null && maxlen <= 0) {
      out.push(', ...');
      stack.push(it);
      break;
    }
    let val: string;
    if (typeof token === 'string') val = truncate(token, maxlen);
    else if (token instanceof Literal) val = token.value;
    else if (token instanceof Key) val = celerySaferepr(token.value, maxlen, maxlevels);
    else val = formatChars(token.value, maxlen);
    out.push(val);
    if (maxlen !== null) maxlen -= val.length;
  }
  for (const rest of stack) {
    for (let r = rest.next(); !r.done; r = rest.next()) {
      const v = r.value;
      if (v instanceof Literal && !v.truncate) out.push(v.value);
    }
  }
  return out.join('');
}
