import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Redis from 'ioredis';
import type { Knex } from 'knex';
import { openDatabase } from '../../src/store/database';
import { PluginStore } from '../../src/store/plugin-store';
import { type JsonObject, type SinkRecord, type SinkWorker, sendEvents, startSinkWorker } from '../helpers/python';
import { redisUrl, waitUntil } from '../helpers/services';
import { type WorkerProcess, cli, startWorker } from '../helpers/worker';

/**
 * The seed's use cases with the example plugins of fixtures/plugins/examples, end to end: Python Celery produces
 * process_event_with_plugins, two `posthog-plugins start` instances run a team's chain (labeller → schema
 * enforcer with an attachment → enricher with fetch + meta.cache → warehouse exporter with exportEvents →
 * scheduled counter with storage and posthog.capture → a job scheduler), and a real Python Celery worker
 * executes process_event. Also: two instances never both run a runEveryMinute; a job scheduled runIn(2,
 * 'seconds') survives a restart of every worker and runs once.
 *
 * Redis db 11 is shared with test/plugins/api/cache-op.test.ts and background/schedule-lock.test.ts, which never
 * flush it: this file uses queues, a team and config/plugin ids of its own (random), and never flushes either.
 */
const DB = 11;
const RUN = randomBytes(4).toString('hex');
const QUEUE = `pp-api-${RUN}`;
const OUT = `pp-api-${RUN}-out`;
const TEAM = 100_000 + Math.floor(Math.random() * 800_000);
const ID_BASE = 1_000_000 + Math.floor(Math.random() * 1_000_000_000);

interface Hit {
  path: string;
  body: string;
  at: number;
  /** The status we answered. */
  status?: number;
}

/** The outside world of the plugins: a company API, a warehouse, a tick recorder, a job sink. */
function startServices(): Promise<{ server: http.Server; url: string; hits: Hit[] }> {
  const hits: Hit[] = [];
  let warehouseCalls = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const url = req.url ?? '';
      hits.push({ path: url, body, at: Date.now() });
      if (url.startsWith('/companies/')) {
        const domain = decodeURIComponent(url.slice('/companies/'.length));
        if (domain === 'acme.com')
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ name: 'Acme Inc.' }));
        else res.writeHead(404).end('unknown');
      } else if (url === '/warehouse') {
        // The first batch finds the warehouse down: the exporter throws RetryError and the batch comes back 6 s later.
        warehouseCalls++;
        const status = warehouseCalls === 1 ? 503 : 200;
        hits[hits.length - 1].status = status;
        res.writeHead(status).end();
      } else {
        res.writeHead(200).end('ok');
      }
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({ server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits }),
    ),
  );
}

const props = (r: SinkRecord): Record<string, unknown> =>
  (r.data as { properties: Record<string, unknown> }).properties;
const eventName = (r: SinkRecord): string => (r.data as { event: string }).event;

describe('plugin API end to end: example plugins through Python Celery in and out', () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'pp-api-'));
  const databaseUrl = `sqlite:${path.join(tmp, 'plugins.sqlite3')}`;
  const env = { DATABASE_URL: databaseUrl };
  const brokerUrl = redisUrl(DB);
  let services: Awaited<ReturnType<typeof startServices>>;
  let sink: SinkWorker;
  let workers: WorkerProcess[] = [];
  let db: Knex;
  let redis: Redis;
  const ids: Record<string, number> = {};

  const startOne = (): Promise<WorkerProcess> =>
    startWorker(
      [
        '--broker',
        brokerUrl,
        '--queue',
        QUEUE,
        '--output-queue',
        OUT,
        '--workers',
        '1',
        '--batch-size',
        '20',
        '--reload-channel',
        '',
        '--fetch-allow',
        '127.0.0.1',
        '--log-level',
        'info',
      ],
      env,
    );

  before(async () => {
    services = await startServices();
    await cli(['migrate'], env);
    db = openDatabase(databaseUrl);
    // Ids of our own, so that cache keys and schedule locks in the shared Redis db are ours alone.
    for (const t of ['posthog_plugin', 'posthog_pluginconfig'])
      await db.raw('INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)', [t, ID_BASE]);
    const install = async (name: string, source: string, config: Record<string, string> = {}): Promise<void> => {
      await cli(['install', source, '--team', String(TEAM), '--config', JSON.stringify(config)], env);
      const row = await db('posthog_pluginconfig').max('id as id').first();
      ids[name] = Number(row!.id);
    };
    const ex = (p: string): string => `fixtures/plugins/examples/${p}`;
    await install('labeller', ex('labeller'), {
      labels: JSON.stringify({ $pageview: 'navigation', 'checkout_*': 'revenue' }),
    });
    await install('schema', ex('schema-enforcer'));
    await new PluginStore(db).addAttachment({
      pluginConfigId: ids.schema,
      teamId: TEAM,
      key: 'schema',
      contentType: 'application/json',
      fileName: 'schema.json',
      contents: Buffer.from(
        JSON.stringify({ signup: { required: ['plan'] }, checkout_done: { types: { amount: 'number' } } }),
      ),
    });
    await install('enricher', ex('enricher'), { apiUrl: services.url, cacheSeconds: '600' });
    await install('warehouse', ex('warehouse-exporter'), {
      url: `${services.url}/warehouse`,
      exportEventsBufferSeconds: '1',
      exportEventsToIgnore: 'plugin counter',
    });
    await install('counter', ex('scheduled-counter'));
    const extra = path.join(tmp, 'ticks-and-jobs.js');
    writeFileSync(
      extra,
      // meta.cache in setupPlugin: works at the very start of a worker (the plugin Redis is connected first).
      `async function setupPlugin({ cache }) { await cache.set('setup', 'done') }
       async function runEveryMinute() { await fetch('${services.url}/tick') }
       async function processEvent(event, { jobs }) {
         if (event.event === 'schedule-job') await jobs.deliver({ uuid: event.uuid }).runIn(2, 'seconds')
         return event
       }
       const jobs = { deliver: async (payload) => { await fetch('${services.url}/job', { method: 'POST', body: JSON.stringify(payload) }) } }
       module.exports = { setupPlugin, runEveryMinute, processEvent, jobs }`,
    );
    await install('ticks', extra);
    redis = new Redis(brokerUrl);
    sink = await startSinkWorker({ brokerUrl, queue: OUT });
    workers = await Promise.all([startOne(), startOne()]);
  });

  after(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await sink?.stop();
    // The db is shared (never flushed): remove this run's own keys, queues, bindings and plugin cache entries.
    // Also its configs' schedule periods and the liveness key its workers kept alive (both would expire later).
    const schedules = Object.values(ids).map((id) => `posthog-plugins:schedule:${id}:*`);
    for (const pattern of [`*${QUEUE}*`, `@plugin/*/${TEAM}/*`, ...schedules, '@posthog-plugin-server/ping']) {
      const keys = (await redis?.keys(pattern)) ?? [];
      if (keys.length > 0) await redis?.del(...keys);
    }
    redis?.disconnect();
    await db?.destroy();
    services?.server.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('labeller, schema enforcer, enricher (fetch + cache), exporter (buffer + RetryError), storage and log entries', async () => {
    const events = [
      { event: '$pageview', properties: { email: 'ada@acme.com', $current_url: 'http://x/' } },
      { event: 'signup', properties: { email: 'bob@acme.com' } }, // no plan: dropped by the schema
      { event: 'signup', properties: { email: 'cy@nowhere.org', plan: 'free' } },
      { event: 'checkout_done', properties: { email: 'di@acme.com', amount: 12.5 } },
      { event: 'checkout_done', properties: { amount: 'twelve' } }, // wrong type: dropped
    ];
    const sent = await sendEvents({
      brokerUrl,
      queue: QUEUE,
      teamId: TEAM,
      events: events.map(
        (e) => JSON.parse(JSON.stringify({ ...e, distinct_id: 'd', uuid: randomUUID() })) as JsonObject,
      ),
      count: events.length,
    });
    const records = await sink.waitFor(3, 60_000);
    await new Promise((r) => setTimeout(r, 500));
    const got = sink.records().filter((r) => eventName(r) !== 'plugin counter');
    assert.equal(got.length, 3, `three events pass the schema: ${JSON.stringify(records.map(eventName))}`);
    const byName = new Map(got.map((r) => [`${eventName(r)}:${(props(r).email as string) ?? ''}`, r]));
    const pageview = byName.get('$pageview:ada@acme.com')!;
    assert.equal(props(pageview).label, 'navigation');
    assert.deepEqual(props(pageview).$set, { company: 'Acme Inc.' });
    assert.equal(props(byName.get('checkout_done:di@acme.com')!).label, 'revenue');
    assert.equal(props(byName.get('signup:cy@nowhere.org')!).$set, undefined, 'unknown company: no $set');
    // One lookup per domain (acme.com, nowhere.org): the rest came from meta.cache, shared by both instances…
    const lookups = services.hits.filter((h) => h.path.startsWith('/companies/')).map((h) => h.path);
    assert.ok(lookups.filter((p) => p === '/companies/acme.com').length <= 2, `cached lookups: ${lookups.join(' ')}`);
    const pluginId = Number((await db('posthog_pluginconfig').where({ id: ids.enricher }).first()).plugin_id);
    const key = `@plugin/${pluginId}/${TEAM}/company:acme.com`;
    assert.equal(await redis.get(key), '"Acme Inc."');
    const ttl = await redis.ttl(key);
    assert.ok(ttl > 0 && ttl <= 600, `cached with the configured TTL, got ${ttl}`);

    // setupPlugin's cache write at start-up, of the plugin that schedules jobs: it loaded at once, no retry.
    const ticksPlugin = Number((await db('posthog_pluginconfig').where({ id: ids.ticks }).first()).plugin_id);
    assert.equal(await redis.get(`@plugin/${ticksPlugin}/${TEAM}/setup`), '"done"');
    assert.ok(
      !workers.some((w) => w.logs().some((l) => /setupPlugin failed/.test(String(l.message)))),
      'no setupPlugin failed at start',
    );

    // The warehouse was down for the first batch: RetryError → a persisted job → retried 6 s later. Every
    // surviving event arrives (at least once), the dropped ones never.
    const exported = async (): Promise<Set<string>> => {
      const uuids = new Set<string>();
      for (const h of services.hits)
        if (h.path === '/warehouse' && h.status === 200)
          for (const e of (JSON.parse(h.body) as { batch: Array<{ uuid: string }> }).batch) uuids.add(e.uuid);
      return uuids;
    };
    const want = got.map((r) => (r.data as { uuid: string }).uuid);
    await waitUntil(
      async () => {
        const s = await exported();
        return want.every((u) => s.has(u)) || undefined;
      },
      30_000,
      'the retried export',
    );
    const exportedUuids = await exported();
    for (const u of want) assert.ok(exportedUuids.has(u), `exported ${u}`);
    assert.equal(exportedUuids.size, 3, 'dropped events are not exported');
    // Each instance buffers its own events; the batch the warehouse refused comes again about 6 s later.
    const calls = services.hits.filter((h) => h.path === '/warehouse');
    const uuidsOf = (h: Hit): string[] =>
      (JSON.parse(h.body) as { batch: Array<{ uuid: string }> }).batch.map((e) => e.uuid);
    const refused = uuidsOf(calls[0]);
    const retried = calls.slice(1).find((h) => uuidsOf(h).join() === refused.join());
    assert.ok(
      retried,
      `the refused batch was sent again, whole: ${JSON.stringify(calls.map((h) => [h.at - calls[0].at, uuidsOf(h)]))}`,
    );
    assert.ok(
      retried.at - calls[0].at >= 5000,
      `the retry came about 6 s after the failure, got ${retried.at - calls[0].at} ms`,
    );

    // Storage: the counter counted every event that reached it (3, after the schema enforcer), atomically across
    // both instances.
    const stored = await db('posthog_pluginstorage').where({ plugin_config_id: ids.counter, key: 'events' }).first();
    assert.equal(Number(stored.value), 3);

    // Log entries: the schema enforcer's console lines and system messages, batched into posthog_pluginlogentry.
    await waitUntil(
      async () =>
        (await db('posthog_pluginlogentry').where({ plugin_config_id: ids.schema, source: 'CONSOLE' })).length >= 2,
      10_000,
      'console log entries',
    );
    const lines = (await db('posthog_pluginlogentry').where({ plugin_config_id: ids.schema, source: 'CONSOLE' })).map(
      (r: { message: string; type: string }) => `${r.type} ${r.message}`,
    );
    assert.ok(
      lines.some((l) => /^WARN dropped signup .*missing plan/.test(l)),
      lines.join('\n'),
    );
    const system = await db('posthog_pluginlogentry').where({ plugin_config_id: ids.labeller, source: 'SYSTEM' });
    assert.ok(system.some((r: { message: string }) => /Plugin loaded/.test(r.message)));
    assert.equal(sent.length, 5);
  });

  test(
    'runEveryMinute runs once per minute across two instances; the counter reports through posthog.capture',
    { timeout: 150_000 },
    async () => {
      // Both instances have been up since before the first test: wait for two minute boundaries' worth of ticks.
      const ticks = async (): Promise<number[]> =>
        services.hits.filter((h) => h.path === '/tick').map((h) => Math.floor(h.at / 60_000));
      await waitUntil(async () => new Set(await ticks()).size >= 2, 130_000, 'ticks in two different minutes');
      const minutes = await ticks();
      assert.equal(new Set(minutes).size, minutes.length, `one tick per minute, never two: ${minutes.join(',')}`);
      // The scheduled counter ran in a minute after the events and captured a report (through the plugins again).
      const report = await waitUntil(
        () => sink.records().find((r) => eventName(r) === 'plugin counter'),
        70_000,
        "the counter's captured event",
      );
      assert.equal(props(report).counted, 3);
      assert.equal(props(report).$lib, 'posthog-plugin-server');
      assert.equal(report.distinct_id, 'scheduled-counter');
      const last = await db('posthog_pluginstorage')
        .where({ plugin_config_id: ids.counter, key: 'lastReport' })
        .first();
      assert.equal((JSON.parse(last.value) as { total: number }).total, 3);
    },
  );

  test(
    "a job scheduled runIn(2, 'seconds') survives a restart of every worker and runs once",
    { timeout: 90_000 },
    async () => {
      const before = sink.records().length;
      const [task] = await sendEvents({ brokerUrl, queue: QUEUE, teamId: TEAM, eventName: 'schedule-job', count: 1 });
      await sink.waitFor(before + 1, 30_000); // processEvent has stored the job by now
      await Promise.all(workers.map((w) => w.stop()));
      const jobsNow = await db('posthog_plugins_job').where({ plugin_config_id: ids.ticks });
      assert.equal(jobsNow.length, 1, 'the job is in the table while no worker runs');
      assert.equal(services.hits.filter((h) => h.path === '/job').length, 0, 'not run before its time');
      await new Promise((r) => setTimeout(r, 2500)); // due while everything is down
      workers = [await startOne()];
      await waitUntil(() => services.hits.some((h) => h.path === '/job'), 30_000, 'the job ran after the restart');
      await new Promise((r) => setTimeout(r, 3000));
      const runs = services.hits.filter((h) => h.path === '/job');
      assert.equal(runs.length, 1, 'exactly once');
      assert.equal((JSON.parse(runs[0].body) as { uuid: string }).uuid, task.uuid);
      assert.equal(
        (await db('posthog_plugins_job').where({ plugin_config_id: ids.ticks })).length,
        0,
        'done jobs leave the table',
      );
    },
  );
});
