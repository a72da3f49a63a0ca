/**
 * The harness's own test: real Python producer → broker → (this test moves the raw messages, no Node
 * worker) → real Python Celery sink worker executes process_event → records carry exactly the sent values.
 * Redis db 14 and RabbitMQ vhost posthog-plugins-test-harness (see services.ts).
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import Redis from 'ioredis';
import * as amqp from 'amqplib';
import {
  PROCESS_EVENT_TASK,
  sendEvents,
  startSinkWorker,
  type JsonObject,
  type SentTask,
  type SinkRecord,
  type SinkWorker,
} from './python';
import { amqpMessages, amqpMessageBody, messagesIndex, redisMessages, type MessageCase } from './fixtures';
import { amqpUrl, flushRedisDb, HARNESS_REDIS_DB, redisUrl, resetVhost, deleteVhost, waitUntil } from './services';

const IN_QUEUE = 'harness-in';
const PARAMS = ['distinct_id', 'ip', 'site_url', 'data', 'team_id', 'now', 'sent_at'] as const;

/** The seven values the producer sent, by name, whatever the call style. */
function sentValues(t: SentTask): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  PARAMS.forEach((name, i) => {
    out[name] = t.args.length > 0 ? t.args[i] : t.kwargs[name];
  });
  return out;
}

function assertSameValues(sent: SentTask[], records: SinkRecord[]): void {
  const byId = new Map(records.map((r) => [r.task_id, r]));
  assert.equal(byId.size, records.length, 'each task executed once');
  for (const t of sent) {
    const r = byId.get(t.id);
    assert.ok(r, `task ${t.id} (index ${t.index}) was executed`);
    const expected = sentValues(t);
    for (const name of PARAMS) assert.deepEqual(r[name], expected[name], `${name} of task index ${t.index}`);
    if (t.args.length > 0) {
      assert.equal(r.positional, 7);
      assert.deepEqual(r.keywords, []);
    } else {
      assert.equal(r.positional, 0);
      assert.deepEqual(r.keywords, [...PARAMS].sort());
    }
  }
}

const unicodeEvent: JsonObject = {
  event: 'Einkauf — café ☕ 東京 🎉',
  properties: {
    distinct_id: 'jürgen-ß-😀',
    index: 100,
    city: 'Köln',
    emoji: '👩‍👩‍👧',
    nested: { a: [1, 2.5, null, true] },
  },
  uuid: '0178a3ab-d163-0000-4b55-ceadcc27cba1',
  timestamp: '2020-11-02T22:13:06.000Z',
};

/** Sends the standard set of cases to `IN_QUEUE` and returns all tasks sent. */
async function sendCases(brokerUrl: string): Promise<SentTask[]> {
  const common = { brokerUrl, queue: IN_QUEUE, taskName: PROCESS_EVENT_TASK, teamId: 7 };
  const sent: SentTask[] = [];
  // PostHog capture style: 7 positional args, sent_at a datetime (→ "...Z")
  sent.push(...(await sendEvents({ ...common, count: 5, startIndex: 0 })));
  // the posthog-plugins output style: args [] + kwargs, ip null, sent_at null, priority
  sent.push(
    ...(await sendEvents({ ...common, count: 2, startIndex: 10, asKwargs: true, ip: null, sentAt: null, priority: 5 })),
  );
  // explicit data, non-ASCII, protocol 1, compressed, fixed now and ids
  sent.push(
    ...(await sendEvents({
      ...common,
      events: [unicodeEvent],
      startIndex: 100,
      protocol: 1,
      now: '2020-11-02T22:13:06.123456+00:00',
      sentAt: '2020-11-02T22:13:05.987+00:00',
      idPrefix: '00000000-0000-4000-8000-',
    })),
  );
  sent.push(...(await sendEvents({ ...common, count: 1, startIndex: 200, compression: 'zlib' })));
  return sent;
}

describe('python harness over Redis', { timeout: 180_000 }, () => {
  const db = HARNESS_REDIS_DB;
  let redis: Redis;
  let sink: SinkWorker | undefined;

  before(async () => {
    await flushRedisDb(db);
    redis = new Redis(redisUrl(db));
  });
  after(async () => {
    await sink?.stop();
    redis?.disconnect();
    await flushRedisDb(db);
  });

  test('producer output lands in the queue as kombu envelopes', async () => {
    const sent = await sendEvents({
      brokerUrl: redisUrl(db),
      queue: 'harness-peek',
      count: 3,
      startIndex: 0,
      teamId: 3,
    });
    assert.deepEqual(
      sent.map((t) => t.distinct_id),
      ['user-0', 'user-1', 'user-2'],
    );
    const raw = await redis.lrange('harness-peek', 0, -1);
    assert.equal(raw.length, 3);
    const oldestFirst = raw.reverse().map((s) => JSON.parse(s));
    assert.deepEqual(
      oldestFirst.map((e) => e.headers.id),
      sent.map((t) => t.id),
    );
    for (const [i, env] of oldestFirst.entries()) {
      assert.equal(env.headers.task, 'posthog.tasks.process_event.process_event_with_plugins');
      assert.equal(env.properties.delivery_info.routing_key, 'harness-peek');
      assert.equal(env.properties.body_encoding, 'base64');
      const body = JSON.parse(Buffer.from(env.body, 'base64').toString('utf8'));
      assert.deepEqual(body[0], sent[i]!.args);
      assert.deepEqual(body[1], {});
      const args = sent[i]!.args;
      assert.equal(args.length, 7);
      assert.equal(args[4], 3);
      assert.match(String(args[5]), /\+00:00$/, 'now is now.isoformat()');
      assert.match(String(args[6]), /Z$/, 'sent_at is a datetime encoded by kombu');
      assert.equal((args[3] as JsonObject).properties && ((args[3] as JsonObject).properties as JsonObject).index, i);
    }
    assert.deepEqual(await redis.smembers('_kombu.binding.harness-peek'), ['harness-peek\x06\x16\x06\x16harness-peek']);
    await redis.del('harness-peek');
  });

  test('sink worker executes every moved envelope with exactly the sent values', async () => {
    sink = await startSinkWorker({ brokerUrl: redisUrl(db) });
    console.log(`# sink worker (redis) ready in ${sink.startupMs} ms`);
    const sent = await sendCases(redisUrl(db));
    // move the raw envelopes from every priority list of harness-in to `celery`
    let moved = 0;
    for (const key of [IN_QUEUE, `${IN_QUEUE}\x06\x163`, `${IN_QUEUE}\x06\x166`, `${IN_QUEUE}\x06\x169`]) {
      while ((await redis.rpoplpush(key, 'celery')) !== null) moved += 1;
    }
    assert.equal(moved, sent.length);
    const records = await sink.waitFor(sent.length, 60_000);
    assert.equal(records.length, sent.length);
    assertSameValues(sent, records);
    for (const r of records) {
      assert.equal(r.task, PROCESS_EVENT_TASK);
      assert.equal(r.routing_key, IN_QUEUE, 'delivery_info travels inside the moved envelope');
      assert.equal(r.exchange, '');
    }
    const uni = records.find((r) => r.distinct_id === 'jürgen-ß-😀')!;
    assert.equal(uni.task_id, '00000000-0000-4000-8000-000000000100');
    assert.equal(uni.now, '2020-11-02T22:13:06.123456+00:00');
    assert.equal(uni.sent_at, '2020-11-02T22:13:05.987000Z');
    assert.deepEqual(uni.data, unicodeEvent);
    assert.equal(records.filter((r) => r.priority === 5).length, 2);
    assert.deepEqual(sink.problems(), []);
    await waitUntil(async () => (await redis.llen('celery')) === 0, 10_000, 'queue celery drained');
  });

  test('sink worker reports what it cannot execute', async () => {
    assert.ok(sink);
    const before = sink.problems().length;
    await sendEvents({ brokerUrl: redisUrl(db), queue: 'celery', taskName: 'posthog.tasks.nope', count: 1 });
    await sendEvents({ brokerUrl: redisUrl(db), queue: 'celery', taskName: PROCESS_EVENT_TASK, serializer: 'pickle' });
    const problems = await sink.waitForProblems(before + 2, 30_000);
    const kinds = problems
      .slice(before)
      .map((p) => p.kind)
      .sort();
    assert.deepEqual(kinds, ['rejected', 'unknown']);
  });

  test('stop() ends the worker', async () => {
    assert.ok(sink);
    await sink.stop();
    assert.ok(sink.exitStatus());
    assert.ok(sink.records().length >= 9, 'records stay readable after stop');
  });
});

describe('python harness over RabbitMQ', { timeout: 180_000 }, () => {
  const vhost = 'posthog-plugins-test-harness';
  let conn: amqp.ChannelModel | undefined;
  let sink: SinkWorker | undefined;

  before(async () => {
    await resetVhost(vhost);
  });
  after(async () => {
    await sink?.stop();
    await conn?.close().catch(() => undefined);
    await deleteVhost(vhost);
  });

  test('sink worker executes every moved message with exactly the sent values', async () => {
    // the worker declares Queue('celery', Exchange('celery'), 'celery') before we publish to it
    sink = await startSinkWorker({ brokerUrl: amqpUrl(vhost) });
    console.log(`# sink worker (amqp) ready in ${sink.startupMs} ms`);
    const sent = await sendCases(amqpUrl(vhost));

    conn = await amqp.connect(amqpUrl(vhost));
    const ch = await conn.createConfirmChannel();
    // Celery auto-created the input queue like PostHog's: durable, no arguments
    const q = await ch.checkQueue(IN_QUEUE);
    assert.equal(q.messageCount, sent.length);
    const seen: amqp.GetMessage[] = [];
    for (;;) {
      const msg = await ch.get(IN_QUEUE, { noAck: false });
      if (msg === false) break;
      seen.push(msg);
      const p = msg.properties;
      ch.publish('', 'celery', msg.content, {
        contentType: p.contentType,
        contentEncoding: p.contentEncoding,
        headers: p.headers,
        deliveryMode: p.deliveryMode,
        priority: p.priority,
        correlationId: p.correlationId,
        replyTo: p.replyTo,
        expiration: p.expiration,
      });
    }
    await ch.waitForConfirms();
    for (const msg of seen) ch.ack(msg);
    assert.equal(seen.length, sent.length);
    const v2 = seen.find((m) => m.properties.headers?.task);
    assert.equal(v2?.properties.contentType, 'application/json');
    assert.equal(v2?.properties.deliveryMode, 2);

    const records = await sink.waitFor(sent.length, 60_000);
    assert.equal(records.length, sent.length);
    assertSameValues(sent, records);
    for (const r of records) {
      assert.equal(r.routing_key, 'celery');
      assert.equal(r.exchange, '');
    }
    assert.deepEqual(records.find((r) => r.distinct_id === 'jürgen-ß-😀')!.data, unicodeEvent);
    assert.equal(records.filter((r) => r.priority === 5).length, 2);
    assert.deepEqual(sink.problems(), []);
    await ch.close();
  });
});

describe('captured fixtures (fixtures/messages)', () => {
  test('every case decodes and matches index.json', () => {
    const index = messagesIndex();
    assert.equal(index.versions.celery, '5.2.6');
    for (const [name, info] of Object.entries(index.cases)) {
      const lines = redisMessages(name as MessageCase);
      assert.equal(lines.length, info.task_ids.length, `${name}: one line per sent task`);
      const ids = lines.map((line) => {
        const env = JSON.parse(line);
        assert.equal(env.properties.body_encoding, 'base64');
        assert.ok(env.properties.delivery_tag && env.properties.delivery_info.routing_key === 'posthog-plugins');
        return env.headers.id ?? env.properties.correlation_id; // v1: headers {}
      });
      assert.deepEqual(ids, info.task_ids, `${name}: task ids oldest first`);
      const captured = amqpMessages(name as MessageCase).messages;
      assert.equal(captured.length, info.amqp_messages, `${name}: amqp capture`);
      for (const m of captured) assert.ok(amqpMessageBody(m).length > 0);
    }
    const v2 = JSON.parse(redisMessages('v2')[0]!);
    const [args, kwargs, embed] = JSON.parse(Buffer.from(v2.body, 'base64').toString('utf8'));
    assert.equal(args.length, 7);
    assert.deepEqual(kwargs, {});
    assert.deepEqual(embed, { callbacks: null, errbacks: null, chain: null, chord: null });
    assert.equal(args[5], index.now);
    assert.equal(args[6], '2020-11-02T22:13:05.987000Z');
  });
});
