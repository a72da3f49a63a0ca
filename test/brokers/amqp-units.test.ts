// Unit tests of the AMQP broker's pure parts (no RabbitMQ needed): URL parsing, 406 error wording, field tables.
import '../../src/brokers/amqp/amqplib-compat';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UNDECODABLE_TABLE, amqplibPatchState, decodeFieldTable } from '../../src/brokers/amqp/amqplib-compat';
import { AmqpTopologyError, describeDeclareError, parseRabbitValue } from '../../src/brokers/amqp/errors';
import { parseAmqpUrl } from '../../src/brokers/amqp/url';

describe('parseAmqpUrl', () => {
  it('parses the Celery forms', () => {
    const a = parseAmqpUrl('amqp://guest:guest@127.0.0.1:5672//');
    assert.deepEqual(
      { ...a, displayUrl: undefined },
      {
        tls: false,
        hostname: '127.0.0.1',
        port: 5672,
        username: 'guest',
        password: 'guest',
        vhost: '/',
        unknownOptions: [],
        displayUrl: undefined,
      },
    );
    assert.equal(a.displayUrl, 'amqp://guest:**@127.0.0.1:5672//');

    const b = parseAmqpUrl('amqp://rabbit');
    assert.equal(b.hostname, 'rabbit');
    assert.equal(b.port, 5672);
    assert.equal(b.username, 'guest');
    assert.equal(b.password, 'guest');
    assert.equal(b.vhost, '/');
    assert.equal(b.displayUrl, 'amqp://rabbit');

    assert.equal(parseAmqpUrl('amqp://h/').vhost, '/');
    assert.equal(parseAmqpUrl('amqp://h/posthog').vhost, 'posthog');
    assert.equal(parseAmqpUrl('amqp://h/%2Fprod').vhost, '/prod');
    assert.equal(parseAmqpUrl('amqp://h//prod').vhost, '/prod');
  });

  it('amqps defaults to 5671 and TLS; explicit ports win', () => {
    const t = parseAmqpUrl('amqps://u:p@mq.example.com/vh');
    assert.equal(t.tls, true);
    assert.equal(t.port, 5671);
    assert.equal(parseAmqpUrl('amqps://mq:5999').port, 5999);
    assert.equal(parseAmqpUrl('pyamqp://mq').tls, false);
  });

  it('percent-decodes user, password and vhost; masks the password', () => {
    const u = parseAmqpUrl('amqp://us%40er:p%40ss%3Aw%2Frd@host:1234/v%20h?heartbeat=30&connection_timeout=2.5');
    assert.equal(u.username, 'us@er');
    assert.equal(u.password, 'p@ss:w/rd');
    assert.equal(u.vhost, 'v h');
    assert.equal(u.port, 1234);
    assert.equal(u.heartbeat, 30);
    assert.equal(u.connectionTimeoutMs, 2500);
    assert.equal(u.displayUrl, 'amqp://us%40er:**@host:1234/v%20h?heartbeat=30&connection_timeout=2.5');
    assert.equal(parseAmqpUrl('amqp://onlyuser@h').password, '');
  });

  it('handles IPv6, unknown options and bad input', () => {
    const v6 = parseAmqpUrl('amqp://[::1]:5673/x?frame_max=65536&foo=1');
    assert.equal(v6.hostname, '::1');
    assert.equal(v6.port, 5673);
    assert.equal(v6.frameMax, 65536);
    assert.deepEqual(v6.unknownOptions, ['foo']);
    assert.throws(() => parseAmqpUrl('redis://x'), /unsupported AMQP URL scheme/);
    assert.throws(() => parseAmqpUrl('amqp://h:99999'), /invalid port/);
    assert.throws(() => parseAmqpUrl('amqp://h?heartbeat=abc'), /heartbeat/);
    assert.throws(
      () => parseAmqpUrl('amqp://u:%zz@h'),
      (e: Error) => /percent-encoding/.test(e.message) && !e.message.includes('%zz'),
    );
  });
});

describe('describeDeclareError', () => {
  const ctx = {
    kind: 'queue' as const,
    name: 'q',
    vhost: '/',
    passive: false,
    queueArguments: {},
    argumentsFlag: '--amqp-queue-arguments',
  };
  const amqplibError = (code: number, text: string): Error =>
    Object.assign(new Error(`Operation failed: QueueDeclare; ${code} (PRECONDITION-FAILED) with message "${text}"`), {
      code,
    });

  it('names the queue and the argument and suggests matching arguments or --amqp-passive', () => {
    const e = describeDeclareError(
      amqplibError(
        406,
        "PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue 'posthog-plugins' in vhost '/': received none but current is the value '10' of type 'signedint'",
      ),
      { ...ctx, name: 'posthog-plugins' },
    );
    assert.ok(e instanceof AmqpTopologyError);
    assert.equal(e.code, 406);
    assert.equal(e.entity, 'posthog-plugins');
    assert.equal(e.argument, 'x-max-priority');
    assert.match(e.message, /queue 'posthog-plugins' in vhost '\/'/);
    assert.match(e.message, /argument 'x-max-priority' differs/);
    assert.match(e.message, /--amqp-passive/);
    assert.match(e.message, /--amqp-queue-arguments '\{"x-max-priority":10\}'/);
  });

  it('suggests removing an argument the existing queue does not have', () => {
    const e = describeDeclareError(
      amqplibError(
        406,
        "PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue 'q' in vhost 'v': received the value '10' of type 'byte' but current is none",
      ),
      { ...ctx, queueArguments: { 'x-max-priority': 10, 'x-queue-mode': 'lazy' } },
    ) as AmqpTopologyError;
    assert.match(e.message, /--amqp-queue-arguments '\{"x-queue-mode":"lazy"\}'/);
  });

  it('explains durable / exchange type mismatches and passive 404s', () => {
    const d = describeDeclareError(
      amqplibError(
        406,
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'research-q' in vhost '/': received 'true' but current is 'false'",
      ),
      ctx,
    ) as AmqpTopologyError;
    assert.equal(d.argument, 'durable');
    assert.match(d.message, /durable/);
    assert.match(d.message, /--amqp-passive/);
    const x = describeDeclareError(
      amqplibError(
        406,
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'q' in vhost '/': received 'direct' but current is 'topic'",
      ),
      ctx,
    ) as AmqpTopologyError;
    assert.equal(x.kind, 'exchange');
    assert.match(x.message, /exchange 'q'.*'type' differs/);
    const nf = describeDeclareError(amqplibError(404, "NOT_FOUND - no queue 'q' in vhost 'v'"), {
      ...ctx,
      passive: true,
    }) as AmqpTopologyError;
    assert.equal(nf.code, 404);
    assert.match(nf.message, /queue 'q' does not exist in vhost 'v'.*passive/);
    const other = new Error('socket hang up');
    assert.equal(describeDeclareError(other, ctx), other);
  });

  it('parses RabbitMQ values', () => {
    assert.deepEqual(parseRabbitValue("the value '10' of type 'signedint'"), { present: true, value: 10 });
    assert.deepEqual(parseRabbitValue("the value 'quorum' of type 'longstr'"), { present: true, value: 'quorum' });
    assert.deepEqual(parseRabbitValue('none'), { present: false });
    assert.deepEqual(parseRabbitValue("'true'"), { present: true, value: 'true' });
  });
});

describe('amqplib field-table patch', () => {
  it('is installed (this file imports it before amqplib)', () => {
    assert.equal(amqplibPatchState.patched, true, amqplibPatchState.reason);
  });

  /** Field table bytes as py-amqp 5.1 `dumps('F', ...)` writes them. */
  function pyTable(entries: Array<[string, string, Buffer]>): Buffer {
    return Buffer.concat(
      entries.map(([k, tag, v]) => Buffer.concat([Buffer.from([k.length]), Buffer.from(k), Buffer.from(tag), v])),
    );
  }
  const int64 = (n: bigint): Buffer => {
    const b = Buffer.alloc(8);
    b.writeBigInt64BE(n);
    return b;
  };
  const int32 = (n: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeInt32BE(n);
    return b;
  };

  it("decodes py-amqp's 'L' (int64) that amqplib rejects", () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const codec = require('amqplib/lib/codec') as { decodeFields: (b: Buffer) => Record<string, unknown> };
    const table = pyTable([
      ['big', 'L', int64(2n ** 40n)],
      ['neg', 'L', int64(-(2n ** 40n))],
      ['n', 'I', int32(-5)],
      ['s', 'S', Buffer.concat([int32(2), Buffer.from('hi')])],
    ]);
    assert.deepEqual(codec.decodeFields(table), { big: 2 ** 40, neg: -(2 ** 40), n: -5, s: 'hi' });
    assert.deepEqual(decodeFieldTable(table), { big: 2 ** 40, neg: -(2 ** 40), n: -5, s: 'hi' });
  });

  it('marks a table it cannot decode instead of throwing', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const codec = require('amqplib/lib/codec') as { decodeFields: (b: Buffer) => Record<string | symbol, unknown> };
    const bad = pyTable([['x', 'Z', Buffer.from([1, 2, 3])]]);
    const out = codec.decodeFields(bad);
    assert.deepEqual(Object.keys(out), []);
    assert.match((out[UNDECODABLE_TABLE] as { error: string }).error, /type tag "Z"/);
  });
});

describe('rawTextOf', () => {
  it('writes the set-aside record of a message whose headers are nested too deep to stringify', async () => {
    const { rawTextOf } = await import('../../src/brokers/amqp/consumer');
    let deep: Record<string, unknown> = {};
    for (let i = 0; i < 20_000; i++) deep = { d: deep };
    const msg = {
      fields: { deliveryTag: 1, redelivered: false, exchange: '', routingKey: 'q' },
      properties: { headers: { id: 't', x: deep }, correlationId: 'marker', contentType: 'application/json' },
      content: Buffer.from('[[], {}, null]'),
    } as unknown as Parameters<typeof rawTextOf>[0];
    const record = JSON.parse(rawTextOf(msg)) as { properties: Record<string, unknown>; body: string };
    assert.equal(record.body, '[[], {}, null]');
    assert.equal(record.properties['correlationId'], 'marker');
    assert.equal(record.properties['headers'], '(left out: headers too deeply nested (more than 128 levels))');
  });
});
