import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  amqpPublishOptions,
  jsonFromFieldValue,
  pyAmqpFieldTable,
  pyAmqpFieldValue,
  rawFromAmqp,
  utf8OrBase64,
  type AmqpLikeProperties,
} from '../../protocol/amqp-properties';
import type { JsonObject } from '../../protocol/types';

/**
 * docs/celery-wire.md#captures A.4, last capture: a Celery 5.2.6 message (countdown=30, expires=120, priority=3) as
 * amqplib 0.10.9 `ch.get` returned it, verbatim.
 */
const AMQPLIB_CAPTURE = JSON.parse(
  '{"fields":{"deliveryTag":1,"redelivered":false,"exchange":"","routingKey":"research-q","messageCount":0},"properties":{"contentType":"application/json","contentEncoding":"utf-8","headers":{"lang":"py","task":"research.tasks.add","id":"dddddddd-0000-4000-8000-000000000001","shadow":null,"eta":"2026-11-25T11:37:41.144687+00:00","expires":"2026-11-25T11:39:11.144687+00:00","group":null,"group_index":null,"retries":0,"timelimit":[null,null],"root_id":"dddddddd-0000-4000-8000-000000000001","parent_id":null,"argsrepr":"[1, 2]","kwargsrepr":"{}","origin":"gen2025@vm","ignore_result":false},"deliveryMode":2,"priority":3,"correlationId":"dddddddd-0000-4000-8000-000000000001","replyTo":"3e0fc4f0-9903-3b47-be05-ef811656f86b","expiration":"120000"},"body":"[[1, 2], {}, {\\"callbacks\\": null, \\"errbacks\\": null, \\"chain\\": null, \\"chord\\": null}]"}',
) as { fields: JsonObject; properties: AmqpLikeProperties; body: string };

/**
 * A.4 py-amqp `basic_get` captures (properties in kombu's snake_case), rewritten as the camelCase object amqplib
 * builds from the same frame (amqplib leaves absent properties `undefined`).
 */
const PY_V2_PLAIN: AmqpLikeProperties = {
  contentType: 'application/json',
  contentEncoding: 'utf-8',
  headers: {
    lang: 'py',
    task: 'research.tasks.add',
    id: '11111111-1111-4111-8111-111111111111',
    shadow: null,
    eta: null,
    expires: null,
    group: null,
    group_index: null,
    retries: 0,
    timelimit: [null, null],
    root_id: '11111111-1111-4111-8111-111111111111',
    parent_id: null,
    argsrepr: '[2, 2]',
    kwargsrepr: "{'z': 3}",
    origin: 'gen2022@vm',
    ignore_result: false,
  },
  deliveryMode: 2,
  priority: 0,
  correlationId: '11111111-1111-4111-8111-111111111111',
  replyTo: '986da7cd-ab1b-3aa5-bb8c-3c533eb95b8a',
  expiration: undefined,
  messageId: undefined,
  timestamp: undefined,
  type: undefined,
  userId: undefined,
  appId: undefined,
};
const PY_V2_PLAIN_BODY = '[[2, 2], {"z": 3}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]';

/** A.4 third message: protocol v1, empty headers table. */
const PY_V1: AmqpLikeProperties = {
  contentType: 'application/json',
  contentEncoding: 'utf-8',
  headers: {},
  deliveryMode: 2,
  priority: 0,
  correlationId: '33333333-3333-4333-8333-333333333333',
  replyTo: 'bb81f09b-848f-30a9-b9d0-8c726f360b32',
};

describe('rawFromAmqp', () => {
  it('maps the amqplib capture of a Celery message to snake_case properties', () => {
    const raw = rawFromAmqp(AMQPLIB_CAPTURE.properties, Buffer.from(AMQPLIB_CAPTURE.body));
    assert.equal(raw.contentType, 'application/json');
    assert.equal(raw.contentEncoding, 'utf-8');
    assert.deepEqual(raw.properties, {
      correlation_id: 'dddddddd-0000-4000-8000-000000000001',
      reply_to: '3e0fc4f0-9903-3b47-be05-ef811656f86b',
      delivery_mode: 2,
      priority: 3,
      expiration: '120000',
    });
    assert.deepEqual(raw.headers, AMQPLIB_CAPTURE.properties.headers);
    assert.equal(raw.headers.eta, '2026-11-25T11:37:41.144687+00:00');
    assert.deepEqual(raw.headers.timelimit, [null, null]);
    assert.equal(raw.body.toString(), AMQPLIB_CAPTURE.body);
  });

  it('leaves undefined properties out and keeps priority 0', () => {
    const raw = rawFromAmqp(PY_V2_PLAIN, Buffer.from(PY_V2_PLAIN_BODY));
    assert.deepEqual(raw.properties, {
      correlation_id: '11111111-1111-4111-8111-111111111111',
      reply_to: '986da7cd-ab1b-3aa5-bb8c-3c533eb95b8a',
      delivery_mode: 2,
      priority: 0,
    });
    assert.equal(raw.headers.task, 'research.tasks.add');
    assert.equal(raw.headers.ignore_result, false);
  });

  it('gives priority 0 when the publisher sent none (celery-node, camelCase producers)', () => {
    const raw = rawFromAmqp(
      { contentType: 'application/json', headers: { task: 't', id: 'x' } },
      Buffer.from('[[],{},{}]'),
    );
    assert.equal(raw.properties.priority, 0);
    assert.equal(raw.contentEncoding, '');
  });

  it('keeps a v1 message: empty headers, body untouched', () => {
    const body = Buffer.from(
      '{"task": "research.tasks.add", "id": "33333333-3333-4333-8333-333333333333", "args": [2, 2]}',
    );
    const raw = rawFromAmqp(PY_V1, body);
    assert.deepEqual(raw.headers, {});
    assert.equal(raw.body, body);
  });

  it('treats a missing or malformed headers table as {}', () => {
    assert.deepEqual(rawFromAmqp({}, Buffer.alloc(0)).headers, {});
    assert.deepEqual(rawFromAmqp({ headers: 'nope' }, Buffer.alloc(0)).headers, {});
    assert.deepEqual(rawFromAmqp({ headers: [1] }, Buffer.alloc(0)).headers, {});
    assert.equal(rawFromAmqp({}, Buffer.alloc(0)).contentType, '');
  });

  it('keeps the rarer AMQP properties under their snake_case names', () => {
    const raw = rawFromAmqp(
      { messageId: 'm1', timestamp: 1700000000, type: 'x', userId: 'guest', appId: 'app' },
      Buffer.alloc(0),
    );
    assert.deepEqual(raw.properties, {
      message_id: 'm1',
      timestamp: 1700000000,
      type: 'x',
      user_id: 'guest',
      app_id: 'app',
      priority: 0,
    });
  });
});

describe('jsonFromFieldValue', () => {
  it('turns amqplib decoded exotic values into JSON', () => {
    // py-amqp writes datetime as 'T' (seconds) and Decimal as 'D'; amqplib hands them over tagged.
    assert.equal(jsonFromFieldValue({ '!': 'timestamp', value: 1577836800 }), '2020-01-01T00:00:00.000Z');
    assert.equal(jsonFromFieldValue({ '!': 'decimal', value: { places: 2, digits: 110 } }), '1.10');
    assert.equal(jsonFromFieldValue({ '!': 'decimal', value: { places: 3, digits: 5 } }), '0.005');
    assert.equal(jsonFromFieldValue({ '!': 'decimal', value: { places: 0, digits: 7 } }), '7');
    assert.equal(jsonFromFieldValue(Buffer.from('héllo')), 'héllo');
    assert.equal(jsonFromFieldValue(Buffer.from([0xff, 0x00])), '/wA=');
    assert.equal(jsonFromFieldValue(BigInt(5)), 5);
    assert.equal(jsonFromFieldValue(undefined), null);
    assert.equal(jsonFromFieldValue(Number.NaN), 'NaN');
    assert.deepEqual(jsonFromFieldValue({ a: [1, { b: null }], c: true }), { a: [1, { b: null }], c: true });
  });

  it('utf8OrBase64 only falls back when the bytes are not UTF-8', () => {
    assert.deepEqual(utf8OrBase64(Buffer.from('[1, "\uFFFD"]')), { text: '[1, "\uFFFD"]', encoding: 'utf-8' });
    assert.deepEqual(utf8OrBase64(Buffer.from([0x78, 0x9c, 0xff])), { text: 'eJz/', encoding: 'base64' });
  });
});

describe('amqpPublishOptions', () => {
  it('sets exactly the properties Python Celery 5.2 sets', () => {
    const raw = rawFromAmqp(AMQPLIB_CAPTURE.properties, Buffer.from(AMQPLIB_CAPTURE.body));
    const opts = amqpPublishOptions(raw);
    assert.deepEqual(Object.keys(opts).sort(), [
      'contentEncoding',
      'contentType',
      'correlationId',
      'deliveryMode',
      'expiration',
      'headers',
      'priority',
      'replyTo',
    ]);
    assert.equal(opts.contentType, 'application/json');
    assert.equal(opts.contentEncoding, 'utf-8');
    assert.equal(opts.deliveryMode, 2);
    assert.equal(opts.priority, 3);
    assert.equal(opts.correlationId, 'dddddddd-0000-4000-8000-000000000001');
    assert.equal(opts.replyTo, '3e0fc4f0-9903-3b47-be05-ef811656f86b');
    assert.equal(opts.expiration, '120000');
    // Integers carry explicit 32-bit tags, everything else is passed as is.
    assert.deepEqual(opts.headers.retries, { '!': 'int', value: 0 });
    assert.equal(opts.headers.task, 'research.tasks.add');
    assert.deepEqual(opts.headers.timelimit, [null, null]);
    assert.equal(opts.headers.ignore_result, false);
  });

  it('round-trips a capture: rawFromAmqp(amqpPublishOptions(raw)) gives the same RawMessage', () => {
    for (const props of [AMQPLIB_CAPTURE.properties, PY_V2_PLAIN, PY_V1]) {
      const raw = rawFromAmqp(props, Buffer.from('[[],{},{}]'));
      const opts = amqpPublishOptions(raw);
      const untagged = JSON.parse(JSON.stringify(opts.headers), (_k, v: unknown) =>
        v !== null && typeof v === 'object' && !Array.isArray(v) && (v as { '!'?: string })['!'] === 'int'
          ? (v as { value: number }).value
          : v,
      ) as JsonObject;
      const again = rawFromAmqp({ ...opts, headers: untagged }, raw.body);
      assert.deepEqual(again, raw);
    }
  });

  it('omits expiration when absent, stringifies a numeric one, defaults priority to 0', () => {
    const base = { headers: {}, contentType: 'application/json', contentEncoding: 'utf-8', body: Buffer.alloc(0) };
    const a = amqpPublishOptions({ ...base, properties: { correlation_id: 'c', reply_to: '' } });
    assert.equal('expiration' in a, false);
    assert.equal(a.priority, 0);
    assert.equal(a.replyTo, '');
    assert.equal(amqpPublishOptions({ ...base, properties: { expiration: 300000.7 } }).expiration, '300000');
    assert.equal(amqpPublishOptions({ ...base, properties: { expiration: null } }).expiration, undefined);
    assert.equal(amqpPublishOptions({ ...base, properties: { priority: 300 } }).priority, 255);
    assert.equal(amqpPublishOptions({ ...base, properties: { priority: -2 } }).priority, 0);
    assert.equal(amqpPublishOptions({ ...base, properties: {} }).correlationId, undefined);
  });
});

describe('pyAmqpFieldValue (what py-amqp can read back)', () => {
  it('tags every integer: int32 → int, larger positive → long, larger negative → double', () => {
    assert.deepEqual(pyAmqpFieldValue(-5), { '!': 'int', value: -5 });
    assert.deepEqual(pyAmqpFieldValue(300), { '!': 'int', value: 300 });
    assert.deepEqual(pyAmqpFieldValue(2147483647), { '!': 'int', value: 2147483647 });
    assert.deepEqual(pyAmqpFieldValue(2 ** 40), { '!': 'long', value: 2 ** 40 });
    assert.deepEqual(pyAmqpFieldValue(-(2 ** 40)), { '!': 'double', value: -(2 ** 40) });
    assert.equal(pyAmqpFieldValue(1.5), 1.5);
    assert.equal(pyAmqpFieldValue('s'), 's');
    assert.equal(pyAmqpFieldValue(null), null);
    assert.deepEqual(pyAmqpFieldValue([1, 'a']), [{ '!': 'int', value: 1 }, 'a']);
  });

  it("wraps an object with its own '!' key so amqplib does not take it for a type tag", () => {
    assert.deepEqual(pyAmqpFieldValue({ '!': 'int', value: 'x' }), {
      '!': 'object',
      value: { '!': 'int', value: 'x' },
    });
    assert.deepEqual(pyAmqpFieldTable({ a: { b: 1 } }), { a: { b: { '!': 'int', value: 1 } } });
  });

  it('encodes with amqplib to the tags py-amqp reads as signed integers', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const codec = require('amqplib/lib/codec') as {
      encodeTable: (buf: Buffer, val: unknown, offset: number) => number;
    };
    const encode = (v: unknown): Buffer => {
      const buf = Buffer.alloc(256);
      const n = codec.encodeTable(buf, { k: v }, 0);
      return buf.subarray(4, n); // skip the table length
    };
    // untagged, amqplib would write 's' (py-amqp: short string!) and 'b' (py-amqp: unsigned)
    assert.equal(String.fromCharCode(encode(300)[2]!), 's');
    assert.equal(String.fromCharCode(encode(pyAmqpFieldValue(300))[2]!), 'I');
    assert.equal(String.fromCharCode(encode(pyAmqpFieldValue(-5))[2]!), 'I');
    assert.equal(String.fromCharCode(encode(pyAmqpFieldValue(2 ** 40))[2]!), 'l');
    assert.equal(String.fromCharCode(encode(pyAmqpFieldValue({ '!': 'x' }))[2]!), 'F');
  });
});
