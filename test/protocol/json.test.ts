import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KombuTagError, parseKombuJson, reviveKombuTags, stringifyForPython } from '../../protocol/json';

test('parseKombuJson: plain JSON is returned unchanged', () => {
  assert.deepEqual(parseKombuJson('[[2, 2], {"z": 3}, null]'), [[2, 2], { z: 3 }, null]);
  assert.equal(parseKombuJson('"x"'), 'x');
});

test('parseKombuJson: kombu 5.3 tagged values become the strings kombu 5.2 would have sent', () => {
  const text = JSON.stringify([
    { __type__: 'datetime', __value__: '2020-11-02T22:13:06.123456+00:00' },
    { __type__: 'date', __value__: '2020-11-02' },
    { __type__: 'time', __value__: '01:02:03' },
    { __type__: 'decimal', __value__: '1.10' },
    { __type__: 'uuid', __value__: { hex: '12345678123456781234567812345678', version: 4 } },
    { __type__: 'uuid', __value__: { hex: '{ABCDEF00-1234-5678-1234-567812345678}' } },
    { __type__: 'bytes', __value__: 'héllo' },
    { __type__: 'base64', __value__: 'aGk=' },
  ]);
  assert.deepEqual(parseKombuJson(text), [
    '2020-11-02T22:13:06.123456+00:00',
    '2020-11-02',
    '01:02:03',
    '1.10',
    '12345678-1234-5678-1234-567812345678',
    'abcdef00-1234-5678-1234-567812345678',
    'héllo',
    'hi',
  ]);
});

test('parseKombuJson: tags are converted at any depth, and only objects with exactly the two keys', () => {
  const text = JSON.stringify({
    a: { b: [{ __type__: 'datetime', __value__: '2021-01-01T00:00:00' }] },
    notTag: { __type__: 'datetime', __value__: 'x', extra: 1 },
    onlyType: { __type__: 'datetime' },
  });
  assert.deepEqual(parseKombuJson(text), {
    a: { b: ['2021-01-01T00:00:00'] },
    notTag: { __type__: 'datetime', __value__: 'x', extra: 1 },
    onlyType: { __type__: 'datetime' },
  });
});

test('parseKombuJson: unknown or malformed tags throw KombuTagError naming the problem', () => {
  assert.throws(
    () => parseKombuJson('{"__type__": "frozenset", "__value__": [1]}'),
    (e: unknown) => e instanceof KombuTagError && /unknown kombu tagged value __type__ "frozenset"/.test(e.message),
  );
  assert.throws(
    () => parseKombuJson('{"__type__": 7, "__value__": 1}'),
    /unknown kombu tagged value __type__ number 7/,
  );
  assert.throws(
    () => parseKombuJson('{"__type__": "datetime", "__value__": 5}'),
    /tagged datetime must carry a string __value__, got number 5/,
  );
  assert.throws(
    () => parseKombuJson('{"__type__": "uuid", "__value__": {"hex": "xyz"}}'),
    /tagged uuid has an invalid hex value "xyz"/,
  );
  assert.throws(() => parseKombuJson('{"__type__": "base64", "__value__": "a!=="}'), /not valid base64/);
});

test('parseKombuJson: syntax errors stay SyntaxError', () => {
  assert.throws(() => parseKombuJson('{"a": '), SyntaxError);
  assert.throws(() => parseKombuJson('nan'), SyntaxError);
});

test('parseKombuJson: a "__proto__" key stays a plain own property', () => {
  const v = parseKombuJson(
    '{"__proto__": {"polluted": true}, "x": {"__type__": "decimal", "__value__": "2"}}',
  ) as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(v), Object.prototype);
  assert.deepEqual(Object.keys(v), ['__proto__', 'x']);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(v.x, '2');
});

test('reviveKombuTags converts already-parsed values without mutating them', () => {
  const input = JSON.parse('{"h": {"__type__": "datetime", "__value__": "2026-01-01T00:00:00+00:00"}, "__proto__": 1}');
  const out = reviveKombuTags(input) as Record<string, unknown>;
  assert.equal(out.h, '2026-01-01T00:00:00+00:00');
  assert.deepEqual(Object.keys(out), ['h', '__proto__']);
  assert.equal(Object.getPrototypeOf(out), Object.prototype);
  assert.deepEqual(input.h, { __type__: 'datetime', __value__: '2026-01-01T00:00:00+00:00' });
});

test('stringifyForPython: ordinary values serialize like JSON.stringify', () => {
  assert.equal(stringifyForPython([1, 'é', { a: null, b: [true] }]), '[1,"é",{"a":null,"b":[true]}]');
  assert.equal(stringifyForPython({ a: undefined, b: 1 }), '{"b":1}');
  assert.equal(stringifyForPython({ when: new Date('2020-01-01T00:00:00Z') }), '{"when":"2020-01-01T00:00:00.000Z"}');
});

test('stringifyForPython: refuses what Python would read differently', () => {
  assert.throws(
    () => stringifyForPython({ x: { __type__: 'datetime', __value__: 'y' } }),
    /exactly the keys __type__ and __value__ \(at key "x"\)/,
  );
  assert.throws(
    () => stringifyForPython([{ __value__: 1, __type__: 'a' }]),
    /kombu >= 5.3 would read it as a tagged value/,
  );
  assert.throws(() => stringifyForPython({ __type__: 'a', __value__: 1 }), /at the top level/);
  assert.throws(() => stringifyForPython({ n: NaN }), /non-finite number NaN to Python \(at key "n"\)/);
  assert.throws(() => stringifyForPython([1, Infinity]), /non-finite number Infinity/);
  assert.throws(() => stringifyForPython([1, undefined]), /cannot send undefined as an array item \(at key "1"\)/);
  assert.throws(() => stringifyForPython([() => 1]), /cannot send function as an array item/);
  assert.throws(() => stringifyForPython(undefined), /top-level undefined has no JSON form/);
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.throws(() => stringifyForPython(cyclic), /not serializable for Python/);
  assert.throws(() => stringifyForPython({ big: 10n }), /not serializable for Python/);
});

test('stringifyForPython: objects with the two keys plus others are fine', () => {
  assert.equal(stringifyForPython({ __type__: 'a', __value__: 1, c: 2 }), '{"__type__":"a","__value__":1,"c":2}');
});
