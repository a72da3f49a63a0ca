/**
 * Every builtin the guest uses, captured when the guest script is evaluated, before plugin code runs.
 *
 * Plugin code runs in the same realm and may replace any builtin or prototype method afterwards, so the guest
 * never calls a builtin through a property lookup at run time: methods are captured here (uncurried), internal
 * records have a null prototype, internal arrays are filled with defineProperty (put), and the JSON of every host
 * request and driver answer is assembled from strings: only a plugin's own payloads (an event, a cache or storage
 * value, a job payload, capture properties) go through JSON.stringify as objects, where its toJSON may run, and
 * they go in as JSON text that the host parses and checks again.
 *
 * The bundle must keep it so: built for ES2022 (no down-levelling helpers), without for…of, spread or array
 * destructuring (they use the iterator protocol), as test/plugins/vm/guest/bundle.test.ts checks.
 */

/** A record type with a null prototype: its literals start with `__proto__: null`. */
export interface NullProto {
  __proto__: null;
}

type Uncurried<F> = F extends (...args: infer A) => infer R ? (self: unknown, ...args: A) => R : never;

const uncurry = Function.prototype.bind.bind(Function.prototype.call) as <F>(f: F) => Uncurried<F>;
const typedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype) as Uint8Array;

export const G: typeof globalThis = globalThis;
export const parse = JSON.parse;
export const stringify = JSON.stringify;
export const ReflectApply = Reflect.apply;
export const isArray = Array.isArray;
export const StringFn = String;
export const fromCharCode = String.fromCharCode;
export const ObjectKeys = Object.keys;
export const ObjectCreate = Object.create as (proto: null) => Record<string, unknown>;
export const defineProperty = Object.defineProperty;
export const hasOwn = Object.hasOwn;
export const objectToString = uncurry(Object.prototype.toString) as (o: unknown) => string;
export const PromiseCtor = Promise;
export const ErrorCtor = Error;
export const TypeErrorCtor = TypeError;
export const DateNow = Date.now;
export const MathFloor = Math.floor;
export const isView = ArrayBuffer.isView;
export const Uint8ArrayCtor = Uint8Array;
export const typedSubarray = uncurry(typedArrayPrototype.subarray) as (
  a: Uint8Array,
  start: number,
  end: number,
) => Uint8Array;
export const typedSet = uncurry(typedArrayPrototype.set) as (a: Uint8Array, source: Uint8Array) => void;
export const strSlice = uncurry(String.prototype.slice) as (s: string, start: number, end?: number) => string;
export const strIndexOf = uncurry(String.prototype.indexOf) as (s: string, search: string) => number;
export const strToLower = uncurry(String.prototype.toLowerCase) as (s: string) => string;
export const strCharCodeAt = uncurry(String.prototype.charCodeAt) as (s: string, i: number) => number;
export const SymbolIterator: typeof Symbol.iterator = Symbol.iterator;
export const ProxyCtor = Proxy;
export const NumberFn = Number;
export const isInteger = Number.isInteger;
export const dateGetTime = uncurry(Date.prototype.getTime) as (d: unknown) => number;
export const DateParse = Date.parse;

/** arr[i] = v without consulting setters a plugin may have put on Array.prototype / Object.prototype. */
export function put<T>(arr: T[], i: number, v: T): void {
  defineProperty(arr, i, {
    __proto__: null,
    value: v,
    writable: true,
    enumerable: true,
    configurable: true,
  } as NullProto & PropertyDescriptor);
}

/** obj[key] = v as an own data property (no setter runs), enumerable or not. */
export function own(obj: object, key: string, v: unknown, enumerable: boolean): void {
  defineProperty(obj, key, {
    __proto__: null,
    value: v,
    writable: true,
    enumerable: enumerable,
    configurable: true,
  } as NullProto & PropertyDescriptor);
}

/** A non-enumerable global, as the guest installs them (console, require, fetch…). */
export function defineGlobal(key: string, v: unknown): void {
  defineProperty(G, key, {
    __proto__: null,
    value: v,
    writable: true,
    configurable: true,
    enumerable: false,
  } as NullProto & PropertyDescriptor);
}

/** s cut to n UTF-16 units, saying how much was cut. */
export function cut(s: string, n: number): string {
  return s.length > n ? strSlice(s, 0, n) + '…[truncated ' + (s.length - n) + ' chars]' : s;
}

/** A promise rejected with e (without looking up Promise.reject). */
export function rejected(e: unknown): Promise<never> {
  return new PromiseCtor(function (_, reject) {
    reject(e);
  });
}
