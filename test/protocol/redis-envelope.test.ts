import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  bindingMember,
  buildEnvelope,
  consumeKeys,
  markRedelivered,
  messagePriority,
  parseBindingMember,
  parseEnvelope,
  parseUnackedRecord,
  priorityKey,
  queueFromKey,
  unackedRecord,
} from '../../protocol/redis-envelope';
import { encodeTaskV2 } from '../../protocol/encode';
import { decodeTask } from '../../protocol/decode';
import type { RawMessage } from '../../protocol/types';
import { FANOUT, UNACKED_RECORD, V1, V2_PLAIN, V2_PRIORITY5_ETA, V2_ZLIB } from './captures';
import { decodeOk, envelopeOk } from './helpers';

const SEP = '\x06\x16';

test('parseEnvelope: capture A.1 [2] — tag, delivery_info, priority, transport-neutral properties', () => {
  const env = envelopeOk(V2_PLAIN);
  assert.equal(env.deliveryTag, 'afe1419a-f1ab-48ce-9462-46c59d03e463');
  assert.equal(env.exchange, '');
  assert.equal(env.routingKey, 'research-q');
  assert.equal(env.priority, 0);
  assert.equal(env.redelivered, false);
  assert.equal(env.message.contentType, 'application/json');
  assert.equal(env.message.contentEncoding, 'utf-8');
  assert.deepEqual(env.message.properties, {
    correlation_id: '11111111-1111-4111-8111-111111111111',
    reply_to: 'f8491acc-3797-3fcb-a3c7-25623f8becc4',
    delivery_mode: 2,
    priority: 0,
  });
  assert.equal(
    env.message.body.toString('utf8'),
    '[[2, 2], {"z": 3}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]',
  );
});

test('parseEnvelope: other captures (v1, priority 5, zlib, fanout)', () => {
  assert.equal(envelopeOk(V1).deliveryTag, '8f2a8154-fbfc-484d-8808-138d761faedf');
  assert.deepEqual(envelopeOk(V1).message.headers, {});
  const p5 = envelopeOk(V2_PRIORITY5_ETA);
  assert.equal(p5.priority, 5);
  assert.equal(p5.deliveryTag, '484e7e3e-2aab-4deb-8dd5-0cd37d9d1833');
  assert.equal(envelopeOk(V2_ZLIB).routingKey, 'research-z');
  const fan = envelopeOk(FANOUT);
  assert.equal(fan.exchange, 'research-fan');
  assert.equal(fan.routingKey, 'rk1');
  assert.equal(fan.message.body.toString(), '{"hello": "fanout"}');
});

test('parseEnvelope: raw (non-base64) body when body_encoding is absent or utf-8 (Appendix B)', () => {
  for (const enc of [undefined, 'utf-8']) {
    const text = JSON.stringify({
      body: '[[1, 2], {}, null]',
      'content-type': 'application/json',
      'content-encoding': 'utf-8',
      headers: { lang: 'js', task: 'proj.add', id: 'raw-1' },
      properties: {
        delivery_info: { exchange: '', routing_key: 'q' },
        delivery_tag: 't1',
        ...(enc ? { body_encoding: enc } : {}),
      },
    });
    const env = envelopeOk(text);
    assert.equal(env.priority, 0);
    assert.deepEqual(decodeOk(env.message).args, [1, 2]);
  }
});

test('parseEnvelope: failures have precise reasons and never throw', () => {
  const good = JSON.parse(V2_PLAIN);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- each case reaches into a different envelope field
  const variant = (mutate: (e: any) => void) => {
    const e = structuredClone(good);
    mutate(e);
    return JSON.stringify(e);
  };
  const reason = (text: string) => {
    const r = parseEnvelope(text);
    assert.equal(r.ok, false, `expected failure for ${text.slice(0, 60)}`);
    return (r as { reason: string }).reason;
  };
  assert.match(reason('not json'), /^envelope is not valid JSON: .* \(text "not json"\)$/);
  assert.equal(reason('[1]'), 'envelope is not a JSON object (got array of 1)');
  assert.equal(reason(variant((e) => delete e.properties)), 'envelope has no properties object (got null)');
  assert.equal(
    reason(variant((e) => delete e.properties.delivery_tag)),
    'envelope properties.delivery_tag must be a non-empty string, got null',
  );
  assert.equal(
    reason(variant((e) => (e.properties.delivery_tag = 7))),
    'envelope properties.delivery_tag must be a non-empty string, got number 7',
  );
  const ctx = ' (delivery_tag afe1419a-f1ab-48ce-9462-46c59d03e463)';
  assert.equal(
    reason(variant((e) => delete e.properties.delivery_info)),
    `envelope has no properties.delivery_info object${ctx}`,
  );
  assert.equal(
    reason(variant((e) => delete e.properties.delivery_info.exchange)),
    `envelope delivery_info.exchange must be a string, got null${ctx}`,
  );
  assert.equal(
    reason(variant((e) => (e.properties.delivery_info.routing_key = 3))),
    `envelope delivery_info.routing_key must be a string, got number 3${ctx}`,
  );
  assert.equal(reason(variant((e) => (e.body = 12))), `envelope body must be a string, got number 12${ctx}`);
  assert.equal(reason(variant((e) => (e.body = 'W1sy!!'))), `envelope body is not valid base64${ctx}`);
  assert.equal(reason(variant((e) => (e.body = 'W1s'))), `envelope body is not valid base64${ctx}`);
  assert.equal(
    reason(variant((e) => (e.properties.body_encoding = 'hex'))),
    `unsupported envelope body_encoding "hex"${ctx}`,
  );
  assert.equal(reason(variant((e) => (e.headers = 'x'))), `envelope headers must be an object, got string "x"${ctx}`);
  assert.equal(
    reason(variant((e) => (e['content-type'] = 5))),
    `envelope content-type must be a string, got number 5${ctx}`,
  );
  assert.equal(
    reason(variant((e) => (e.headers.custom = { __type__: 'nope', __value__: 1 }))),
    `envelope headers: unknown kombu tagged value __type__ "nope"${ctx}`,
  );
  assert.equal(parseEnvelope(undefined as never).ok, false);
});

test('parseEnvelope: kombu 5.3 tagged header values are converted; priority as kombu reads it', () => {
  const e = JSON.parse(V2_PLAIN);
  e.headers.sent = { __type__: 'datetime', __value__: '2026-01-01T00:00:00+00:00' };
  e.properties.priority = '7';
  const env = envelopeOk(JSON.stringify(e));
  assert.equal(env.message.headers.sent, '2026-01-01T00:00:00+00:00');
  assert.equal(env.priority, 7);
  assert.equal(messagePriority({ priority: 42 }), 9);
  assert.equal(messagePriority({ priority: -3 }), 0);
  assert.equal(messagePriority({ priority: 4.9 }), 4);
  assert.equal(messagePriority({ priority: 'high' }), 0);
  assert.equal(messagePriority({}), 0);
});

test('buildEnvelope: kombu envelope layout and content', () => {
  const msg = encodeTaskV2({ task: 'proj.add', id: 'id-7', args: [1], kwargs: {}, origin: 'w@h', priority: 6 });
  const text = buildEnvelope(msg, { deliveryTag: 'tag-7', exchange: '', routingKey: 'celery' });
  const env = JSON.parse(text);
  assert.deepEqual(Object.keys(env), ['body', 'content-encoding', 'content-type', 'headers', 'properties']);
  assert.equal(
    env.body,
    Buffer.from('[[1],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]').toString('base64'),
  );
  assert.equal(env['content-type'], 'application/json');
  assert.equal(env['content-encoding'], 'utf-8');
  assert.deepEqual(env.headers, msg.headers);
  assert.deepEqual(env.properties, {
    correlation_id: 'id-7',
    reply_to: '',
    delivery_mode: 2,
    delivery_info: { exchange: '', routing_key: 'celery' },
    priority: 6,
    body_encoding: 'base64',
    delivery_tag: 'tag-7',
  });
  // Same property key order as the Python capture (minus Python's optional expiration).
  assert.deepEqual(Object.keys(env.properties), Object.keys(JSON.parse(V2_PLAIN).properties));
});

test('buildEnvelope: priority defaults to 0; stale transport keys are replaced', () => {
  const msg: RawMessage = {
    headers: { task: 't', id: 'i' },
    properties: {
      correlation_id: 'i',
      delivery_tag: 'old',
      delivery_info: { exchange: 'x', routing_key: 'y' },
      body_encoding: 'utf-8',
    },
    contentType: 'application/json',
    contentEncoding: 'utf-8',
    body: Buffer.from('[[],{},null]'),
  };
  const env = JSON.parse(buildEnvelope(msg, { deliveryTag: 'new', exchange: '', routingKey: 'q' }));
  assert.deepEqual(env.properties, {
    correlation_id: 'i',
    delivery_info: { exchange: '', routing_key: 'q' },
    priority: 0,
    body_encoding: 'base64',
    delivery_tag: 'new',
  });
});

test('buildEnvelope: refuses to build an envelope a Python worker would crash on', () => {
  const msg = encodeTaskV2({ task: 'proj.add', id: 'id-7', args: [], kwargs: {}, origin: 'w@h' });
  const opts = { deliveryTag: 't', exchange: '', routingKey: 'q' };
  assert.throws(
    () => buildEnvelope(msg, { ...opts, deliveryTag: '' }),
    /deliveryTag must be a non-empty string, got string ""/,
  );
  assert.throws(
    () => buildEnvelope(msg, { ...opts, deliveryTag: undefined as never }),
    /deliveryTag must be a non-empty string, got null/,
  );
  assert.throws(
    () => buildEnvelope(msg, { ...opts, exchange: undefined as never }),
    /exchange must be a string, got null/,
  );
  assert.throws(() => buildEnvelope(msg, { ...opts, routingKey: '' }), /routingKey must be a non-empty string/);
  assert.throws(() => buildEnvelope(msg, undefined as never), /options are required/);
  assert.throws(() => buildEnvelope({ ...msg, body: 'x' as never }, opts), /body must be a Buffer/);
  assert.throws(() => buildEnvelope({ ...msg, contentType: '' }, opts), /contentType must be a non-empty string/);
  assert.throws(
    () => buildEnvelope({ ...msg, properties: { priority: 'high' } }, opts),
    /priority must be a non-negative integer, got string "high"/,
  );
  assert.throws(
    () => buildEnvelope({ ...msg, headers: { ...msg.headers, x: { __type__: 'a', __value__: 1 } } }, opts),
    /buildEnvelope: .*__type__ and __value__/,
  );
});

test('round trip: encodeTaskV2 → buildEnvelope → parseEnvelope → decodeTask', () => {
  const out = encodeTaskV2({
    task: 'posthog.tasks.process_event.process_event',
    id: 'rt-1',
    args: [],
    kwargs: { distinct_id: 'd', data: { event: '$pageview', properties: { ü: [1, 2.5, null] } }, team_id: 2 },
    origin: 'w@h',
    priority: 3,
    eta: new Date('2030-01-01T00:00:00.123Z'),
    parentId: 'in-1',
    rootId: 'in-1',
  });
  const env = envelopeOk(buildEnvelope(out, { deliveryTag: 'dt-1', exchange: '', routingKey: 'celery' }));
  assert.equal(env.deliveryTag, 'dt-1');
  assert.equal(env.priority, 3);
  assert.deepEqual(env.message.headers, out.headers);
  assert.deepEqual(env.message.properties, out.properties);
  assert.deepEqual(env.message.body, out.body);
  const r = decodeTask(env.message);
  if (!r.ok) assert.fail(r.reason);
  assert.equal(r.task.protocol, 2);
  assert.equal(r.task.id, 'rt-1');
  assert.equal(r.task.task, 'posthog.tasks.process_event.process_event');
  assert.deepEqual(r.task.args, []);
  assert.deepEqual(r.task.kwargs, {
    distinct_id: 'd',
    data: { event: '$pageview', properties: { ü: [1, 2.5, null] } },
    team_id: 2,
  });
  assert.equal(r.task.eta?.toISOString(), '2030-01-01T00:00:00.123Z');
  assert.equal(r.task.parentId, 'in-1');
  assert.equal(r.task.rootId, 'in-1');
  assert.deepEqual(r.task.embed, { callbacks: null, errbacks: null, chain: null, chord: null });
});

test('priorityKey: kombu steps [0, 3, 6, 9], clamping, bare queue for step 0', () => {
  const keys = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((p) => priorityKey('q', p));
  assert.deepEqual(keys, [
    'q',
    'q',
    'q',
    `q${SEP}3`,
    `q${SEP}3`,
    `q${SEP}3`,
    `q${SEP}6`,
    `q${SEP}6`,
    `q${SEP}6`,
    `q${SEP}9`,
  ]);
  assert.equal(priorityKey('q', 15), `q${SEP}9`);
  assert.equal(priorityKey('q', 255), `q${SEP}9`);
  assert.equal(priorityKey('q', -4), 'q');
  assert.equal(priorityKey('q', NaN), 'q');
  assert.equal(priorityKey('q', 5.9), `q${SEP}3`);
  assert.equal(priorityKey('research-q', 5), 'research-q\x06\x163');
  assert.equal(priorityKey('q', 7, { sep: ':', steps: [0, 5] }), 'q:5');
  // Python's steps[bisect(...) - 1] wraps to the last step below the first one.
  assert.equal(priorityKey('q', 1, { steps: [2, 5] }), `q${SEP}5`);
});

test('consumeKeys: BRPOP order, priority 0 first, steps outer and queues inner', () => {
  assert.deepEqual(consumeKeys('q'), ['q', `q${SEP}3`, `q${SEP}6`, `q${SEP}9`]);
  assert.deepEqual(consumeKeys(['a', 'b']), [
    'a',
    'b',
    `a${SEP}3`,
    `b${SEP}3`,
    `a${SEP}6`,
    `b${SEP}6`,
    `a${SEP}9`,
    `b${SEP}9`,
  ]);
  assert.deepEqual(consumeKeys('q', { sep: '|', steps: [0, 5] }), ['q', 'q|5']);
  assert.equal(queueFromKey(`q${SEP}3`), 'q');
  assert.equal(queueFromKey('q'), 'q');
  assert.equal(queueFromKey(`a${SEP}b${SEP}9`), `a${SEP}b`);
});

test('unackedRecord: byte-identical to the value kombu stored (capture A.3)', () => {
  assert.equal(unackedRecord(V2_PLAIN, '', 'research-q'), UNACKED_RECORD);
  assert.throws(() => unackedRecord('[1]', '', 'q'), /envelope text is not a JSON object/);
  assert.throws(() => unackedRecord(V2_PLAIN, undefined as never, 'q'), /exchange must be a string/);
});

test('parseUnackedRecord: returns the embedded envelope text verbatim', () => {
  const rec = parseUnackedRecord(UNACKED_RECORD);
  if (!rec.ok) assert.fail(rec.reason);
  assert.equal(rec.envelopeText, V2_PLAIN);
  assert.equal(rec.exchange, '');
  assert.equal(rec.routingKey, 'research-q');
  assert.equal(
    (rec.envelope.properties as Record<string, unknown>).delivery_tag,
    'afe1419a-f1ab-48ce-9462-46c59d03e463',
  );
  // Our own record with awkward strings survives too.
  const env = '{"body": "e30=", "headers": {"q": "a\\"],\\"b"}, "properties": {}}';
  const own = parseUnackedRecord(unackedRecord(env, 'ex "1"', 'rk\\]'));
  if (!own.ok) assert.fail(own.reason);
  assert.equal(own.envelopeText, env);
  assert.equal(own.exchange, 'ex "1"');
  assert.equal(own.routingKey, 'rk\\]');
  // Compact (no spaces) records as other clients may write them.
  const compact = parseUnackedRecord('[{"a":1},"x","y"]');
  assert.deepEqual(compact.ok && [compact.envelopeText, compact.exchange, compact.routingKey], ['{"a":1}', 'x', 'y']);
});

test('parseUnackedRecord: malformed records give reasons', () => {
  const reason = (t: string) => {
    const r = parseUnackedRecord(t);
    return r.ok ? 'ok' : r.reason;
  };
  assert.match(reason('nope'), /^unacked record is not valid JSON: /);
  assert.equal(reason('[{}, ""]'), 'unacked record must be [envelope, exchange, routing_key], got array of 2');
  assert.equal(reason('["x", "", "q"]'), 'unacked record envelope is not an object (got string "x")');
  assert.equal(reason('[{}, 1, "q"]'), 'unacked record exchange is not a string (got number 1)');
  assert.equal(reason('[{}, "", null]'), 'unacked record routing key is not a string (got null)');
});

test('markRedelivered: sets both flags like kombu restore; delivery tag and body unchanged', () => {
  const text = markRedelivered(V2_PLAIN);
  const e = JSON.parse(text);
  assert.equal(e.headers.redelivered, true);
  assert.deepEqual(e.properties.delivery_info, { exchange: '', routing_key: 'research-q', redelivered: true });
  const env = envelopeOk(text);
  assert.equal(env.redelivered, true);
  assert.equal(env.deliveryTag, 'afe1419a-f1ab-48ce-9462-46c59d03e463');
  assert.deepEqual(env.message.body, envelopeOk(V2_PLAIN).message.body);
  // Tagged values in headers are preserved as tags (not converted) when re-serialized.
  const tagged = JSON.parse(V2_PLAIN);
  tagged.headers.t = { __type__: 'datetime', __value__: '2026-01-01T00:00:00' };
  assert.deepEqual(JSON.parse(markRedelivered(JSON.stringify(tagged))).headers.t, tagged.headers.t);
  // No headers object: kombu's KeyError stops before marking anything.
  assert.deepEqual(JSON.parse(markRedelivered('{"properties": {"delivery_info": {}}}')), {
    properties: { delivery_info: {} },
  });
  assert.throws(() => markRedelivered('nope'), /markRedelivered: envelope is not valid JSON/);
  assert.throws(() => markRedelivered('[]'), /markRedelivered: envelope is not a JSON object/);
});

test('bindingMember / parseBindingMember', () => {
  assert.equal(bindingMember('research-q', 'research-q'), 'research-q\x06\x16\x06\x16research-q');
  assert.equal(bindingMember('posthog-plugins', 'posthog-plugins'), 'posthog-plugins\x06\x16\x06\x16posthog-plugins');
  assert.deepEqual(parseBindingMember('research-rk\x06\x16\x06\x16research-custom'), {
    routingKey: 'research-rk',
    pattern: '',
    queue: 'research-custom',
  });
  assert.deepEqual(parseBindingMember('a|b.*|c', { sep: '|' }), { routingKey: 'a', pattern: 'b.*', queue: 'c' });
  assert.equal(parseBindingMember('no-separators'), null);
  assert.equal(parseBindingMember(`a${SEP}b${SEP}c${SEP}d`), null);
});
