import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type BrokerFixture, amqpFixture, redisFixture } from '../helpers/brokers';
import { type SentTask, type SinkRecord, type SinkWorker, sendEvents, startSinkWorker } from '../helpers/python';
import { dropPgDatabase, ensurePgDatabase, pgUrl } from '../helpers/services';
import { type WorkerProcess, cli, startWorker } from '../helpers/worker';

/**
 * The whole path, end to end, with real parts only: real Python Celery produces process_event_with_plugins
 * (v1 and v2, priorities 0/5/9, compressed), celery-node produces some too, the real CLI installs two plugins
 * and runs the worker, and a real Python Celery worker executes every process_event we publish.
 * The same suite runs for each broker and for plugins stored in SQLite and in Postgres.
 */
const INPUT = 'posthog-plugins';
const OUTPUT = 'celery';
const TEAM = 2; // two plugins: add a property, drop $drop_me
const BARE_TEAM = 3; // no plugins: events pass through unchanged

interface Case {
  name: string;
  broker: () => BrokerFixture;
  store: 'sqlite' | 'postgres';
}

const CASES: Case[] = [
  { name: 'redis + sqlite', broker: () => redisFixture(1), store: 'sqlite' },
  { name: 'redis + postgres', broker: () => redisFixture(2), store: 'postgres' },
  { name: 'rabbitmq + sqlite', broker: () => amqpFixture('posthog-plugins-test-pipeline-sqlite'), store: 'sqlite' },
  {
    name: 'rabbitmq + postgres',
    broker: () => amqpFixture('posthog-plugins-test-pipeline-postgres'),
    store: 'postgres',
  },
];

/** What Python's process_event must receive for one sent task, given the plugins of its team. */
function expectedKwargs(t: SentTask): Record<string, unknown> {
  const [distinct_id, ip, site_url, data, team_id, now, sent_at] = t.args as [
    unknown,
    unknown,
    unknown,
    Record<string, unknown>,
    number,
    unknown,
    unknown,
  ];
  const out = structuredClone(data);
  if (team_id === TEAM) (out['properties'] as Record<string, unknown>)['plugin_added'] = 'yes';
  return { distinct_id, ip, site_url, data: out, team_id, now, sent_at };
}

function receivedKwargs(r: SinkRecord): Record<string, unknown> {
  return {
    distinct_id: r.distinct_id,
    ip: r.ip,
    site_url: r.site_url,
    data: r.data,
    team_id: r.team_id,
    now: r.now,
    sent_at: r.sent_at,
  };
}

function uuidOf(x: { data: unknown }): string {
  return String((x.data as { uuid: string }).uuid);
}

for (const c of CASES) {
  describe(`pipeline: ${c.name}`, () => {
    let broker: BrokerFixture;
    let sink: SinkWorker;
    let worker: WorkerProcess;
    let databaseUrl: string;
    const tmp = mkdtempSync(path.join(tmpdir(), 'pp-pipeline-'));
    const pgName = `posthog_plugins_test_pipeline_${c.name.split(' ')[0]}`;

    before(async () => {
      broker = c.broker();
      await broker.reset();
      if (c.store === 'postgres') {
        await dropPgDatabase(pgName);
        await ensurePgDatabase(pgName);
        databaseUrl = pgUrl(pgName);
      } else {
        databaseUrl = `sqlite:${path.join(tmp, 'plugins.sqlite3')}`;
      }
      const env = { DATABASE_URL: databaseUrl };
      await cli(['migrate'], env);
      await cli(
        [
          'install',
          'fixtures/plugins/add-property',
          '--team',
          String(TEAM),
          '--config',
          '{"propertyName":"plugin_added","propertyValue":"yes"}',
        ],
        env,
      );
      await cli(['install', 'fixtures/plugins/drop-events', '--team', String(TEAM)], env);
      const listed = await cli(['list', '--json'], env);
      const configs = JSON.parse(listed.stdout) as Array<{ teamId: number; order: number; pluginName: string }>;
      assert.deepEqual(
        configs.map((x) => [x.teamId, x.order, x.pluginName]),
        [
          [TEAM, 0, 'Add property'],
          [TEAM, 1, 'Drop events'],
        ],
      );

      sink = await startSinkWorker({ brokerUrl: broker.url, queue: OUTPUT });
      worker = await startWorker(['--broker', broker.url, '--batch-size', '50'], env);
    });

    after(async () => {
      await worker?.stop();
      await sink?.stop();
      await broker?.close();
      if (c.store === 'postgres') await dropPgDatabase(pgName);
      rmSync(tmp, { recursive: true, force: true });
    });

    test('every surviving event reaches Python process_event with exactly the expected kwargs', async () => {
      const url = broker.url;
      const sent: SentTask[] = [
        ...(await sendEvents({ brokerUrl: url, count: 20, teamId: TEAM, startIndex: 0 })),
        ...(await sendEvents({ brokerUrl: url, count: 6, teamId: TEAM, startIndex: 100, eventName: '$drop_me' })),
        ...(await sendEvents({ brokerUrl: url, count: 8, teamId: TEAM, startIndex: 200, protocol: 1 })),
        ...(await sendEvents({ brokerUrl: url, count: 5, teamId: TEAM, startIndex: 300, priority: 5 })),
        ...(await sendEvents({ brokerUrl: url, count: 5, teamId: TEAM, startIndex: 400, priority: 9 })),
        ...(await sendEvents({ brokerUrl: url, count: 3, teamId: TEAM, startIndex: 500, compression: 'zlib' })),
        ...(await sendEvents({ brokerUrl: url, count: 4, teamId: TEAM, startIndex: 600, ip: null, sentAt: null })),
        ...(await sendEvents({ brokerUrl: url, count: 6, teamId: BARE_TEAM, startIndex: 700 })),
      ];
      const surviving = sent.filter((t) => (t.args[3] as { event: string }).event !== '$drop_me' || t.args[4] !== TEAM);
      assert.equal(surviving.length, sent.length - 6);

      const records = await sink.waitFor(surviving.length, 60_000);
      const byUuid = new Map(records.map((r) => [uuidOf(r), r]));
      for (const t of surviving) {
        const got = byUuid.get(String((t.args[3] as { uuid: string }).uuid));
        assert.ok(got, `event ${t.index} (task ${t.id}) never reached process_event`);
        assert.deepEqual(receivedKwargs(got), expectedKwargs(t), `kwargs of event ${t.index}`);
        assert.equal(got.positional, 0, 'process_event gets kwargs only, as PostHog’s plugin server sent it');
        assert.equal(got.task, 'posthog.tasks.process_event.process_event');
      }
      // Nothing dropped comes out, nothing comes out twice, nothing is left unacked.
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(sink.records().length, surviving.length);
      assert.deepEqual(sink.problems(), []);
      assert.equal(await broker.unsettled(INPUT), 0);
    });

    test('messages sent by celery-node, a second Celery implementation, are processed too', async () => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const celery = require('celery-node') as {
        createClient(
          broker: string,
          backend: string,
          queue: string,
        ): {
          sendTask(name: string, args: unknown[], kwargs: Record<string, unknown>): unknown;
          disconnect(): Promise<void>;
        };
      };
      const client = celery.createClient(broker.url, broker.url, INPUT);
      const before = sink.records().length;
      const now = new Date().toISOString();
      const uuids: string[] = [];
      for (let i = 0; i < 5; i++) {
        const uuid = `c0de0000-0000-4000-8000-00000000000${i}`;
        uuids.push(uuid);
        client.sendTask(
          'posthog.tasks.process_event.process_event_with_plugins',
          [
            `node-${i}`,
            '10.0.0.1',
            'http://localhost:8000',
            { event: 'node_event', uuid, properties: { i } },
            TEAM,
            now,
            now,
          ],
          {},
        );
      }
      const records = await sink.waitFor(before + 5, 30_000);
      await client.disconnect();
      const got = records.filter((r) => uuids.includes(uuidOf(r)));
      assert.equal(got.length, 5);
      for (const r of got) {
        assert.deepEqual((r.data as { properties: Record<string, unknown> }).properties['plugin_added'], 'yes');
        assert.equal(r.team_id, TEAM);
      }
    });

    test('bad messages are set aside with a clear reason while good ones around them flow', async () => {
      const url = broker.url;
      const before = sink.records().length;
      const good1 = await sendEvents({ brokerUrl: url, count: 2, teamId: BARE_TEAM, startIndex: 900 });
      await broker.pushRaw(INPUT, [
        { kind: 'not-json' },
        { kind: 'content-type', contentType: 'application/x-yaml' },
        {
          kind: 'v2-body',
          headers: { lang: 'py', task: 'posthog.tasks.process_event.process_event_with_plugins', id: 'two-elements' },
          body: '[[], {}]',
        },
        {
          kind: 'v2-body',
          headers: { lang: 'py', task: 'posthog.tasks.process_event.process_event_with_plugins', id: 'few-args' },
          body: '[["only-distinct-id"], {}, {}]',
        },
      ]);
      await sendEvents({ brokerUrl: url, count: 1, teamId: BARE_TEAM, startIndex: 950, serializer: 'pickle' });
      await sendEvents({
        brokerUrl: url,
        count: 1,
        teamId: BARE_TEAM,
        startIndex: 960,
        taskName: 'posthog.tasks.something_else',
      });
      const good2 = await sendEvents({ brokerUrl: url, count: 2, teamId: BARE_TEAM, startIndex: 970 });

      await sink.waitFor(before + good1.length + good2.length, 30_000);
      const deadline = Date.now() + 15_000;
      let setAside: Array<{ reason: string }> = [];
      while (Date.now() < deadline && setAside.length < 6) {
        setAside = await broker.setAside(INPUT);
        await new Promise((r) => setTimeout(r, 200));
      }
      const reasons = setAside.map((s) => s.reason);
      const expect = [
        /not a JSON object|not valid JSON/i,
        /application\/x-yaml/,
        /got 2 elements/,
        /argument|args/i,
        /pickle/,
        /unknown task "posthog\.tasks\.something_else"/,
      ];
      for (const re of expect)
        assert.ok(
          reasons.some((r) => re.test(r)),
          `a set-aside reason matching ${re} in ${JSON.stringify(reasons)}`,
        );
      assert.equal(setAside.length, 6);
      assert.equal(await broker.unsettled(INPUT), 0);
      // The worker is still consuming.
      const more = await sendEvents({ brokerUrl: url, count: 1, teamId: BARE_TEAM, startIndex: 990 });
      await sink.waitFor(before + good1.length + good2.length + more.length, 30_000);
    });

    test('SIGTERM finishes the work in hand and exits cleanly', async () => {
      const code = await worker.stop();
      assert.equal(code, 0, worker.logText().slice(-2000));
      assert.ok(worker.logs().some((l) => l.message === 'stopped cleanly'));
      assert.equal(await broker.unsettled(INPUT), 0);
    });
  });
}

/** Everything the consumer-loop tests below need, loaded lazily like the rest of this file's in-process tests. */
async function loopKit(): Promise<{
  redis: import('ioredis').default;
  url: string;
  queueTasks: (queue: string, count: number, prefix: string) => Promise<void>;
  RedisBroker: typeof import('../../src/brokers/redis/redis-broker').RedisBroker;
  BatchProcessor: typeof import('../../src/pipeline/batch-processor').BatchProcessor;
  ConsumerLoop: typeof import('../../src/pipeline/consumer-loop').ConsumerLoop;
  silentLogger: typeof import('../../src/log').silentLogger;
}> {
  const { default: Redis } = await import('ioredis');
  const { encodeTaskV2 } = await import('../../protocol/encode');
  const { buildEnvelope } = await import('../../protocol/redis-envelope');
  const { processEventWithPluginsTask } = await import('../../protocol/posthog');
  const { RedisBroker } = await import('../../src/brokers/redis/redis-broker');
  const { BatchProcessor } = await import('../../src/pipeline/batch-processor');
  const { ConsumerLoop } = await import('../../src/pipeline/consumer-loop');
  const { silentLogger } = await import('../../src/log');
  const { redisUrl } = await import('../helpers/services');
  const url = redisUrl(1);
  const redis = new Redis(url);
  await redis.flushdb();
  const queueTasks = async (queue: string, count: number, prefix: string): Promise<void> => {
    for (let i = 0; i < count; i++) {
      const task = processEventWithPluginsTask(
        {
          distinct_id: `u${i}`,
          ip: null,
          site_url: '',
          data: { event: 'e' },
          team_id: 1,
          now: '2020-01-01T00:00:00Z',
          sent_at: null,
        },
        { id: `${prefix}-${i}`, origin: 'test@host' },
      );
      await redis.lpush(
        queue,
        buildEnvelope(encodeTaskV2(task), { deliveryTag: `${prefix}-tag-${i}`, exchange: '', routingKey: queue }),
      );
    }
  };
  return { redis, url, queueTasks, RedisBroker, BatchProcessor, ConsumerLoop, silentLogger };
}

describe('consumer loop: batches ahead and settling (redis db 1)', () => {
  test('stop finishes the batch in hand and gives the batch taken ahead back, unprocessed and not lost', async () => {
    const { redis, url, queueTasks, RedisBroker, BatchProcessor, ConsumerLoop, silentLogger } = await loopKit();
    const Q = 'ahead-in';
    const OUT = 'ahead-out';
    await queueTasks(Q, 10, 'ahead');
    const broker = new RedisBroker({ url, inputQueue: Q, outputQueues: [OUT], logger: silentLogger() });
    await broker.connect();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let started!: () => void;
    const firstBatch = new Promise<void>((resolve) => (started = resolve));
    let calls = 0;
    // A chain that holds the first batch until the test says so: meanwhile the loop receives the next one.
    const plugins = {
      runChain: async <T>(_team: number, events: T[]): Promise<T[]> => {
        calls++;
        started();
        await gate;
        return events;
      },
    };
    const processor = new BatchProcessor({ plugins, logger: silentLogger(), origin: 'test@host', outputQueue: OUT });
    const loop = new ConsumerLoop({ broker, processor, logger: silentLogger(), batchSize: 3 });
    loop.start();
    await firstBatch;
    try {
      // The batch ahead is taken while the first is still in the plugins: 6 in flight, 4 left queued.
      const deadline = Date.now() + 10_000;
      while ((await redis.llen(Q)) !== 4 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.equal(await redis.llen(Q), 4);
      assert.equal(await redis.hlen('unacked'), 6);
      const stopped = loop.stop();
      release();
      await stopped;
      assert.equal(calls, 1, 'the batch taken ahead never reached the plugins');
      assert.equal(await redis.llen(OUT), 3, 'the batch in hand was finished');
      assert.equal(await redis.hlen('unacked'), 0);
      const back = await redis.lrange(Q, 0, -1);
      assert.equal(back.length, 7, 'the batch ahead is back in the queue');
      assert.equal(loop.stats.published, 3);
    } finally {
      await broker.close();
      await redis.flushdb();
      redis.disconnect();
    }
  });

  test('a settle that keeps failing stops the intake: at most three batches held, all of them back after stop', async () => {
    const { redis, url, queueTasks, RedisBroker, BatchProcessor, ConsumerLoop, silentLogger } = await loopKit();
    const Q = 'stuck-in';
    const OUT = 'stuck-out';
    await queueTasks(Q, 30, 'stuck');
    const real = new RedisBroker({ url, inputQueue: Q, outputQueues: [OUT], logger: silentLogger() });
    await real.connect();
    // The real broker, except that publishing outputs fails (giving messages back still works).
    let refused = 0;
    const broker: import('../../src/brokers/broker').Broker = {
      displayUrl: real.displayUrl,
      overlapSettle: real.overlapSettle,
      connect: () => real.connect(),
      receive: (max, waitMs) => real.receive(max, waitMs),
      settle: (settlements) => {
        if (settlements.every((x) => x.kind === 'requeue')) return real.settle(settlements);
        refused++;
        return Promise.reject(new Error('settle refused (test)'));
      },
      publish: (outgoing) => real.publish(outgoing),
      close: () => real.close(),
    };
    const plugins = { runChain: async <T>(_team: number, events: T[]): Promise<T[]> => events };
    const processor = new BatchProcessor({ plugins, logger: silentLogger(), origin: 'test@host', outputQueue: OUT });
    const loop = new ConsumerLoop({ broker, processor, logger: silentLogger(), batchSize: 3 });
    loop.start();
    try {
      const deadline = Date.now() + 10_000;
      while (refused < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      assert.ok(refused >= 3, 'the settle was retried');
      // In hand (waiting for the stuck settle), ahead, settling: 3 batches of 3; the rest stays queued.
      assert.ok((await redis.hlen('unacked')) <= 9, `held ${await redis.hlen('unacked')} > 3 batches`);
      assert.ok((await redis.llen(Q)) >= 21);
      await loop.stop();
      await real.close();
      assert.equal(await redis.hlen('unacked'), 0);
      assert.equal(await redis.llen(Q), 30, 'every message is back in the queue');
      assert.equal(await redis.llen(OUT), 0);
    } finally {
      await real.close();
      await redis.flushdb();
      redis.disconnect();
    }
  });
});
