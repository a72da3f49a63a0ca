import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import amqp from 'amqplib';
import Redis from 'ioredis';
import { type FuzzMessage, fuzzCorpus, redisEnvelope } from '../helpers/fuzz-corpus';
import { startPrivateRedis, type PrivateRedis } from '../helpers/private-redis';
import { type SentTask, type SinkWorker, sendEvents, startSinkWorker } from '../helpers/python';
import { amqpUrl, deleteVhost, resetVhost, waitUntil } from '../helpers/services';
import { REPO, type WorkerProcess, cli, startWorker } from '../helpers/worker';

const execFileAsync = promisify(execFile);

/**
 * The seeded fuzz corpus (test/helpers/fuzz-corpus.ts) interleaved with good events from real Python Celery, on
 * Redis (a private server) and on RabbitMQ (vhost posthog-plugins-test-fuzz), through `posthog-plugins start`
 * with a plugin on the team, to a real Python Celery sink. Nothing vanishes: every malformed message is set aside
 * with a reason, every valid one comes out to Python (or expires, as told); no worker restarts, the consumer loop
 * never fails, every log line is one JSON record. FUZZ_SEED picks another corpus.
 */
const SEED = Number(process.env.FUZZ_SEED ?? 18);
const INPUT = 'posthog-plugins';
const SET_ASIDE = `${INPUT}.rejected`;
const TEAM = 2;
const VHOST = 'posthog-plugins-test-fuzz';
const CORPUS_SIZE = 240;
/** Good events from Python, sent in this many runs between slices of the corpus. */
const PYTHON_RUNS = 3;
const PYTHON_PER_RUN = 80;
const WORKERS = 2;
const MARKER = /fz\d+x\d{6}/;

interface Fixture {
  url: string;
  push(messages: FuzzMessage[]): Promise<void>;
  setAside(): Promise<Array<{ reason: string; message: string }>>;
  inputLeft(): Promise<number>;
  close(): Promise<void>;
}

async function redisFixture(): Promise<Fixture> {
  const server: PrivateRedis = await startPrivateRedis({ appendonly: false });
  const url = server.url(0);
  const redis = new Redis(url);
  return {
    url,
    async push(messages) {
      for (const m of messages) await redis.lpush(INPUT, redisEnvelope(m, INPUT));
    },
    async setAside() {
      return (await redis.lrange(SET_ASIDE, 0, -1)).map((r) => JSON.parse(r) as { reason: string; message: string });
    },
    async inputLeft() {
      return (await redis.llen(INPUT)) + (await redis.hlen('unacked'));
    },
    async close() {
      redis.disconnect();
      await server.stop();
    },
  };
}

/**
 * Publishes corpus messages from a child process with a larger stack: amqplib encodes header tables recursively and
 * overflows at ~3,000 levels with Node's default stack, and the corpus has deeper ones.
 */
const AMQP_PUBLISHER = `
  const amqp = require('amqplib');
  const fs = require('fs');
  (async () => {
    const [file, url, queue] = process.argv.slice(1);
    const conn = await amqp.connect(url);
    const ch = await conn.createConfirmChannel();
    for (const line of fs.readFileSync(file, 'utf8').split('\\n')) {
      if (!line) continue;
      const m = JSON.parse(line);
      const o = { headers: JSON.parse(m.headersJson), correlationId: m.marker, messageId: m.marker, deliveryMode: 2 };
      if (m.contentType !== null) o.contentType = m.contentType;
      if (m.contentEncoding !== null) o.contentEncoding = m.contentEncoding;
      ch.sendToQueue(queue, Buffer.from(m.body, 'base64'), o);
    }
    await ch.waitForConfirms();
    await conn.close();
  })().catch((e) => { console.error(e); process.exit(1); });
`;

async function amqpFixture(tmp: string): Promise<Fixture> {
  await resetVhost(VHOST);
  const url = amqpUrl(VHOST);
  const conn = await amqp.connect(url);
  const ch = await conn.createConfirmChannel();
  // Declared as Celery declares it, so the raw publishes below are not dropped as unroutable before Python or
  // the worker declare it.
  await ch.assertQueue(INPUT, { durable: true });
  let pushes = 0;
  return {
    url,
    async push(messages) {
      const file = path.join(tmp, `push-${pushes++}.jsonl`);
      const lines = messages.map((m) => {
        const msg = m.message as NonNullable<FuzzMessage['message']>;
        return JSON.stringify({
          marker: m.marker,
          headersJson: msg.headersJson,
          body: msg.body.toString('base64'),
          contentType: msg.contentType,
          contentEncoding: msg.contentEncoding,
        });
      });
      writeFileSync(file, lines.join('\n'));
      await execFileAsync(process.execPath, ['--stack-size=3500', '-e', AMQP_PUBLISHER, file, url, INPUT], {
        cwd: REPO,
        maxBuffer: 16 * 1024 * 1024,
      });
      rmSync(file);
    },
    async setAside() {
      const reader = await conn.createChannel();
      const out: Array<{ reason: string; message: string }> = [];
      try {
        for (;;) {
          const got = await reader.get(SET_ASIDE, { noAck: false });
          if (got === false) break;
          out.push(JSON.parse(got.content.toString()) as { reason: string; message: string });
        }
      } finally {
        await reader.close(); // unacked: every record goes back to the queue
      }
      return out;
    },
    async inputLeft() {
      const q = await ch.checkQueue(INPUT);
      return q.messageCount;
    },
    async close() {
      await conn.close().catch(() => undefined);
      await deleteVhost(VHOST);
    },
  };
}

const BROKERS: Array<{ name: string; make: (tmp: string) => Promise<Fixture>; keep: (m: FuzzMessage) => boolean }> = [
  { name: 'redis', make: redisFixture, keep: (m) => !m.amqpOnly },
  { name: 'rabbitmq', make: amqpFixture, keep: (m) => !m.redisOnly && m.redisRaw === undefined },
];

for (const b of BROKERS) {
  describe(`fuzz corpus (seed ${SEED}) on ${b.name}`, () => {
    const tmp = mkdtempSync(path.join(tmpdir(), 'pp-fuzz-'));
    const env = { DATABASE_URL: `sqlite:${path.join(tmp, 'plugins.sqlite3')}` };
    let broker: Fixture;
    let sink: SinkWorker;
    let worker: WorkerProcess | undefined;

    before(async () => {
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
      broker = await b.make(tmp);
      sink = await startSinkWorker({ brokerUrl: broker.url });
    });

    after(async () => {
      await worker?.stop();
      await sink?.stop();
      await broker?.close();
      rmSync(tmp, { recursive: true, force: true });
    });

    test('nothing vanishes, no worker restarts, every good event reaches Python', async (t) => {
      const corpus = fuzzCorpus({ seed: SEED, count: CORPUS_SIZE, teamId: TEAM, nowMs: Date.now() }).filter(b.keep);
      // Corpus slices and Python's events alternate in the queue, so batches mix good and bad messages.
      const good: SentTask[] = [];
      const slice = Math.ceil(corpus.length / (PYTHON_RUNS + 1));
      for (let run = 0; run <= PYTHON_RUNS; run++) {
        await broker.push(corpus.slice(run * slice, (run + 1) * slice));
        if (run < PYTHON_RUNS)
          good.push(
            ...(await sendEvents({
              brokerUrl: broker.url,
              count: PYTHON_PER_RUN,
              startIndex: run * PYTHON_PER_RUN,
              teamId: TEAM,
            })),
          );
      }
      const expectPublished = corpus.filter((m) => m.expect === 'published');
      const expectSetAside = corpus.filter((m) => m.expect === 'set-aside');
      const expectExpired = corpus.filter((m) => m.expect === 'expired');

      const started = Date.now();
      worker = await startWorker(['--broker', broker.url, '--workers', String(WORKERS), '--batch-size', '50'], env);
      const w = worker;
      const records = await sink.waitFor(good.length + expectPublished.length, 180_000);
      const setAside = await waitUntil(
        async () => {
          const got = await broker.setAside();
          return got.length >= expectSetAside.length ? got : null;
        },
        60_000,
        `${expectSetAside.length} set-aside records`,
        500,
      );
      await waitUntil(
        () =>
          w.logs().filter((l) => l['message'] === 'task expired before it could run: acked without running it')
            .length >= expectExpired.length,
        30_000,
        'expired tasks',
      );
      await waitUntil(async () => (await broker.inputLeft()) === 0, 30_000, 'the input queue to be empty and settled');

      // Every good event from Python reached process_event, once.
      const byUuid = new Map<string, number>();
      for (const r of records) {
        const uuid = String((r.data as { uuid?: string }).uuid);
        byUuid.set(uuid, (byUuid.get(uuid) ?? 0) + 1);
      }
      for (const t of good)
        assert.equal(
          byUuid.get(String(t.uuid)),
          1,
          `Python event ${t.index} (task ${t.id}) reached process_event once`,
        );

      // Every corpus message ended where it had to, exactly once.
      const outcome = new Map<string, string[]>();
      const note = (marker: string, what: string): void => {
        outcome.set(marker, [...(outcome.get(marker) ?? []), what]);
      };
      for (const r of records) {
        const marker = ((r.data as { properties?: { fuzz?: string } }).properties ?? {}).fuzz;
        if (marker !== undefined) note(marker, 'published');
      }
      const reasons = new Map<string, string>();
      for (const rec of setAside) {
        assert.ok(
          typeof rec.reason === 'string' && rec.reason.length > 0,
          `a set-aside record without a reason: ${rec.message.slice(0, 200)}`,
        );
        const marker = MARKER.exec(rec.message)?.[0];
        assert.ok(marker, `a set-aside record of no corpus message: ${rec.reason} ${rec.message.slice(0, 200)}`);
        note(marker, 'set-aside');
        reasons.set(marker, rec.reason);
      }
      const expiredIds = new Set(
        w
          .logs()
          .filter((l) => l['message'] === 'task expired before it could run: acked without running it')
          .map((l) => l['taskId']),
      );
      for (const m of expectExpired) if (expiredIds.has(m.taskId)) note(m.marker, 'expired');

      const wrong = corpus
        .filter(
          (m) =>
            (outcome.get(m.marker) ?? []).join(',') !== m.expect ||
            (m.reason && !m.reason.test(reasons.get(m.marker) ?? '')),
        )
        .map((m) =>
          `${m.marker} ${m.shape}: expected ${m.expect}${m.reason ? ` ${m.reason}` : ''}, got ${(outcome.get(m.marker) ?? ['nothing']).join(',')} ${reasons.get(m.marker) ?? ''}`.slice(
            0,
            400,
          ),
        );
      assert.deepEqual(wrong, [], `${wrong.length} of ${corpus.length} corpus messages went wrong`);
      assert.equal(sink.records().length, good.length + expectPublished.length, 'nothing else came out');
      assert.deepEqual(sink.problems(), [], 'Python could run every task we published');

      // No restarts, no failing batch, and every line of the worker's log is one JSON record.
      const logs = w.logs();
      const messages = logs.map((l) => String(l['message']));
      assert.equal(messages.filter((m) => /^worker \d+ started/.test(m)).length, WORKERS, 'each worker started once');
      assert.deepEqual(
        messages.filter((m) => / died: |consumer loop error|could not settle/.test(m)),
        [],
      );
      assert.deepEqual(
        logs.filter((l) => l['level'] === 'raw').map((l) => String(l['message']).slice(0, 200)),
        [],
        'log lines that are not a JSON record',
      );
      assert.equal(await w.stop(), 0);
      worker = undefined;
      t.diagnostic(
        `${corpus.length} corpus messages in ${new Set(corpus.map((m) => m.shape)).size} shapes (${expectSetAside.length} set aside, ${expectPublished.length} published, ${expectExpired.length} expired) and ${good.length} Python events, all accounted for ${((Date.now() - started) / 1000).toFixed(1)} s after the worker started`,
      );
    });
  });
}
