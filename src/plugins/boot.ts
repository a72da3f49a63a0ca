/**
 * Code evaluated in every fresh context before the plugin (through `context.evalClosure`), with
 *   $0 = ivm.Callback(level, line) {ignored: true}  — console output
 *   $1 = JSON string {config, maxLogLine, importMessage}
 *   $2 = attachments [{key, content_type, file_name, bytes: Uint8Array, utf8, base64}] (copied)
 * It captures every isolated-vm object and builtin it needs in this closure, installs only plain functions on
 * globalThis (console, require, module, exports), and returns the driver object, which only the host holds (as a
 * Reference). Nothing reachable from plugin code leads back to the host.
 *
 * The driver:
 *   resolve()        → JSON {processEvent, processEventBatch, setupPlugin, teardownPlugin} (booleans), after load
 *   setup()/teardown() → awaited setupPlugin(meta) / teardownPlugin(meta)
 *   run(string[])    → JSON {bytes, errors:[{i, name, message, stack, thrownString}]}; results kept in the closure
 *   take(keep)       → the kept results: Array<string | null | undefined> (string = new event JSON, null = dropped,
 *                      undefined = unchanged because of an error), or null when keep is false
 */
export const BOOT_SOURCE = String.raw`
'use strict';
const post = $0;
const init = JSON.parse($1);
const rawAttachments = $2;
const G = globalThis;
const parse = JSON.parse;
const stringify = JSON.stringify;
const isArray = Array.isArray;
const StringFn = String;
const ObjectKeys = Object.keys;
const defineProperty = Object.defineProperty;
const MAX_LINE = init.maxLogLine;
const MAX_MESSAGE = 4096;
const MAX_STACK = 16384;

function cut(s, n) {
  return s.length > n ? s.slice(0, n) + '…[truncated ' + (s.length - n) + ' chars]' : s;
}

// ------------------------------------------------------------------ console
function fmt(v) {
  if (typeof v === 'string') return v;
  if (v === undefined) return 'undefined';
  if (typeof v === 'function') return '[Function ' + (v.name || 'anonymous') + ']';
  if (typeof v === 'symbol' || typeof v === 'bigint') return StringFn(v);
  if (v instanceof Error) return v.stack ? StringFn(v.stack) : v.name + ': ' + v.message;
  if (v !== null && typeof v === 'object') {
    try {
      const s = stringify(v);
      if (typeof s === 'string') return s;
    } catch (_) {
      return '[unserializable object]';
    }
  }
  return StringFn(v);
}
function makeLogger(level) {
  return function () {
    let line;
    try {
      const parts = [];
      let len = 0;
      for (let i = 0; i < arguments.length && len <= MAX_LINE; i++) {
        const s = fmt(arguments[i]);
        parts[parts.length] = s;
        len += s.length + 1;
      }
      line = cut(parts.join(' '), MAX_LINE);
    } catch (_) {
      line = '[unprintable console arguments]';
    }
    try {
      post(level, line);
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
defineProperty(G, 'console', { value: pluginConsole, writable: true, configurable: true, enumerable: false });

// ------------------------------------------------------------------ attachments
const HEX = '0123456789abcdef';
const textOf = new WeakMap();
class AttachmentContents extends Uint8Array {
  toString(encoding) {
    const enc = encoding === undefined ? 'utf8' : StringFn(encoding).toLowerCase();
    const t = textOf.get(this);
    if ((enc === 'utf8' || enc === 'utf-8') && t) return t.utf8;
    if (enc === 'base64' && t) return t.base64;
    if (enc === 'hex') {
      let s = '';
      for (let i = 0; i < this.length; i++) s += HEX[this[i] >> 4] + HEX[this[i] & 15];
      return s;
    }
    if (enc === 'latin1' || enc === 'binary' || enc === 'ascii') {
      let s = '';
      for (let i = 0; i < this.length; i++) s += StringFn.fromCharCode(enc === 'ascii' ? this[i] & 127 : this[i]);
      return s;
    }
    if (enc === 'utf8' || enc === 'utf-8' || enc === 'base64') return '';
    throw new TypeError('Unknown encoding: ' + encoding);
  }
  toJSON() {
    return { type: 'Buffer', data: Array.from(this) };
  }
}
const attachments = {};
for (let i = 0; i < rawAttachments.length; i++) {
  const a = rawAttachments[i];
  const contents = new AttachmentContents(a.bytes.length);
  contents.set(a.bytes);
  textOf.set(contents, { utf8: a.utf8, base64: a.base64 });
  attachments[a.key] = { content_type: a.content_type, file_name: a.file_name, contents };
}

// ------------------------------------------------------------------ meta, module, require
const meta = { config: init.config, attachments, global: {} };
const importMessage = init.importMessage;
function require(name) {
  throw new Error(importMessage.replace('%s', StringFn(name)));
}
const module = { exports: {} };
defineProperty(G, 'module', { value: module, writable: true, configurable: true, enumerable: false });
defineProperty(G, 'exports', { value: module.exports, writable: true, configurable: true, enumerable: false });
defineProperty(G, 'require', { value: require, writable: true, configurable: true, enumerable: false });

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
    if (isHolder(d) && dests.indexOf(d) < 0) dests[dests.length] = d;
  }
  let any = false;
  for (let i = 0; i < dests.length; i++) if (ObjectKeys(dests[i]).length > 0) any = true;
  if (!any) dests[dests.length] = G;
  const get = (key) => {
    for (let i = 0; i < dests.length; i++) {
      const f = dests[i][key];
      if (typeof f === 'function') return f;
    }
    return null;
  };
  fns = {
    processEvent: get('processEvent'),
    processEventBatch: get('processEventBatch'),
    setupPlugin: get('setupPlugin'),
    teardownPlugin: get('teardownPlugin'),
  };
  return stringify({
    processEvent: !!fns.processEvent,
    processEventBatch: !!fns.processEventBatch,
    setupPlugin: !!fns.setupPlugin,
    teardownPlugin: !!fns.teardownPlugin,
  });
}

function describe(i, e) {
  let name = 'Error';
  let message;
  let stack;
  let thrownString = false;
  try {
    if (e !== null && (typeof e === 'object' || typeof e === 'function')) {
      if (typeof e.name === 'string') name = e.name;
      message = typeof e.message === 'string' ? e.message : fmt(e);
      if (typeof e.stack === 'string') stack = cut(e.stack, MAX_STACK);
    } else {
      thrownString = typeof e === 'string';
      message = StringFn(e);
    }
  } catch (_) {
    message = 'unprintable error';
  }
  return { i, name: cut(StringFn(name), 200), message: cut(StringFn(message), MAX_MESSAGE), stack, thrownString };
}

function isThenable(r) {
  return r !== null && (typeof r === 'object' || typeof r === 'function') && typeof r.then === 'function';
}

async function callOne(event) {
  let r;
  if (fns.processEvent) {
    r = fns.processEvent(event, meta);
    if (isThenable(r)) r = await r;
  } else {
    // Only processEventBatch: PostHog's shim, processEvent(e) = (await processEventBatch([e], meta))?.[0]
    let rs = fns.processEventBatch([event], meta);
    if (isThenable(rs)) rs = await rs;
    r = rs === null || rs === undefined ? undefined : rs[0];
  }
  return r;
}

async function run(inputs) {
  const n = inputs.length;
  const out = new Array(n);
  const errors = [];
  let bytes = 0;
  lastOut = null;
  for (let i = 0; i < n; i++) {
    try {
      const r = await callOne(parse(inputs[i]));
      if (!r) {
        out[i] = null;
        continue;
      }
      if (typeof r !== 'object' || isArray(r)) {
        throw new TypeError('processEvent must return an event object (or a falsy value to drop the event), got ' + (isArray(r) ? 'an array' : typeof r));
      }
      const s = stringify(r);
      if (typeof s !== 'string' || s.charCodeAt(0) !== 123) {
        throw new TypeError('the event returned by processEvent does not serialize to a JSON object');
      }
      out[i] = s;
      bytes += s.length;
    } catch (e) {
      const d = describe(i, e);
      errors[errors.length] = d;
      bytes += d.message.length + (d.stack ? d.stack.length : 0);
    }
  }
  lastOut = out;
  return stringify({ bytes, errors });
}

function take(keep) {
  const o = lastOut;
  lastOut = null;
  return keep ? o : null;
}

async function setup() {
  if (fns && fns.setupPlugin) {
    const r = fns.setupPlugin(meta);
    if (isThenable(r)) await r;
  }
}

async function teardown() {
  if (fns && fns.teardownPlugin) {
    const r = fns.teardownPlugin(meta);
    if (isThenable(r)) await r;
  }
}

return { resolve, setup, teardown, run, take };
`;
