import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeTaskV2 } from '../../protocol/encode';
import { parseKombuJson, stringifyForPython } from '../../protocol/json';
import { LosslessNumber } from '../../protocol/lossless-number';
import {
  holdsLosslessNumbers,
  holdsUnsafeInteger,
  needsLosslessParse,
  parseLosslessJson,
  restoreLosslessNumbers,
} from '../../protocol/lossless-numbers';
import {
  ingestionArgsFromTask,
  processEventTask,
  toPluginEvent,
  toProcessEventKwargs,
  type PluginEvent,
} from '../../protocol/posthog';
import { pythonFloatRepr, pythonRepr } from '../../protocol/repr';
import type { JsonObject, JsonValue } from '../../protocol/types';
import { decodeOk, jsonMessage } from './helpers';
import {
  OTHER_TOKENS_REPR,
  OTHER_TOKENS_TEXT,
  PY_NUMBERS_COMPACT,
  PY_NUMBERS_REPR,
  PY_NUMBERS_TEXT,
} from './python-number-cases';
import { prng } from '../helpers/prng';

const obj = (v: JsonValue): JsonObject => v as JsonObject;

test("Python's numbers come back as Python wrote them: ints beyond 2^53, -0.0, 1.0, exponents, inf, nan", () => {
  const parsed = parseKombuJson(PY_NUMBERS_TEXT);
  assert.equal(stringifyForPython(parsed), PY_NUMBERS_COMPACT);
  // And Python's repr of the value it will read from our text (argsrepr/kwargsrepr render the same way).
  assert.equal(pythonRepr(parsed), PY_NUMBERS_REPR);
});

test('tokens other producers write are kept as written; reprs are what Python reads from them', () => {
  const parsed = parseKombuJson(OTHER_TOKENS_TEXT);
  assert.equal(stringifyForPython(parsed), OTHER_TOKENS_TEXT.replace(/ /g, ''));
  assert.equal(pythonRepr(parsed), OTHER_TOKENS_REPR);
});

test('plugins see JS numbers: the nearest double, 0 for -0.0, null for inf and nan', () => {
  const props = obj(obj(parseKombuJson(PY_NUMBERS_TEXT)).props);
  const seen = JSON.parse(JSON.stringify(props)) as Record<string, unknown>;
  assert.equal(seen.n0, 1e30);
  assert.equal(seen.n1, 18446744073709552000);
  assert.ok(Object.is(seen.n7, 0));
  assert.equal(seen.n9, 1);
  assert.equal(seen.n19, 1e16);
  assert.equal(seen.n26, null);
  assert.equal(seen.n28, null);
  // Numbers JSON.parse reads exactly stay plain numbers.
  assert.equal(props.n17, 0.30000000000000004);
  assert.equal(props.n25, 1733000000.123);
  assert.equal(props.n30, 7);
  assert.ok(props.n0 instanceof LosslessNumber);
});

test('the quick checks: no for numbers JSON.parse keeps and for look-alikes inside strings', () => {
  for (const text of [
    '{"a": 1, "b": -2, "c": 0.5, "d": 1733000000.123, "e": 9007199254740991, "f": 1e+22, "g": 0.30000000000000004}',
    '[123456789012345, -123456789012345, 0, -1, 5e-324, 1.7976931348623157e+308, 0.000001, -9007199254740991]',
    '{"s": "1.0 -0.0 1e+30 18446744073709551617 2020-01-01T00:00:00.000Z 127.0.0.1", "t": "\\" 1.0 \\\\", "u": 2}',
    '{"key 1.0": "x", "\\\\": 3, "v": "\\u0031.0", "hex": "3e4f5e-7a1e5"}',
    '42',
    '',
  ]) {
    assert.equal(needsLosslessParse(text), false, text);
    // Values of 2^53 and more (1e+22 here) are a "maybe" for the walk: the lossless parser keeps them plain.
    if (text !== '') assert.equal(holdsUnsafeInteger(JSON.parse(text)), /e\+(22|308)/.test(text), text);
    if (text !== '') assert.equal(holdsLosslessNumbers(parseKombuJson(text)), false, text);
  }
});

test('integers beyond 2^53 and -0 are told by their values; the rest by the text scan', () => {
  for (const text of [
    '{"a": 1000000000000000000000000000000}',
    '[18446744073709551617]',
    '[9007199254740992]',
    '{"a": -0}',
    '[[[-9007199254740993]]]',
  ]) {
    assert.equal(holdsUnsafeInteger(JSON.parse(text)), true, text);
    assert.ok(
      JSON.stringify(parseKombuJson(text)) !== stringifyForPython(parseKombuJson(text)) ||
        text.includes('9007199254740992'),
      text,
    );
  }
  assert.equal(stringifyForPython(parseKombuJson('[9007199254740992, -0]')), '[9007199254740992,-0]');
});

test('needsLosslessParse: true for every fraction or exponent JSON.parse would change, wherever it is', () => {
  for (const text of [
    '{"a": -0.0}',
    '{"a": 1.0}',
    '{"a": 1.50}',
    '{"a": 1e+16}',
    '{"a": 1.5e-07}',
    '{"a": 1E5}',
    '{"a": 1e5}',
    '[2.5e-3]',
    '[1e21]',
    '{"a": 0.0000001}',
    '{"a": 0.10000000000000001}',
    '{"a": Infinity}',
    '{"a": -Infinity}',
    '{"a": NaN}',
    '[[[{"deep": [1, 2, 3.0]}]]]',
    '{"s": "ends with a backslash \\\\", "n": 1.0}',
    '{"s": "escaped quote \\"", "n": 1.0}',
    '1.0',
  ]) {
    assert.equal(needsLosslessParse(text), true, text);
  }
});

/** A random number token as Python's json (or another producer) may write it. */
function randomToken(r: () => number): string {
  const bits = new DataView(new ArrayBuffer(8));
  switch (Math.floor(r() * 8)) {
    case 0:
      return String(Math.floor(r() * 1e6) - 5e5); // small int
    case 1: {
      let digits = String(1 + Math.floor(r() * 9));
      const n = Math.floor(r() * 40);
      for (let i = 0; i < n; i++) digits += String(Math.floor(r() * 10));
      return (r() < 0.5 ? '-' : '') + digits; // any int, often beyond 2^53
    }
    case 2: // a random double as Python's repr writes it
      bits.setUint32(0, Math.floor(r() * 2 ** 32));
      bits.setUint32(4, Math.floor(r() * 2 ** 32));
      return pythonFloatRepr(bits.getFloat64(0)).replace('inf', 'Infinity').replace('nan', 'NaN');
    case 3:
      return pythonFloatRepr((Math.floor(r() * 2000) - 1000) / (r() < 0.5 ? 1 : 8)); // 1.0, -0.0, 2.5
    case 4:
      return pythonFloatRepr(r() * 10 ** Math.floor(r() * 40 - 20));
    case 5:
      return ['-0', '0', '1E5', '1e5', '2.50', '0.0000001', '1e400', '-1e-400'][Math.floor(r() * 8)]!;
    default:
      return String(r() * 1000); // JS's own floats: round-trip
  }
}

function randomString(r: () => number): string {
  const pieces = [
    'a',
    '1.0',
    ' ',
    '"',
    '\\',
    'é',
    '\u2028',
    '\ud83d\ude00',
    'Infinity',
    ', 1.0',
    ': -0',
    '\u0000',
    '[1e+30]',
  ];
  let s = '';
  const n = Math.floor(r() * 6);
  for (let i = 0; i < n; i++) s += pieces[Math.floor(r() * pieces.length)];
  return JSON.stringify(s);
}

/** Compact JSON text (as JSON.stringify lays it out) of a random document with random tokens. */
function randomDoc(r: () => number, depth: number): string {
  const k = r();
  if (depth > 4 || k < 0.35) return randomToken(r);
  if (k < 0.5) return randomString(r);
  if (k < 0.55) return ['true', 'false', 'null'][Math.floor(r() * 3)]!;
  const n = Math.floor(r() * 5);
  const items = Array.from({ length: n }, () => randomDoc(r, depth + 1));
  if (k < 0.75) return `[${items.join(',')}]`;
  return `{${items.map((v, i) => `${i % 3 === 0 ? randomString(r) : JSON.stringify(`k${i}`)}:${v}`).join(',')}}`;
}

test('random documents: every number token is written back exactly; other values as JSON.parse reads them', () => {
  const r = prng(20261207);
  for (let i = 0; i < 3000; i++) {
    const text = randomDoc(r, 0);
    let parsed: JsonValue;
    try {
      parsed = parseKombuJson(text);
    } catch (err) {
      assert.fail(`${text}: ${(err as Error).message}`);
    }
    // The quick checks never miss a token the lossless parser keeps.
    if (!/Infinity|NaN/.test(text) && !needsLosslessParse(text) && !holdsUnsafeInteger(JSON.parse(text))) {
      const kept = parseLosslessJson(text);
      assert.ok(!(kept instanceof LosslessNumber) && !holdsLosslessNumbers(kept), text);
    }
    const plainText = text.replace(/(?<=[[,:]|^)-?(?:Infinity|NaN)(?=[\],}]|$)/g, 'null');
    // Duplicate keys: the last value wins in both, and JSON.stringify keeps the first position, as JSON.parse.
    assert.equal(stringifyForPython(parsed), stringifyForPython(parseKombuJson(stringifyForPython(parsed))), text);
    assert.equal(JSON.stringify(parsed), JSON.stringify(JSON.parse(plainText)), text);
    if (!/"k\d"|\\|"[^"]*"(?=:)/.test(text)) assert.equal(stringifyForPython(parsed), text);
  }
});

test('random documents with unique keys and Python separators come back token for token', () => {
  const r = prng(7);
  for (let i = 0; i < 2000; i++) {
    const tokens = Array.from({ length: 1 + Math.floor(r() * 6) }, () => randomToken(r));
    const python = `{"a": [${tokens.join(', ')}], "b": {"c": ${tokens[0]}, "d": "x, 1.0"}}`;
    const compact = `{"a":[${tokens.join(',')}],"b":{"c":${tokens[0]},"d":"x, 1.0"}}`;
    assert.equal(stringifyForPython(parseKombuJson(python)), compact, python);
  }
});

test('the lossless parser refuses what JSON.parse refuses', () => {
  for (const text of [
    '{"a": 1.0,}',
    '[1.0',
    '[1.0]]',
    '{"a" 1.0}',
    '{a: 1.0}',
    '[01.0]',
    '[1.0.0]',
    '[1.0e]',
    '[+1.0]',
    '[.5, 1.0]',
    '[1.0, "\u0001"]',
    '[1.0, "\\x"]',
    "[1.0, 'a']",
    '[1.0, tru]',
    '[1.0, Infinit]',
    '[1.0, -NaN]',
    '[1.0] x',
    '[1.0, "unterminated]',
    '{"a": 1.0, "b"}',
    '[1.0,,2]',
    '-',
    '[-]',
  ]) {
    assert.throws(() => parseLosslessJson(text), SyntaxError, text);
    assert.throws(() => parseKombuJson(text), SyntaxError, text);
    assert.throws(() => JSON.parse(text.replace(/Infinity|NaN/g, 'null')), SyntaxError, text);
  }
});

test('the lossless parser: __proto__ stays data, kombu tags are converted, any depth is fine', () => {
  const v = obj(
    parseKombuJson('{"__proto__": {"polluted": 1.0}, "d": {"__type__": "decimal", "__value__": "1.10"}, "n": 1.0}'),
  );
  assert.equal(Object.getPrototypeOf(v), Object.prototype);
  assert.deepEqual(Object.keys(v), ['__proto__', 'd', 'n']);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(v.d, '1.10');
  assert.equal(stringifyForPython(v), '{"__proto__":{"polluted":1.0},"d":"1.10","n":1.0}');

  const depth = 100_000;
  let deep = parseKombuJson(`${'['.repeat(depth)}1.0${']'.repeat(depth)}`);
  for (let i = 0; i < depth; i++) deep = (deep as JsonValue[])[0]!;
  assert.ok(deep instanceof LosslessNumber && deep.text === '1.0');
});

test('a string that looks like the placeholder of a kept number is written as itself', () => {
  const v = obj(parseKombuJson('{"s": "\\u0000lossless-number:0", "n": 1.0, "t": "\\u0000lossless-number:x:0"}'));
  assert.equal(stringifyForPython(v), '{"s":"\\u0000lossless-number:0","n":1.0,"t":"\\u0000lossless-number:x:0"}');
});

test('restoreLosslessNumbers: values a plugin gave back as it saw them get their text again', () => {
  const original = obj(
    parseKombuJson(
      '{"p": {"big": 10000000000000000000000000000000, "one": 1.0, "negz": -0.0, "nan": NaN, "keep": 5, "arr": [1.0, [2.0]]}, "other": 1.0}',
    ),
  );
  const seen = (): JsonObject => JSON.parse(JSON.stringify(original)) as JsonObject;

  const untouched = restoreLosslessNumbers(original, seen());
  assert.equal(stringifyForPython(untouched), stringifyForPython(original));

  const sibling = seen();
  obj(sibling.p).added = 'x';
  assert.equal(
    stringifyForPython(restoreLosslessNumbers(original, sibling)),
    '{"p":{"big":10000000000000000000000000000000,"one":1.0,"negz":-0.0,"nan":NaN,"keep":5,"arr":[1.0,[2.0]],"added":"x"},"other":1.0}',
  );

  const changed = seen();
  const p = obj(changed.p);
  p.big = (p.big as number) * 2; // a new value: the plugin's JS number
  p.one = '1.0'; // another type
  delete p.negz;
  p.nan = 0; // NaN was given as null; 0 is a change
  (p.arr as JsonValue[]).unshift(0); // shifted: 1.0 is no longer at index 0
  assert.equal(
    stringifyForPython(restoreLosslessNumbers(original, changed)),
    '{"p":{"big":2e+31,"one":"1.0","nan":0,"keep":5,"arr":[0,1,[2]]},"other":1.0}',
  );

  const plain = { a: 1 };
  assert.equal(restoreLosslessNumbers({ a: 1 }, plain), plain);
  assert.equal(holdsLosslessNumbers(plain), false);
});

test('a Python task with such numbers: the plugin event holds them and process_event gets them back', () => {
  const body = `[["user-1", "1.2.3.4", "http://x", {"event": "e", "properties": {"big": 18446744073709551617, "f": 2.0, "list": [1e+16, -0.0]}}, 2.0, "2020-01-01T00:00:00+00:00", null], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`;
  const task = decodeOk(
    jsonMessage({ task: 'posthog.tasks.process_event.process_event_with_plugins', id: 'i-1', lang: 'py' }, body),
  );
  const parsed = ingestionArgsFromTask(task);
  assert.ok(parsed.ok);
  assert.equal(parsed.args.team_id, 2);
  const event: PluginEvent = toPluginEvent(parsed.args);
  assert.ok(holdsLosslessNumbers(event));
  const kwargs = toProcessEventKwargs(event, parsed.args);
  const out = encodeTaskV2(processEventTask(kwargs, { id: 'o-1', origin: 'test@host' }));
  const outBody = out.body.toString();
  assert.ok(outBody.includes('"properties":{"big":18446744073709551617,"f":2.0,"list":[1e+16,-0.0]}'), outBody);
  assert.ok(outBody.includes('"team_id":2.0,'), outBody);
  assert.match(String(out.headers.kwargsrepr), /'big': 18446744073709551617, 'f': 2\.0, 'list': \[1e\+16, -0\.0\]/);
});

test('distinct_id beyond 2^53 becomes its exact digits, as Python’s str() would write them', () => {
  const body = `[[18446744073709551617, null, "", {"event": "e"}, 2, "2020-01-01T00:00:00+00:00", null], {}, null]`;
  const task = decodeOk(
    jsonMessage({ task: 'posthog.tasks.process_event.process_event_with_plugins', id: 'i-2' }, body),
  );
  const parsed = ingestionArgsFromTask(task);
  assert.ok(parsed.ok);
  assert.equal(parsed.args.distinct_id, '18446744073709551617');
});
