import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import ivm from 'isolated-vm';
import type {
  ExportsAnswer,
  GuestAttachment,
  GuestInit,
  RunSummary,
  TaskSummary,
} from '../../../../src/plugins/vm/contract';
import { GUEST_SOURCE } from '../../../../src/plugins/vm/guest-source';

/**
 * The built guest script keeps its promise to look up no builtin after plugin code ran (primordials.ts): read
 * as text (no down-levelling helper, no builtin named outside the captures, no iterator-protocol syntax), then
 * run in a real isolate under a plugin that replaced and trapped every builtin it could.
 */

const BUILTINS =
  /\b(JSON|Object|Array|Reflect|Function|String|Number|Boolean|Math|Date|Promise|Symbol|ArrayBuffer|Uint8Array|Proxy|Error|TypeError|RangeError|globalThis|Map|Set|WeakMap|RegExp|BigInt|Atomics|eval)\b/g;

/** The bundle without string literals (messages name builtins) and split at esbuild's per-module comments. */
function modules(): Map<string, string> {
  const code = GUEST_SOURCE.replace(/"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`(?:[^`\\]|\\.)*`/g, '""');
  const out = new Map<string, string>();
  const parts = code.split(/^\s*\/\/ (src\/plugins\/vm\/guest\/[\w-]+\.ts)$/m);
  for (let i = 1; i < parts.length; i += 2) out.set(parts[i], parts[i + 1]);
  return out;
}

describe('the guest bundle, read as text', () => {
  test('it has every guest module, primordials first', () => {
    const names = [...modules().keys()];
    assert.equal(names[0], 'src/plugins/vm/guest/primordials.ts');
    assert.ok(
      names.includes('src/plugins/vm/guest/driver.ts') && names.at(-1) === 'src/plugins/vm/guest/main.ts',
      names.join(', '),
    );
    const sources = GUEST_SOURCE.match(/^\s*\/\/ \S+\.[cm]?[jt]s$/gm) ?? [];
    assert.deepEqual(
      sources.filter((l) => !l.trim().startsWith('// src/plugins/vm/guest/')),
      [],
      'only guest modules are bundled (host code only as types)',
    );
    assert.match(GUEST_SOURCE, /^'use strict';\nlet guestDriver;\n/);
    assert.match(GUEST_SOURCE, /\nreturn guestDriver;\n?$/);
  });

  test('no bundler or down-levelling helper (they look builtins up when called)', () => {
    const helpers = GUEST_SOURCE.match(/\b__(?!proto__\b)\w+/g);
    assert.equal(helpers, null, `helpers in the bundle: ${helpers?.join(', ')}`);
    for (const [name, code] of modules()) {
      assert.doesNotMatch(code, /\bObject\.assign\(|\.concat\(|\bArray\.from\(/, name);
    }
  });

  test('builtins are named only in primordials.ts (captured before plugin code runs)', () => {
    for (const [name, code] of modules()) {
      if (name.endsWith('/primordials.ts')) continue;
      // The one exception: a class extends Uint8Array when the guest is evaluated, before any plugin code.
      const found = code.replace(/\bclass extends Uint8Array\b/g, '').match(BUILTINS);
      assert.equal(found, null, `${name} names ${found?.join(', ')}`);
      assert.doesNotMatch(code, /\.(call|apply|bind)\(/, `${name} calls a Function.prototype method through a lookup`);
    }
  });

  test('no iterator protocol on plugin-reachable values: no spread, rest, for…of or array destructuring', () => {
    for (const [name, code] of modules()) {
      assert.doesNotMatch(code, /\.\.\./, `${name}: spread or rest`);
      assert.doesNotMatch(code, /\bfor\s*(await\s*)?\([^;)]*\sof\s/, `${name}: for…of`);
      assert.doesNotMatch(code, /\b(const|let|var)\s*\[/, `${name}: array destructuring`);
    }
  });
});

/**
 * A plugin that, once loaded, replaces every builtin method the guest could use with a trap (which records its
 * name and forwards to the original), and puts accessors on Object.prototype / Array.prototype for the fields
 * of descriptors, internal records and arrays. Its functions use none of them, so any hit is the guest's.
 */
const HOSTILE_PLUGIN = String.raw`
'use strict';
let hits = '';
const hit = (name) => { hits += name + ';'; };
const RA = Reflect.apply;
const DP = Object.defineProperty;
const GPO = Object.getPrototypeOf;
const ProxyCtor = Proxy;
const TypeErrorCtor = TypeError;

class Later extends Error {}
module.exports = {
  setupPlugin: async (meta) => {
    await meta.cache.set('k', { a: 1 }, 60);
    meta.global.cached = await meta.cache.get('k');
    console.log('setup', { ok: true }, new RangeError('shown as its stack'));
  },
  processEvent: (event, meta) => {
    if (event.event === 'throw') throw new Later('no such event');
    if (event.event === 'drop') return null;
    if (event.event === 'wait') return (async () => {
      event.properties.stored = await meta.storage.get('s', 'none');
      return event;
    })();
    event.properties.hex = meta.attachments.file.contents.toString('hex');
    event.properties.config = meta.config.key;
    event.properties.cached = meta.global.cached;
    return event;
  },
  onEvent: (event) => {
    if (event.event === 'bad') throw new TypeErrorCtor('onEvent ' + event.event);
  },
  exportEvents: () => {
    throw new RetryError('try later');
  },
  jobs: {
    fetchIt: async (payload, meta) => {
      const res = await fetch(payload.url, { method: 'POST', headers: { 'X-Plugin': 'yes' }, body: 'hello' });
      const body = await res.json();
      await meta.jobs.again({ n: body.n }).runIn(1, 'minutes');
      posthog.capture('fetched', { n: body.n, type: res.headers.get('content-type') });
    },
  },
};

function trap(obj, key, label) {
  const orig = obj[key];
  DP(obj, key, { value: function () { hit(label); return RA(orig, this, arguments); }, writable: true, configurable: true });
}
const typedArrayPrototype = GPO(Uint8Array.prototype);
const arrayIteratorPrototype = GPO([][Symbol.iterator]());
const methods = [
  [JSON, 'JSON.', ['parse', 'stringify']],
  [Object, 'Object.', ['defineProperty', 'defineProperties', 'keys', 'create', 'hasOwn', 'assign', 'getPrototypeOf', 'entries', 'freeze']],
  [Object.prototype, 'Object.prototype.', ['toString', 'hasOwnProperty', 'valueOf', 'toLocaleString']],
  [Function.prototype, 'Function.prototype.', ['call', 'apply', 'bind', 'toString']],
  [Reflect, 'Reflect.', ['apply', 'construct', 'get', 'set', 'defineProperty', 'ownKeys']],
  [Array, 'Array.', ['isArray', 'from', 'of']],
  [Array.prototype, 'Array.prototype.', ['push', 'pop', 'concat', 'slice', 'splice', 'join', 'map', 'filter', 'forEach', 'indexOf', 'includes', 'values', 'entries', 'keys', Symbol.iterator]],
  [arrayIteratorPrototype, '%ArrayIteratorPrototype%.', ['next']],
  [String, 'String.', ['fromCharCode', 'raw']],
  [String.prototype, 'String.prototype.', ['slice', 'indexOf', 'toLowerCase', 'charCodeAt', 'concat', 'substring', 'split', 'replace', 'toString', Symbol.iterator]],
  [Number, 'Number.', ['isInteger', 'isFinite', 'parseInt']],
  [Math, 'Math.', ['floor', 'min', 'max']],
  [Date, 'Date.', ['now', 'parse']],
  [Date.prototype, 'Date.prototype.', ['getTime', 'valueOf']],
  [Promise, 'Promise.', ['resolve', 'reject', 'all']],
  [Promise.prototype, 'Promise.prototype.', ['then', 'catch', 'finally']],
  [ArrayBuffer, 'ArrayBuffer.', ['isView']],
  [typedArrayPrototype, '%TypedArray%.prototype.', ['set', 'subarray', 'slice']],
];
for (let m = 0; m < methods.length; m++) {
  const [obj, prefix, keys] = methods[m];
  for (let k = 0; k < keys.length; k++) trap(obj, keys[k], prefix + String(keys[k]));
}
for (const name of ['String', 'Number', 'Error', 'TypeError', 'Promise', 'Proxy', 'Uint8Array', 'Array', 'Object', 'JSON', 'Reflect', 'Math', 'Date']) {
  const orig = globalThis[name];
  globalThis[name] = typeof orig === 'function' ? function () { hit('global ' + name); return RA(orig, this, arguments); } : new ProxyCtor(orig, { get(t, p) { hit('global ' + name + '.' + String(p)); return t[p]; } });
}
// Accessors last: from here on, a plain descriptor or record literal would run them (the plugin writes none).
const accessor = (label) => ({ get() { hit('get ' + label); return undefined; }, set(v) { hit('set ' + label); }, configurable: true });
const fields = ['0', '1', '2', '3', 'value', 'writable', 'enumerable', 'configurable', 'get', 'set', 'out', 'errors', 'bytes', 'fn', 'self', 'json', 'size', 'resolve', 'reject', 'wrap', 'fail', 'op', 'inputs', 'acc', 'length', 'then'];
const descriptors = [];
for (let i = 0; i < fields.length; i++) descriptors[i] = accessor('Object.prototype.' + fields[i]);
for (let i = 0; i < 4; i++) DP(Array.prototype, String(i), accessor('Array.prototype.' + i));
for (let i = 0; i < fields.length; i++) DP(Object.prototype, fields[i], descriptors[i]);
hits = ''; // what setting the traps up hit
`;

describe('the guest bundle in an isolate, under a plugin that replaced every builtin', () => {
  let isolate: ivm.Isolate;
  let context: ivm.Context;
  const logs: Array<[string, string]> = [];
  const requests: Array<{ op: string; args: Record<string, unknown> }> = [];
  let driver: Record<string, ivm.Reference>;

  /** The host's answer to each op (what the real ops would return). */
  function answer(op: string, args: Record<string, unknown>): string {
    if (op === 'cache') return args.cmd === 'get' ? JSON.stringify('{"a":1}') : 'null';
    if (op === 'storage') return JSON.stringify('"stored!"');
    if (op === 'fetch')
      return JSON.stringify({
        url: args.url,
        status: 200,
        statusText: 'OK',
        redirected: false,
        headers: [['content-type', 'application/json']],
        body: '{"n":7}',
      });
    return 'null';
  }

  before(async () => {
    isolate = new ivm.Isolate({ memoryLimit: 32 });
    context = await isolate.createContext();
    const log = new ivm.Callback((level: string, line: string) => void logs.push([level, line]), { ignored: true });
    const request = new ivm.Callback(
      (id: number, op: string, json: string) => {
        const args = JSON.parse(json) as Record<string, unknown>;
        requests.push({ op, args });
        void driver.settle.apply(undefined, [id, true, answer(op, args)], { arguments: { copy: true } });
      },
      { ignored: true },
    );
    const limits = { maxArgBytes: 10_000, maxPending: 4 };
    const init: GuestInit = {
      config: { key: 'cfg' },
      maxLogLine: 1000,
      maxLogLinesPerSecond: 100,
      importMessage: 'cannot import %s',
      ops: { fetch: limits, cache: limits, storage: limits, jobs: limits, capture: limits },
      unavailable: {},
    };
    const attachments: GuestAttachment[] = [
      {
        key: 'file',
        content_type: 'text/plain',
        file_name: 'f.txt',
        bytes: new Uint8Array([1, 171]),
        utf8: '\u0001\ufffd',
        base64: 'Aas=',
      },
    ];
    const ref = (await context.evalClosure(GUEST_SOURCE, [log, request, JSON.stringify(init), attachments], {
      arguments: { copy: true },
      result: { reference: true },
    })) as ivm.Reference;
    driver = {};
    for (const k of ['resolve', 'setup', 'teardown', 'run', 'runSync', 'resume', 'take', 'task', 'settle'])
      driver[k] = ref.getSync(k, { reference: true }) as ivm.Reference;
    await (await isolate.compileScript(HOSTILE_PLUGIN, { filename: 'hostile.js' })).run(context);
  });
  after(() => {
    context?.release();
    isolate?.dispose();
  });

  const hits = (): string => context.evalSync('hits') as string;
  const event = (name: string, uuid: string): string => JSON.stringify({ event: name, uuid, properties: {} });
  const copy = { arguments: { copy: true }, result: { copy: true } } as const;
  const promised = { arguments: { copy: true }, result: { copy: true, promise: true } } as const;

  test('the traps are armed (plugin code calling a builtin is recorded)', () => {
    assert.equal(hits(), '');
    assert.equal(context.evalSync('JSON.stringify([1]) + String(hits.length > 0)'), '[1]true');
    context.evalSync("hits = ''");
  });

  test('resolve, setup and the console: answers as the contract says, no trap hit', async () => {
    const exportsJson = driver.resolve.applySync(undefined, [], copy) as string;
    const exp = JSON.parse(exportsJson) as ExportsAnswer;
    assert.deepEqual(exp, {
      processEvent: true,
      processEventBatch: false,
      setupPlugin: true,
      teardownPlugin: false,
      onEvent: true,
      exportEvents: true,
      runEveryMinute: false,
      runEveryHour: false,
      runEveryDay: false,
      jobs: ['fetchIt'],
    });
    await driver.setup.apply(undefined, [], { result: { promise: true } });
    assert.deepEqual(
      requests.map((r) => r.args),
      [
        { cmd: 'set', key: 'k', value: '{"a":1}', ttl: 60 },
        { cmd: 'get', key: 'k' },
      ],
    );
    await new Promise((r) => setImmediate(r));
    assert.equal(logs.length, 1);
    assert.equal(logs[0][0], 'log');
    assert.match(logs[0][1], /^setup \{"ok":true\} RangeError: shown as its stack\n/);
    assert.equal(hits(), '');
  });

  test('processEvent: sync, paused and resumed, async, results kept for take(); no trap hit', async () => {
    const inputs = [event('a', 'u1'), event('drop', 'u2'), event('throw', 'u3')];
    const [summaryJson, results] = driver.runSync.applySync(undefined, [inputs, 1e6], copy) as unknown as [
      string,
      Array<string | null | undefined>,
    ];
    const summary = JSON.parse(summaryJson) as RunSummary;
    assert.equal(results.length, 3);
    assert.deepEqual(JSON.parse(results[0]!).properties, { hex: '01ab', config: 'cfg', cached: { a: 1 } });
    assert.equal(results[1], null);
    assert.equal(results[2], undefined);
    assert.deepEqual(
      summary.errors.map((e) => [e.i, e.name, e.message]),
      [[2, 'Error', 'no such event']],
    );
    // bytes: the event JSON plus the error report (the summary less its frame)
    assert.equal(
      summary.bytes,
      results[0]!.length + summaryJson.length - '{"bytes":,"errors":[]}'.length - String(summary.bytes).length,
    );

    const paused = driver.runSync.applySync(
      undefined,
      [[event('a', 'u4'), event('wait', 'u5'), event('a', 'u6')], 1e6],
      copy,
    );
    assert.equal(paused, '');
    const [, resumed] = (await driver.resume.apply(undefined, [1e6], promised)) as [string, string[]];
    assert.deepEqual(
      resumed.map((r) => JSON.parse(r).uuid),
      ['u4', 'u5', 'u6'],
    );
    assert.equal(JSON.parse(resumed[1]).properties.stored, 'stored!');

    const big = (await driver.run.apply(undefined, [[event('wait', 'u7'), event('a', 'u8')], 10], promised)) as string;
    assert.equal(typeof big, 'string', 'over maxBytes: the summary alone');
    assert.ok((JSON.parse(big) as RunSummary).bytes > 10);
    const kept = driver.take.applySync(undefined, [true], copy) as string[];
    assert.deepEqual(
      kept.map((r) => JSON.parse(r).uuid),
      ['u7', 'u8'],
    );
    assert.equal(driver.take.applySync(undefined, [true], copy), null);
    assert.equal(hits(), '');
  });

  test('tasks: onEvent, exportEvents (RetryError), a job using fetch, jobs and capture; no trap hit', async () => {
    const onEvent = JSON.parse(
      (await driver.task.apply(
        undefined,
        ['onEvent', '', [event('ok', 'u9'), event('bad', 'u10')]],
        promised,
      )) as string,
    ) as TaskSummary;
    assert.equal(onEvent.failed, 1);
    assert.equal(onEvent.retry, false);
    assert.deepEqual([onEvent.error?.name, onEvent.error?.message], ['TypeError', 'onEvent bad']);

    const exported = JSON.parse(
      (await driver.task.apply(undefined, ['exportEvents', '', [event('e', 'u11')]], promised)) as string,
    ) as TaskSummary;
    assert.deepEqual([exported.failed, exported.retry, exported.error?.name], [1, true, 'RetryError']);

    const before = requests.length;
    const job = JSON.parse(
      (await driver.task.apply(
        undefined,
        ['job', 'fetchIt', [JSON.stringify({ url: 'http://example.test/' })]],
        promised,
      )) as string,
    ) as TaskSummary;
    assert.deepEqual(job, { failed: 0, retry: false });
    const sent = requests.slice(before);
    assert.deepEqual(
      sent.map((r) => r.op),
      ['fetch', 'jobs', 'capture'],
    );
    assert.deepEqual(sent[0].args, {
      url: 'http://example.test/',
      method: 'POST',
      headers: [['X-Plugin', 'yes']],
      body: 'hello',
      bodyEncoding: 'utf8',
      redirect: 'follow',
      timeout: null,
      follow: null,
      compress: true,
    });
    assert.deepEqual([sent[1].args.name, sent[1].args.payload], ['again', '{"n":7}']);
    assert.deepEqual(sent[2].args, { event: 'fetched', properties: { n: 7, type: 'application/json' } });

    const missing = JSON.parse(
      (await driver.task.apply(undefined, ['schedule', 'runEveryMinute', []], promised)) as string,
    ) as TaskSummary;
    assert.equal(missing.error?.message, 'the plugin does not export runEveryMinute');
    assert.equal(hits(), '');
  });
});
