/** node-fetch v2's Headers (names lower case, repeated headers joined by ', '), and header lists in any form. */
import {
  isArray,
  ObjectCreate,
  ObjectKeys,
  put,
  ReflectApply,
  StringFn,
  strToLower,
  SymbolIterator,
  TypeErrorCtor,
  own,
} from './primordials';

/** A null-prototype array-like of [name, value] pairs: no Array.prototype method is ever involved. */
export interface HeaderList {
  __proto__: null;
  length: number;
  [i: number]: [string, string];
}

/** The pair list inside a Headers, or null when h is not one. */
export let headerList: (h: unknown) => HeaderList | null;

/** Header names: lower case, as node-fetch's Headers. */
function headerName(name: unknown): string {
  return strToLower(StringFn(name));
}

export function appendHeader(l: HeaderList, name: unknown, value: unknown): void {
  l[l.length] = [headerName(name), StringFn(value)];
  l.length++;
}

export class Headers {
  #list: HeaderList = { __proto__: null, length: 0 };
  static {
    headerList = function (h) {
      return h !== null && typeof h === 'object' && #list in h ? (h as Headers).#list : null;
    };
  }
  constructor(init?: unknown) {
    const l = this.#list;
    if (init !== undefined && init !== null) forEachPair(init, (k, v) => appendHeader(l, k, v));
  }
  append(name: unknown, value: unknown): void {
    appendHeader(this.#list, name, value);
  }
  delete(name: unknown): void {
    const n = headerName(name);
    const l = this.#list;
    let j = 0;
    for (let i = 0; i < l.length; i++) if (l[i][0] !== n) l[j++] = l[i];
    for (let i = j; i < l.length; i++) delete l[i];
    l.length = j;
  }
  set(name: unknown, value: unknown): void {
    this.delete(name);
    this.append(name, value);
  }
  get(name: unknown): string | null {
    const n = headerName(name);
    const l = this.#list;
    let out: string | null = null;
    for (let i = 0; i < l.length; i++) if (l[i][0] === n) out = out === null ? l[i][1] : out + ', ' + l[i][1];
    return out;
  }
  has(name: unknown): boolean {
    return this.get(name) !== null;
  }
  forEach(callback: (value: string | null, name: string, headers: Headers) => void, thisArg?: unknown): void {
    const names = this.#names();
    for (let i = 0; i < names.length; i++) ReflectApply(callback, thisArg, [this.get(names[i]), names[i], this]);
  }
  raw(): Record<string, string[]> {
    const o: Record<string, string[]> = {};
    const l = this.#list;
    for (let i = 0; i < l.length; i++) {
      const k = l[i][0];
      const prev = o[k];
      if (isArray(prev)) put(prev, prev.length, l[i][1]);
      else own(o, k, [l[i][1]], true);
    }
    return o;
  }
  #names(): string[] {
    const names: string[] = [];
    const seen = ObjectCreate(null);
    const l = this.#list;
    for (let i = 0; i < l.length; i++) {
      if (seen[l[i][0]] !== true) {
        seen[l[i][0]] = true;
        put(names, names.length, l[i][0]);
      }
    }
    return names;
  }
  *entries(): Generator<[string, string | null]> {
    const names = this.#names();
    for (let i = 0; i < names.length; i++) yield [names[i], this.get(names[i])];
  }
  *keys(): Generator<string> {
    const names = this.#names();
    for (let i = 0; i < names.length; i++) yield names[i];
  }
  *values(): Generator<string | null> {
    const names = this.#names();
    for (let i = 0; i < names.length; i++) yield this.get(names[i]);
  }
  [SymbolIterator](): Generator<[string, string | null]> {
    return this.entries();
  }
}

/** Calls fn(name, value) for a Headers, an array of pairs or a plain object (array values = repeated header). */
export function forEachPair(h: unknown, fn: (name: string, value: string) => void): void {
  const l = headerList(h);
  if (l !== null) {
    for (let i = 0; i < l.length; i++) fn(l[i][0], l[i][1]);
  } else if (isArray(h)) {
    for (let i = 0; i < h.length; i++) {
      const pair = h[i] as ArrayLike<unknown> | null;
      if (pair === null || typeof pair !== 'object' || pair.length !== 2)
        throw new TypeErrorCtor('Header pairs must contain exactly two items');
      fn(StringFn(pair[0]), StringFn(pair[1]));
    }
  } else if (typeof h === 'object') {
    const o = h as Record<string, unknown>;
    const keys = ObjectKeys(o);
    for (let i = 0; i < keys.length; i++) {
      const v = o[keys[i]];
      if (isArray(v)) for (let j = 0; j < v.length; j++) fn(keys[i], StringFn(v[j]));
      else fn(keys[i], StringFn(v));
    }
  } else {
    throw new TypeErrorCtor('Provided headers must be an object, an array of pairs or a Headers');
  }
}
