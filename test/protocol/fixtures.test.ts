import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { rawFromAmqp } from '../../protocol/amqp-properties';
import { decodeTask, taskTiming } from '../../protocol/decode';
import { PROCESS_EVENT_WITH_PLUGINS, ingestionArgsFromTask } from '../../protocol/posthog';
import { parseEnvelope, priorityKey } from '../../protocol/redis-envelope';
import type { JsonObject, RawMessage, TaskMessage } from '../../protocol/types';
import type { Delivery } from '../../src/brokers/broker';
import { silentLogger } from '../../src/log';
import { BatchProcessor, type ChainRunner } from '../../src/pipeline/batch-processor';
import { type MessageCase, amqpMessageBody, amqpMessages, messagesIndex, redisMessages } from '../helpers/fixtures';

/**
 * Every message captured from real Celery 5.2.6 (fixtures/messages) through our decoding, Redis and AMQP
 * alike, checked against what index.json and the capture script say was sent. Pure: no services.
 */
const index = messagesIndex();
const QUEUE = index.queue;
const SENT_AT_Z = '2020-11-02T22:13:05.987000Z'; // kombu's form of the aware UTC sent_at datetime

interface Expect {
  task: string;
  protocol: 1 | 2;
  /** Per message, in order (one entry for all when shorter). */
  priority: number[];
  eta: Array<string | 'relative' | null>;
  expires: Array<string | 'relative' | null>;
  compression: string | null;
  /** What the worker must do with it. */
  verdict: 'run' | { refused: RegExp } | { unknownTask: true };
  teams: number[];
  ip?: string | null;
  sentAt?: string | null;
}

const RUN = {
  task: PROCESS_EVENT_WITH_PLUGINS,
  protocol: 2 as const,
  priority: [0],
  eta: [null],
  expires: [null],
  compression: null,
  verdict: 'run' as const,
  teams: [2],
};

const EXPECT: Record<MessageCase, Expect> = {
  v2: RUN,
  v1: { ...RUN, protocol: 1 },
  'priority-0': RUN,
  'priority-5': { ...RUN, priority: [5] },
  'priority-9': { ...RUN, priority: [9] },
  'eta-expires': {
    ...RUN,
    eta: ['relative', '2030-01-01T00:00:00.000Z'],
    expires: ['relative', '2030-01-01T01:00:00.000Z'],
  },
  expired: { ...RUN, expires: ['2020-01-01T00:00:00.000Z'] },
  compressed: { ...RUN, compression: 'application/x-gzip' },
  unicode: RUN,
  nulls: { ...RUN, ip: null, sentAt: null },
  'sent-at-offset': { ...RUN, sentAt: '2020-11-03T00:13:05.987000+02:00' },
  'multi-team': { ...RUN, teams: [2, 3, 2, 4, 3, 2] },
  pickle: {
    ...RUN,
    verdict: {
      refused: /refusing to deserialize untrusted content of type application\/x-python-serialize \(pickle\)/,
    },
  },
  'unknown-task': { ...RUN, task: 'posthog.tasks.process_event.no_such_task', verdict: { unknownTask: true } },
};

const at = <T>(list: T[], i: number): T => (i < list.length ? list[i] : list[list.length - 1]) as T;

/** Checks one decoded task against the expectations; returns the task's ingestion args when it runs. */
function checkTask(name: MessageCase, i: number, task: TaskMessage, where: string): void {
  const e = EXPECT[name];
  const info = index.cases[name]!;
  assert.equal(task.id, info.task_ids[i], `${where}: task id`);
  assert.equal(task.task, e.task, `${where}: task name`);
  assert.equal(task.protocol, e.protocol, `${where}: protocol version`);
  assert.equal(task.retries, 0, `${where}: retries`);
  assert.equal(task.headers['compression'] ?? null, e.compression, `${where}: compression header`);
  for (const [field, want] of [
    ['eta', at(e.eta, i)],
    ['expires', at(e.expires, i)],
  ] as const) {
    const got = task[field];
    if (want === null) assert.equal(got, null, `${where}: no ${field}`);
    else {
      assert.ok(got instanceof Date && !Number.isNaN(got.getTime()), `${where}: ${field} present and parsed`);
      if (want !== 'relative') assert.equal(got.toISOString(), want, `${where}: ${field}`);
    }
  }
  if (at(e.eta, i) === 'relative') {
    // countdown=60, expires=300, both from the same `now` in Celery's as_task_v2.
    assert.equal(task.expires!.getTime() - task.eta!.getTime(), 240_000, `${where}: expires - eta`);
  }
  assert.equal(task.args.length, 7, `${where}: seven positional args`);
  assert.deepEqual(task.kwargs, {}, `${where}: no kwargs`);

  const parsed = ingestionArgsFromTask(task);
  if (!parsed.ok) assert.fail(`${where}: ingestion args: ${parsed.reason}`);
  const a = parsed.args;
  const data = a.data as JsonObject & { properties: JsonObject; uuid: string };
  assert.equal(a.team_id, at(e.teams, i), `${where}: team_id`);
  assert.equal(a.now, index.now, `${where}: now`);
  assert.equal(a.sent_at, e.sentAt === undefined ? SENT_AT_Z : e.sentAt, `${where}: sent_at`);
  assert.equal(a.ip, e.ip === undefined ? '127.0.0.1' : e.ip, `${where}: ip`);
  assert.equal(a.site_url, 'http://localhost:8000', `${where}: site_url`);
  assert.equal(a.distinct_id, data.properties['distinct_id'], `${where}: distinct_id matches the event`);
  assert.match(
    data.uuid,
    /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    `${where}: event uuid (uuid5)`,
  );
}

function checkCase(
  name: MessageCase,
  raws: Array<{ raw: RawMessage; priority: number }>,
  where: string,
): TaskMessage[] {
  const e = EXPECT[name];
  const tasks: TaskMessage[] = [];
  raws.forEach(({ raw, priority }, i) => {
    const w = `${where}[${i}]`;
    assert.equal(priority, at(e.priority, i), `${w}: priority`);
    const decoded = decodeTask(raw);
    if (typeof e.verdict === 'object' && 'refused' in e.verdict) {
      assert.equal(decoded.ok, false, `${w}: must be refused`);
      if (!decoded.ok) assert.match(decoded.reason, e.verdict.refused, `${w}: refusal reason`);
      return;
    }
    if (!decoded.ok) assert.fail(`${w}: expected to decode, got: ${decoded.reason}`);
    checkTask(name, i, decoded.task, w);
    tasks.push(decoded.task);
  });
  return tasks;
}

const CASES = Object.keys(index.cases) as MessageCase[];

describe('captured Celery 5.2 messages (fixtures/messages)', () => {
  test('index.json lists exactly the cases this test knows', () => {
    assert.deepEqual([...CASES].sort(), Object.keys(EXPECT).sort());
    assert.equal(index.task, PROCESS_EVENT_WITH_PLUGINS);
    assert.equal(index.queue, 'posthog-plugins');
  });

  for (const name of CASES) {
    test(`${name}: Redis envelopes parse and decode as index.json says`, () => {
      const info = index.cases[name]!;
      const lines = redisMessages(name);
      assert.equal(lines.length, info.task_ids.length, 'one line per sent task');
      const raws = lines.map((line, i) => {
        const env = parseEnvelope(line);
        if (!env.ok) assert.fail(`line ${i}: envelope: ${env.reason}`);
        assert.equal(env.exchange, '', `line ${i}: default exchange`);
        assert.equal(env.routingKey, QUEUE, `line ${i}: routing key`);
        assert.equal(env.redelivered, false, `line ${i}: not redelivered`);
        assert.match(env.deliveryTag, /^[0-9a-f-]{36}$/, `line ${i}: delivery tag`);
        // The list the producer put it on is the one kombu's priority maps to.
        assert.deepEqual(info.redis_keys, [priorityKey(QUEUE, env.priority)], `line ${i}: Redis list`);
        return { raw: env.message, priority: env.priority };
      });
      const tasks = checkCase(name, raws, `redis ${name}`);
      if (name === 'v1') for (const t of tasks) assert.deepEqual(t.headers['utc'], true, 'v1 body metadata kept');
    });

    test(`${name}: AMQP captures decode through rawFromAmqp the same way`, () => {
      const info = index.cases[name]!;
      const capture = amqpMessages(name);
      assert.equal(capture.case, name);
      assert.equal(capture.messages.length, info.amqp_messages ?? 0);
      const raws = capture.messages.map((m) => {
        assert.equal(m.fields.routingKey, QUEUE);
        const raw = rawFromAmqp(m.properties, amqpMessageBody(m));
        return { raw, priority: raw.properties['priority'] as number };
      });
      const amqpTasks = checkCase(name, raws, `amqp ${name}`);
      // Same payload as the Redis capture of the case (ids are fixed; eta of the relative case differs).
      const redisTasks = redisMessages(name)
        .map((l) => parseEnvelope(l))
        .map((env) => (env.ok ? decodeTask(env.message) : env))
        .filter((r): r is { ok: true; task: TaskMessage } => r.ok)
        .map((r) => r.task);
      amqpTasks.forEach((t, i) => {
        const r = redisTasks[i]!;
        assert.equal(t.id, r.id);
        assert.deepEqual(t.args, r.args, `amqp ${name}[${i}]: args equal the Redis capture's`);
        assert.deepEqual(t.kwargs, r.kwargs);
      });
    });
  }

  test('expired: RabbitMQ dropped it (expiration "0"), the Redis copy still carries it', () => {
    const env = parseEnvelope(redisMessages('expired')[0]!);
    if (!env.ok) assert.fail(env.reason);
    assert.equal(env.message.properties['expiration'], '0');
    assert.equal(amqpMessages('expired').messages.length, 0);
  });

  test('pickle: refused on both transports without touching the body', () => {
    const env = parseEnvelope(redisMessages('pickle')[0]!);
    if (!env.ok) assert.fail(env.reason);
    assert.equal(env.message.contentType, 'application/x-python-serialize');
    const m = amqpMessages('pickle').messages[0]!;
    assert.equal(m.properties.contentType, 'application/x-python-serialize');
    // Proof the body really is a pickle (protocol 2+ opcode PROTO = 0x80), i.e. the refusal is not an accident.
    assert.equal(env.message.body[0], 0x80);
    assert.equal(amqpMessageBody(m)[0], 0x80);
  });

  test('the batch processor gives every case the outcome a Python worker would', async () => {
    const runs: Array<{ team: number; ids: string[] }> = [];
    const identity: ChainRunner = {
      runChain: async (teamId, events) => {
        runs.push({ team: teamId, ids: events.map((e) => String(e['uuid'])) });
        return events;
      },
    };
    const nowMs = Date.parse(index.now);
    const processor = new BatchProcessor({
      plugins: identity,
      logger: silentLogger(),
      origin: 'test@fixtures',
      outputQueue: 'celery',
      now: () => nowMs,
    });
    const deliveries: Array<{ name: MessageCase; delivery: Delivery }> = [];
    for (const name of CASES) {
      redisMessages(name).forEach((line, i) => {
        const env = parseEnvelope(line);
        if (!env.ok) assert.fail(env.reason);
        deliveries.push({
          name,
          delivery: { tag: `${name}:${i}`, queue: QUEUE, message: env.message, redelivered: false, rawText: line },
        });
      });
    }
    const outcomes = await processor.process(deliveries.map((d) => d.delivery));
    assert.equal(outcomes.length, deliveries.length);
    outcomes.forEach((o, i) => {
      const { name, delivery } = deliveries[i]!;
      assert.equal(o.delivery, delivery, 'outcomes keep delivery order');
      const where = delivery.tag;
      if (name === 'pickle') {
        assert.equal(o.kind, 'reject', where);
        if (o.kind === 'reject') assert.match(o.reason, /pickle/);
      } else if (name === 'unknown-task') {
        assert.equal(o.kind, 'reject', where);
        if (o.kind === 'reject') assert.match(o.reason, /^unknown task "posthog\.tasks\.process_event\.no_such_task"/);
      } else if (name === 'expired') {
        assert.deepEqual(o.kind === 'ack' && [o.result, o.outputs.length], ['expired', 0], where);
      } else if (name === 'eta-expires') {
        // At the capture's `now` (2020) both etas lie ahead: held until due, not run, not expired.
        assert.equal(o.kind, 'wait', where);
        const decoded = decodeTask(delivery.message);
        assert.ok(decoded.ok);
        if (o.kind === 'wait' && decoded.ok) assert.equal(o.dueMs, decoded.task.eta!.getTime());
      } else {
        assert.equal(o.kind, 'ack', where);
        if (o.kind === 'ack') {
          assert.equal(o.result, 'published', where);
          assert.equal(o.outputs.length, 1);
          assert.equal(o.outputs[0]!.queue, 'celery');
        }
      }
    });
    // One chain call per team per batch, each team's events in arrival order.
    const teams = runs.map((r) => r.team).sort();
    assert.deepEqual(teams, [2, 3, 4]);
    const team3 = runs.find((r) => r.team === 3)!;
    assert.equal(team3.ids.length, 2);

    // And eta/expiry judged at other instants, as taskTiming does for the worker.
    const [relative, absolute] = redisMessages('eta-expires').map((l) => {
      const env = parseEnvelope(l);
      assert.ok(env.ok);
      const d = env.ok ? decodeTask(env.message) : null;
      assert.ok(d?.ok);
      return (d as { task: TaskMessage }).task;
    });
    assert.deepEqual(taskTiming(absolute!, Date.parse('2030-01-01T00:30:00Z')), { state: 'run' });
    assert.deepEqual(taskTiming(absolute!, Date.parse('2030-01-01T01:00:00.001Z')), { state: 'expired' });
    assert.deepEqual(taskTiming(relative!, relative!.expires!.getTime() + 1), { state: 'expired' });
    assert.deepEqual(taskTiming(relative!, relative!.eta!.getTime()), { state: 'run' });
  });
});
