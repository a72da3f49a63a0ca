import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import knexFactory, { type Knex } from 'knex';
import {
  createEraDatabase,
  CLOSED_TEAM,
  dropEraDatabase,
  ERAS,
  type EraRows,
  expectedProperties,
  TEAM,
  writePosthogRows,
} from '../helpers/eras';
import { startPrivateRedis, type PrivateRedis } from '../helpers/private-redis';
import { type SinkRecord, type SinkWorker, sendEvents, startSinkWorker } from '../helpers/python';
import { waitUntil } from '../helpers/services';
import { cli, startWorker, type WorkerProcess } from '../helpers/worker';

/**
 * Drop-in on PostHog databases of three eras (fixtures/schemas; rows written by plain SQL as PostHog did, then one
 * plugin through our `install`): real Python Celery sends process_event_with_plugins, `posthog-plugins start` runs
 * the plugins, a real Python Celery worker executes process_event. Every era runs the same events; errors land in
 * posthog_pluginconfig.error, plugin logs in posthog_pluginlogentry where it exists and in the worker log elsewhere.
 */
let redis: PrivateRedis;
before(async () => {
  redis = await startPrivateRedis({ appendonly: false });
});
after(async () => {
  await redis?.stop();
});

const props = (r: SinkRecord): Record<string, unknown> =>
  (r.data as { properties: Record<string, unknown> }).properties;
const eventOf = (r: SinkRecord): string => String((r.data as { event: string }).event);

ERAS.forEach((era, i) => {
  describe(`Python Celery → posthog-plugins → Python Celery on PostHog's ${era} tables`, () => {
    const name = `posthog_plugins_test_era_pipe_${era.replace('-', '_')}`;
    let url: string;
    let db: Knex;
    let rows: EraRows;
    let sink: SinkWorker;
    let worker: WorkerProcess;
    let brokerUrl: string;

    before(async () => {
      brokerUrl = redis.url(i + 1);
      url = await createEraDatabase(name, era);
      rows = await writePosthogRows(url, era);
      db = knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 2 } });
      const env = { DATABASE_URL: url };
      await cli(
        [
          'install',
          'fixtures/plugins/add-property',
          '--team',
          String(TEAM),
          '--config',
          '{"propertyName":"installed","propertyValue":"yes"}',
        ],
        env,
      );
      sink = await startSinkWorker({ brokerUrl, queue: 'celery' });
      worker = await startWorker(['--broker', brokerUrl, '--workers', '1', '--batch-size', '50'], env);
    });
    after(async () => {
      await worker?.stop();
      await sink?.stop();
      await db?.destroy();
      await dropEraDatabase(name);
    });

    test('the same events get the same plugins’ changes; configs that must not run do not', async () => {
      const sent = [
        ...(await sendEvents({ brokerUrl, count: 5, teamId: TEAM, startIndex: 0 })),
        ...(await sendEvents({ brokerUrl, count: 2, teamId: CLOSED_TEAM, startIndex: 10 })),
        ...(await sendEvents({ brokerUrl, count: 1, teamId: TEAM, startIndex: 20, eventName: '$boom' })),
        ...(await sendEvents({ brokerUrl, count: 1, teamId: TEAM, startIndex: 30, eventName: '$long' })),
      ];
      const records = await sink.waitFor(sent.length, 90_000);
      assert.equal(records.length, sent.length);
      assert.deepEqual(sink.problems(), []);
      const expected = expectedProperties(era, true);
      for (const r of records) {
        const p = props(r);
        assert.equal(
          p.must_not_run,
          undefined,
          `a deleted, disabled, NULL-team or closed-organization config ran on ${eventOf(r)}`,
        );
        if (r.team_id === CLOSED_TEAM) {
          for (const k of Object.keys(expected))
            assert.equal(p[k], undefined, `team ${CLOSED_TEAM} has no running plugins, yet ${k} is set`);
          continue;
        }
        if (eventOf(r) === '$boom') {
          // The archive plugin threw: the event goes on without its change, the others' changes stay.
          assert.equal(p.archive, undefined);
          assert.equal(p.local, 'yes');
          continue;
        }
        for (const [k, v] of Object.entries(expected)) assert.equal(p[k], v, `${era}: ${eventOf(r)} property ${k}`);
      }
    });

    test('the plugin error is in posthog_pluginconfig.error', async () => {
      const error = await waitUntil(
        async () =>
          (
            (await db('posthog_pluginconfig').where('id', rows.archiveConfigId).first()) as {
              error: { message?: string } | null;
            }
          ).error,
        30_000,
        'the archive plugin error',
      );
      assert.equal(error.message, 'boom from the archive plugin');
    });

    test(
      era === '2021-09'
        ? 'plugin logs land in posthog_pluginlogentry'
        : 'plugin logs land in the worker log, as start said',
      async () => {
        const start = worker.logs().find((l) => String(l.message).includes('plugin logs go to'));
        assert.ok(start, 'start says where plugin logs go');
        if (era === '2021-09') {
          assert.match(String(start.message), /plugin logs go to posthog_pluginlogentry/);
          const logged = await waitUntil(
            async () => {
              const r = (await db('posthog_pluginlogentry')
                .where('plugin_config_id', rows.archiveConfigId)
                .orderBy('timestamp')) as Array<Record<string, unknown>>;
              return r.some((x) => String(x.message).startsWith('long line')) &&
                r.some((x) => x.message === 'archive plugin saw $long')
                ? r
                : null;
            },
            30_000,
            'console lines in posthog_pluginlogentry',
          );
          const line = logged.find((x) => x.message === 'archive plugin saw $pageview')!;
          assert.deepEqual(
            [line.team_id, line.plugin_id, line.source, line.type],
            [TEAM, rows.archivePluginId, 'CONSOLE', 'LOG'],
          );
          const long = logged.find((x) => String(x.message).startsWith('long line'))!;
          assert.ok(Buffer.byteLength(String(long.message)) <= 2000);
        } else {
          assert.match(String(start.message), /plugin logs go to the worker log only/);
          assert.ok(
            worker
              .logs()
              .some((l) => l.message === 'archive plugin saw $pageview' && l.pluginConfigId === rows.archiveConfigId),
            'the console line in the worker log',
          );
        }
      },
    );

    test('meta.storage writes posthog_pluginstorage where it exists', async () => {
      if (era === '2020-11') {
        const tables = (await db('information_schema.tables')
          .where('table_schema', 'public')
          .pluck('table_name')) as string[];
        assert.ok(!tables.includes('posthog_pluginstorage'), 'nothing created it');
        return;
      }
      const stored = (await db('posthog_pluginstorage')
        .where({ plugin_config_id: rows.archiveConfigId, key: 'last' })
        .first()) as { value: string } | undefined;
      assert.ok(stored);
    });

    test('SIGTERM stops it cleanly', async () => {
      assert.equal(await worker.stop(), 0, worker.logText().slice(-2000));
    });
  });
});
