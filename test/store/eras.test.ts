import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import knexFactory, { type Knex } from 'knex';
import { runDoctor } from '../../src/cli/doctor';
import { silentLogger } from '../../src/log';
import { readPluginRowSource } from '../../src/plugins/loading/source';
import { migrate, MigrateRefusedError } from '../../src/store/migrate';
import { PluginLogWriter } from '../../src/store/plugin-log-writer';
import { PluginStore } from '../../src/store/plugin-store';
import { PluginWriteError } from '../../src/store/plugin-writer';
import { BIN } from '../helpers/worker';
import {
  createEraDatabase,
  dropEraDatabase,
  ERAS,
  type Era,
  type EraRows,
  ORG,
  REPO_DIR,
  TEAM,
  writePosthogRows,
} from '../helpers/eras';

/**
 * The store against PostHog's plugin tables of three eras (fixtures/schemas), rows written by plain SQL as PostHog
 * wrote them: what is read, which configs run and why not, where code comes from, how install writes rows, that
 * migrate leaves PostHog's database alone, plugin logs where the table exists, and `doctor`.
 */
const EXPECT: Record<Era, { migration: string; running: string[]; origins: RegExp[] }> = {
  '2020-11': {
    migration: '0099_plugin_attachment',
    running: ['Local plugin', 'Archive plugin'],
    origins: [/^file:.*add-property$/, /archive of plugin Archive plugin \(zip\)/],
  },
  '2021-09': {
    migration: '0166_plugin_public_jobs',
    running: ['Local plugin', 'Archive plugin', 'Source plugin'],
    origins: [/^file:/, /\(zip\)/, /^posthog_plugin\.source$/],
  },
  '2024': {
    migration: '0449_alter_plugin_organization',
    running: ['Local plugin', 'Archive plugin', 'Source plugin', 'Source file plugin'],
    origins: [/^file:/, /^posthog_pluginsourcefile$/, /^posthog_pluginsourcefile$/, /^posthog_pluginsourcefile$/],
  },
};

for (const era of ERAS) {
  describe(`PostHog plugin tables of ${era}`, () => {
    const name = `posthog_plugins_test_era_store_${era.replace('-', '_')}`;
    let url: string;
    let db: Knex;
    let store: PluginStore;
    let rows: EraRows;

    before(async () => {
      url = await createEraDatabase(name, era);
      rows = await writePosthogRows(url, era);
      db = knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 4 } });
      store = new PluginStore(db);
    });
    after(async () => {
      await db?.destroy();
      await dropEraDatabase(name);
    });

    it('reads the schema: era, tables present and absent', async () => {
      const s = await store.schema();
      assert.equal(s.django, true);
      assert.ok(s.migration?.name.startsWith(EXPECT[era].migration), `${s.migration?.name}`);
      assert.equal(s.storage !== null, era !== '2020-11');
      assert.equal(s.logEntry !== null, era === '2021-09');
      assert.equal(s.sourceFile !== null, era === '2024');
      assert.equal(s.uniquePluginUrl, era === '2024');
    });

    it('runs enabled configs with a team, not deleted, of organizations with plugins on; says why not for the rest', async () => {
      const loaded = await store.loadEnabledConfigs();
      assert.deepEqual(
        loaded.map((c) => c.plugin.name),
        EXPECT[era].running,
      );
      assert.deepEqual(
        loaded.map((c) => c.teamId),
        EXPECT[era].running.map(() => TEAM),
      );
      assert.equal(loaded[0].order, era === '2020-11' ? 0 : 1, 'a NULL order (before 0119) counts as 0');
      assert.deepEqual(
        loaded.slice(0, 2).map((c) => c.plugin.pluginType),
        ['local', 'custom'],
        'typed as 0107 did where plugin_type is absent',
      );
      const archive = loaded.find((c) => c.id === rows.archiveConfigId)!;
      assert.deepEqual(
        archive.attachments.map((a) => [a.key, a.fileName, a.contents.toString()]),
        [['label', 'label.txt', 'attached ✓']],
      );

      const reasons = new Map((await store.inspectConfigs()).map((c) => [c.id, c.skipReason]));
      assert.equal(reasons.get(rows.deletedConfigId), era === '2024' ? 'deleted' : 'disabled');
      assert.match(String(reasons.get(rows.nullTeamConfigId)), /no team/);
      if (rows.closedConfigId !== null)
        assert.match(String(reasons.get(rows.closedConfigId)), /plugins are off .*plugins_access_level 0/);
      const list = await store.listConfigs();
      assert.equal(
        list.some((c) => c.id === rows.deletedConfigId),
        era !== '2024',
        'list leaves deleted configs out',
      );
    });

    it("finds code in PostHog's order: source files, the source column, the archive, a file: url", async () => {
      const loaded = await store.loadEnabledConfigs();
      const sources = loaded.map((c) => readPluginRowSource(c.plugin, { baseDir: REPO_DIR }));
      sources.forEach((s, i) => assert.match(s.origin, EXPECT[era].origins[i]));
      for (const s of sources)
        assert.doesNotMatch(s.code, /stale/, 'posthog_pluginsourcefile wins over the frozen source column');
    });

    it('install writes rows as this era’s Django did: only its columns, every NOT NULL one filled', async () => {
      const pluginId = await store.installPlugin({
        name: 'Installed',
        pluginType: 'local',
        url: 'file:fixtures/plugins/drop-events',
        teamId: TEAM,
      });
      const configId = await store.createConfig({ pluginId, teamId: TEAM, order: 9, config: { a: 'b' } });
      for (const [table, id] of [
        ['posthog_plugin', pluginId],
        ['posthog_pluginconfig', configId],
      ] as const) {
        const notNull = (await db('information_schema.columns')
          .where({ table_name: table, is_nullable: 'NO', table_schema: 'public' })
          .pluck('column_name')) as string[];
        const row = (await db(table).where('id', id).first()) as Record<string, unknown>;
        for (const c of notNull) assert.notEqual(row[c], null, `${table}.${c} is NOT NULL`);
      }
      const plugin = (await db('posthog_plugin').where('id', pluginId).first()) as Record<string, unknown>;
      if (era !== '2020-11') assert.equal(plugin.organization_id, ORG);
      await assert.rejects(
        store.createConfig({ pluginId, teamId: 99, order: 0 }),
        /team 99 does not exist in posthog_team/,
      );

      const source = store.installPlugin({
        name: 'Typed in',
        pluginType: 'source',
        source: 'export const processEvent = (e: any) => e',
        teamId: TEAM,
      });
      if (era === '2020-11') {
        await assert.rejects(source, PluginWriteError);
      } else {
        const id = await source;
        const files = (await db('posthog_pluginsourcefile')
          .where('plugin_id', id)
          .pluck('filename')
          .catch(() => [])) as string[];
        const column = ((await db('posthog_plugin').where('id', id).first()) as { source: unknown }).source;
        if (era === '2024') {
          assert.deepEqual(files.sort(), ['index.ts', 'plugin.json']);
          assert.equal(column, null);
        } else assert.match(String(column), /processEvent/);
      }
      if (era === '2024') {
        // UNIQUE(url) (0449): the same url again is the same plugin, as PostHog's upsert did.
        assert.equal(
          await store.installPlugin({
            name: 'Installed again',
            pluginType: 'local',
            url: 'file:fixtures/plugins/drop-events',
            teamId: TEAM,
          }),
          pluginId,
        );
      }
    });

    it("migrate refuses PostHog's database and changes nothing", async () => {
      const before = (await db('information_schema.tables')
        .where('table_schema', 'public')
        .pluck('table_name')) as string[];
      await assert.rejects(migrate(db), MigrateRefusedError);
      const afterTables = (await db('information_schema.tables')
        .where('table_schema', 'public')
        .pluck('table_name')) as string[];
      assert.deepEqual(afterTables.sort(), before.sort());
    });

    if (era === '2021-09') {
      it('plugin log entries fill every column and fit the btree indexes on message', async () => {
        const writer = new PluginLogWriter(db, {
          instanceId: '0188c2a3-aaaa-4bbb-8ccc-000000000002',
          flushIntervalMs: 3_600_000,
          logger: silentLogger(),
        });
        try {
          let x = 7;
          const noise = Array.from(
            { length: 8000 },
            () => ((x = (x * 1103515245 + 12345) % 2147483648), 'abcdefghijklmnopqrstuvwxyz0123456789'[x % 36]),
          ).join('');
          const base = {
            teamId: TEAM,
            pluginId: rows.archivePluginId,
            pluginConfigId: rows.archiveConfigId,
            source: 'CONSOLE' as const,
            type: 'LOG' as const,
          };
          writer.add({ ...base, message: `é${noise}` });
          writer.add({ ...base, message: 'after the long one' });
          await writer.flush();
          const logged = (await db('posthog_pluginlogentry').orderBy('message')) as Array<Record<string, unknown>>;
          assert.deepEqual(
            logged.map((r) => String(r.message).slice(0, 10)).sort(),
            ['after the ', `é${noise.slice(0, 9)}`].sort(),
          );
          const long = logged.find((r) => String(r.message).startsWith('é'))!;
          assert.ok(
            Buffer.byteLength(String(long.message)) <= 2000,
            `${Buffer.byteLength(String(long.message))} bytes`,
          );
          assert.match(String(long.message), /…$/);
          for (const r of logged)
            for (const c of [
              'id',
              'timestamp',
              'source',
              'type',
              'instance_id',
              'plugin_id',
              'plugin_config_id',
              'team_id',
            ])
              assert.notEqual(r[c], null, c);
        } finally {
          await writer.close();
        }
      });
    }

    it('doctor: era, where code and logs come from, each config that does not run with the reason', async () => {
      const report = await runDoctor(url, REPO_DIR, silentLogger());
      const text = report.lines.join('\n');
      assert.match(text, new RegExp(`migration ${EXPECT[era].migration}`));
      assert.match(
        text,
        era === '2021-09' ? /plugin logs: posthog_pluginlogentry/ : /plugin logs: the worker log only/,
      );
      assert.match(
        text,
        era === '2020-11' ? /meta\.storage: fails: .*posthog_pluginstorage/ : /meta\.storage: posthog_pluginstorage/,
      );
      assert.match(text, new RegExp(`config ${rows.nullTeamConfigId} .*not run: no team`));
      // the configs of the install test above run too
      assert.equal(report.runnable, EXPECT[era].running.length + 1);
    });

    if (era === '2021-09') {
      it('a PostHog migration applied while running is seen at the next reload (0361 adds deleted)', async () => {
        assert.ok((await store.loadEnabledConfigs()).some((c) => c.id === rows.archiveConfigId));
        await db.raw('ALTER TABLE posthog_pluginconfig ADD COLUMN deleted boolean NULL');
        await db('posthog_pluginconfig').where('id', rows.archiveConfigId).update({ deleted: true });
        assert.ok(!(await store.loadEnabledConfigs()).some((c) => c.id === rows.archiveConfigId));
        assert.equal((await store.schema()).config.has('deleted'), true);
      });
    }
  });
}

/** The real CLI: exit code and output. */
function run(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(BIN, args, { cwd: REPO_DIR, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('the doctor and migrate commands on an empty PostHog database', () => {
  const name = 'posthog_plugins_test_era_store_empty';
  after(() => dropEraDatabase(name));
  it('doctor says nothing can run and exits 1; migrate refuses, exit 1, and creates nothing', async () => {
    const url = await createEraDatabase(name, '2024');
    const report = await runDoctor(url, REPO_DIR, silentLogger());
    assert.equal(report.runnable, 0);
    const doctor = await run(['doctor'], { DATABASE_URL: url });
    assert.equal(doctor.code, 1);
    assert.match(doctor.stdout, /tables: PostHog's plugin tables at migration 0449[\s\S]*nothing can run/);
    const migrated = await run(['migrate'], { DATABASE_URL: url });
    assert.equal(migrated.code, 1);
    assert.match(migrated.stderr, /^posthog-plugins migrate: this is PostHog's own database .*nothing was changed/);
    const db = knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 1 } });
    try {
      assert.equal(await db.schema.hasTable('posthog_pluginlogentry'), false);
    } finally {
      await db.destroy();
    }
  });
});
