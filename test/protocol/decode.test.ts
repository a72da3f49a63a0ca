import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as zlib from 'node:zlib';
import { decodeTask, taskTiming } from '../../protocol/decode';
import type { RawMessage, TaskMessage } from '../../protocol/types';
import { UNACKED_RECORD, V1, V2_DATETIME_ARGS, V2_PLAIN, V2_PRIORITY5_ETA, V2_ZLIB, FANOUT } from './captures';
import { EMPTY_EMBED, decodeFails, decodeOk, envelopeOk, jsonMessage } from './helpers';
import { parseUnackedRecord } from '../../protocol/redis-envelope';

const V2_HEADERS = { task: 'proj.add', id: 'id-1' };

// ---------------------------------------------------------------------------------------------------------
// Real Celery 5.2.6 captures

test('capture A.1 [2]: plain v2 add(2, 2, z=3)', () => {
  const task = decodeOk(envelopeOk(V2_PLAIN).message);
  assert.equal(task.protocol, 2);
  assert.equal(task.id, '11111111-1111-4111-8111-111111111111');
  assert.equal(task.task, 'research.tasks.add');
  assert.deepEqual(task.args, [2, 2]);
  assert.deepEqual(task.kwargs, { z: 3 });
  assert.deepEqual(task.embed, EMPTY_EMBED);
  assert.equal(task.eta, null);
  assert.equal(task.expires, null);
  assert.equal(task.retries, 0);
  assert.equal(task.rootId, '11111111-1111-4111-8111-111111111111');
  assert.equal(task.parentId, null);
  assert.equal(task.group, null);
  assert.equal(task.headers.origin, 'gen2014@vm');
  assert.equal(task.headers.kwargsrepr, "{'z': 3}");
  assert.equal(task.headers.ignore_result, false);
});

test('capture A.1 [1]: protocol v1 body with empty headers', () => {
  const task = decodeOk(envelopeOk(V1).message);
  assert.equal(task.protocol, 1);
  assert.equal(task.id, '33333333-3333-4333-8333-333333333333');
  assert.equal(task.task, 'research.tasks.add');
  assert.deepEqual(task.args, [2, 2]);
  assert.deepEqual(task.kwargs, { z: 3 });
  assert.deepEqual(task.embed, EMPTY_EMBED);
  assert.equal(task.eta, null);
  assert.equal(task.expires, null);
  assert.equal(task.retries, 0);
  assert.equal(task.group, null);
  // v1 fields lifted into v2-style headers; reprs filled in the Python way.
  assert.equal(task.headers.task, 'research.tasks.add');
  assert.equal(task.headers.id, '33333333-3333-4333-8333-333333333333');
  assert.deepEqual(task.headers.timelimit, [null, null]);
  assert.equal(task.headers.argsrepr, '[2, 2]');
  assert.equal(task.headers.kwargsrepr, "{'z': 3}");
  assert.equal(task.headers.utc, true);
  assert.equal(task.headers.args, undefined);
  assert.equal(task.headers.kwargs, undefined);
});

test('capture A.1 priority 5: eta and expires with +00:00 and microseconds', () => {
  const env = envelopeOk(V2_PRIORITY5_ETA);
  assert.equal(env.priority, 5);
  assert.equal(env.message.properties.expiration, '300000');
  const task = decodeOk(env.message);
  assert.equal(task.id, '22222222-2222-4222-8222-222222222222');
  assert.deepEqual(task.args, [1]);
  assert.deepEqual(task.kwargs, {});
  assert.equal(task.eta?.toISOString(), '2026-11-25T11:38:10.197Z');
  assert.equal(task.expires?.toISOString(), '2026-11-25T11:42:10.197Z');
});

test('capture A.2: zlib-compressed body (compression: application/x-gzip)', () => {
  const env = envelopeOk(V2_ZLIB);
  assert.equal(env.message.body[0], 0x78);
  assert.equal(env.message.body[1], 0x9c);
  const task = decodeOk(env.message);
  assert.equal(task.id, '99999999-0000-4000-8000-000000000001');
  assert.deepEqual(task.args, [1, 2]);
  assert.deepEqual(task.kwargs, {});
  assert.deepEqual(task.embed, EMPTY_EMBED);
  assert.equal(task.headers.compression, 'application/x-gzip');
});

test('capture A.1 [0]: datetime/date/time/UUID/Decimal/tuple args arrive as kombu 5.2 strings', () => {
  const task = decodeOk(envelopeOk(V2_DATETIME_ARGS).message);
  assert.equal(task.task, 'research.tasks.types');
  assert.deepEqual(task.args, [
    '2020-11-02T22:13:06.123456Z',
    '2020-11-02T22:13:06',
    '2020-11-02T00:00:00',
    '01:02:03',
    '12345678-1234-5678-1234-567812345678',
    '1.10',
    [1, 2],
    { a: null },
  ]);
});

test('capture A.3: the envelope inside an unacked record decodes like the list item', () => {
  const rec = parseUnackedRecord(UNACKED_RECORD);
  if (!rec.ok) assert.fail(rec.reason);
  const task = decodeOk(envelopeOk(rec.envelopeText).message);
  assert.equal(task.id, '11111111-1111-4111-8111-111111111111');
  assert.deepEqual(task.kwargs, { z: 3 });
});

test('capture A.6: a fanout payload (no task header, body not a v1 task) is an unknown message', () => {
  const reason = decodeFails(envelopeOk(FANOUT).message);
  assert.equal(
    reason,
    'unknown message: no "task" header and the body is not a v1 task object (body is an object with keys ["hello"])',
  );
});

// ---------------------------------------------------------------------------------------------------------
// Content types

test('pickle is refused with the exact reason', () => {
  const raw = jsonMessage(V2_HEADERS, '[[], {}, null]', {
    contentType: 'application/x-python-serialize',
    contentEncoding: 'binary',
    body: Buffer.from([0x80, 0x04, 0x95]),
  });
  assert.equal(
    decodeFails(raw),
    'refusing to deserialize untrusted content of type application/x-python-serialize (pickle)',
  );
});

test('msgpack, yaml, raw text and unknown content types are refused, naming the type', () => {
  const reasonFor = (contentType: string) => decodeFails(jsonMessage(V2_HEADERS, [[], {}, null], { contentType }));
  assert.equal(
    reasonFor('application/x-msgpack'),
    'refusing to deserialize content of type application/x-msgpack (msgpack): only application/json is accepted',
  );
  assert.equal(
    reasonFor('application/x-yaml'),
    'refusing to deserialize content of type application/x-yaml (yaml): only application/json is accepted',
  );
  assert.equal(
    reasonFor('text/plain'),
    'refusing to deserialize content of type text/plain (raw text): only application/json is accepted',
  );
  assert.equal(
    reasonFor('application/xml'),
    'refusing to deserialize content of type application/xml: only application/json is accepted',
  );
  assert.equal(reasonFor(''), 'message has no content type (got string "")');
});

test('content types with parameters and case differences are accepted; foreign charsets are not', () => {
  decodeOk(jsonMessage(V2_HEADERS, [[], {}, null], { contentType: 'application/json; charset=utf-8' }));
  decodeOk(jsonMessage(V2_HEADERS, [[], {}, null], { contentType: 'Application/JSON;charset="UTF-8"' }));
  decodeOk(jsonMessage(V2_HEADERS, [[], {}, null], { contentEncoding: 'binary' }));
  assert.equal(
    decodeFails(jsonMessage(V2_HEADERS, [[], {}, null], { contentType: 'application/json; charset=latin-1' })),
    'unsupported charset "latin-1" in content type "application/json; charset=latin-1"',
  );
  assert.equal(
    decodeFails(jsonMessage(V2_HEADERS, [[], {}, null], { contentEncoding: 'utf-16' })),
    'unsupported content encoding "utf-16" for application/json (only utf-8)',
  );
});

// ---------------------------------------------------------------------------------------------------------
// Body problems

test('garbage, non-UTF-8 and empty bodies give precise reasons', () => {
  assert.match(decodeFails(jsonMessage(V2_HEADERS, 'not json {')), /^body is not valid JSON: /);
  assert.match(decodeFails(jsonMessage(V2_HEADERS, '')), /^body is not valid JSON: /);
  assert.equal(
    decodeFails(jsonMessage(V2_HEADERS, '', { body: Buffer.from([0x5b, 0xff, 0xfe, 0x5d]) })),
    'body is not valid UTF-8 (4 bytes)',
  );
});

test('v2 body shape: 2 elements, object, string are refused', () => {
  assert.equal(
    decodeFails(jsonMessage(V2_HEADERS, [[1], {}])),
    'v2 body must be [args, kwargs, embed], got 2 elements',
  );
  assert.equal(
    decodeFails(jsonMessage(V2_HEADERS, [[1], {}, null, 4])),
    'v2 body must be [args, kwargs, embed], got 4 elements',
  );
  assert.equal(
    decodeFails(jsonMessage(V2_HEADERS, { kwargs: {} })),
    'v2 body must be [args, kwargs, embed], got an object with keys ["kwargs"]',
  );
  assert.equal(
    decodeFails(jsonMessage(V2_HEADERS, '"text"')),
    'v2 body must be [args, kwargs, embed], got string "text"',
  );
});

test('v2 args / kwargs / embed types', () => {
  assert.equal(decodeFails(jsonMessage(V2_HEADERS, [{}, {}, null])), 'v2 args must be an array, got object');
  assert.equal(decodeFails(jsonMessage(V2_HEADERS, [null, {}, null])), 'v2 args must be an array, got null');
  assert.equal(decodeFails(jsonMessage(V2_HEADERS, [[], [], null])), 'v2 kwargs must be an object, got array of 0');
  assert.equal(
    decodeFails(jsonMessage(V2_HEADERS, [[], {}, 'x'])),
    'v2 embed must be an object or null, got string "x"',
  );
  // null kwargs (JS producers passing undefined) are read as {}; embed {} and null both accepted.
  const t = decodeOk(jsonMessage(V2_HEADERS, [[1], null, {}]));
  assert.deepEqual(t.kwargs, {});
  assert.deepEqual(t.embed, {});
  assert.equal(decodeOk(jsonMessage(V2_HEADERS, [[1], {}, null])).embed, null);
});

test('missing or empty id and task are refused', () => {
  assert.equal(
    decodeFails(jsonMessage({ task: 'proj.add' }, [[], {}, null])),
    'task id must be a non-empty string, got null',
  );
  assert.equal(
    decodeFails(jsonMessage({ task: 'proj.add', id: '' }, [[], {}, null])),
    'task id must be a non-empty string, got string ""',
  );
  assert.equal(
    decodeFails(jsonMessage({ task: 'proj.add', id: 42 }, [[], {}, null])),
    'task id must be a non-empty string, got number 42',
  );
  assert.equal(
    decodeFails(jsonMessage({ task: null, id: 'a' }, [[], {}, null])),
    'task name must be a non-empty string, got null (task id a)',
  );
  assert.equal(
    decodeFails(jsonMessage({ task: '', id: 'a' }, [[], {}, null])),
    'task name must be a non-empty string, got string "" (task id a)',
  );
});

test('headers that are not a mapping, and non-Buffer bodies, fail without throwing', () => {
  const base = jsonMessage(V2_HEADERS, [[], {}, null]);
  assert.equal(decodeFails({ ...base, headers: null as never }), 'message headers are not a mapping (got null)');
  assert.equal(decodeFails({ ...base, headers: [] as never }), 'message headers are not a mapping (got array of 0)');
  assert.equal(decodeFails({ ...base, body: 'x' as never }), 'message body is not a Buffer (got string "x")');
  assert.equal(decodeTask(null as never).ok, false);
  assert.equal(decodeTask({} as never).ok, false);
});

test('kombu 5.3 tagged JSON in the body is converted; unknown tags refused', () => {
  const body =
    '[[{"__type__": "datetime", "__value__": "2020-11-02T22:13:06.123456+00:00"}, ' +
    '{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678", "version": 4}}, ' +
    '{"__type__": "decimal", "__value__": "1.10"}], ' +
    '{"when": {"__type__": "date", "__value__": "2020-11-02"}, "raw": {"__type__": "bytes", "__value__": "abc"}}, ' +
    '{"callbacks": null, "errbacks": null, "chain": null, "chord": null}]';
  const t = decodeOk(jsonMessage(V2_HEADERS, body));
  assert.deepEqual(t.args, ['2020-11-02T22:13:06.123456+00:00', '12345678-1234-5678-1234-567812345678', '1.10']);
  assert.deepEqual(t.kwargs, { when: '2020-11-02', raw: 'abc' });
  assert.equal(
    decodeFails(jsonMessage(V2_HEADERS, '[[{"__type__": "complex", "__value__": [1, 2]}], {}, null]')),
    'body has an unsupported kombu tagged value: unknown kombu tagged value __type__ "complex"',
  );
});

test('compression header: brotli works, bz2 and bad data give reasons', () => {
  const json = Buffer.from('[[7], {}, null]');
  const br = jsonMessage({ ...V2_HEADERS, compression: 'application/x-brotli' }, '', {
    body: zlib.brotliCompressSync(json),
  });
  assert.deepEqual(decodeOk(br).args, [7]);
  const bz = jsonMessage({ ...V2_HEADERS, compression: 'application/x-bz2' }, '', { body: Buffer.from('BZh91AY') });
  assert.equal(decodeFails(bz), 'unsupported compression application/x-bz2 (bz2)');
  const bad = jsonMessage({ ...V2_HEADERS, compression: 'zlib' }, '[[], {}, null]');
  assert.match(decodeFails(bad), /^cannot decompress zlib body \(14 bytes\): /);
  const weird = jsonMessage({ ...V2_HEADERS, compression: 5 }, '[[], {}, null]');
  assert.equal(decodeFails(weird), 'compression header must be a string, got number 5');
});

// ---------------------------------------------------------------------------------------------------------
// eta / expires / retries

test('eta and expires: +00:00, Z, naive (UTC), other offsets, date only', () => {
  const t = (eta: string) => decodeOk(jsonMessage({ ...V2_HEADERS, eta }, [[], {}, null])).eta?.toISOString();
  assert.equal(t('2026-11-25T11:38:10.197072+00:00'), '2026-11-25T11:38:10.197Z');
  assert.equal(t('2026-11-25T11:38:10Z'), '2026-11-25T11:38:10.000Z');
  assert.equal(t('2026-11-25T11:38:10'), '2026-11-25T11:38:10.000Z');
  assert.equal(t('2026-11-25 11:38:10.5'), '2026-11-25T11:38:10.500Z');
  assert.equal(t('2026-11-25T06:38:10-05:00'), '2026-11-25T11:38:10.000Z');
  assert.equal(t('2026-11-25T17:08:10+0530'), '2026-11-25T11:38:10.000Z');
  assert.equal(t('2026-11-25'), '2026-11-25T00:00:00.000Z');
  const exp = decodeOk(jsonMessage({ ...V2_HEADERS, expires: '2020-02-29T23:59:59.999999Z' }, [[], {}, null])).expires;
  assert.equal(exp?.toISOString(), '2020-02-29T23:59:59.999Z');
});

test('invalid eta / expires are refused with the value in the reason', () => {
  const reason = (h: Record<string, string | number>) =>
    decodeFails(jsonMessage({ ...V2_HEADERS, ...h }, [[], {}, null]));
  assert.equal(
    reason({ eta: 'tomorrow' }),
    'invalid eta "tomorrow": not an ISO-8601 date-time: "tomorrow" (task proj.add id id-1)',
  );
  assert.equal(
    reason({ eta: '2021-02-29T00:00:00' }),
    'invalid eta "2021-02-29T00:00:00": day out of range in "2021-02-29T00:00:00" (task proj.add id id-1)',
  );
  assert.equal(
    reason({ expires: '2021-01-01T24:00:00' }),
    'invalid expires "2021-01-01T24:00:00": time out of range in "2021-01-01T24:00:00" (task proj.add id id-1)',
  );
  assert.equal(
    reason({ expires: 1700000000 }),
    'invalid expires: expected an ISO-8601 string, got number 1700000000 (task proj.add id id-1)',
  );
});

test('retries: default 0, integer kept, invalid refused', () => {
  assert.equal(decodeOk(jsonMessage({ ...V2_HEADERS, retries: 3 }, [[], {}, null])).retries, 3);
  assert.equal(decodeOk(jsonMessage({ ...V2_HEADERS, retries: null }, [[], {}, null])).retries, 0);
  assert.equal(
    decodeFails(jsonMessage({ ...V2_HEADERS, retries: -1 }, [[], {}, null])),
    'retries must be a non-negative integer, got number -1 (task proj.add id id-1)',
  );
});

test('minimal celery-node style message (headers lang/task/id only) decodes', () => {
  const t = decodeOk(jsonMessage({ lang: 'js', task: 'proj.add', id: 'n1' }, [[1, 2], {}, {}]));
  assert.equal(t.protocol, 2);
  assert.equal(t.rootId, null);
  assert.equal(t.parentId, null);
  assert.deepEqual(t.args, [1, 2]);
});

test('unknown headers are kept; a "__proto__" header stays data', () => {
  const headers = JSON.parse('{"task": "proj.add", "id": "p1", "x-custom": 1, "__proto__": {"polluted": 1}}');
  const t = decodeOk(jsonMessage(headers, [[], {}, null]));
  assert.equal(t.headers['x-custom'], 1);
  assert.equal(Object.getPrototypeOf(t.headers), Object.prototype);
  assert.ok(Object.keys(t.headers).includes('__proto__'));
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

// ---------------------------------------------------------------------------------------------------------
// v1 and hybrid conversion (Celery's hybrid_to_proto2 / proto1_to_proto2)

test('hybrid: task header + body object with args; message headers override body fields', () => {
  const t = decodeOk(
    jsonMessage(
      { task: 'proj.hdr', id: 'from-header' },
      {
        task: 'proj.body',
        id: 'from-body',
        args: [1],
        kwargs: { k: 2 },
        eta: '2030-01-01T00:00:00',
        retries: 2,
        callbacks: [{ task: 'cb' }],
      },
    ),
  );
  assert.equal(t.protocol, 'hybrid');
  assert.equal(t.task, 'proj.hdr');
  assert.equal(t.id, 'from-header');
  assert.deepEqual(t.args, [1]);
  assert.deepEqual(t.kwargs, { k: 2 });
  assert.equal(t.retries, 2);
  assert.equal(t.eta?.toISOString(), '2030-01-01T00:00:00.000Z');
  assert.deepEqual(t.embed, { callbacks: [{ task: 'cb' }], errbacks: null, chain: null, chord: null });
});

test('hybrid: missing kwargs is {}, null kwargs is refused like Python', () => {
  assert.deepEqual(decodeOk(jsonMessage({ task: 'a', id: 'b' }, { args: [] })).kwargs, {});
  assert.equal(
    decodeFails(jsonMessage({ task: 'a', id: 'b' }, { args: [], kwargs: null })),
    'hybrid task keyword arguments must be a mapping, got null',
  );
  assert.equal(
    decodeFails(jsonMessage({ task: 'a', id: 'b' }, { args: 'x' })),
    'hybrid args must be an array, got string "x"',
  );
});

test('v1 without args: kwargs required, taskset renamed to group', () => {
  const t = decodeOk(
    jsonMessage({}, { task: 'proj.t', id: 'v1-a', kwargs: { a: 1 }, taskset: 'g-1', group: 'ignored' }),
  );
  assert.equal(t.protocol, 1);
  assert.deepEqual(t.args, []);
  assert.deepEqual(t.kwargs, { a: 1 });
  assert.equal(t.group, 'g-1');
  assert.equal(decodeFails(jsonMessage({}, { task: 'proj.t', id: 'v1-b' })), 'v1 message does not have args/kwargs');
  assert.equal(
    decodeFails(jsonMessage({}, { task: 'proj.t', args: [] })),
    'task id must be a non-empty string, got null',
  );
});

test('v1 naive times: UTC when utc is true/absent, process-local time when utc is false', () => {
  const body = { task: 'proj.t', id: 'v1', args: [], kwargs: {}, eta: '2030-06-01T12:00:00' };
  assert.equal(decodeOk(jsonMessage({}, body)).eta?.toISOString(), '2030-06-01T12:00:00.000Z');
  assert.equal(decodeOk(jsonMessage({}, { ...body, utc: true })).eta?.toISOString(), '2030-06-01T12:00:00.000Z');
  const local = decodeOk(jsonMessage({}, { ...body, utc: false })).eta;
  assert.equal(local?.getTime(), new Date(2030, 5, 1, 12, 0, 0).getTime());
  // Explicit offsets are never reinterpreted.
  const aware = decodeOk(jsonMessage({}, { ...body, utc: false, eta: '2030-06-01T12:00:00+02:00' })).eta;
  assert.equal(aware?.toISOString(), '2030-06-01T10:00:00.000Z');
});

test('no task header and a body without task: unknown message', () => {
  assert.equal(
    decodeFails(jsonMessage({}, [[1], {}, null])),
    'unknown message: no "task" header and the body is not a v1 task object (body is an array of 3 elements)',
  );
});

// ---------------------------------------------------------------------------------------------------------
// taskTiming

function timed(eta: string | null, expires: string | null): TaskMessage {
  const headers: Record<string, string> = { task: 't', id: 'i' };
  if (eta) headers.eta = eta;
  if (expires) headers.expires = expires;
  return decodeOk(jsonMessage(headers, [[], {}, null]) as RawMessage);
}

test('taskTiming: run, wait until eta, expired (strictly after expires), expired wins', () => {
  const at = (iso: string) => Date.parse(iso);
  assert.deepEqual(taskTiming(timed(null, null), at('2026-01-01T00:00:00Z')), { state: 'run' });
  const etaTask = timed('2026-01-01T00:01:00Z', null);
  assert.deepEqual(taskTiming(etaTask, at('2026-01-01T00:00:00Z')), {
    state: 'wait',
    dueMs: at('2026-01-01T00:01:00Z'),
  });
  assert.deepEqual(taskTiming(etaTask, at('2026-01-01T00:01:00Z')), { state: 'run' });
  const expTask = timed(null, '2026-01-01T00:05:00Z');
  assert.deepEqual(taskTiming(expTask, at('2026-01-01T00:05:00Z')), { state: 'run' });
  assert.deepEqual(taskTiming(expTask, at('2026-01-01T00:05:00.001Z')), { state: 'expired' });
  // Expired beats a future eta.
  assert.deepEqual(taskTiming(timed('2026-01-01T01:00:00Z', '2026-01-01T00:05:00Z'), at('2026-01-01T00:06:00Z')), {
    state: 'expired',
  });
  // An eta after the expiry can only end expired.
  assert.deepEqual(taskTiming(timed('2026-01-01T01:00:00Z', '2026-01-01T00:05:00Z'), at('2026-01-01T00:00:00Z')), {
    state: 'expired',
  });
  // Captured priority-5 message: eta 11:38:10.197, expires 11:42:10.197.
  const cap = decodeOk(envelopeOk(V2_PRIORITY5_ETA).message);
  assert.deepEqual(taskTiming(cap, at('2026-11-25T11:37:10Z')), {
    state: 'wait',
    dueMs: at('2026-11-25T11:38:10.197Z'),
  });
  assert.deepEqual(taskTiming(cap, at('2026-11-25T11:40:00Z')), { state: 'run' });
  assert.deepEqual(taskTiming(cap, at('2026-11-25T11:43:00Z')), { state: 'expired' });
});
