import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Redis from 'ioredis';
import { type BrokerFixture, redisFixture } from '../helpers/brokers';
import { type SentTask, type SinkRecord, type SinkWorker, sendEvents, startSinkWorker } from '../helpers/python';
import { waitUntil } from '../helpers/services';
import { type WorkerProcess, cli, startWorker } from '../helpers/worker';

/**
 * eta and expires as real Python Celery 5.2 sends them (countdown → `eta` header, expires → `expires` header),
 * through a real `posthog-plugins start` on Redis db 6, executed by a real Python Celery worker:
 * an eta task is held unacked without holding up the queue and runs at its eta; an expired task is acked
 * and never run; SIGTERM gives a held eta task back to the queue and the next worker runs it exactly once.
 */
const REDIS_DB = 6;
const INPUT = 'posthog-plugins';
const INPUT_LISTS = [INPUT, `${INPUT}\x06\x163`, `${INPUT}\x06\x166`, `${INPUT}\x06\x169`];

const uuidOf = (x: { data: unknown }): string => String((x.data as { uuid: string }).uuid);
const sentUuid = (t: SentTask): string => String(t.uuid);

describe('eta and expires end to end (redis)', () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'pp-timing-'));
  const env = { DATABASE_URL: `sqlite:${path.join(tmp, 'plugins.sqlite3')}` };
  let broker: BrokerFixture;
  let redis: Redis;
  let sink: SinkWorker;
  let worker: WorkerProcess | undefined;
  const start = (): Promise<WorkerProcess> => startWorker(['--broker', broker.url, '--batch-size', '10'], env);

  /** The envelope of a task while it sits in kombu's `unacked` hash (i.e. taken and not yet acked). */
  async function unackedEnvelope(taskId: string): Promise<{ headers: Record<string, unknown> } | null> {
    for (const record of await redis.hvals('unacked')) {
      const [envelope, , routingKey] = JSON.parse(record) as [{ headers: Record<string, unknown> }, string, string];
      if (routingKey === INPUT && envelope.headers['id'] === taskId) return envelope;
    }
    return null;
  }

  async function inputLength(): Promise<number> {
    let n = 0;
    for (const key of INPUT_LISTS) n += await redis.llen(key);
    return n;
  }

  const executed = (uuid: string): SinkRecord[] => sink.records().filter((r) => uuidOf(r) === uuid);

  before(async () => {
    broker = redisFixture(REDIS_DB);
    await broker.reset();
    redis = new Redis(broker.url);
    await cli(['migrate'], env);
    sink = await startSinkWorker({ brokerUrl: broker.url, queue: 'celery' });
    worker = await start();
  });

  after(async () => {
    await worker?.stop();
    await sink?.stop();
    redis?.disconnect();
    await broker?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('an eta task waits unacked for its eta while the events sent after it flow past', async () => {
    // 12 s: the events sent after it come from a second Python process, which can take seconds to start on a busy machine.
    const [etaTask] = await sendEvents({ brokerUrl: broker.url, count: 1, startIndex: 0, countdown: 12 });
    const later = await sendEvents({ brokerUrl: broker.url, count: 5, startIndex: 1 });
    // While held, the message is in kombu's unacked hash: a crash now loses nothing.
    const held = await waitUntil(() => unackedEnvelope(etaTask!.id), 3000, 'the eta task in kombu unacked');
    const etaMs = Date.parse(String(held.headers['eta']));
    assert.ok(Number.isFinite(etaMs), `eta header ${String(held.headers['eta'])}`);

    const records = await sink.waitFor(6, 40_000);
    const order = records.map(uuidOf);
    const etaAt = order.indexOf(sentUuid(etaTask!));
    assert.ok(etaAt >= 0, 'the eta task ran');
    for (const t of later) {
      const i = order.indexOf(sentUuid(t));
      assert.ok(
        i >= 0 && i < etaAt,
        `event ${t.index}, sent after the eta task, ran before it (order ${JSON.stringify(order)})`,
      );
      assert.ok(records[i]!.time * 1000 < etaMs, `event ${t.index} was not held back until the eta`);
    }
    const ran = records[etaAt]!;
    assert.ok(ran.time * 1000 >= etaMs, `the eta task ran ${etaMs - ran.time * 1000} ms before its eta`);
    assert.equal(ran.distinct_id, etaTask!.distinct_id);
    assert.equal(executed(sentUuid(etaTask!)).length, 1);
    assert.equal(await broker.unsettled(INPUT), 0, 'acked once it ran');
    assert.equal(await inputLength(), 0);
  });

  test('an expired task is acked, logged and never executed', async () => {
    const before = sink.records().length;
    // expires in the past (Celery warns and sends it anyway) …
    const [past] = await sendEvents({ brokerUrl: broker.url, count: 1, startIndex: 100, expires: -30 });
    // … and expires 1 s but eta 3 s: it would expire while waiting, so it never runs either.
    const [shortLived] = await sendEvents({
      brokerUrl: broker.url,
      count: 1,
      startIndex: 101,
      expires: 1,
      countdown: 3,
    });
    const sentAt = Date.now();
    const markers = await sendEvents({ brokerUrl: broker.url, count: 2, startIndex: 102 });

    for (const t of [past!, shortLived!]) {
      await worker!.waitForLog(
        (l) => l.taskId === t.id && /expired/.test(String(l.message)),
        10_000,
        `expiry of ${t.id} logged`,
      );
    }
    await sink.waitFor(before + markers.length, 20_000);
    // Past the short-lived task's eta: a worker that held it would have run it by now.
    await new Promise((r) => setTimeout(r, Math.max(0, sentAt + 3500 - Date.now())));
    assert.deepEqual(executed(sentUuid(past!)), [], 'the task that expired before it was sent never ran');
    assert.deepEqual(executed(sentUuid(shortLived!)), [], 'the task that expires before its eta never ran');
    assert.equal(sink.records().length, before + markers.length);
    assert.deepEqual(sink.problems(), []);
    assert.equal(await broker.unsettled(INPUT), 0, 'nothing left in kombu unacked for the input queue');
    assert.equal(await inputLength(), 0, 'nothing left in the queue');
    assert.deepEqual(await broker.setAside(INPUT), [], 'expired is not a rejection');
  });

  test('SIGTERM gives a held eta task back to the queue; the next worker runs it once, at its eta', async () => {
    const before = sink.records().length;
    const [task] = await sendEvents({ brokerUrl: broker.url, count: 1, startIndex: 200, countdown: 20 });
    const held = await waitUntil(
      async () => ((await inputLength()) === 0 ? unackedEnvelope(task!.id) : null),
      15_000,
      'the eta task taken and held',
    );
    const etaMs = Date.parse(String(held.headers['eta']));
    await new Promise((r) => setTimeout(r, 300)); // let the batch that took it finish

    const code = await worker!.stop();
    assert.equal(code, 0, worker!.logText().slice(-3000));
    assert.ok(
      worker!.logs().some((l) => l.message === 'gave 1 eta message(s) back to the queue'),
      worker!.logText().slice(-3000),
    );
    assert.ok(Date.now() < etaMs, 'the test stopped the worker before the eta (else it proves nothing)');

    // Back in the list, marked redelivered like kombu's restore, and no longer unacked.
    const listed = (await redis.lrange(INPUT, 0, -1)).map(
      (t) =>
        JSON.parse(t) as { headers: Record<string, unknown>; properties: { delivery_info: Record<string, unknown> } },
    );
    const back = listed.filter((e) => e.headers['id'] === task!.id);
    assert.equal(back.length, 1, `the task is in ${INPUT} once: ${JSON.stringify(listed.map((e) => e.headers['id']))}`);
    assert.equal(back[0]!.headers['redelivered'], true);
    assert.equal(back[0]!.properties.delivery_info['redelivered'], true);
    assert.equal(back[0]!.headers['eta'], held.headers['eta'], 'eta unchanged');
    assert.equal(await unackedEnvelope(task!.id), null);
    assert.equal(await broker.unsettled(INPUT), 0);
    assert.deepEqual(executed(sentUuid(task!)), [], 'not run by the stopped worker');

    worker = await start();
    await sink.waitFor(before + 1, 45_000);
    const runs = executed(sentUuid(task!));
    assert.equal(runs.length, 1);
    assert.ok(runs[0]!.time * 1000 >= etaMs, `ran ${etaMs - runs[0]!.time * 1000} ms before its eta`);
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(executed(sentUuid(task!)).length, 1, 'exactly once');
    assert.equal(sink.records().length, before + 1);
    assert.equal(await broker.unsettled(INPUT), 0);
    assert.equal(await inputLength(), 0);
  });
});
