import assert from 'node:assert/strict';
import { deflateSync } from 'node:zlib';
import { describe, test } from 'node:test';
import { decodeTask } from '../../protocol/decode';
import {
  MAX_ENVELOPE_CHARS,
  MAX_MESSAGE_BYTES,
  MAX_NESTING_DEPTH,
  jsonTextTooDeep,
  valueTooDeep,
} from '../../protocol/limits';
import { parseEnvelope } from '../../protocol/redis-envelope';
import type { JsonObject, RawMessage } from '../../protocol/types';

/** `depth` arrays inside each other around `inner`. */
const nestedText = (depth: number, inner = '1'): string => '['.repeat(depth) + inner + ']'.repeat(depth);
const nestedValue = (depth: number): unknown => {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { k: v };
  return v;
};

const HEADERS: JsonObject = {
  lang: 'py',
  task: 'posthog.tasks.process_event.process_event_with_plugins',
  id: 'limits-1',
};

function message(body: string | Buffer, headers: JsonObject = HEADERS): RawMessage {
  return {
    headers,
    properties: {},
    contentType: 'application/json',
    contentEncoding: 'utf-8',
    body: Buffer.isBuffer(body) ? body : Buffer.from(body),
  };
}

/** A v2 body whose event property is nested so that the whole body is `depth` levels deep. */
function bodyOfDepth(depth: number): string {
  // [ args[ data{ properties{ p: ... } } ] kwargs embed ]: four levels before the property's value.
  const value = nestedText(depth - 4);
  return `[["d", "127.0.0.1", "", {"event": "e", "properties": {"p": ${value}}}, 2, "2020-01-01T00:00:00Z"], {}, {}]`;
}

describe('nesting depth', () => {
  test('jsonTextTooDeep counts brackets, not the ones inside strings', () => {
    assert.equal(jsonTextTooDeep(nestedText(MAX_NESTING_DEPTH)), false);
    assert.equal(jsonTextTooDeep(nestedText(MAX_NESTING_DEPTH + 1)), true);
    assert.equal(jsonTextTooDeep(JSON.stringify({ s: '['.repeat(10_000) })), false);
    // Escaped quotes do not end a string; an escaped backslash before the quote does.
    assert.equal(jsonTextTooDeep(JSON.stringify({ s: '"[[[' + '['.repeat(500) + '\\' })), false);
    assert.equal(jsonTextTooDeep(`["\\\\"${'['.repeat(200)}`), true);
    assert.equal(jsonTextTooDeep(`{"a": [[["x"]]], "b": {"c": {"d": "}}}}}}"}}}`, 4), false);
    assert.equal(jsonTextTooDeep(`{"a": [[["x"]]], "b": {"c": {"d": "}}}}}}"}}}`, 3), true);
    assert.equal(jsonTextTooDeep(nestedText(1_000_000)), true);
  });

  test('valueTooDeep stops at the limit: a 200,000-level value or a cycle costs max + 1 levels', () => {
    assert.equal(valueTooDeep(nestedValue(MAX_NESTING_DEPTH)), false);
    assert.equal(valueTooDeep(nestedValue(MAX_NESTING_DEPTH + 1)), true);
    assert.equal(valueTooDeep(nestedValue(200_000)), true);
    assert.equal(valueTooDeep('x'), false);
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    assert.equal(valueTooDeep(cycle), true);
    // Own enumerable values only, as Object.values gives them; a Buffer is a leaf.
    const inherited = Object.create({ deep: nestedValue(10) }) as Record<string, unknown>;
    assert.equal(valueTooDeep({ a: inherited }, 2), false);
    assert.equal(valueTooDeep([Buffer.from('xyz')], 2), false);
    assert.equal(valueTooDeep([[[]]], 2), true);
  });

  test('a body, headers or envelope nested too deep is refused before it is parsed, at the limit it is read', () => {
    const ok = decodeTask(message(bodyOfDepth(MAX_NESTING_DEPTH)));
    assert.ok(ok.ok, ok.ok ? '' : ok.reason);
    const deep = decodeTask(message(bodyOfDepth(50_000)));
    assert.deepEqual(deep, {
      ok: false,
      reason: `message body too deeply nested (more than ${MAX_NESTING_DEPTH} levels)`,
    });

    const headers = { ...HEADERS, x: nestedValue(MAX_NESTING_DEPTH) } as JsonObject;
    assert.deepEqual(decodeTask(message(bodyOfDepth(10), headers)), {
      ok: false,
      reason: `message headers too deeply nested (more than ${MAX_NESTING_DEPTH} levels)`,
    });

    const envelope = (h: string): string =>
      `{"body": "W10=", "content-type": "application/json", "headers": ${h}, "properties": {"delivery_tag": "t", "delivery_info": {"exchange": "", "routing_key": "q"}, "body_encoding": "base64"}}`;
    const deepHeaders = envelope(`{"x": ${nestedText(20_000)}}`);
    const parsed = parseEnvelope(deepHeaders);
    assert.deepEqual(parsed, {
      ok: false,
      reason: `envelope too deeply nested (more than ${MAX_NESTING_DEPTH + 1} levels)`,
    });
    assert.ok(parseEnvelope(envelope(`{"x": ${nestedText(MAX_NESTING_DEPTH - 1)}}`)).ok);
  });
});

describe('message size', () => {
  test('a body over MAX_MESSAGE_BYTES is refused unread', () => {
    const big = Buffer.alloc(MAX_MESSAGE_BYTES + 1, 0x20);
    assert.deepEqual(decodeTask(message(big)), {
      ok: false,
      reason: `message body is ${MAX_MESSAGE_BYTES + 1} bytes, more than the limit of ${MAX_MESSAGE_BYTES}`,
    });
  });

  test('a Redis envelope over MAX_ENVELOPE_CHARS is refused unparsed; one with a body at the limit is read', () => {
    const envelope = (body: Buffer, headers = '{}'): string =>
      `{"body": "${body.toString('base64')}", "content-type": "application/json", "headers": ${headers}, "properties": {"delivery_tag": "t", "delivery_info": {"exchange": "", "routing_key": "q"}, "body_encoding": "base64"}}`;
    assert.ok(parseEnvelope(envelope(Buffer.alloc(MAX_MESSAGE_BYTES, 0x20))).ok);
    const big = envelope(Buffer.alloc(MAX_MESSAGE_BYTES), `{"x": "${'x'.repeat(1024 * 1024)}"}`);
    assert.deepEqual(parseEnvelope(big), {
      ok: false,
      reason: `envelope is ${big.length} characters, more than the limit of ${MAX_ENVELOPE_CHARS}`,
    });
  });

  test('a compressed body may not inflate past MAX_MESSAGE_BYTES (zlib bomb)', () => {
    const bomb = deflateSync(Buffer.alloc(MAX_MESSAGE_BYTES + 1024, 0x20), { level: 9 });
    assert.ok(bomb.length < 64 * 1024, 'a small message');
    const result = decodeTask(message(bomb, { ...HEADERS, compression: 'application/x-gzip' }));
    assert.equal(result.ok, false);
    if (!result.ok) assert.match(result.reason, new RegExp(`output exceeds ${MAX_MESSAGE_BYTES} bytes`));
  });
});
