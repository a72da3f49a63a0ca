import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import type { Knex } from 'knex';
import { databaseKind } from '../../src/store/database';
import { migrate } from '../../src/store/migrate';
import {
  logTypeFor,
  PluginLogEntryInput,
  PluginLogWriter,
  PluginLogWriterOptions,
} from '../../src/store/plugin-log-writer';
import { captureLogger, CapturedLog } from '../plugins/helpers';
import { waitUntil } from '../helpers/services';
import { apiDatabases } from './api-databases';

const INSTANCE = '0188c2a3-aaaa-4bbb-8ccc-000000000001';
const T = 'posthog_pluginlogentry';
const HOUR = 3_600_000;

function entry(message: string, extra: Partial<PluginLogEntryInput> = {}): PluginLogEntryInput {
  return { teamId: 2, pluginId: 3, pluginConfigId: 4, source: 'CONSOLE', type: 'LOG', message, ...extra };
}

const matching = (logs: CapturedLog[], level: string, re: RegExp): CapturedLog[] =>
  logs.filter((l) => l.level === level && re.test(l.message));

describe('logTypeFor', () => {
  it('maps console levels to PostHog log types', () => {
    assert.deepEqual((['debug', 'log', 'info', 'warn', 'error'] as const).map(logTypeFor), [
      'DEBUG',
      'LOG',
      'INFO',
      'WARN',
      'ERROR',
    ]);
  });
});

for (const target of apiDatabases('logs')) {
  describe(`PluginLogWriter on ${target.label}`, () => {
    let db: Knex;
    let writers: PluginLogWriter[] = [];
    const messages = async (): Promise<string[]> =>
      (await db(T)
        .orderBy([{ column: 'timestamp' }, { column: 'message' }])
        .pluck('message')) as string[];
    const open = (opts: Partial<PluginLogWriterOptions> = {}): { writer: PluginLogWriter; logs: CapturedLog[] } => {
      const { logger, logs } = captureLogger();
      const writer = new PluginLogWriter(db, { instanceId: INSTANCE, flushIntervalMs: HOUR, logger, ...opts });
      writers.push(writer);
      return { writer, logs };
    };
    /** Make every write fail the way a database that is down does, until `heal()`. */
    const breakTable = () => db.schema.renameTable(T, `${T}_away`);
    const heal = () => db.schema.renameTable(`${T}_away`, T);

    before(async () => {
      await target.setup();
      db = target.open();
      await migrate(db);
    });
    beforeEach(async () => {
      for (const w of writers) await w.close();
      writers = [];
      await db(T).delete();
    });
    after(async () => {
      for (const w of writers) await w.close();
      await db?.destroy();
      await target.cleanup();
    });

    it('flush writes every column PostHog has; messages are truncated and NUL-safe', async () => {
      const { writer } = open({ maxMessageChars: 10 });
      const ts = new Date('2024-05-06T07:08:09.123Z');
      writer.add(entry('short', { timestamp: ts, source: 'SYSTEM', type: 'INFO' }));
      writer.add(entry('0123456789abcdef', { timestamp: ts }));
      writer.add(entry('12345678🙂🙂', { timestamp: ts })); // the cut would fall inside the first emoji
      writer.add(entry('a\u0000b', { timestamp: ts }));
      assert.equal(writer.pending, 4);
      await writer.flush();
      assert.equal(writer.pending, 0);
      const rows = (await db(T).orderBy('message')) as Array<Record<string, unknown>>;
      assert.deepEqual(rows.map((r) => r.message).sort(), ['012345678…', '12345678…', 'a\\u0000b', 'short'].sort());
      const short = rows.find((r) => r.message === 'short')!;
      assert.match(String(short.id), /^[0-9a-f-]{36}$/);
      assert.equal(new Set(rows.map((r) => r.id)).size, 4, 'each entry has its own uuid');
      assert.deepEqual(
        [short.team_id, short.plugin_id, short.plugin_config_id, short.source, short.type, short.instance_id].map(
          String,
        ),
        ['2', '3', '4', 'SYSTEM', 'INFO', INSTANCE],
      );
      if (databaseKind(db) === 'postgres') assert.deepEqual(short.timestamp, ts);
      else assert.equal(short.timestamp, ts.toISOString());
    });

    it('writes on the timer without being asked', async () => {
      const { writer } = open({ flushIntervalMs: 20 });
      writer.add(entry('tick-1'));
      writer.add(entry('tick-2'));
      await waitUntil(async () => (await messages()).length === 2, 10_000, 'the timer flush');
      assert.equal(writer.pending, 0);
    });

    it('writes at once when a full batch (500) is waiting, not before', async () => {
      const { writer } = open();
      for (let i = 0; i < 500; i++) writer.add(entry(`b${i}`));
      await waitUntil(async () => (await messages()).length === 500, 10_000, 'the batch-size flush');
      for (let i = 0; i < 499; i++) writer.add(entry(`c${i}`));
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(writer.pending, 499, '499 entries wait for the timer');
      assert.equal((await messages()).length, 500);
      await writer.flush();
      assert.equal((await messages()).length, 999);
    });

    it('database down: add() never throws, the queue keeps the newest entries, one warning each for the outage, the drops and the recovery', async () => {
      const { writer, logs } = open({ batchSize: 50, maxQueued: 100 });
      await breakTable();
      try {
        for (let i = 0; i < 250; i++) writer.add(entry(`m${String(i).padStart(3, '0')}`));
        await assert.rejects(writer.flush());
        await assert.rejects(writer.flush());
        assert.equal(writer.pending, 100);
        assert.equal(
          matching(logs, 'warn', /cannot write to posthog_pluginlogentry, will retry/).length,
          1,
          'one warning per outage',
        );
      } finally {
        await heal();
      }
      await writer.flush();
      const written = await messages();
      assert.deepEqual(
        written.slice().sort(),
        Array.from({ length: 100 }, (_, i) => `m${String(150 + i)}`),
        'the oldest 150 were dropped',
      );
      assert.equal(matching(logs, 'warn', /dropped the 150 oldest entries \(queue limit 100/).length, 1);
      assert.equal(matching(logs, 'warn', /dropped/).length, 1);
      assert.equal(matching(logs, 'info', /writing to the database again/).length, 1);
    });

    it('a failing timer flush is retried on a later tick', async () => {
      const { writer, logs } = open({ flushIntervalMs: 20 });
      await breakTable();
      try {
        writer.add(entry('retried'));
        await waitUntil(() => matching(logs, 'warn', /will retry/).length > 0, 10_000, 'a failed timer flush');
        // (Not checking `pending` here: with a 20 ms tick the next attempt may hold the row at this very moment.)
      } finally {
        await heal();
      }
      await waitUntil(async () => (await messages()).includes('retried'), 10_000, 'the retry after the table is back');
    });

    it('rows the database rejects for good are dropped alone; the rest of the batch is written', async () => {
      await breakTable();
      try {
        // a table that refuses one row, as a foreign key to a deleted plugin config would in PostHog's schema
        await db.schema.createTable(T, (t) => {
          t.uuid('id').primary('pluginlogentry_check_test_pkey');
          t.integer('team_id').notNullable();
          t.integer('plugin_id').notNullable();
          t.integer('plugin_config_id').notNullable().checkPositive();
          t.specificType('timestamp', databaseKind(db) === 'postgres' ? 'timestamptz' : 'text').notNullable();
          t.string('source', 20).notNullable();
          t.string('type', 20).notNullable();
          t.text('message').notNullable();
          t.uuid('instance_id').notNullable();
        });
        const { writer, logs } = open();
        writer.add(entry('good-1'));
        writer.add(entry('refused', { pluginConfigId: -1 }));
        writer.add(entry('good-2'));
        await writer.flush();
        assert.deepEqual((await messages()).sort(), ['good-1', 'good-2']);
        assert.equal(writer.pending, 0);
        assert.equal(matching(logs, 'warn', /1 entries rejected by the database and dropped/).length, 1);
      } finally {
        await db.schema.dropTableIfExists(T);
        await heal();
      }
    });

    it('close writes what is left; with the database down it gives up after closeTimeoutMs and says how much was lost', async () => {
      const ok = open();
      ok.writer.add(entry('at-close'));
      await ok.writer.close();
      assert.deepEqual(await messages(), ['at-close']);
      ok.writer.add(entry('after-close'));
      assert.equal(ok.writer.pending, 0, 'closed writers ignore new entries');

      const down = open({ closeTimeoutMs: 300 });
      await breakTable();
      try {
        for (let i = 0; i < 5; i++) down.writer.add(entry(`lost-${i}`));
        await down.writer.close();
        assert.equal(matching(down.logs, 'warn', /5 entries not written at shutdown/).length, 1);
      } finally {
        await heal();
      }
      assert.deepEqual(await messages(), ['at-close']);
    });

    it('rejects a non-uuid instance id at construction', () => {
      assert.throws(() => open({ instanceId: 'worker-1' }), /instanceId must be a uuid/);
    });
  });
}
