import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import knexFactory, { Knex } from 'knex';
import { captureLogger, makeEvent, props } from '../plugins/helpers';
import { openDatabase } from '../../src/store/database';
import { migrate } from '../../src/store/migrate';
import { PluginStore } from '../../src/store/plugin-store';
import { PluginManager } from '../../src/plugins/manager/plugin-manager';
import { storeSuite } from './suite';

/** The real server (trust auth). Override with POSTHOG_PLUGINS_TEST_PG=postgres://user@host:port */
const SERVER = process.env.POSTHOG_PLUGINS_TEST_PG ?? 'postgres://root@127.0.0.1:5432';
const DB_NAME = 'posthog_plugins_test_store';

async function recreateDatabase(): Promise<Knex> {
  const admin = knexFactory({ client: 'pg', connection: `${SERVER}/postgres`, pool: { min: 0, max: 1 } });
  try {
    await admin.raw(`DROP DATABASE IF EXISTS ${DB_NAME} WITH (FORCE)`);
    await admin.raw(`CREATE DATABASE ${DB_NAME}`);
  } finally {
    await admin.destroy();
  }
  return openDatabase(`${SERVER}/${DB_NAME}`);
}

async function dropDatabase(db: Knex): Promise<void> {
  await db.destroy();
  const admin = knexFactory({ client: 'pg', connection: `${SERVER}/postgres`, pool: { min: 0, max: 1 } });
  try {
    await admin.raw(`DROP DATABASE IF EXISTS ${DB_NAME} WITH (FORCE)`);
  } finally {
    await admin.destroy();
  }
}

// Both suites use the same database name, so they run one after the other.
describe('PostgreSQL', { concurrency: 1 }, () => {
  storeSuite('PostgreSQL (empty database)', recreateDatabase, dropDatabase);

  describe('tables shaped like PostHog’s own (Django DDL: jsonb, bytea, NOT NULL without defaults, extra columns)', () => {
    let db: Knex;
    let store: PluginStore;

    before(async () => {
      db = await recreateDatabase();
      await db.raw(`
        CREATE TABLE posthog_organization (id uuid PRIMARY KEY, name varchar(64) NOT NULL, created_at timestamptz NOT NULL, plugins_access_level smallint NOT NULL);
        INSERT INTO posthog_organization VALUES ('0188c2a3-1111-4222-8333-444455556666', 'Acme', now(), 9);
        CREATE TABLE posthog_team (id serial PRIMARY KEY, organization_id uuid NOT NULL REFERENCES posthog_organization(id), name varchar(200) NOT NULL, api_token varchar(200) NOT NULL UNIQUE);
        INSERT INTO posthog_team (organization_id, name, api_token) VALUES
          ('0188c2a3-1111-4222-8333-444455556666', 'one', 'tok1'), ('0188c2a3-1111-4222-8333-444455556666', 'two', 'tok2');
        CREATE TABLE posthog_plugin (
          id serial PRIMARY KEY, name varchar(200) NULL, description text NULL, url varchar(800) NULL UNIQUE,
          config_schema jsonb NOT NULL, tag varchar(200) NULL, archive bytea NULL, from_json boolean NOT NULL,
          from_web boolean NOT NULL, error jsonb NULL, plugin_type varchar(200) NULL,
          organization_id uuid NOT NULL REFERENCES posthog_organization(id) DEFERRABLE INITIALLY DEFERRED,
          latest_tag varchar(800) NULL, latest_tag_checked_at timestamptz NULL, is_global boolean NOT NULL,
          is_preinstalled boolean NOT NULL, capabilities jsonb NOT NULL, metrics jsonb NULL, public_jobs jsonb NULL,
          created_at timestamptz NULL, updated_at timestamptz NULL, icon varchar(800) NULL, is_stateless boolean NULL,
          log_level smallint NULL
        );
        CREATE TABLE posthog_pluginconfig (
          id serial PRIMARY KEY, team_id integer NULL REFERENCES posthog_team(id), plugin_id integer NOT NULL REFERENCES posthog_plugin(id),
          enabled boolean NOT NULL, "order" integer NOT NULL, config jsonb NOT NULL, error jsonb NULL,
          created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, web_token varchar(64) NULL, deleted boolean NULL,
          filters jsonb NULL, name varchar(400) NULL, description varchar(1000) NULL
        );
        CREATE TABLE posthog_pluginattachment (
          id serial PRIMARY KEY, key varchar(200) NOT NULL, content_type varchar(200) NOT NULL, file_name varchar(200) NOT NULL,
          file_size integer NOT NULL, contents bytea NOT NULL, plugin_config_id integer NULL REFERENCES posthog_pluginconfig(id),
          team_id integer NULL REFERENCES posthog_team(id)
        );
        CREATE TABLE posthog_pluginstorage (
          id serial PRIMARY KEY, key varchar(200) NOT NULL, value text NULL, plugin_config_id integer NOT NULL REFERENCES posthog_pluginconfig(id),
          CONSTRAINT posthog_unique_plugin_storage_key UNIQUE (plugin_config_id, key)
        );
        CREATE TABLE posthog_pluginsourcefile (
          id uuid PRIMARY KEY, filename varchar(200) NOT NULL, source text NULL, plugin_id integer NOT NULL REFERENCES posthog_plugin(id),
          error text NULL, status varchar(20) NULL, transpiled text NULL, updated_at timestamptz NULL
        );
      `);
      store = new PluginStore(db);
    });
    after(() => dropDatabase(db));

    it("migrate refuses PostHog's own database (posthog_team exists) and creates nothing", async () => {
      const before = await db('posthog_plugin').columnInfo();
      await assert.rejects(migrate(db), /PostHog's own database .*nothing was changed/);
      assert.deepEqual(await db('posthog_plugin').columnInfo(), before);
      assert.equal(await db.schema.hasTable('posthog_pluginlogentry'), false);
    });

    it('installs into Django tables (NOT NULL columns filled, organization picked) and loads through them', async () => {
      const pluginId = await store.installPlugin({
        name: 'adder',
        pluginType: 'local',
        url: 'file:add-property',
        configSchema: { a: { type: 'string' } },
      });
      const row = (await db('posthog_plugin').where('id', pluginId).first()) as Record<string, unknown>;
      assert.equal(row.organization_id, '0188c2a3-1111-4222-8333-444455556666');
      assert.equal(row.is_global, false);
      assert.deepEqual(row.capabilities, {});
      assert.deepEqual(row.config_schema, { a: { type: 'string' } });
      const cfg = await store.createConfig({ pluginId, teamId: 1, order: 2, config: { propertyName: 'django' } });
      const deleted = await store.createConfig({ pluginId, teamId: 2, order: 1, config: {} });
      await db('posthog_pluginconfig').where('id', deleted).update({ deleted: true });
      // a source plugin as newer PostHog stores it (posthog_plugin has no source column here)
      const [{ id: srcPlugin }] = (await db('posthog_plugin')
        .insert({
          name: 'editor plugin',
          plugin_type: 'source',
          config_schema: '{}',
          from_json: false,
          from_web: false,
          is_global: false,
          is_preinstalled: false,
          capabilities: '{}',
          organization_id: '0188c2a3-1111-4222-8333-444455556666',
          archive: null,
        })
        .returning('id')) as Array<{ id: number }>;
      await db('posthog_pluginsourcefile').insert([
        {
          id: '0188c2a3-0000-4000-8000-000000000001',
          plugin_id: srcPlugin,
          filename: 'plugin.json',
          source: '{"name":"editor plugin","main":"index.ts"}',
        },
        {
          id: '0188c2a3-0000-4000-8000-000000000002',
          plugin_id: srcPlugin,
          filename: 'index.ts',
          source: 'export function processEvent(e: any) { e.properties.editor = "yes ✓"; return e }',
        },
      ]);
      await db('posthog_pluginconfig').insert({
        team_id: 1,
        plugin_id: srcPlugin,
        enabled: true,
        order: 1,
        config: '{}',
        created_at: new Date(),
        updated_at: new Date(),
      });
      await store.addAttachment({
        pluginConfigId: cfg,
        teamId: 1,
        key: 'k',
        contentType: 'text/plain',
        fileName: 'k.txt',
        contents: Buffer.from([0xe2, 0x9c, 0x93]),
      });

      const loaded = await store.loadEnabledConfigs();
      assert.deepEqual(
        loaded.map((l) => [l.teamId, l.order, l.plugin.name]),
        [
          [1, 1, 'editor plugin'],
          [1, 2, 'adder'],
        ],
      );
      assert.deepEqual(loaded[0].plugin.sourceFiles?.['index.ts']?.includes('editor'), true);
      assert.equal(loaded[1].attachments[0].contents.toString(), '✓');
      assert.equal((await store.listConfigs()).length, 2, 'deleted configs are not listed');

      await store.setError(cfg, {
        message: 'x',
        time: new Date().toISOString(),
        name: 'Error',
        stack: 's',
        event: { a: [1] },
      });
      const raw = (await db('posthog_pluginconfig').select('error').where('id', cfg).first()) as { error: unknown };
      assert.deepEqual(raw.error, JSON.parse(JSON.stringify(await store.getError(cfg))));
      assert.equal(typeof raw.error, 'object');
    });

    it('PluginManager runs a chain straight from Django tables', async () => {
      const { logger } = captureLogger();
      const path = await import('node:path');
      const manager = await PluginManager.create({
        store,
        baseDir: path.resolve(__dirname, '../../../fixtures/plugins'),
        logger,
      });
      try {
        const [e] = await manager.runChain(1, [makeEvent('x')]);
        assert.equal(props(e).editor, 'yes ✓');
        assert.equal(props(e).django, 'posthog-plugins');
        // the successful load cleared the error set above
        assert.equal(await store.getError(manager.configsFor(1)[1].id), null);
      } finally {
        await manager.close();
      }
    });
  });
});
