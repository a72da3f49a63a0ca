import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  NAMESPACE_DNS,
  POSTHOG_PLUGINS_NAMESPACE,
  derivedUuid,
  isUuid,
  randomTaskId,
  uuidV5,
} from '../../protocol/ids';
import { pythonRepr, truncateRepr, truncatedRepr } from '../../protocol/repr';
import { formatPythonUtcIso, parseIsoDateTime } from '../../protocol/time';
import type { JsonValue } from '../../protocol/types';
import { PY_REPR_CASES } from './python-repr-cases';

test('uuidV5 equals Python uuid.uuid5', () => {
  // python3 -c "import uuid; print(uuid.uuid5(uuid.NAMESPACE_DNS, 'python.org'))"
  assert.equal(uuidV5('python.org', NAMESPACE_DNS), '886313e1-3b8a-5372-9b90-0c9aee199e5d');
  assert.equal(uuidV5('héllo 😀', NAMESPACE_DNS), 'c43ff063-c64b-55b9-bf02-93c702c5e831');
  assert.throws(() => uuidV5('x', 'not-a-uuid'), /namespace is not a UUID/);
});

test('derivedUuid: deterministic, version 5, RFC 4122 variant, in our namespace', () => {
  const seed = '11111111-1111-4111-8111-111111111111:process_event';
  // python3: uuid.uuid5(uuid.UUID('3b0f5c8e-7f2d-4a61-9c5e-2d8a41f6b7c3'), seed)
  assert.equal(derivedUuid(seed), '58b0d574-762b-52d9-9384-aca3f20eb0fa');
  assert.equal(derivedUuid(seed), uuidV5(seed, POSTHOG_PLUGINS_NAMESPACE));
  assert.notEqual(derivedUuid('a'), derivedUuid('b'));
  assert.match(derivedUuid('a'), /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});

test('randomTaskId: uuid4, unique', () => {
  const a = randomTaskId();
  assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.notEqual(a, randomTaskId());
  assert.equal(isUuid(a), true);
  assert.equal(isUuid('nope'), false);
});

test('pythonRepr matches Python repr of the decoded JSON', () => {
  for (const [json, expected] of PY_REPR_CASES) {
    assert.equal(pythonRepr(JSON.parse(json) as JsonValue), expected, json);
  }
});

test('truncatedRepr: Celery-style cut at 1024 with "...", same prefix as the full repr', () => {
  const big = { k: Array.from({ length: 500 }, (_, i) => `value-${i}`) };
  const full = pythonRepr(big);
  const cut = truncatedRepr(big);
  assert.equal(cut.length, 1024);
  assert.equal(cut, `${full.slice(0, 1021)}...`);
  assert.equal(truncatedRepr([1, 2]), '[1, 2]');
  assert.equal(truncateRepr('abcdef', 5), 'ab...');
  assert.equal(truncatedRepr(['é'.repeat(3000)], 10), "['ééééé...");
});

test('parseIsoDateTime / formatPythonUtcIso', () => {
  assert.equal(parseIsoDateTime('2026-11-25T11:38:10.197072+00:00').toISOString(), '2026-11-25T11:38:10.197Z');
  assert.equal(parseIsoDateTime('0005-01-01T00:00:00').toISOString(), '0005-01-01T00:00:00.000Z');
  assert.equal(parseIsoDateTime('2026-11-25T11:38:10+05:30:15').toISOString(), '2026-11-25T06:07:55.000Z');
  assert.throws(() => parseIsoDateTime('2026-13-01T00:00:00'), /month out of range/);
  assert.throws(() => parseIsoDateTime('2026-01-01T00:00:00+25:00'), /UTC offset out of range/);
  assert.throws(() => parseIsoDateTime('2026-01-01T00:00:60'), /time out of range/);
  assert.throws(() => parseIsoDateTime('0000-01-01'), /year out of range/);
  assert.equal(formatPythonUtcIso(new Date('2026-11-25T11:38:10.197Z')), '2026-11-25T11:38:10.197000+00:00');
  assert.equal(formatPythonUtcIso(new Date('2026-11-25T11:38:10Z')), '2026-11-25T11:38:10+00:00');
  assert.equal(formatPythonUtcIso(new Date('2026-11-25T11:38:10.007Z')), '2026-11-25T11:38:10.007000+00:00');
  assert.throws(() => formatPythonUtcIso(new Date(NaN)), /invalid Date/);
});
