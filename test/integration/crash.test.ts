import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import amqp from 'amqplib';
import Redis from 'ioredis';
import { type BrokerFixture, amqpFixture, redisFixture } from '../helpers/brokers';
import {
  PYTHON,
  PYTHON_DIR,
  type SentTask,
  type SinkRecord,
  type SinkWorker,
  sendEvents,
  startSinkWorker,
} from '../helpers/python';
import { waitUntil } from '../helpers/services';
import { type WorkerProcess, alive, childrenOf, cli, startWorker } from '../helpers/worker';

const execFileAsync = promisify(execFile);

/**
 * Crash recovery, end to end with real parts: real Python Celery sends `process_event_with_plugins`, the real
 * CLI runs the worker, a real Python Celery worker executes every `process_event` we publish. `start` is killed
 * with SIGKILL in the middle of the stream, together with its worker processes (as a container kill or the
 * OOM killer would: SIGKILL of the supervisor alone lets the workers finish cleanly, which is no crash), or,
 * on RabbitMQ, its connections are closed by the server. Every event must still come out at the Python side;
 * duplicates are allowed only for inputs that were in flight. Redis db 3 and vhost `posthog-plugins-test-crash`
 * are reserved for this file (test/helpers/services.ts). One file of ~700 lines: every case shares the Python sink,
 * the worker set-up and the loss accounting, which separate files would repeat.
 */
const INPUT = 'posthog-plugins';
const OUTPUT = 'celery';
const TEAM = 2;
const COUNT = 1500;
/**
 * The connection-close case: queued before the workers start, a backlog that lasts (3 ms per event in the slow
 * plugin, two processes) well beyond rabbitmqctl's start-up.
 */
const CLOSE_COUNT = 4000;
const BATCH = 20;
const CONCURRENCY = 1;
/** Worker processes of `start` (each a complete consumer). */
const WORKERS = 2;
/** AMQP only: prefetch = batch × concurrency × multiplier; 2 keeps a batch buffered while one is processed. */
const PREFETCH_MULTIPLIER = 2;
const PREFETCH = BATCH * CONCURRENCY * PREFETCH_MULTIPLIER;
const MARK = 'crash_test';
const VHOST = 'posthog-plugins-test-crash';
const REDIS_DB = 3;

/** kombu's Redis priority lists of a queue (steps 0, 3, 6, 9; separator \x06\x16). */
function priorityLists(queue: string): string[] {
  return [queue, `${queue}\x06\x163`, `${queue}\x06\x166`, `${queue}\x06\x169`];
}

interface Case {
  name: string;
  kind: 'redis' | 'amqp';
  broker: () => BrokerFixture;
}

const CASES: Case[] = [
  { name: 'redis', kind: 'redis', broker: () => redisFixture(REDIS_DB) },
  { name: 'rabbitmq', kind: 'amqp', broker: () => amqpFixture(VHOST) },
];

function uuidOfRecord(r: SinkRecord): string {
  return String((r.data as { uuid: string }).uuid);
}

function uuidOfSent(t: SentTask): string {
  return String((t.args[3] as { uuid: string }).uuid);
}

/** The event uuid inside a kombu Redis envelope (a process_event_with_plugins input or a process_event output). */
function envelopeUuid(text: string): string {
  const env = JSON.parse(text) as { body: string; properties: { body_encoding?: string } };
  const raw = env.properties.body_encoding === 'base64' ? Buffer.from(env.body, 'base64').toString('utf8') : env.body;
  const [args, kwargs] = JSON.parse(raw) as [unknown[], Record<string, unknown>];
  const data = (args.length >= 4 ? args[3] : kwargs['data']) as { uuid: string };
  return String(data.uuid);
}

function envelopeRedelivered(text: string): boolean {
  const env = JSON.parse(text) as {
    headers?: Record<string, unknown>;
    properties: { delivery_info?: Record<string, unknown> };
  };
  return env.headers?.['redelivered'] === true && env.properties.delivery_info?.['redelivered'] === true;
}

interface Tally {
  /** uuid → how many times process_event ran for it. */
  counts: Map<string, number>;
  /** uuid → the task ids its executions carried. */
  taskIds: Map<string, Set<string>>;
  total: number;
  duplicates: number;
}

function tally(records: SinkRecord[]): Tally {
  const counts = new Map<string, number>();
  const taskIds = new Map<string, Set<string>>();
  for (const r of records) {
    const u = uuidOfRecord(r);
    counts.set(u, (counts.get(u) ?? 0) + 1);
    let ids = taskIds.get(u);
    if (!ids) taskIds.set(u, (ids = new Set()));
    ids.add(r.task_id);
  }
  return { counts, taskIds, total: records.length, duplicates: records.length - counts.size };
}

/** What Redis holds at one instant (MULTI) right after a kill, as event uuids. */
interface RedisSnapshot {
  /** Redis worker ids of the killed worker processes. */
  workerIds: string[];
  /** Still waiting in the input lists. */
  queued: string[];
  /** kombu `unacked` records of input messages: tag → [uuid, exchange, routing key, unacked_index score]. */
  unacked: Map<string, { uuid: string; exchange: string; routingKey: string; score: number | null; envelope: string }>;
  /** Our own in-flight sets of the dead workers (delivery tags), all together. */
  inflightTags: string[];
  /** The dead workers' landing lists, all together. */
  landing: string[];
  /** Outputs already published: in `celery` or taken by the Python sink and not yet acked. */
  published: string[];
}

for (const c of CASES) {
  describe(`crash recovery: ${c.name}`, () => {
    let broker: BrokerFixture;
    let sink: SinkWorker;
    let redis: Redis | undefined;
    let amqpConn: amqp.ChannelModel | undefined;
    let amqpCh: amqp.Channel | undefined;
    const workers: WorkerProcess[] = [];
    const tmp = mkdtempSync(path.join(tmpdir(), 'pp-crash-'));
    const env = { DATABASE_URL: `sqlite:${path.join(tmp, 'plugins.sqlite3')}` };
    const workerArgs = (): string[] => [
      '--broker',
      broker.url,
      '--workers',
      String(WORKERS),
      '--batch-size',
      String(BATCH),
      '--concurrency',
      String(CONCURRENCY),
      '--prefetch-multiplier',
      String(PREFETCH_MULTIPLIER),
    ];
    /** Outputs that may exist twice: the inputs in flight when the worker died (its batches, plus prefetch on AMQP). */
    const duplicateBound = WORKERS * (c.kind === 'amqp' ? BATCH * CONCURRENCY + PREFETCH : BATCH * CONCURRENCY);

    /** `start`, returned once every worker process consumes. */
    async function start(extra: string[] = []): Promise<WorkerProcess> {
      const w = await startWorker([...workerArgs(), ...extra], env);
      workers.push(w);
      await waitUntil(
        () => w.logs().filter((l) => String(l.message).startsWith(`consuming ${INPUT} `)).length >= WORKERS,
        60_000,
        'every worker process consuming',
      );
      return w;
    }

    /** Messages ready in the input queue (not counting those a consumer holds). */
    async function inputDepth(): Promise<number> {
      if (redis) {
        const lens = await Promise.all(priorityLists(INPUT).map((k) => redis!.llen(k)));
        return lens.reduce((a, b) => a + b, 0);
      }
      amqpConn ??= await amqp.connect(broker.url);
      if (!amqpCh) {
        amqpCh = await amqpConn.createChannel();
        amqpCh.on('error', () => undefined);
        amqpCh.on('close', () => (amqpCh = undefined));
      }
      return (await amqpCh.checkQueue(INPUT)).messageCount;
    }

    async function redisSnapshot(pids: number[]): Promise<RedisSnapshot> {
      const r = redis!;
      const registered = await r.smembers('posthog-plugins:workers');
      const workerIds = registered.filter((id) => pids.some((pid) => id.includes(`-${pid}-`)));
      assert.equal(
        workerIds.length,
        pids.length,
        `one registered worker id per killed process ${JSON.stringify(pids)}: ${JSON.stringify(registered)}`,
      );
      const multi = r.multi();
      for (const k of priorityLists(INPUT)) multi.lrange(k, 0, -1);
      multi.hgetall('unacked');
      multi.zrange('unacked_index', 0, -1, 'WITHSCORES');
      for (const id of workerIds) multi.smembers(`posthog-plugins:inflight:${id}`);
      for (const id of workerIds) multi.lrange(`posthog-plugins:landing:${id}`, 0, -1);
      for (const k of priorityLists(OUTPUT)) multi.lrange(k, 0, -1);
      const res = (await multi.exec())!.map(([err, v]) => {
        if (err) throw err;
        return v;
      });
      const n = priorityLists(INPUT).length;
      const w = workerIds.length;
      const queued = (res.slice(0, n) as string[][]).flat().map(envelopeUuid);
      const records = res[n] as Record<string, string>;
      const scoresFlat = res[n + 1] as string[];
      const scores = new Map<string, number>();
      for (let i = 0; i < scoresFlat.length; i += 2) scores.set(scoresFlat[i]!, Number(scoresFlat[i + 1]));
      const inflightTags = (res.slice(n + 2, n + 2 + w) as string[][]).flat();
      const landing = (res.slice(n + 2 + w, n + 2 + 2 * w) as string[][]).flat().map(envelopeUuid);
      const published = (res.slice(n + 2 + 2 * w) as string[][]).flat().map(envelopeUuid);
      const unacked: RedisSnapshot['unacked'] = new Map();
      for (const [tag, rec] of Object.entries(records)) {
        const [envelope, exchange, routingKey] = JSON.parse(rec) as [unknown, string, string];
        const envelopeText = JSON.stringify(envelope);
        if (routingKey === INPUT)
          unacked.set(tag, {
            uuid: envelopeUuid(envelopeText),
            exchange,
            routingKey,
            score: scores.get(tag) ?? null,
            envelope: envelopeText,
          });
        else published.push(envelopeUuid(envelopeText)); // the Python sink's prefetched outputs
      }
      return { workerIds, queued, unacked, inflightTags, landing, published };
    }

    /**
     * Runs `victim` until it has made progress, then SIGKILLs it with its worker processes. On Redis, if the kill
     * happened to land between a settle and the next pop in every process (nothing in flight: nothing to
     * recover; about one kill in five on a loaded machine), restarts and kills again (up to 5 times), so that the
     * recovery of held messages is exercised.
     */
    async function killMidStream(
      t: { diagnostic(msg: string): void },
      base: number,
      sentUuids: Set<string>,
      firstVictim: WorkerProcess,
    ): Promise<{
      killedAt: number;
      killed: number[];
      snapshot?: RedisSnapshot;
      depthAfterKill: number;
      attempts: number;
    }> {
      let victim = firstVictim;
      for (let attempt = 1; ; attempt++) {
        if (attempt === 1) {
          // Some outputs reached Python (but not all: asserted below through the remaining input).
          await waitUntil(() => sink.records().length - base >= 20, 60_000, 'first outputs at the Python sink', 5);
        } else {
          const depth0 = await inputDepth();
          await waitUntil(
            async () => depth0 - (await inputDepth()) >= 60,
            60_000,
            'the restarted worker to take messages',
            5,
          );
        }
        const killed = await killTree(victim);
        const killedAt = Date.now();
        const depthAfterKill = await inputDepth();
        assert.ok(depthAfterKill > 0, `the kill must land mid-stream (input already drained; attempt ${attempt})`);
        assert.ok(sink.records().length - base < sentUuids.size, 'not every output is out at the kill');
        if (c.kind === 'amqp') return { killedAt, killed, depthAfterKill, attempts: attempt };

        const snapshot = await redisSnapshot(killed);
        // Messages popped and not settled: what kombu and our restorers must bring back.
        const held = snapshot.unacked.size;
        if (held > 0 || attempt >= 5) {
          assert.ok(held > 0, `no kill out of ${attempt} caught a message in flight`);
          return { killedAt, killed, snapshot, depthAfterKill, attempts: attempt };
        }
        t.diagnostic(
          `attempt ${attempt}: the kill landed between a settle and the next pop in every process (nothing in flight: ` +
            `${snapshot.queued.length} queued, ${snapshot.published.length} published not yet executed, ${snapshot.inflightTags.length} in-flight tags); again`,
        );
        victim = await start();
      }
    }

    /** Checks of the Redis state the dead worker left, before anything restores it. */
    function checkRedisSnapshot(s: RedisSnapshot, killedAt: number): void {
      const unackedUuids = [...s.unacked.values()].map((u) => u.uuid);
      // kombu's records and our in-flight set are written and removed together.
      assert.deepEqual(
        [...s.unacked.keys()].sort(),
        [...s.inflightTags].sort(),
        'unacked records = the dead workers’ in-flight sets',
      );
      // Each consumer loop holds at most three batches: the one in hand, the one received ahead and, on Redis, the one
      // whose settle is still under way.
      assert.ok(
        unackedUuids.length + s.landing.length <= WORKERS * BATCH * CONCURRENCY * 3,
        `held ${unackedUuids.length}+${s.landing.length} > workers × batch × concurrency × 3`,
      );
      // Publish + ack is one step: an input is never both unacked and published.
      const published = new Set(s.published);
      assert.deepEqual(
        unackedUuids.filter((u) => published.has(u)),
        [],
        'inputs both unacked and published',
      );
      const queued = new Set(s.queued);
      assert.deepEqual(
        [...unackedUuids, ...s.landing].filter((u) => queued.has(u)),
        [],
        'inputs both queued and held',
      );
      for (const [tag, u] of s.unacked) {
        // Exactly what kombu's restore_by_tag reads: [payload, exchange, routing_key], index scored in Unix seconds.
        assert.equal(u.routingKey, INPUT);
        const info = (JSON.parse(u.envelope) as { properties: { delivery_info: { exchange: string } } }).properties
          .delivery_info;
        assert.equal(u.exchange, info.exchange, 'the exchange of the message (kombu restores through it)');
        assert.ok(u.score !== null, `unacked_index entry for ${tag}`);
        assert.ok(
          u.score! <= killedAt / 1000 + 1 && u.score! > killedAt / 1000 - 120,
          `score ${u.score} is Unix seconds (kill at ${killedAt / 1000})`,
        );
      }
    }

    /** Waits until every sent uuid came out (at least once) since `base`. */
    async function brokerState(): Promise<string> {
      if (redis) {
        const lens = await Promise.all(priorityLists(INPUT).map((k) => redis!.llen(k)));
        return `redis: input lists ${JSON.stringify(lens)}, unacked ${await redis.hlen('unacked')}, celery ${await redis.llen(OUTPUT)}`;
      }
      const vhost = decodeURIComponent(new URL(broker.url).pathname.slice(1));
      const q = await execFileAsync('rabbitmqctl', [
        '-q',
        'list_queues',
        '-p',
        vhost,
        'name',
        'messages_ready',
        'messages_unacknowledged',
        'consumers',
      ]);
      const ch = await execFileAsync('rabbitmqctl', [
        '-q',
        'list_channels',
        'connection',
        'number',
        'consumer_count',
        'messages_unacknowledged',
        'prefetch_count',
        'global_prefetch_count',
      ]);
      return `rabbitmq queues:\n${q.stdout}channels:\n${ch.stdout}`;
    }

    async function waitAllOut(base: number, sentUuids: Set<string>, timeoutMs: number): Promise<void> {
      await waitUntil(
        () => {
          const seen = new Set(sink.records().slice(base).map(uuidOfRecord));
          for (const u of sentUuids) if (!seen.has(u)) return false;
          return true;
        },
        timeoutMs,
        `all ${sentUuids.size} events at the Python sink`,
        50,
      ).catch(async (err: Error) => {
        const seen = new Set(sink.records().slice(base).map(uuidOfRecord));
        const missing = [...sentUuids].filter((u) => !seen.has(u));
        // Where are they? The broker's view tells a message stuck unacked on a live channel from one never sent.
        const where = await brokerState().catch((e: Error) => `broker state unavailable: ${e.message}`);
        throw new Error(
          `${err.message}: ${missing.length} missing (e.g. ${missing.slice(0, 3).join(', ')})\n${where}\n${workers.at(-1)?.logText().slice(-3000)}`,
        );
      });
    }

    /** Exact set, duplicates within bound, each output the result of the plugin, nothing left unacked. */
    async function checkOutcome(
      t: { diagnostic(msg: string): void },
      base: number,
      sentUuids: Set<string>,
      label: string,
    ): Promise<Tally> {
      await sleep(1000); // late duplicates would show up here
      const records = sink.records().slice(base);
      const got = tally(records);
      assert.deepEqual([...got.counts.keys()].sort(), [...sentUuids].sort(), 'exactly the sent events came out');
      const dupUuids = [...got.counts].filter(([, n]) => n > 1).map(([u]) => u);
      t.diagnostic(
        `${label}: ${got.total} executions of ${sentUuids.size} events, ${got.duplicates} duplicate(s) (${dupUuids.length} event(s) twice or more; bound ${duplicateBound})`,
      );
      assert.ok(
        got.duplicates <= duplicateBound,
        `${got.duplicates} duplicates > ${duplicateBound} messages that could have been in flight`,
      );
      // A duplicate is the same input run again: its output has the same (derived) task id.
      for (const [u, ids] of got.taskIds)
        assert.equal(ids.size, 1, `event ${u} came out under task ids ${[...ids].join(', ')}`);
      for (const r of records) {
        assert.equal(
          (r.data as { properties: Record<string, unknown> }).properties[MARK],
          'processed',
          'output went through the plugin',
        );
        assert.equal(r.team_id, TEAM);
        assert.equal(r.task, 'posthog.tasks.process_event.process_event');
      }
      assert.deepEqual(sink.problems(), []);
      assert.equal(await broker.unsettled(INPUT), 0, 'nothing left unacked on the input');
      assert.equal(await inputDepth(), 0, 'input queue drained');
      return got;
    }

    async function checkDeadWorkersCleared(workerIds: string[]): Promise<void> {
      for (const workerId of workerIds) {
        assert.equal(
          await redis!.exists(`posthog-plugins:inflight:${workerId}`),
          0,
          'dead worker in-flight set removed',
        );
        assert.equal(await redis!.sismember('posthog-plugins:workers', workerId), 0, 'dead worker unregistered');
        assert.equal(await redis!.llen(`posthog-plugins:landing:${workerId}`), 0, 'dead worker landing list empty');
      }
    }

    /** What the worker processes of `w` report having restored of the dead workers `ids` (their dead-worker scan). */
    function restoredBy(w: WorkerProcess, ids: string[]): number {
      return w
        .logs()
        .filter((l) => ids.some((id) => String(l.message).includes(`of dead worker ${id}`)))
        .reduce((sum, l) => sum + Number(l['restored']), 0);
    }

    before(async () => {
      broker = c.broker();
      await broker.reset();
      if (c.kind === 'redis') redis = new Redis(broker.url);
      await cli(['migrate'], env);
      await cli(
        [
          'install',
          'fixtures/plugins/add-property',
          '--team',
          String(TEAM),
          '--config',
          JSON.stringify({ propertyName: MARK, propertyValue: 'processed' }),
        ],
        env,
      );
      // 3 ms of plugin CPU per event: without it a fast worker drains the queue as the producer fills it, and
      // the kill or the connection close would not land mid-stream.
      await cli(['install', 'fixtures/plugins/slow.js', '--team', String(TEAM), '--config', '{"ms":"3"}'], env);
      // A large prefetch keeps the Python sink from being the bottleneck on RabbitMQ (it fsyncs every record).
      sink = await startSinkWorker({
        brokerUrl: broker.url,
        queue: OUTPUT,
        extraArgs: ['--prefetch-multiplier', '100'],
      });
    });

    after(async () => {
      for (const w of workers) await w.stop(10_000).catch(() => undefined);
      await sink?.stop();
      await amqpConn?.close().catch(() => undefined);
      redis?.disconnect();
      await broker?.close();
      rmSync(tmp, { recursive: true, force: true });
    });

    test('kill -9 mid-stream, restart: every event comes out, duplicates only for inputs in flight', async (t) => {
      const base = sink.records().length;
      const sent = await sendEvents({ brokerUrl: broker.url, count: COUNT, teamId: TEAM, startIndex: 0 });
      const sentUuids = new Set(sent.map(uuidOfSent));
      assert.equal(sentUuids.size, COUNT);

      const victim = await start();
      const { killedAt, killed, snapshot, depthAfterKill, attempts } = await killMidStream(t, base, sentUuids, victim);
      const outAtKill = sink.records().length - base;
      let held: Set<string> | undefined;
      if (snapshot) {
        checkRedisSnapshot(snapshot, killedAt);
        held = new Set([...[...snapshot.unacked.values()].map((u) => u.uuid), ...snapshot.landing]);
      }

      const restartAt = Date.now();
      const survivor = await start();
      let firstRecoveredMs: number | undefined;
      let restoredMs: number | undefined;
      if (held) {
        // The restarted worker sees at once that the dead pid is gone and restores its messages first in line.
        await waitUntil(
          () =>
            sink
              .records()
              .slice(base)
              .some((r) => held!.has(uuidOfRecord(r))),
          30_000,
          'a recovered event at the sink',
          10,
        );
        firstRecoveredMs = Date.now() - restartAt;
        // Each restarted worker process logs what its dead-worker scan restored (the first one wins each message).
        await waitUntil(
          () => restoredBy(survivor, snapshot!.workerIds) >= held.size,
          10_000,
          'the restore log lines',
        ).catch(() => undefined);
        assert.equal(
          restoredBy(survivor, snapshot!.workerIds),
          held.size,
          `the restarted workers restored exactly what the dead ones held\n${survivor.logText().slice(-3000)}`,
        );
        const restoreLine = survivor
          .logs()
          .find((l) => Number(l['restored']) > 0 && String(l.message).includes('of dead worker'));
        restoredMs = Date.parse(String(restoreLine?.['timestamp'])) - restartAt;
      }
      await waitAllOut(base, sentUuids, 60_000);
      const completeMs = Date.now() - killedAt;
      const got = await checkOutcome(t, base, sentUuids, 'kill -9');
      t.diagnostic(
        `kill of ${killed.length + 1} processes after ${outAtKill} outputs (attempts ${attempts}), ${depthAfterKill} still queued, ${held ? `${held.size} in flight` : 'in flight: n/a (RabbitMQ requeues them)'}; ` +
          `restart → dead workers' messages back in the queue ${restoredMs ?? 'n/a'} ms, → first recovered output at the sink ${firstRecoveredMs ?? 'n/a'} ms; kill → all out ${completeMs} ms`,
      );
      assert.ok(completeMs < 60_000, `kill → completion took ${completeMs} ms`);
      if (c.kind === 'redis') {
        assert.ok(firstRecoveredMs! < 10_000, `restart → first recovered output took ${firstRecoveredMs} ms`);
        // Publish and ack are one Lua call: an input in flight has no output yet, so nothing can come out twice.
        assert.equal(got.duplicates, 0, 'Redis: no duplicates');
        await checkDeadWorkersCleared(snapshot!.workerIds);
      }
      assert.equal(await survivor.stop(), 0);
    });

    if (c.kind === 'amqp') {
      test('RabbitMQ closes the connection mid-stream: the worker reconnects by itself and every event comes out', async (t) => {
        const base = sink.records().length;
        // The whole stream is queued first: the workers then hold deliveries the whole time (a producer with
        // publisher confirms is slower than two workers, so a stream sent alongside never builds a backlog).
        const sent = await sendEvents({ brokerUrl: broker.url, count: CLOSE_COUNT, teamId: TEAM, startIndex: 10_000 });
        const sentUuids = new Set(sent.map(uuidOfSent));
        assert.equal(sentUuids.size, CLOSE_COUNT);
        const worker = await start();
        const pids = await childrenOf(worker.child.pid!);
        assert.equal(pids.length, WORKERS);
        const conns = await connectionsOf(pids);
        assert.equal(conns.length, WORKERS, `one connection per worker process ${JSON.stringify(pids)}`);

        await waitUntil(
          async () => sink.records().length - base >= 10 && (await inputDepth()) >= 100,
          60_000,
          'the stream flowing with a backlog behind it',
          5,
        );
        const closedAt = Date.now();
        await Promise.all(conns.map((conn) => execFileAsync('rabbitmqctl', ['-q', 'close_connection', conn, 'test'])));

        const notes: string[] = [];
        let inHand = 0;
        for (let index = 0; index < WORKERS; index++) {
          const mine = (l: Record<string, unknown>): boolean => l['worker'] === index;
          const lost = await worker.waitForLog(
            (l) => mine(l) && String(l.message).startsWith('AMQP connection lost'),
            30_000,
            `worker ${index}: connection lost`,
          );
          const resumed = await worker.waitForLog(
            (l) => mine(l) && String(l.message).startsWith('AMQP connection resumed after'),
            30_000,
            `worker ${index}: connection resumed`,
          );
          assert.match(String(lost.message), /CONNECTION.FORCED/, 'the reason RabbitMQ gave');
          inHand += Number(lost['unsettled']);
          assert.ok(worker.logs().indexOf(resumed) > worker.logs().indexOf(lost));
          notes.push(`worker ${index}: ${String(lost['unsettled'])} deliveries in hand, ${String(resumed.message)}`);
        }
        assert.ok(inHand > 0, 'the workers held deliveries when their connections went');
        await waitAllOut(base, sentUuids, 60_000);
        const completeMs = Date.now() - closedAt;
        // The same processes reconnected by themselves: none died, none was replaced.
        assert.deepEqual((await childrenOf(worker.child.pid!)).sort(), [...pids].sort());
        const restarts = worker
          .logs()
          .filter(
            (l) => /died|started \(pid/.test(String(l.message)) && Date.parse(String(l['timestamp'])) >= closedAt,
          );
        assert.deepEqual(
          restarts.map((l) => l.message),
          [],
          'no worker process died or was replaced',
        );
        const now = await connectionsOf(pids);
        assert.equal(now.length, WORKERS, 'one new connection per worker process');
        assert.deepEqual(
          now.filter((x) => conns.includes(x)),
          [],
        );
        await checkOutcome(t, base, sentUuids, 'connection closed');
        t.diagnostic(`${notes.join('; ')}; close → all out ${completeMs} ms`);
        assert.ok(completeMs < 60_000);
        assert.equal(await worker.stop(), 0);
      });
    }

    if (c.kind === 'redis') {
      test('kill -9, no restart: the held messages are kombu unacked records that Python Celery restores; a new worker finishes', async (t) => {
        const base = sink.records().length;
        const sent = await sendEvents({ brokerUrl: broker.url, count: COUNT, teamId: TEAM, startIndex: 20_000 });
        const sentUuids = new Set(sent.map(uuidOfSent));
        const victim = await start();
        const { killedAt, snapshot } = await killMidStream(t, base, sentUuids, victim);
        checkRedisSnapshot(snapshot!, killedAt);
        const s = snapshot!;
        assert.ok(s.unacked.size > 0, 'unacked records to restore');

        // Let the Python sink finish what is published, so that only the dead worker's messages are unacked, and
        // let them age past the 1 s visibility timeout given to kombu below.
        await waitUntil(
          async () => {
            const lens = await Promise.all(priorityLists(OUTPUT).map((k) => redis!.llen(k)));
            const records = await redis!.hvals('unacked');
            const sinkHeld = records.filter((r) => (JSON.parse(r) as [unknown, string, string])[2] !== INPUT).length;
            return lens.every((n) => n === 0) && sinkHeld === 0;
          },
          30_000,
          'the sink to go idle',
          50,
        );
        await sleep(Math.max(0, killedAt + 1500 - Date.now()));
        const queuedBefore = await redis!.lrange(INPUT, 0, -1);

        // kombu's own restore (what a Python Celery worker runs at start and every so often), visibility 1 s.
        const script = [
          'import sys',
          'from kombu import Connection',
          "with Connection(sys.argv[1], transport_options={'visibility_timeout': 1}) as conn:",
          '    conn.default_channel.qos.restore_visible(num=100000)',
        ].join('\n');
        await execFileAsync(PYTHON, ['-c', script, broker.url], { cwd: PYTHON_DIR, timeout: 30_000 });

        const left = await redis!.hmget('unacked', ...s.unacked.keys());
        assert.deepEqual(
          left.filter((x) => x !== null),
          [],
          'kombu took every unacked record',
        );
        assert.equal(await redis!.zcard('unacked_index'), 0);
        const queuedAfter = await redis!.lrange(INPUT, 0, -1);
        const restored = queuedAfter.length - queuedBefore.length;
        assert.equal(restored, s.unacked.size, 'kombu put every held message back');
        // RPUSH: at the consuming end, next in line, marked redelivered.
        const restoredEnvelopes = queuedAfter.slice(queuedAfter.length - restored);
        assert.deepEqual(restoredEnvelopes.map(envelopeUuid).sort(), [...s.unacked.values()].map((u) => u.uuid).sort());
        assert.ok(restoredEnvelopes.every(envelopeRedelivered), 'restored copies are marked redelivered');
        assert.deepEqual(queuedAfter.slice(0, queuedBefore.length), queuedBefore, 'the rest of the queue is untouched');

        // A second `start`: nothing left to restore but the landing lists; it finishes the stream.
        const second = await start();
        await waitUntil(
          () =>
            s.workerIds.every((id) => second.logs().some((l) => String(l.message).includes(`of dead worker ${id}`))) &&
            restoredBy(second, s.workerIds) >= s.landing.length,
          10_000,
          'dead workers noticed',
        );
        assert.equal(restoredBy(second, s.workerIds), s.landing.length, 'only the landing lists were left for it');
        await waitAllOut(base, sentUuids, 60_000);
        const completeMs = Date.now() - killedAt;
        const got = await checkOutcome(t, base, sentUuids, 'kill -9 + Python restore');
        assert.equal(got.duplicates, 0, 'Redis: no duplicates');
        await checkDeadWorkersCleared(s.workerIds);
        t.diagnostic(
          `Python restored ${restored} message(s) (landing ${s.landing.length}); kill → all out ${completeMs} ms`,
        );
        assert.equal(await second.stop(), 0);
      });
    }
  });
}

/** RabbitMQ connections of the given worker processes (by their connection_name client property). */
async function connectionsOf(pids: number[]): Promise<string[]> {
  const { stdout } = await execFileAsync('rabbitmqctl', [
    '-q',
    'list_connections',
    'pid',
    'vhost',
    'client_properties',
    '--no-table-headers',
  ]);
  const names = pids.map((pid) => `{"connection_name","posthog-plugins ${hostname()}:${pid}"}`);
  return stdout
    .split('\n')
    .map((l) => l.split('\t'))
    .filter((cols) => cols[1] === VHOST && names.some((n) => (cols[2] ?? '').includes(n)))
    .map((cols) => cols[0]!);
}

/**
 * SIGKILL `start` and its worker processes at the same instant: all are stopped first (SIGSTOP), so that neither
 * the supervisor (restoring, restarting) nor a worker (noticing its supervisor gone) can react to the others'
 * deaths. Resolves with the worker pids once every process is gone.
 */
async function killTree(w: WorkerProcess): Promise<number[]> {
  const supervisor = w.child.pid!;
  process.kill(supervisor, 'SIGSTOP');
  const kids = await childrenOf(supervisor);
  assert.equal(kids.length, WORKERS, `worker processes of ${supervisor}`);
  for (const pid of kids) process.kill(pid, 'SIGSTOP');
  for (const pid of [...kids, supervisor]) process.kill(pid, 'SIGKILL');
  await w.kill();
  await waitUntil(() => kids.every((pid) => !alive(pid)), 10_000, 'worker processes gone');
  return kids;
}
