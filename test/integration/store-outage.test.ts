import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import knex, { type Knex } from 'knex';
import { type PrivateRedis, startPrivateRedis } from '../helpers/private-redis';
import { type SinkWorker, sendEvents, startSinkWorker } from '../helpers/python';
import { dropPgDatabase, ensurePgDatabase, pgUrl, waitUntil } from '../helpers/services';
import { type WorkerProcess, cli, startWorker } from '../helpers/worker';

const NAME = 'posthog_plugins_test_store_outage';
const TEAM = 2;

/** Adds a property, logs every event (a write to posthog_pluginlogentry) and throws on `$boom` (an error write). */
const PLUGIN = `
export function processEvent(event) {
  console.log('saw ' + event.properties.index);
  if (event.event === '$boom') throw new Error('boom');
  event.properties.outage = 'passed';
  return event;
}
`;

/**
 * The plugin store (PostgreSQL) goes away while the worker runs: the event path needs nothing from it once the
 * plugins are loaded, so events keep flowing; the writes beside it (plugin logs, errors) fail on their own and
 * work again when the database is back. The outage is PostgreSQL refusing connections to this test's database
 * (ALLOW_CONNECTIONS false, its sessions terminated), so the shared server stays up for every other test.
 */
describe('plugin-store outage: events keep flowing while PostgreSQL refuses the database', () => {
  const tmp = mkdtempSync(path.join(tmpdir(), 'pp-store-outage-'));
  const url = pgUrl(NAME);
  let redis: PrivateRedis;
  let admin: Knex;
  let db: Knex;
  let sink: SinkWorker;
  let worker: WorkerProcess;

  const allowConnections = (allow: boolean): Promise<unknown> =>
    admin.raw(`ALTER DATABASE ?? WITH ALLOW_CONNECTIONS ${allow ? 'true' : 'false'}`, [NAME]);

  before(async () => {
    redis = await startPrivateRedis({ appendonly: false });
    admin = knex({ client: 'pg', connection: pgUrl('postgres'), pool: { min: 0, max: 1 } });
    await dropPgDatabase(NAME);
    await ensurePgDatabase(NAME);
    const dir = path.join(tmp, 'outage-plugin');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'index.js'), PLUGIN);
    writeFileSync(path.join(dir, 'plugin.json'), JSON.stringify({ name: 'outage', main: 'index.js', config: [] }));
    const env = { DATABASE_URL: url };
    await cli(['migrate'], env);
    await cli(['install', dir, '--team', String(TEAM)], env);
    sink = await startSinkWorker({ brokerUrl: redis.url(0) });
    worker = await startWorker(['--broker', redis.url(0), '--workers', '1', '--batch-size', '50'], env);
    await worker.waitForLog((l) => String(l.message).startsWith('consuming '), 60_000, 'consuming');
  });

  after(async () => {
    await worker?.stop();
    await sink?.stop();
    await db?.destroy();
    if (admin) {
      await allowConnections(true).catch(() => undefined);
      await admin.destroy();
    }
    await dropPgDatabase(NAME);
    await redis?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('every event comes out during the outage, no worker restarts, and logs and errors are written again after it', async (t) => {
    await allowConnections(false);
    await admin.raw('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ?', [NAME]);
    const sent = [
      ...(await sendEvents({ brokerUrl: redis.url(0), count: 200, teamId: TEAM, startIndex: 0 })),
      ...(await sendEvents({ brokerUrl: redis.url(0), count: 5, teamId: TEAM, startIndex: 1000, eventName: '$boom' })),
    ];
    const records = await sink.waitFor(sent.length, 120_000);
    assert.deepEqual(sink.problems(), []);
    const props = (r: (typeof records)[number]): Record<string, unknown> =>
      (r.data as { properties: Record<string, unknown> }).properties;
    assert.equal(
      records.filter((r) => props(r).outage === 'passed').length,
      200,
      'the plugin ran on every event during the outage',
    );
    assert.ok(!worker.logs().some((l) => /died|restarting/.test(String(l.message))), 'no worker process died');
    // The outage was real: the writes beside the event path failed and said so.
    const warnings = worker
      .logs()
      .filter((l) => l.level === 'warn' || l.level === 'error')
      .map((l) => String(l.message));
    assert.ok(
      warnings.some((m) => /not currently accepting connections|terminat/i.test(m)),
      `a failed database write in the log:\n${warnings.join('\n')}`,
    );
    t.diagnostic(
      `during the outage: ${records.length} of ${sent.length} events out; ${warnings.length} warning(s), e.g. ${warnings[0]}`,
    );

    await allowConnections(true);
    db = knex({ client: 'pg', connection: url, pool: { min: 0, max: 1 } });
    const after = await sendEvents({
      brokerUrl: redis.url(0),
      count: 1,
      teamId: TEAM,
      startIndex: 5000,
      eventName: '$boom',
    });
    await sink.waitFor(sent.length + after.length, 60_000);
    await waitUntil(
      async () => (await db('posthog_pluginlogentry').where('message', 'saw 5000').first()) !== undefined,
      60_000,
      'a plugin log line written after the outage',
    );
    await waitUntil(
      async () => {
        const row = (await db('posthog_pluginconfig').first('error')) as { error: unknown } | undefined;
        return row?.error ? JSON.stringify(row.error).includes('boom') : false;
      },
      60_000,
      'the plugin error written after the outage',
    );
  });
});
