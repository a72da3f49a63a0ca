/**
 * Code evaluated in every fresh context before the plugin (through `context.evalClosure`), with
 *   $0 = ivm.Callback(level, line) {ignored: true}       — console output ('dropped' + count for rate-limited lines)
 *   $1 = ivm.Callback(id, op, argsJson) {ignored: true}  — bridge requests (see bridge.ts)
 *   $2 = JSON string {config, maxLogLine, maxLogLinesPerSecond, importMessage, ops: {name: {maxArgBytes, maxPending}},
 *        unavailable: {op: why}} — ops the host offers; for missing ones (cache without Redis…) the reason to show
 *   $3 = attachments [{key, content_type, file_name, bytes: Uint8Array, utf8, base64}] (copied)
 * It keeps both Callbacks and every builtin it needs in this closure, installs only plain functions on globalThis
 * (console, require, module, exports, RetryError, posthog, and `fetch` when the host offers it) and the meta
 * APIs (cache, storage, utils.cursor, jobs: each a host op), and returns the driver object, which
 * only the host holds (as References). Nothing reachable from plugin code leads back to the host.
 *
 * Plugin code runs in the same realm and may replace any builtin or prototype method afterwards, so this closure
 * never calls a builtin through a property lookup at run time: methods are captured (uncurried) here, internal
 * records have a null prototype, internal arrays are filled with defineProperty, and the JSON of every host
 * request and driver summary is assembled from strings: only a plugin's own payloads (an event, a cache or
 * storage value, a job payload, capture properties) go through JSON.stringify as objects, where its toJSON may
 * run, and they go in as JSON text that the host parses and checks again.
 *
 * The driver:
 *   resolve()        → JSON {processEvent, processEventBatch, setupPlugin, teardownPlugin, onEvent, exportEvents,
 *                      runEveryMinute, runEveryHour, runEveryDay} (booleans) + jobs (names), after load
 *   setup()/teardown() → awaited setupPlugin(meta) / teardownPlugin(meta)
 *   run(string[], maxBytes) → when the results come to at most maxBytes, [summary, results] (results as take(true)
 *                      gives them, so no second entry is needed); else the summary JSON {bytes, errors:[{i, name,
 *                      message, stack, thrownString}]} alone and the results kept in the closure for take()
 *   runSync(string[], maxBytes) → like run() but synchronous (the host's applySync); '' when processEvent returned a
 *                      thenable: the state is kept and resume() finishes the call asynchronously
 *   resume(maxBytes) → like run(), for what runSync() left
 *   take(keep)       → the kept results: Array<string | null | undefined> (string = new event JSON, null = dropped,
 *                      undefined = unchanged because of an error), or null when keep is false
 *   task(kind, name, arg) → JSON {failed, retry, error?}: onEvent / exportEvents / scheduled task / job (see task())
 *   settle(id, ok, json) → completes bridge request `id` (ok: json is the result; else {name, message, type, code})
 */
export const BOOT_SOURCE = String.raw`
'use strict';
const hostLog = $0;
const hostRequest = $1;
const init = JSON.parse($2);
const rawAttachments = $3;

// ------------------------------------------------------------------ builtins, captured before plugin code runs
const G = globalThis;
const parse = JSON.parse;
const stringify = JSON.stringify;
const uncurry = Function.prototype.bind.bind(Function.prototype.call);
const ReflectApply = Reflect.apply;
const isArray = Array.isArray;
const StringFn = String;
const fromCharCode = String.fromCharCode;
const ObjectKeys = Object.keys;
const ObjectCreate = Object.create;
const defineProperty = Object.defineProperty;
const hasOwn = Object.hasOwn;
const objectToString = uncurry(Object.prototype.toString);
const PromiseCtor = Promise;
const ErrorCtor = Error;
const TypeErrorCtor = TypeError;
const DateNow = Date.now;
const MathFloor = Math.floor;
const isView = ArrayBuffer.isView;
const Uint8ArrayCtor = Uint8Array;
const typedSubarray = uncurry(Object.getPrototypeOf(Uint8Array.prototype).subarray);
const typedSet = uncurry(Object.getPrototypeOf(Uint8Array.prototype).set);
const strSlice = uncurry(String.prototype.slice);
const strIndexOf = uncurry(String.prototype.indexOf);
const strToLower = uncurry(String.prototype.toLowerCase);
const strCharCodeAt = uncurry(String.prototype.charCodeAt);
const SymbolIterator = Symbol.iterator;
const ProxyCtor = Proxy;
const NumberFn = Number;
const isInteger = Number.isInteger;
const DateCtor = Date;
const dateGetTime = uncurry(Date.prototype.getTime);
const DateParse = Date.parse;

const MAX_LINE = init.maxLogLine;
const LINES_PER_SECOND = init.maxLogLinesPerSecond;
const MAX_MESSAGE = 4096;
const MAX_STACK = 16384;

/** arr[i] = v without consulting setters a plugin may have put on Array.prototype / Object.prototype. */
function put(arr, i, v) {
  defineProperty(arr, i, { __proto__: null, value: v, writable: true, enumerable: true, configurable: true });
}
function own(obj, key, v, enumerable) {
  defineProperty(obj, key, { __proto__: null, value: v, writable: true, enumerable: enumerable, configurable: true });
}
function cut(s, n) {
  return s.length > n ? strSlice(s, 0, n) + '…[truncated ' + (s.length - n) + ' chars]' : s;
}

// ------------------------------------------------------------------ console
function fmt(v) {
  if (typeof v === 'string') return v;
  if (v === undefined) return 'undefined';
  if (typeof v === 'function') return '[Function ' + (typeof v.name === 'string' && v.name ? v.name : 'anonymous') + ']';
  if (typeof v === 'symbol' || typeof v === 'bigint') return StringFn(v);
  if (v !== null && typeof v === 'object') {
    if (objectToString(v) === '[object Error]') {
      const st = v.stack;
      return typeof st === 'string' ? st : StringFn(v.name) + ': ' + StringFn(v.message);
    }
    try {
      const s = stringify(v);
      if (typeof s === 'string') return s;
    } catch (_) {
      return '[unserializable object]';
    }
  }
  return StringFn(v);
}
let logWindow = 0;
let logCount = 0;
let logDropped = 0;
function flushDropped() {
  if (logDropped > 0) {
    const n = logDropped;
    logDropped = 0;
    try {
      hostLog('dropped', '' + n);
    } catch (_) {}
  }
}
function makeLogger(level) {
  return function () {
    const now = DateNow();
    if (now - logWindow >= 1000) {
      logWindow = now;
      logCount = 0;
      flushDropped();
    }
    if (++logCount > LINES_PER_SECOND) {
      logDropped++;
      return;
    }
    let line = '';
    try {
      for (let i = 0; i < arguments.length && line.length <= MAX_LINE; i++) {
        const s = fmt(arguments[i]);
        line = i === 0 ? s : line + ' ' + s;
      }
      line = cut(line, MAX_LINE);
    } catch (_) {
      line = '[unprintable console arguments]';
    }
    try {
      hostLog(level, line);
    } catch (_) {}
  };
}
const pluginConsole = {
  log: makeLogger('log'),
  info: makeLogger('info'),
  warn: makeLogger('warn'),
  error: makeLogger('error'),
  debug: makeLogger('debug'),
};
defineProperty(G, 'console', { __proto__: null, value: pluginConsole, writable: true, configurable: true, enumerable: false });

// ------------------------------------------------------------------ attachments
const HEX = '0123456789abcdef';
class AttachmentContents extends Uint8Array {
  #utf8 = '';
  #base64 = '';
  static init(c, utf8, base64) {
    c.#utf8 = utf8;
    c.#base64 = base64;
  }
  toString(encoding) {
    const enc = encoding === undefined ? 'utf8' : strToLower(StringFn(encoding));
    if (enc === 'utf8' || enc === 'utf-8') return this.#utf8;
    if (enc === 'base64') return this.#base64;
    if (enc === 'hex') {
      let s = '';
      for (let i = 0; i < this.length; i++) s += HEX[this[i] >> 4] + HEX[this[i] & 15];
      return s;
    }
    if (enc === 'latin1' || enc === 'binary' || enc === 'ascii') {
      let s = '';
      for (let i = 0; i < this.length; i++) s += fromCharCode(enc === 'ascii' ? this[i] & 127 : this[i]);
      return s;
    }
    throw new TypeErrorCtor('Unknown encoding: ' + encoding);
  }
  toJSON() {
    const data = [];
    for (let i = 0; i < this.length; i++) put(data, i, this[i]);
    return { type: 'Buffer', data };
  }
}
const initContents = AttachmentContents.init;
delete AttachmentContents.init;
const attachments = {};
for (let i = 0; i < rawAttachments.length; i++) {
  const a = rawAttachments[i];
  const contents = new AttachmentContents(a.bytes.length);
  typedSet(contents, a.bytes);
  initContents(contents, a.utf8, a.base64);
  attachments[a.key] = { content_type: a.content_type, file_name: a.file_name, contents };
}

// ------------------------------------------------------------------ meta, module, require
const meta = { config: init.config, attachments, global: {} };
const importAt = strIndexOf(init.importMessage, '%s');
const importBefore = strSlice(init.importMessage, 0, importAt);
const importAfter = strSlice(init.importMessage, importAt + 2);
const hostModules = ObjectCreate(null); // filled below: the only modules a plugin may import
function require(name) {
  const m = hostModules[StringFn(name)];
  if (m !== undefined) return m;
  throw new ErrorCtor(importBefore + StringFn(name) + importAfter);
}
const module = { exports: {} };
defineProperty(G, 'module', { __proto__: null, value: module, writable: true, configurable: true, enumerable: false });
defineProperty(G, 'exports', { __proto__: null, value: module.exports, writable: true, configurable: true, enumerable: false });
defineProperty(G, 'require', { __proto__: null, value: require, writable: true, configurable: true, enumerable: false });

// ------------------------------------------------------------------ bridge client
const ops = init.ops;
const pending = ObjectCreate(null); // id → {resolve, reject, wrap, fail, op}
const pendingPerOp = ObjectCreate(null);
let lastId = 0;

/** A promise for host op 'op' with argument JSON 'json'; wrap(result) builds the value, fail(message, type) the error. */
function hostCall(op, json, wrap, fail) {
  return new PromiseCtor(function (resolve, reject) {
    const limits = ops[op];
    const count = pendingPerOp[op] || 0;
    if (json.length > limits.maxArgBytes) {
      reject(fail(op + ' request too large: ' + json.length + ' bytes, limit ' + limits.maxArgBytes, 'max-size'));
      return;
    }
    if (count >= limits.maxPending) {
      reject(fail('too many ' + op + ' requests at once (limit ' + limits.maxPending + ' per plugin config)', 'too-many-requests'));
      return;
    }
    const id = ++lastId;
    pending[id] = { __proto__: null, resolve: resolve, reject: reject, wrap: wrap, fail: fail, op: op };
    pendingPerOp[op] = count + 1;
    try {
      hostRequest(id, op, json);
    } catch (e) {
      delete pending[id];
      pendingPerOp[op] = count;
      reject(fail(op + ' failed: the host call could not be made', 'system'));
    }
  });
}

/** A field of a parsed host reply (own properties only: no getter a plugin put on Object.prototype runs). */
function field(o, key) {
  return o !== null && typeof o === 'object' && hasOwn(o, key) ? o[key] : undefined;
}
function remoteError(v, fail) {
  const name = field(v, 'name');
  const message = typeof field(v, 'message') === 'string' ? field(v, 'message') : 'host call failed';
  if (name === 'TypeError') return new TypeErrorCtor(message);
  const type = field(v, 'type');
  const e = fail(message, typeof type === 'string' ? type : 'system');
  const code = field(v, 'code');
  if (typeof code === 'string') {
    own(e, 'code', code, true);
    own(e, 'errno', code, true);
  }
  return e;
}

function settle(id, ok, json) {
  const p = pending[id];
  if (p === undefined) return;
  delete pending[id];
  pendingPerOp[p.op]--;
  let v;
  try {
    v = parse(json);
  } catch (_) {
    p.reject(p.fail('malformed reply from the host', 'system'));
    return;
  }
  if (!ok) {
    p.reject(remoteError(v, p.fail));
    return;
  }
  let r;
  try {
    r = p.wrap(v);
  } catch (e) {
    p.reject(e);
    return;
  }
  p.resolve(r);
}

// ------------------------------------------------------------------ fetch (node-fetch v2 surface, bodies as text)
class FetchError extends ErrorCtor {
  constructor(message, type) {
    super(message);
    own(this, 'name', 'FetchError', false);
    own(this, 'type', type, true);
  }
}
function fetchFail(message, type) {
  return new FetchError(message, type);
}

let headerList = null;
/** Header names: lower case, as node-fetch's Headers. */
function headerName(name) {
  return strToLower(StringFn(name));
}
function appendHeader(l, name, value) {
  l[l.length] = [headerName(name), StringFn(value)];
  l.length++;
}
class Headers {
  #list = { __proto__: null, length: 0 };
  static {
    headerList = function (h) {
      return h !== null && typeof h === 'object' && #list in h ? h.#list : null;
    };
  }
  constructor(init) {
    const l = this.#list;
    if (init !== undefined && init !== null) forEachPair(init, (k, v) => appendHeader(l, k, v));
  }
  append(name, value) {
    appendHeader(this.#list, name, value);
  }
  delete(name) {
    const n = headerName(name);
    const l = this.#list;
    let j = 0;
    for (let i = 0; i < l.length; i++) if (l[i][0] !== n) l[j++] = l[i];
    for (let i = j; i < l.length; i++) delete l[i];
    l.length = j;
  }
  set(name, value) {
    this.delete(name);
    this.append(name, value);
  }
  get(name) {
    const n = headerName(name);
    const l = this.#list;
    let out = null;
    for (let i = 0; i < l.length; i++) if (l[i][0] === n) out = out === null ? l[i][1] : out + ', ' + l[i][1];
    return out;
  }
  has(name) {
    return this.get(name) !== null;
  }
  forEach(callback, thisArg) {
    const names = this.#names();
    for (let i = 0; i < names.length; i++) ReflectApply(callback, thisArg, [this.get(names[i]), names[i], this]);
  }
  raw() {
    const o = {};
    const l = this.#list;
    for (let i = 0; i < l.length; i++) {
      const k = l[i][0];
      const prev = o[k];
      if (isArray(prev)) put(prev, prev.length, l[i][1]);
      else own(o, k, [l[i][1]], true);
    }
    return o;
  }
  #names() {
    const names = [];
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
  *entries() {
    const names = this.#names();
    for (let i = 0; i < names.length; i++) yield [names[i], this.get(names[i])];
  }
  *keys() {
    const names = this.#names();
    for (let i = 0; i < names.length; i++) yield names[i];
  }
  *values() {
    const names = this.#names();
    for (let i = 0; i < names.length; i++) yield this.get(names[i]);
  }
  [SymbolIterator]() {
    return this.entries();
  }
}

/** Calls fn(name, value) for a Headers, an array of pairs or a plain object (array values = repeated header). */
function forEachPair(h, fn) {
  const l = headerList(h);
  if (l !== null) {
    for (let i = 0; i < l.length; i++) fn(l[i][0], l[i][1]);
  } else if (isArray(h)) {
    for (let i = 0; i < h.length; i++) {
      const pair = h[i];
      if (pair === null || typeof pair !== 'object' || pair.length !== 2) throw new TypeErrorCtor('Header pairs must contain exactly two items');
      fn(StringFn(pair[0]), StringFn(pair[1]));
    }
  } else if (typeof h === 'object') {
    const keys = ObjectKeys(h);
    for (let i = 0; i < keys.length; i++) {
      const v = h[keys[i]];
      if (isArray(v)) for (let j = 0; j < v.length; j++) fn(keys[i], StringFn(v[j]));
      else fn(keys[i], StringFn(v));
    }
  } else {
    throw new TypeErrorCtor('Provided headers must be an object, an array of pairs or a Headers');
  }
}

const RESPONSE_TOKEN = ObjectCreate(null);
function bodyUnsupported(what) {
  return new PromiseCtor(function (_, reject) {
    reject(new TypeErrorCtor('response.' + what + '() is not available in posthog-plugins: read bodies with text() or json()'));
  });
}
class Response {
  #body;
  #used = false;
  constructor(token, data) {
    if (token !== RESPONSE_TOKEN) throw new TypeErrorCtor('Illegal constructor: responses come from fetch()');
    this.#body = data.body;
    const headers = new Headers();
    const l = headerList(headers);
    const pairs = data.headers;
    for (let i = 0; i < pairs.length; i++) appendHeader(l, pairs[i][0], pairs[i][1]);
    own(this, 'url', data.url, true);
    own(this, 'status', data.status, true);
    own(this, 'statusText', data.statusText, true);
    own(this, 'ok', data.status >= 200 && data.status < 300, true);
    own(this, 'redirected', data.redirected, true);
    own(this, 'headers', headers, true);
  }
  get bodyUsed() {
    return this.#used;
  }
  async text() {
    if (this.#used) throw new TypeErrorCtor('body used already for: ' + this.url);
    this.#used = true;
    return this.#body;
  }
  async json() {
    if (this.#used) throw new TypeErrorCtor('body used already for: ' + this.url);
    this.#used = true;
    try {
      return parse(this.#body);
    } catch (e) {
      throw new FetchError('invalid json response body at ' + this.url + ' reason: ' + e.message, 'invalid-json');
    }
  }
  clone() {
    if (this.#used) throw new TypeErrorCtor('cannot clone body after it is used');
    const pairs = [];
    forEachPair(this.headers, (k, v) => put(pairs, pairs.length, [k, v]));
    return new Response(RESPONSE_TOKEN, { url: this.url, status: this.status, statusText: this.statusText, redirected: this.redirected, headers: pairs, body: this.#body });
  }
  arrayBuffer() {
    return bodyUnsupported('arrayBuffer');
  }
  buffer() {
    return bodyUnsupported('buffer');
  }
  blob() {
    return bodyUnsupported('blob');
  }
}
function toResponse(data) {
  return new Response(RESPONSE_TOKEN, data);
}

function jsonNumber(v) {
  return typeof v === 'number' && v === v && v >= 0 && v < 1e12 ? '' + MathFloor(v) : 'null';
}
/** Bytes (ArrayBuffer or a view) as a string of one char per byte. */
function latin1(body) {
  const u8 = isView(body) ? new Uint8ArrayCtor(body.buffer, body.byteOffset, body.byteLength) : new Uint8ArrayCtor(body);
  let s = '';
  for (let i = 0; i < u8.length; i += 8192) s += ReflectApply(fromCharCode, null, typedSubarray(u8, i, i + 8192));
  return s;
}
function fetchRequestJson(input, options) {
  let url;
  if (typeof input === 'string') url = input;
  else if (input !== null && typeof input === 'object' && typeof input.url === 'string') url = input.url;
  else if (input !== null && typeof input === 'object' && typeof input.href === 'string') url = input.href;
  else url = StringFn(input);
  const o = options === undefined || options === null ? ObjectCreate(null) : options;
  if (typeof o !== 'object') throw new TypeErrorCtor('fetch: the second argument must be an options object');
  const method = o.method === undefined || o.method === null ? 'GET' : StringFn(o.method);
  let headers = '';
  if (o.headers !== undefined && o.headers !== null) {
    forEachPair(o.headers, (k, v) => {
      headers += (headers === '' ? '[[' : ',[') + stringify(StringFn(k)) + ',' + stringify(StringFn(v)) + ']';
    });
  }
  let body = null;
  let encoding = 'utf8';
  const b = o.body;
  if (b !== undefined && b !== null) {
    if (typeof b === 'string') body = b;
    else if (isView(b) || (typeof b === 'object' && objectToString(b) === '[object ArrayBuffer]')) {
      body = latin1(b);
      encoding = 'latin1';
    } else body = StringFn(b);
  }
  const redirect = o.redirect === undefined ? 'follow' : StringFn(o.redirect);
  if (redirect !== 'follow' && redirect !== 'manual' && redirect !== 'error') throw new TypeErrorCtor('fetch: redirect must be "follow", "manual" or "error"');
  return '{"url":' + stringify(url) +
    ',"method":' + stringify(method) +
    ',"headers":' + (headers === '' ? '[]' : headers + ']') +
    ',"body":' + (body === null ? 'null' : stringify(body)) +
    ',"bodyEncoding":"' + encoding + '"' +
    ',"redirect":"' + redirect + '"' +
    ',"timeout":' + jsonNumber(o.timeout) +
    ',"follow":' + jsonNumber(o.follow) +
    ',"compress":' + (o.compress === false ? 'false' : 'true') + '}';
}
function fetch(url, options) {
  let json;
  try {
    json = fetchRequestJson(url, options);
  } catch (e) {
    return new PromiseCtor(function (_, reject) {
      reject(e);
    });
  }
  return hostCall('fetch', json, toResponse, fetchFail);
}
if (ops.fetch) defineProperty(G, 'fetch', { __proto__: null, value: fetch, writable: true, configurable: true, enumerable: false });

// ------------------------------------------------------------------ RetryError, meta.cache/storage/utils/jobs, posthog
class RetryError extends ErrorCtor {
  constructor(message) {
    super(message);
    own(this, 'name', 'RetryError', false);
  }
}
defineProperty(G, 'RetryError', { __proto__: null, value: RetryError, writable: true, configurable: true, enumerable: false });
hostModules['@posthog/plugin-scaffold'] = { RetryError: RetryError };
if (ops.fetch) hostModules['node-fetch'] = fetch;

function rejected(e) {
  return new PromiseCtor(function (_, reject) {
    reject(e);
  });
}
function apiError(name) {
  return function (message, type) {
    const e = new ErrorCtor(message);
    own(e, 'name', name, false);
    own(e, 'type', type, true);
    return e;
  };
}
const cacheFail = apiError('CacheError');
const storageFail = apiError('StorageError');
const jobsFail = apiError('JobError');
const captureFail = apiError('CaptureError');
function same(v) {
  return v;
}
/** A host call, or a rejected promise saying why this API is missing here (e.g. no Redis for meta.cache). */
function api(op, what, json, wrap, fail) {
  if (!hasOwn(ops, op)) return rejected(fail(what + ' is not available in this worker: ' + (init.unavailable[op] || 'not configured'), 'unavailable'));
  return hostCall(op, json, wrap, fail);
}
function q(v) {
  return stringify(StringFn(v));
}
/** An integer argument as JSON, or throws a TypeError naming the argument. */
function intJson(v, name) {
  const n = typeof v === 'number' ? v : NumberFn(v);
  if (!isInteger(n)) throw new TypeErrorCtor(name + ' must be an integer, got ' + StringFn(v));
  return '' + n;
}
function guarded(build) {
  try {
    return build();
  } catch (e) {
    return rejected(e);
  }
}

const cache = {
  set(key, value, ttlSeconds, options) {
    return guarded(() => {
      const serialize = !(options !== null && typeof options === 'object' && options.jsonSerialize === false);
      let v = serialize ? stringify(value === undefined ? null : value) : StringFn(value);
      if (typeof v !== 'string') v = 'null';
      const ttl = ttlSeconds === undefined || ttlSeconds === null ? 'null' : intJson(ttlSeconds, 'ttlSeconds');
      return api('cache', 'meta.cache', '{"cmd":"set","key":' + q(key) + ',"value":' + stringify(v) + ',"ttl":' + ttl + '}', () => undefined, cacheFail);
    });
  },
  get(key, defaultValue, options) {
    const serialize = !(options !== null && typeof options === 'object' && options.jsonSerialize === false);
    // A missing key gives the default (PostHog's own server returned null here: a known bug, fixed).
    const wrap = (v) => (v === null || v === undefined ? defaultValue : serialize ? parse(v) : v);
    return guarded(() => api('cache', 'meta.cache', '{"cmd":"get","key":' + q(key) + '}', wrap, cacheFail));
  },
  incr(key) {
    return guarded(() => api('cache', 'meta.cache', '{"cmd":"incr","key":' + q(key) + '}', same, cacheFail));
  },
  expire(key, ttlSeconds) {
    return guarded(() => api('cache', 'meta.cache', '{"cmd":"expire","key":' + q(key) + ',"ttl":' + intJson(ttlSeconds, 'ttlSeconds') + '}', same, cacheFail));
  },
  lpush(key, elementOrArray) {
    return guarded(() => {
      let values = '';
      if (isArray(elementOrArray)) {
        for (let i = 0; i < elementOrArray.length; i++) values += (i === 0 ? '' : ',') + q(elementOrArray[i]);
      } else values = q(elementOrArray);
      return api('cache', 'meta.cache', '{"cmd":"lpush","key":' + q(key) + ',"values":[' + values + ']}', same, cacheFail);
    });
  },
  lrange(key, startIndex, endIndex) {
    return guarded(() => api('cache', 'meta.cache', '{"cmd":"lrange","key":' + q(key) + ',"start":' + intJson(startIndex, 'startIndex') + ',"stop":' + intJson(endIndex, 'endIndex') + '}', same, cacheFail));
  },
  llen(key) {
    return guarded(() => api('cache', 'meta.cache', '{"cmd":"llen","key":' + q(key) + '}', same, cacheFail));
  },
  lrem(key, count, elementKey) {
    return guarded(() => api('cache', 'meta.cache', '{"cmd":"lrem","key":' + q(key) + ',"count":' + intJson(count, 'count') + ',"value":' + q(elementKey) + '}', same, cacheFail));
  },
  lpop(key, count) {
    return guarded(() => api('cache', 'meta.cache', '{"cmd":"lpop","key":' + q(key) + ',"count":' + intJson(count === undefined ? 1 : count, 'count') + '}', same, cacheFail));
  },
};

function storageDel(key) {
  return guarded(() => api('storage', 'meta.storage', '{"cmd":"del","key":' + q(key) + '}', () => undefined, storageFail));
}
const storage = {
  get(key, defaultValue) {
    return guarded(() => api('storage', 'meta.storage', '{"cmd":"get","key":' + q(key) + '}', (v) => (v === null || v === undefined ? defaultValue : parse(v)), storageFail));
  },
  set(key, value) {
    // PostHog: storing undefined deletes the key.
    if (value === undefined) return storageDel(key);
    return guarded(() => {
      const v = stringify(value);
      if (typeof v !== 'string') throw new TypeErrorCtor('meta.storage.set: the value does not serialize to JSON');
      return api('storage', 'meta.storage', '{"cmd":"set","key":' + q(key) + ',"value":' + stringify(v) + '}', () => undefined, storageFail);
    });
  },
  del(key) {
    return storageDel(key);
  },
};

const cursor = {
  init(key, initialValue) {
    return guarded(() => api('storage', 'meta.utils.cursor', '{"cmd":"cursorInit","key":' + q(key) + ',"initial":' + intJson(initialValue === undefined ? 0 : initialValue, 'initialValue') + '}', () => undefined, storageFail));
  },
  increment(key, incrementBy) {
    return guarded(() => api('storage', 'meta.utils.cursor', '{"cmd":"cursorIncrement","key":' + q(key) + ',"by":' + intJson(incrementBy === undefined ? 1 : incrementBy, 'incrementBy') + '}', same, storageFail));
  },
};

// Job delays, in ms. A month is 30 days (PostHog's own server made it 30 weeks: a known bug, fixed).
const UNIT_MS = ObjectCreate(null);
const unitTable = [
  ['millisecond', 1], ['second', 1000], ['minute', 60000], ['hour', 3600000], ['day', 86400000],
  ['week', 604800000], ['month', 2592000000], ['quarter', 7776000000], ['year', 31536000000],
];
for (let i = 0; i < unitTable.length; i++) {
  UNIT_MS[unitTable[i][0]] = unitTable[i][1];
  UNIT_MS[unitTable[i][0] + 's'] = unitTable[i][1];
}
UNIT_MS.ms = 1;
function enqueueJob(name, payload, runAtMs) {
  return guarded(() => {
    if (!(runAtMs === runAtMs) || runAtMs < 0 || runAtMs > 8.64e15) throw new TypeErrorCtor('job ' + name + ': invalid run time');
    const p = stringify(payload === undefined ? null : payload);
    if (typeof p !== 'string') throw new TypeErrorCtor('job ' + name + ': the payload does not serialize to JSON');
    return api('jobs', 'meta.jobs', '{"name":' + q(name) + ',"payload":' + stringify(p) + ',"runAt":' + MathFloor(runAtMs) + '}', () => undefined, jobsFail);
  });
}
function jobBuilder(name) {
  return function (payload) {
    return {
      runNow() {
        return enqueueJob(name, payload, DateNow());
      },
      runIn(duration, unit) {
        const ms = UNIT_MS[StringFn(unit)];
        const n = typeof duration === 'number' ? duration : NumberFn(duration);
        if (ms === undefined) return rejected(new TypeErrorCtor('runIn: unknown unit ' + StringFn(unit) + ' (use milliseconds, seconds, minutes, hours, days, weeks, months, quarters or years)'));
        if (!(n === n) || n < 0) return rejected(new TypeErrorCtor('runIn: duration must be a number ≥ 0'));
        return enqueueJob(name, payload, DateNow() + n * ms);
      },
      runAt(date) {
        let t;
        try {
          t = objectToString(date) === '[object Date]' ? dateGetTime(date) : typeof date === 'number' ? date : DateParse(StringFn(date));
        } catch (e) {
          return rejected(e);
        }
        return enqueueJob(name, payload, t);
      },
    };
  };
}
const jobs = new ProxyCtor(ObjectCreate(null), {
  __proto__: null,
  get(_, prop) {
    // Not a job: what 'await meta.jobs' and JSON.stringify look up.
    if (typeof prop !== 'string' || prop === 'then' || prop === 'toJSON') return undefined;
    return jobBuilder(prop);
  },
});

const posthog = {
  capture(event, properties) {
    return guarded(() => {
      const props = properties === undefined || properties === null ? '{}' : stringify(properties);
      if (typeof props !== 'string' || strCharCodeAt(props, 0) !== 123) throw new TypeErrorCtor('posthog.capture: properties must be an object');
      return api('capture', 'posthog.capture', '{"event":' + q(event) + ',"properties":' + props + '}', () => undefined, captureFail);
    });
  },
};
defineProperty(G, 'posthog', { __proto__: null, value: posthog, writable: true, configurable: true, enumerable: false });
meta.cache = cache;
meta.storage = storage;
meta.utils = { cursor };
meta.jobs = jobs;

// ------------------------------------------------------------------ driver
let fns = null;
let lastOut = null;

function isHolder(d) {
  return d !== null && d !== undefined && typeof d === 'object';
}
function resolve() {
  // PostHog's lookup: exports, exports.default, module.exports (+ module.exports.default, where esbuild puts
  // "export default"); globals only when nothing at all is exported.
  const e = G.exports;
  const m = G.module;
  const me = isHolder(m) ? m.exports : undefined;
  const candidates = [e, isHolder(e) ? e.default : undefined, me, isHolder(me) ? me.default : undefined];
  const dests = [];
  for (let i = 0; i < candidates.length; i++) {
    const d = candidates[i];
    if (!isHolder(d)) continue;
    let seen = false;
    for (let j = 0; j < dests.length; j++) if (dests[j] === d) seen = true;
    if (!seen) put(dests, dests.length, d);
  }
  let any = false;
  for (let i = 0; i < dests.length; i++) if (ObjectKeys(dests[i]).length > 0) any = true;
  if (!any) put(dests, dests.length, G);
  const get = (key) => {
    for (let i = 0; i < dests.length; i++) {
      const f = dests[i][key];
      if (typeof f === 'function') return { __proto__: null, fn: f, self: dests[i] };
    }
    return null;
  };
  fns = {
    __proto__: null,
    processEvent: get('processEvent'),
    processEventBatch: get('processEventBatch'),
    setupPlugin: get('setupPlugin'),
    teardownPlugin: get('teardownPlugin'),
    onEvent: get('onEvent'),
    exportEvents: get('exportEvents'),
    runEveryMinute: get('runEveryMinute'),
    runEveryHour: get('runEveryHour'),
    runEveryDay: get('runEveryDay'),
    jobs: null,
  };
  // jobs: {name: (payload, meta) => …}, from the first export holder that has such an object.
  let jobNames = '';
  for (let i = 0; i < dests.length && fns.jobs === null; i++) {
    const j = dests[i].jobs;
    if (j === null || typeof j !== 'object') continue;
    const table = ObjectCreate(null);
    const keys = ObjectKeys(j);
    for (let k = 0; k < keys.length; k++) {
      const f = j[keys[k]];
      if (typeof f !== 'function') continue;
      table[keys[k]] = { __proto__: null, fn: f, self: j };
      jobNames += (jobNames === '' ? '' : ',') + stringify(keys[k]);
    }
    fns.jobs = table;
  }
  return '{"processEvent":' + !!fns.processEvent +
    ',"processEventBatch":' + !!fns.processEventBatch +
    ',"setupPlugin":' + !!fns.setupPlugin +
    ',"teardownPlugin":' + !!fns.teardownPlugin +
    ',"onEvent":' + !!fns.onEvent +
    ',"exportEvents":' + !!fns.exportEvents +
    ',"runEveryMinute":' + !!fns.runEveryMinute +
    ',"runEveryHour":' + !!fns.runEveryHour +
    ',"runEveryDay":' + !!fns.runEveryDay +
    ',"jobs":[' + jobNames + ']}';
}

/** {json, size} of a thrown value, every field truncated. */
function describe(i, e) {
  let name = 'Error';
  let message;
  let stack;
  let thrownString = false;
  try {
    if (e !== null && (typeof e === 'object' || typeof e === 'function')) {
      if (typeof e.name === 'string') name = e.name;
      message = typeof e.message === 'string' ? e.message : fmt(e);
      const st = e.stack;
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
  let json = '{"i":' + i + ',"name":' + stringify(cut(StringFn(name), 200)) + ',"message":' + stringify(cut(message, MAX_MESSAGE));
  if (stack !== undefined) json += ',"stack":' + stringify(stack);
  if (thrownString) json += ',"thrownString":true';
  json += '}';
  return { __proto__: null, json: json, size: json.length };
}

function isThenable(r) {
  return r !== null && (typeof r === 'object' || typeof r === 'function') && typeof r.then === 'function';
}

/** The JSON text of one returned event, or throws a TypeError saying what is wrong with it. */
function eventJson(r, what) {
  if (typeof r !== 'object' || isArray(r)) {
    throw new TypeErrorCtor(what + ' must return an event object (or a falsy value to drop the event), got ' + (isArray(r) ? 'an array' : typeof r));
  }
  const s = stringify(r);
  if (typeof s !== 'string' || strCharCodeAt(s, 0) !== 123) throw new TypeErrorCtor('the event returned by ' + what + ' does not serialize to a JSON object');
  return s;
}

/**
 * Where runSync() stopped: processEvent returned a thenable for event i; resume() awaits it and goes on from
 * there in the async driver, so no event is run twice.
 */
let paused = null;

function summary(r) {
  return '{"bytes":' + r.bytes + ',"errors":[' + r.errors + ']}';
}

/**
 * A call's answer: small enough results go out with the summary, in the same entry (one entry per call instead of
 * two, and nothing that runs in between, such as a looping fire-and-forget continuation, can cost the call its
 * results); larger ones wait in the closure for take(), so the host sees their size before it copies anything.
 */
function answer(r, maxBytes) {
  flushDropped();
  if (r.bytes <= maxBytes) return [summary(r), r.out];
  lastOut = r.out;
  return summary(r);
}

async function run(inputs, maxBytes) {
  lastOut = null;
  paused = null;
  const r = fns.processEvent ? await runEach(inputs, 0, null, { __proto__: null, out: [], errors: '', bytes: 0 }) : await runBatchFn(inputs);
  return answer(r, maxBytes);
}

/**
 * The synchronous fast path (the host calls it with applySync: no thread hand-off). Runs processEvent event by
 * event while it returns plain values; at the first thenable it keeps its state for resume() and returns ''.
 * Otherwise it answers like run(). Only for plugins with processEvent (the host checks).
 */
function runSync(inputs, maxBytes) {
  lastOut = null;
  paused = null;
  const acc = { __proto__: null, out: [], errors: '', bytes: 0 };
  for (let i = 0; i < inputs.length; i++) {
    let r;
    try {
      r = ReflectApply(fns.processEvent.fn, fns.processEvent.self, [parse(inputs[i]), meta]);
      if (isThenable(r)) {
        paused = { __proto__: null, inputs, i, r, acc };
        return '';
      }
      settleEvent(acc, i, r);
    } catch (e) {
      failEvent(acc, i, e);
    }
  }
  return answer(acc, maxBytes);
}

/** Finish what runSync() left at a thenable (async; same answer as run()). */
async function resume(maxBytes) {
  const p = paused;
  paused = null;
  if (p === null) throw new TypeErrorCtor('nothing to resume');
  return answer(await runEach(p.inputs, p.i, p.r, p.acc), maxBytes);
}

/** Events from index start on; first, when not null, is the thenable processEvent already returned for event start. */
async function runEach(inputs, start, first, acc) {
  for (let i = start; i < inputs.length; i++) {
    try {
      let r;
      if (i === start && first !== null) {
        r = await first;
      } else {
        r = ReflectApply(fns.processEvent.fn, fns.processEvent.self, [parse(inputs[i]), meta]);
        if (isThenable(r)) r = await r;
      }
      settleEvent(acc, i, r);
    } catch (e) {
      failEvent(acc, i, e);
    }
  }
  return acc;
}

/** Event i's result: its JSON, or null when dropped (a result that is not an event throws). */
function settleEvent(acc, i, r) {
  if (!r) {
    put(acc.out, i, null);
    return;
  }
  const s = eventJson(r, 'processEvent');
  put(acc.out, i, s);
  acc.bytes += s.length;
}

/** Event i failed: unchanged, with the error reported. */
function failEvent(acc, i, e) {
  put(acc.out, i, undefined);
  const d = describe(i, e);
  acc.errors += (acc.errors === '' ? '' : ',') + d.json;
  acc.bytes += d.size;
}

/**
 * processEventBatch(events, meta) over the whole call. Results map back by position when the plugin returns as
 * many events as it got (a falsy entry drops that event), else by uuid (events not returned are dropped). A
 * throw, or results that cannot be mapped, leave every event of the call unchanged, each with the error.
 */
async function runBatchFn(inputs) {
  const n = inputs.length;
  const out = [];
  let bytes = 0;
  try {
    const events = [];
    for (let i = 0; i < n; i++) put(events, i, parse(inputs[i]));
    let rs = ReflectApply(fns.processEventBatch.fn, fns.processEventBatch.self, [events, meta]);
    if (isThenable(rs)) rs = await rs;
    for (let i = 0; i < n; i++) put(out, i, null);
    if (rs === null || rs === undefined) return { __proto__: null, out, errors: '', bytes: 0 };
    if (!isArray(rs)) throw new TypeErrorCtor('processEventBatch must return an array of events, got ' + typeof rs);
    if (rs.length === n) {
      for (let i = 0; i < n; i++) {
        if (!rs[i]) continue;
        const s = eventJson(rs[i], 'processEventBatch');
        put(out, i, s);
        bytes += s.length;
      }
    } else {
      const byUuid = ObjectCreate(null);
      for (let i = 0; i < n; i++) {
        const u = parse(inputs[i]).uuid;
        if (typeof u === 'string') byUuid[u] = i;
      }
      for (let k = 0; k < rs.length; k++) {
        if (!rs[k]) continue;
        const s = eventJson(rs[k], 'processEventBatch');
        const u = rs[k].uuid;
        const i = typeof u === 'string' ? byUuid[u] : undefined;
        if (i === undefined) throw new TypeErrorCtor('processEventBatch returned ' + rs.length + ' events for ' + n + ' and event ' + k + ' has no uuid of an input event, so results cannot be matched to inputs');
        put(out, i, s);
        bytes += s.length;
      }
    }
    return { __proto__: null, out, errors: '', bytes };
  } catch (e) {
    let errors = '';
    for (let i = 0; i < n; i++) {
      put(out, i, undefined);
      const d = describe(i, e);
      errors += (i === 0 ? '' : ',') + d.json;
      bytes += d.size;
    }
    return { __proto__: null, out, errors, bytes };
  }
}

function take(keep) {
  const o = lastOut;
  lastOut = null;
  return keep ? o : null;
}

async function setup() {
  if (fns && fns.setupPlugin) {
    const r = ReflectApply(fns.setupPlugin.fn, fns.setupPlugin.self, [meta]);
    if (isThenable(r)) await r;
  }
  flushDropped();
}

async function teardown() {
  if (fns && fns.teardownPlugin) {
    const r = ReflectApply(fns.teardownPlugin.fn, fns.teardownPlugin.self, [meta]);
    if (isThenable(r)) await r;
  }
  flushDropped();
}

/**
 * Background work outside the event chain: 'onEvent' (arg: event JSON strings, one call each, in order),
 * 'exportEvents' (arg: event JSON strings, one call), 'schedule' (name: runEveryMinute/Hour/Day), 'job' (name: a
 * jobs entry; arg: [payload JSON]). Resolves to JSON {ok, failed, error?, retry?}: failed counts failed calls,
 * error describes the last one, retry says it was a RetryError (exportEvents is then retried later).
 */
async function task(kind, name, arg) {
  let failed = 0;
  let error = null;
  let hasError = false;
  let retry = false;
  const fail = (e) => {
    failed++;
    error = e;
    hasError = true;
    try {
      retry = e !== null && typeof e === 'object' && (e instanceof RetryError || e.name === 'RetryError');
    } catch (_) {
      retry = false; // a thrown Proxy or a throwing name getter: not a RetryError
    }
  };
  if (kind === 'onEvent') {
    for (let i = 0; i < arg.length; i++) {
      try {
        const r = ReflectApply(fns.onEvent.fn, fns.onEvent.self, [parse(arg[i]), meta]);
        if (isThenable(r)) await r;
      } catch (e) {
        fail(e);
      }
    }
  } else {
    try {
      let r;
      if (kind === 'exportEvents') {
        const events = [];
        for (let i = 0; i < arg.length; i++) put(events, i, parse(arg[i]));
        r = ReflectApply(fns.exportEvents.fn, fns.exportEvents.self, [events, meta]);
      } else if (kind === 'schedule') {
        const f = name === 'runEveryMinute' || name === 'runEveryHour' || name === 'runEveryDay' ? fns[name] : null;
        if (!f) throw new TypeErrorCtor('the plugin does not export ' + StringFn(name));
        r = ReflectApply(f.fn, f.self, [meta]);
      } else if (kind === 'job') {
        const j = fns.jobs !== null ? fns.jobs[StringFn(name)] : undefined;
        if (j === undefined) throw new TypeErrorCtor('the plugin has no job named ' + stringify(StringFn(name)));
        r = ReflectApply(j.fn, j.self, [parse(arg[0]), meta]);
      } else {
        throw new TypeErrorCtor('unknown task kind');
      }
      if (isThenable(r)) await r;
    } catch (e) {
      fail(e);
    }
  }
  flushDropped();
  return '{"failed":' + failed + ',"retry":' + retry + (hasError ? ',"error":' + describe(0, error).json : '') + '}';
}

function safeSettle(id, ok, json) {
  try {
    settle(id, ok, json);
  } catch (_) {}
}

return { resolve, setup, teardown, run, runSync, resume, take, task, settle: safeSettle };
`;
