/**
 * The hot path's fast paths (plain JSON.parse / JSON.stringify, base64 without the regex, repr shortcuts, uuid5
 * via crypto.hash) must give exactly what the full checking paths give. These tests pin the boundaries between
 * the two: inputs that look like a tag but are not, tags spelled with escapes, values the strict stringifier
 * refuses at any depth, base64 that is almost valid, reprs cut at exactly the limit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  KombuTagError,
  containsTaggedShape,
  convertTagged,
  decodeStrictBase64,
  isTaggedShape,
  mayContainTaggedValue,
  parseKombuJson,
  reviveKombuTags,
  stringifyForPython,
  stringifyIfPlain,
} from '../../protocol/json';
import { buildEnvelope, buildEnvelopeBytes, parseEnvelope } from '../../protocol/redis-envelope';
import { utf8Join } from '../../protocol/utf8-join';
import { NAMESPACE_DNS, POSTHOG_PLUGINS_NAMESPACE, derivedUuid, uuidV5 } from '../../protocol/ids';
import { pythonNumberRepr, pythonRepr, pythonStrRepr, truncateRepr, truncatedRepr } from '../../protocol/repr';
import type { JsonObject, JsonValue, RawMessage } from '../../protocol/types';

/** The reference: JSON.parse with the converting reviver on every text (what parseKombuJson always did). */
function parseWithReviver(text: string): JsonValue {
  return JSON.parse(text, (_k, v: unknown) => (isTaggedShape(v) ? convertTagged(v) : v)) as JsonValue;
}

function outcome(f: () => unknown): unknown {
  try {
    return { value: f() };
  } catch (err) {
    return { error: (err as Error).constructor.name, message: (err as Error).message };
  }
}

// ------------------------------------------------------------------------------------------- parseKombuJson

test('parseKombuJson: "__type__" inside a string value is not a tag; plain parse, same result', () => {
  for (const text of [
    '{"note": "the key \\"__type__\\" marks kombu tags", "__value__": 1}',
    '["__type__", "__value__"]',
    '{"a": "{\\"__type__\\": \\"datetime\\", \\"__value__\\": \\"x\\"}"}',
    '{"__type__x": 1, "__value__": 2}',
  ]) {
    assert.deepEqual(parseKombuJson(text), JSON.parse(text), text);
    assert.deepEqual(parseKombuJson(text), parseWithReviver(text), text);
  }
});

test('parseKombuJson: a tag key spelled with \\u escapes is still converted (and still refused when unknown)', () => {
  for (const key of [
    '\\u005f_type__',
    '\\u005F_type__',
    '__typ\\u0065__',
    '__\\u0074ype__',
    '__t\\u0079pe__',
    '__ty\\u0070e__',
  ]) {
    const text = `[{"${key}": "decimal", "__value__": "1.10"}, {"k": {"${key}": "datetime", "__value__": "2021-01-01T00:00:00"}}]`;
    assert.deepEqual(parseKombuJson(text), ['1.10', { k: '2021-01-01T00:00:00' }], key);
    assert.throws(() => parseKombuJson(`{"${key}": "frozenset", "__value__": 1}`), KombuTagError);
  }
});

test('parseKombuJson: texts with and without possible tags give what the reviver gives, errors included', () => {
  const texts = [
    '{"a": 1, "b": [true, null, "x"]}',
    '{"a": "\\\\u0074"}', // an escaped backslash before "u0074": a false alarm, same result
    '{"a": "caf\\u00e9 \\ud83d\\ude00"}', // Python's ensure_ascii escapes: no tag possible
    '{"__type__": "base64", "__value__": "aGl="}', // non-zero padding bits: accepted, as the regex does
    '{"__type__": "base64", "__value__": "aGk"}',
    '{"__type__": "base64", "__value__": "a-_="}',
    '{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678", "version": 4}}',
    '{"__type__": "datetime", "__value__": "x", "extra": 1}',
    '{"__type__": "datetime", "__value__": "x"',
    '{"a": 1',
    '',
  ];
  for (const text of texts)
    assert.deepEqual(
      outcome(() => parseKombuJson(text)),
      outcome(() => parseWithReviver(text)),
      text,
    );
});

test('mayContainTaggedValue: false only when no key can be __type__', () => {
  assert.equal(mayContainTaggedValue('{"a": "b", "c": [1, 2, {"d": null}]}'), false);
  assert.equal(mayContainTaggedValue('{"a": "caf\\u00e9", "\\u00fc": 1}'), false);
  assert.equal(mayContainTaggedValue('{"__type": 1, "type__": 2}'), false);
  assert.equal(mayContainTaggedValue('{"__type__": 1}'), true);
  assert.equal(mayContainTaggedValue('{"x": ["__type__", "__value__"]}'), true); // only a "maybe"
  for (const esc of ['\\u005f', '\\u005F', '\\u0065', '\\u0070', '\\u0074', '\\u0079'])
    assert.equal(mayContainTaggedValue(`{"${esc}": 1}`), true, esc);
});

test('containsTaggedShape: finds tagged shapes at any depth; says "maybe" when nested too deep', () => {
  assert.equal(containsTaggedShape({ a: [1, { b: 'c' }], d: null }), false);
  assert.equal(containsTaggedShape({ a: [1, { __type__: 'x', __value__: 1 }] }), true);
  assert.equal(containsTaggedShape({ a: { __type__: 'x', __value__: 1, more: 1 } }), false);
  let deep: JsonValue = 'leaf';
  for (let i = 0; i < 300; i++) deep = [deep];
  assert.equal(containsTaggedShape(deep), true);
  // Where it says false, reviveKombuTags is a plain deep copy.
  const plain = JSON.parse('{"h": {"x": [1, {"y": "z"}]}, "__proto__": {"p": 1}}') as JsonValue;
  assert.equal(containsTaggedShape(plain), false);
  assert.deepEqual(reviveKombuTags(plain), plain);
});

// ------------------------------------------------------------------------------------------ stringifyForPython

/** The strict path alone: JSON.stringify with the checking replacer (what stringifyForPython always did). */
function strict(value: unknown): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value, function (this: unknown, key: string, v: unknown) {
      const where = key === '' ? ' (at the top level)' : ` (at key ${JSON.stringify(key)})`;
      if (typeof v === 'number') {
        if (!Number.isFinite(v)) throw new TypeError(`cannot send non-finite number ${String(v)} to Python${where}`);
      } else if (v === undefined || typeof v === 'function' || typeof v === 'symbol') {
        if (Array.isArray(this))
          throw new TypeError(`cannot send ${v === undefined ? 'undefined' : typeof v} as an array item${where}`);
      } else if (isTaggedShape(v)) {
        throw new TypeError(
          `cannot send an object with exactly the keys __type__ and __value__${where}: kombu >= 5.3 would read it as a tagged value`,
        );
      }
      return v;
    });
  } catch (err) {
    throw new TypeError(`value is not serializable for Python: ${(err as Error).message}`);
  }
  if (text === undefined) throw new TypeError('no JSON form');
  return text;
}

function sameAsStrict(label: string, value: unknown): void {
  const got = outcome(() => stringifyForPython(value));
  const want = outcome(() => strict(value));
  if ((want as { message?: string }).message === 'no JSON form') {
    assert.match((got as { message: string }).message, /has no JSON form/, label);
  } else {
    assert.deepEqual(got, want, label);
  }
}

test('stringifyForPython: NaN / Infinity / undefined / functions deep in arrays and objects, same errors as the strict path', () => {
  const bad: Array<[string, unknown]> = [
    ['NaN in nested object', { a: { b: { c: [1, { d: NaN }] } } }],
    ['-Infinity in nested array', [[[1, 2, [-Infinity]]]]],
    ['undefined in nested array', { a: [[1, undefined]] }],
    ['hole in nested array', { a: [1, , 3] }], // eslint-disable-line no-sparse-arrays
    ['function in nested array', [{ a: [() => 1] }]],
    ['symbol in nested array', [[Symbol('s')]]],
    ['tagged shape deep inside', { a: [{ b: { __value__: 1, __type__: 'x' } }] }],
    ['tagged shape with undefined values', { a: { __type__: undefined, __value__: undefined } }],
    ['toJSON giving NaN', { a: { toJSON: () => NaN } }],
    ['toJSON giving a tagged shape', [{ toJSON: () => ({ __type__: 'x', __value__: 1 }) }]],
    ['function with toJSON giving NaN', { f: Object.assign(() => 1, { toJSON: () => NaN }) }],
    ['BigInt deep inside', { a: [{ b: 1n }] }],
    [
      'getter that throws',
      {
        a: 1,
        get b(): number {
          throw new Error('boom');
        },
      },
    ],
    [
      'non-enumerable __type__, two enumerable keys',
      Object.defineProperties({ __value__: 1, x: 2 }, { __type__: { value: 't', enumerable: false } }),
    ],
    ['top-level NaN', NaN],
    ['top-level undefined', undefined],
    ['top-level function', () => 1],
  ];
  for (const [label, value] of bad) {
    assert.equal(stringifyIfPlain(value) === null || stringifyIfPlain(value) === undefined, true, label);
    sameAsStrict(label, value);
  }
  const cyclic: Record<string, unknown> = { a: [1] };
  (cyclic.a as unknown[]).push(cyclic);
  sameAsStrict('cycle through an array', cyclic);
});

test('stringifyForPython: what the strict path accepts is written by the plain path, same text', () => {
  const deep: unknown[] = [];
  let cur = deep;
  for (let i = 0; i < 400; i++) {
    const next: unknown[] = [i];
    cur.push(next);
    cur = next;
  }
  const inherited = Object.create({ fromProto: NaN }) as Record<string, unknown>; // JSON ignores inherited keys
  inherited.own = 1;
  const good: Array<[string, unknown]> = [
    ['"__type__" as a string value', { __type__: 'datetime', note: '__value__', list: ['__type__', '__value__'] }],
    ['__type__ and __value__ plus a third key', { x: { __type__: 'a', __value__: 1, c: null } }],
    [
      'undefined, functions and symbols as object values are omitted',
      { a: undefined, b: () => 1, c: Symbol('s'), d: [1] },
    ],
    ['Date inside (toJSON)', { when: new Date('2020-01-01T00:00:00Z'), list: [new Date(0)] }],
    ['boxed NaN is written as null, as JSON.stringify does', { n: new Number(NaN) }],
    ['nested 400 deep (past the walk limit: strict path)', deep],
    ['inherited enumerable NaN', inherited],
    ['a "toJSON" data key', { toJSON: 1, a: 2 }],
    ['"__proto__" own key', JSON.parse('{"__proto__": {"a": 1}, "b": [null, -0, 1e21, 5e-324]}')],
    ['nulls and empty containers', { a: null, b: {}, c: [], d: [null, {}] }],
  ];
  for (const [label, value] of good) {
    assert.equal(stringifyForPython(value), JSON.stringify(value), label);
    sameAsStrict(label, value);
  }
});

// -------------------------------------------------------------------------------------------------- base64

test('decodeStrictBase64: exactly what the strict regex accepts, decoded like Buffer.from', () => {
  const valid = ['', 'aGk=', 'aGl=', 'aGVsbG8=', 'aGVsbA==', 'aGVsbB==', 'AAAA', '////', '++++'];
  for (const text of valid) assert.deepEqual(decodeStrictBase64(text), Buffer.from(text, 'base64'), text);
  const invalid = [
    'aGk',
    'a',
    '=',
    '==',
    '====',
    'A===',
    'a-_=',
    'aG k=',
    'aGk=\n',
    '\naGk=',
    'aGk=aGk=',
    'aG=k',
    'aGk==',
    'aGk!',
    'a\u00e9k=',
    'aGsb\r\n',
  ];
  for (const text of invalid) assert.equal(decodeStrictBase64(text), null, JSON.stringify(text));
});

test('decodeStrictBase64: mutated base64 of every length class, as the strict regex decides', () => {
  const strict = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const odd = ['=', '==', '-', '_', ' ', '\n', '.', '\0', 'é', '€', '\ud800', '*', '\x7f', '\u00a0', '\ufeff'];
  let seed = 12345;
  const rand = (k: number): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % k;
  };
  let accepted = 0;
  for (let round = 0; round < 30_000; round++) {
    const bytes = Buffer.alloc(rand(4) === 0 ? rand(300) : rand(12));
    for (let i = 0; i < bytes.length; i++) bytes[i] = rand(256);
    let text = bytes.toString('base64');
    for (let edits = rand(4); edits > 0; edits--) {
      const at = rand(text.length + 1);
      const c = rand(2) === 0 ? odd[rand(odd.length)] : alphabet[rand(64)];
      const op = rand(3);
      text = text.slice(0, at) + (op === 2 ? '' : c) + text.slice(op === 0 ? at : at + 1);
    }
    const want = strict.test(text);
    if (want) accepted++;
    assert.deepEqual(decodeStrictBase64(text), want ? Buffer.from(text, 'base64') : null, JSON.stringify(text));
  }
  assert.ok(accepted > 5_000 && accepted < 25_000, `${accepted} accepted`);
});

test('parseEnvelope: base64 bodies — line breaks tolerated, anything else refused with the same reason', () => {
  const body = Buffer.from([
    0xfb, 0xef, 0xff, 0x00, 0x10, 0x83, 0x3e, 0x7b, 0x22, 0x61, 0x22, 0x7d, 0xfe, 0xfa, 0xf0, 0x0a,
  ]);
  const b64 = body.toString('base64');
  assert.match(b64, /^(?=.*\+)(?=.*\/).*[^=]==$/); // has both special characters and padding
  const envelope = (bodyText: string): string =>
    JSON.stringify({
      body: bodyText,
      'content-encoding': 'utf-8',
      'content-type': 'application/json',
      headers: { task: 't', id: 'i' },
      properties: {
        delivery_tag: 'dt',
        delivery_info: { exchange: '', routing_key: 'q' },
        body_encoding: 'base64',
        priority: 0,
      },
    });
  const ok = (text: string): Buffer => {
    const r = parseEnvelope(envelope(text));
    if (!r.ok) assert.fail(r.reason);
    return r.message.body;
  };
  assert.deepEqual(ok(b64), body);
  assert.deepEqual(ok(b64.replace(/(.{16})/g, '$1\n')), body);
  assert.deepEqual(ok(`${b64.slice(0, 10)}\r\n${b64.slice(10)}\n`), body);
  assert.deepEqual(ok('aGl='), Buffer.from('aGl=', 'base64')); // non-zero padding bits: the regex never looked
  const variants = [
    b64.replace(/=+$/, ''),
    b64.replace(/=$/, ''),
    b64.replace(/\+/g, '-'),
    b64.replace(/\//g, '_'),
    ` ${b64}`,
    `${b64}=`,
    `${b64.slice(0, 8)}\t${b64.slice(8)}`,
    `${b64.slice(0, 8)}=${b64.slice(8)}`,
  ];
  for (const bad of variants) {
    const r = parseEnvelope(envelope(bad));
    assert.equal(r.ok, false, JSON.stringify(bad));
    assert.equal(!r.ok && r.reason, 'envelope body is not valid base64 (delivery_tag dt)');
  }
});

test('parseEnvelope: headers without tags come back equal to what was sent; tagged ones converted at depth', () => {
  const headers = { task: 't', id: 'i', deep: { list: [{ a: 1 }, '__type__'], n: null } };
  const env = (h: unknown): string =>
    JSON.stringify({
      body: 'W10=',
      headers: h,
      properties: { delivery_tag: 'dt', delivery_info: { exchange: '', routing_key: 'q' }, body_encoding: 'base64' },
    });
  const r = parseEnvelope(env(headers));
  assert.ok(r.ok);
  assert.deepEqual(r.message.headers, headers);
  const t = parseEnvelope(env({ ...headers, deep: { list: [{ __type__: 'decimal', __value__: '1.10' }] } }));
  assert.ok(t.ok);
  assert.deepEqual(t.message.headers.deep, { list: ['1.10'] });
  const bad = parseEnvelope(env({ x: [{ __type__: 'nope', __value__: 1 }] }));
  assert.equal(!bad.ok && bad.reason, 'envelope headers: unknown kombu tagged value __type__ "nope" (delivery_tag dt)');
});

// ---------------------------------------------------------------------------------------------- buildEnvelope

function message(headers: unknown, properties: unknown = { priority: 0 }): RawMessage {
  return {
    headers: headers as JsonObject,
    properties: properties as JsonObject,
    contentType: 'application/json',
    contentEncoding: 'utf-8',
    body: Buffer.from('[[],{},null]'),
  };
}
const OPTS = { deliveryTag: 'dt', exchange: '', routingKey: 'celery' };

test('buildEnvelope: the text is JSON.stringify of the envelope object, whatever path wrote it', () => {
  for (const headers of [{ a: 1, b: [null, 'x'], c: { d: '"quoted" \\ \u2028 é' } }, { when: new Date(0) }, {}]) {
    const text = buildEnvelope(message(headers), OPTS);
    assert.equal(
      text,
      JSON.stringify({
        body: Buffer.from('[[],{},null]').toString('base64'),
        'content-encoding': 'utf-8',
        'content-type': 'application/json',
        headers,
        properties: {
          delivery_info: { exchange: '', routing_key: 'celery' },
          priority: 0,
          body_encoding: 'base64',
          delivery_tag: 'dt',
        },
      }),
    );
  }
});

test('buildEnvelope: refusals name the key, as before (headers itself included)', () => {
  assert.throws(() => buildEnvelope(message({ a: [1, NaN] }), OPTS), {
    message:
      'buildEnvelope: value is not serializable for Python: cannot send non-finite number NaN to Python (at key "1") (delivery_tag dt)',
  });
  assert.throws(
    () => buildEnvelope(message({ __type__: 'a', __value__: 1 }), OPTS),
    /exactly the keys __type__ and __value__ \(at key "headers"\)/,
  );
  assert.throws(
    () => buildEnvelope(message({ a: 1 }, { priority: 0, x: [undefined] }), OPTS),
    /cannot send undefined as an array item \(at key "0"\)/,
  );
});

test('buildEnvelopeBytes: the UTF-8 bytes of buildEnvelope, on either path', () => {
  for (const headers of [{ a: 1, c: { d: '"quoted" \\ \u2028 é \ud83d\ude00 \ud800' } }, { when: new Date(0) }, {}]) {
    assert.deepEqual(buildEnvelopeBytes(message(headers), OPTS), Buffer.from(buildEnvelope(message(headers), OPTS)));
  }
  assert.throws(() => buildEnvelopeBytes(message({ a: [1, NaN] }), OPTS), /non-finite number NaN/);
});

test('utf8Join: the bytes Buffer.from gives the joined text (no pair split between parts)', () => {
  const cases = [[], [''], ['a', '', 'é€'], ['\ud800', 'x\udfff', '\ud83d\ude00'], ['x'.repeat(5000), 'ÿ']];
  for (const parts of cases) assert.deepEqual(utf8Join(parts), Buffer.from(parts.join(''), 'utf8'));
});

// ------------------------------------------------------------------------------------------------------ repr

test('truncatedRepr: exactly at the limit, one over, one under (plain ASCII: a cut of the full repr)', () => {
  // ['xxx…'] has length n + 4.
  for (const n of [1015, 1016, 1017, 1019, 1020, 1021, 1022, 1100]) {
    const value = ['x'.repeat(n)];
    const full = pythonRepr(value);
    assert.equal(full.length, n + 4);
    const cut = truncatedRepr(value);
    assert.equal(cut, truncateRepr(full, 1024), `n=${n}`);
    assert.equal(cut.length <= 1024, true);
    assert.equal(cut === full, full.length <= 1024, `n=${n}`);
  }
  // Items ending exactly at the limit, and keys that cross it.
  for (let pad = 0; pad < 12; pad++) {
    const value: JsonObject = { [`k${'p'.repeat(pad)}`]: 'v'.repeat(1000), after: [1, 2.5, true, null, 'tail'] };
    for (const max of [1000, 1010, 1011, 1012, 1013, 1014, 1015, 1016, 1017, 1018, 1019, 1020, 1024, 1030, 1040]) {
      assert.equal(truncatedRepr(value, max), truncateRepr(pythonRepr(value), max), `pad ${pad} max ${max}`);
    }
  }
});

test('truncatedRepr: the Latin-1 writer and the string fallback give the cut of the full repr', () => {
  const values: JsonValue[] = [
    ['é ÿ \x80 \xa0 ©', "a'b", 'c"d\'', { 'k\x85ey': 'v\u00ad' }],
    ['ascii first', '€ then not Latin-1', 'x'.repeat(2000)],
    [{ ['\u4e2d'.repeat(20)]: 1 }, 'after a non-Latin-1 key'],
    ['x'.repeat(1100) + '€'], // the non-Latin-1 character is past the cut: it is never rendered
    [{ ['k'.repeat(3000)]: 'a key longer than the limit' }],
    ['\ud83d\ude00 emoji', '\ud800 lone surrogate'],
    [],
    {},
  ];
  for (const value of values) {
    for (const max of [3, 4, 5, 10, 1023, 1024, 1025, 4000]) {
      assert.equal(
        truncatedRepr(value, max),
        truncateRepr(pythonRepr(value), max),
        `${JSON.stringify(value).slice(0, 40)} max ${max}`,
      );
    }
  }
  // A larger limit than any before grows the scratch buffer; the default limit still works after it.
  assert.equal(truncatedRepr(['y'.repeat(50_000)], 40_000), truncateRepr(pythonRepr(['y'.repeat(50_000)]), 40_000));
  assert.equal(truncatedRepr(['y'.repeat(2000)]), truncateRepr(pythonRepr(['y'.repeat(2000)]), 1024));
});

test('pythonStrRepr / pythonNumberRepr: fast paths agree with the general rules at their edges', () => {
  assert.equal(pythonStrRepr(' !"#$%&()*+,-./09:;<=>?@AZ[]^_`az{|}~'), `' !"#$%&()*+,-./09:;<=>?@AZ[]^_\`az{|}~'`);
  assert.equal(pythonStrRepr("a'b"), `"a'b"`);
  assert.equal(pythonStrRepr('a\\b'), "'a\\\\b'");
  assert.equal(pythonStrRepr('a\x7fb'), "'a\\x7fb'");
  assert.equal(pythonStrRepr('a\x1fb'), "'a\\x1fb'");
  // Integers below 1e21 are Python ints; at 1e21 JSON switches to exponent form and Python reads a float.
  assert.equal(pythonNumberRepr(999999999999999900000), '999999999999999900000');
  assert.equal(pythonNumberRepr(1e21), '1e+21');
  assert.equal(pythonNumberRepr(-0), '0');
  // 1e-4 is the last magnitude Python writes positionally.
  assert.equal(pythonNumberRepr(1e-4), '0.0001');
  assert.equal(pythonNumberRepr(-1e-4), '-0.0001');
  assert.equal(pythonNumberRepr(9.999999999999999e-5), '9.999999999999999e-05');
  assert.equal(pythonNumberRepr(0.00010000000000000002), '0.00010000000000000002');
  assert.equal(pythonNumberRepr(4503599627370495.5), '4503599627370495.5');
  assert.equal(pythonNumberRepr(NaN), 'nan');
  assert.equal(pythonNumberRepr(-Infinity), '-inf');
});

// ----------------------------------------------------------------------------------------------------- uuid5

/** The textbook computation: SHA-1 of namespace bytes + UTF-8 name, version and variant bits set. */
function referenceUuid5(name: string, namespace: string): string {
  const b = createHash('sha1')
    .update(Buffer.from(namespace.replace(/-/g, ''), 'hex'))
    .update(name, 'utf8')
    .digest()
    .subarray(0, 16);
  b[6] = (b[6] & 0x0f) | 0x50;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

test('derivedUuid / uuidV5: Python uuid.uuid5 values, and the textbook computation for any name', () => {
  // python3: uuid.uuid5(uuid.UUID('3b0f5c8e-7f2d-4a61-9c5e-2d8a41f6b7c3'), name)
  const python: Array<[string, string]> = [
    ['', 'ac1b631c-23c8-558d-aef3-8ab32297c869'],
    ['a', 'd9d5372e-af6a-5577-b20a-796d0e3d98b5'],
    ['ff1e6f3a-0b5c-4b7e-9d1a-3f2e1d0c9b8a:process_event', 'a1bb0d58-56d6-5524-b159-cdb43eab1889'],
    ['h\u00e9llo \ud83d\ude00', '3565cd6f-68d3-578b-a1e6-63cc886a7f53'],
    ['x'.repeat(200), '9a933935-e990-55bb-bb3e-0036ac231ebb'],
  ];
  for (const [name, want] of python) {
    assert.equal(derivedUuid(name), want, name);
    assert.equal(uuidV5(name, POSTHOG_PLUGINS_NAMESPACE), want, name);
  }
  // Every variant digit (8, 9, a, b) and lone surrogates (UTF-8 encoded as U+FFFD, like createHash does).
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const name = i % 7 === 0 ? `lone \ud800 ${i}` : `seed-${i}`;
    const got = derivedUuid(name);
    assert.equal(got, referenceUuid5(name, POSTHOG_PLUGINS_NAMESPACE), name);
    assert.equal(uuidV5(name, NAMESPACE_DNS), referenceUuid5(name, NAMESPACE_DNS), name);
    seen.add(got[19]);
  }
  assert.deepEqual([...seen].sort(), ['8', '9', 'a', 'b']);
});

test('envelope properties: key order kept, transport keys left out or replaced, "__proto__" stays data', () => {
  const text =
    '{"body": "W10=", "headers": {}, "properties": {"z": 1, "__proto__": {"polluted": true}, "delivery_tag": "dt", ' +
    '"a": [2], "body_encoding": "base64", "delivery_info": {"exchange": "", "routing_key": "q"}, "priority": 3}}';
  const r = parseEnvelope(text);
  assert.ok(r.ok);
  assert.deepEqual(Object.keys(r.message.properties), ['z', '__proto__', 'a', 'priority']);
  assert.equal(Object.getPrototypeOf(r.message.properties), Object.prototype);
  assert.deepEqual(r.message.properties.__proto__, { polluted: true });
  const out = JSON.parse(buildEnvelope({ ...message({}), properties: r.message.properties }, OPTS)) as {
    properties: JsonObject;
  };
  assert.deepEqual(Object.keys(out.properties), [
    'z',
    '__proto__',
    'a',
    'delivery_info',
    'priority',
    'body_encoding',
    'delivery_tag',
  ]);
  assert.equal(out.properties.priority, 3);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

test('uuid5 without crypto.hash (Node < 20.12): the createHash fallback gives the same ids', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const nodeCrypto = require('node:crypto') as { hash?: unknown };
  const saved = Object.getOwnPropertyDescriptor(nodeCrypto, 'hash');
  const idsPath = require.resolve('../../protocol/ids');
  const cached = require.cache[idsPath];
  try {
    Object.defineProperty(nodeCrypto, 'hash', { value: undefined, configurable: true, writable: true });
    delete require.cache[idsPath];
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const fallback = require(idsPath) as typeof import('../../protocol/ids');
    for (const name of ['', 'a', 'h\u00e9llo \ud83d\ude00', 'lone \udc00', 'x'.repeat(200)]) {
      assert.equal(fallback.derivedUuid(name), derivedUuid(name), name);
      assert.equal(fallback.uuidV5(name, NAMESPACE_DNS), uuidV5(name, NAMESPACE_DNS), name);
    }
  } finally {
    if (saved) Object.defineProperty(nodeCrypto, 'hash', saved);
    else delete nodeCrypto.hash;
    if (cached) require.cache[idsPath] = cached;
  }
});
