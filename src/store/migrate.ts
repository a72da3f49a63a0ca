import { Knex } from 'knex';
import { databaseKind } from './database';

export const PLUGIN_TABLES = [
  'posthog_plugin',
  'posthog_pluginconfig',
  'posthog_pluginattachment',
  'posthog_pluginstorage',
  'posthog_pluginlogentry',
] as const;

/** Tables of our own (not PostHog's): created on every database, PostHog's included. */
export const OWN_TABLES = ['posthog_plugins_job'] as const;

export class MigrateRefusedError extends Error {
  override name = 'MigrateRefusedError';
}

/**
 * Create whichever of PostHog's plugin tables are missing, with Django's table and column names
 * (docs/posthog-schema.md), in a SQLite file or a database without PostHog. JSON columns are jsonb on Postgres and
 * text on SQLite; binary columns bytea / blob. Our own tables (OWN_TABLES) are created too. Returns the names of the
 * tables it created. A PostHog database (posthog_team exists) is refused untouched: Django owns its schema, and a
 * table created here (say posthog_pluginstorage on a 2020 install) would make PostHog's own next migration fail.
 */
export async function migrate(db: Knex): Promise<string[]> {
  if (await db.schema.hasTable('posthog_team')) {
    throw new MigrateRefusedError(
      "this is PostHog's own database (posthog_team exists): its plugin tables belong to Django's migrations and are used as they are; nothing was changed (`posthog-plugins doctor` shows what the worker finds there)",
    );
  }
  const pg = databaseKind(db) === 'postgres';
  const json = (t: Knex.CreateTableBuilder, name: string): Knex.ColumnBuilder => (pg ? t.jsonb(name) : t.text(name));
  const ts = (t: Knex.CreateTableBuilder, name: string): Knex.ColumnBuilder =>
    pg ? t.timestamp(name, { useTz: true }) : t.text(name);
  const created: string[] = [];
  const ensure = async (name: string, build: (t: Knex.CreateTableBuilder) => void): Promise<void> => {
    if (await createIfMissing(db, name, build)) created.push(name);
  };

  await ensure('posthog_plugin', (t) => {
    t.increments('id').primary();
    t.uuid('organization_id').nullable();
    t.string('plugin_type', 200).nullable();
    t.boolean('is_global').notNullable().defaultTo(false);
    t.boolean('is_preinstalled').notNullable().defaultTo(false);
    t.string('name', 200).nullable();
    t.text('description').nullable();
    t.string('url', 800).nullable();
    json(t, 'config_schema')
      .notNullable()
      .defaultTo(pg ? db.raw(`'{}'::jsonb`) : '{}');
    t.string('tag', 200).nullable();
    t.binary('archive').nullable();
    t.text('source').nullable();
    t.string('latest_tag', 800).nullable();
    ts(t, 'latest_tag_checked_at').nullable();
    json(t, 'capabilities')
      .notNullable()
      .defaultTo(pg ? db.raw(`'{}'::jsonb`) : '{}');
    json(t, 'metrics').nullable();
    json(t, 'public_jobs').nullable();
    json(t, 'error').nullable();
    t.boolean('from_json').notNullable().defaultTo(false);
    t.boolean('from_web').notNullable().defaultTo(false);
    ts(t, 'created_at').notNullable();
    ts(t, 'updated_at').nullable();
  });

  await ensure('posthog_pluginconfig', (t) => {
    t.increments('id').primary();
    t.integer('team_id').nullable();
    t.integer('plugin_id').notNullable();
    t.boolean('enabled').notNullable().defaultTo(false);
    t.integer('order').nullable();
    json(t, 'config')
      .notNullable()
      .defaultTo(pg ? db.raw(`'{}'::jsonb`) : '{}');
    json(t, 'error').nullable();
    ts(t, 'created_at').notNullable();
    ts(t, 'updated_at').notNullable();
    t.index(['team_id'], 'posthog_pluginconfig_team_id_idx');
    t.index(['plugin_id'], 'posthog_pluginconfig_plugin_id_idx');
  });

  await ensure('posthog_pluginattachment', (t) => {
    t.increments('id').primary();
    t.integer('team_id').nullable();
    t.integer('plugin_config_id').nullable();
    t.string('key', 200).notNullable();
    t.string('content_type', 200).notNullable();
    t.string('file_name', 200).notNullable();
    t.integer('file_size').nullable();
    t.binary('contents').notNullable();
    t.index(['plugin_config_id'], 'posthog_pluginattachment_plugin_config_id_idx');
  });

  await ensure('posthog_pluginstorage', (t) => {
    t.increments('id').primary();
    t.integer('plugin_config_id').notNullable();
    t.string('key', 200).notNullable();
    t.text('value').nullable();
    t.unique(['plugin_config_id', 'key'], { indexName: 'posthog_unique_plugin_storage_key' });
  });

  await ensure('posthog_pluginlogentry', (t) => {
    t.uuid('id').primary();
    t.integer('team_id').notNullable();
    t.integer('plugin_id').notNullable();
    t.integer('plugin_config_id').notNullable();
    ts(t, 'timestamp').notNullable();
    t.string('source', 20).notNullable();
    t.string('type', 20).notNullable();
    t.text('message').notNullable();
    t.uuid('instance_id').notNullable();
    t.index(['plugin_config_id', 'timestamp'], 'posthog_plu_plugin__736133_idx');
  });

  created.push(...(await migrateOwnTables(db)));
  return created;
}

async function createIfMissing(db: Knex, name: string, build: (t: Knex.CreateTableBuilder) => void): Promise<boolean> {
  if (await db.schema.hasTable(name)) return false;
  await db.schema.createTable(name, build);
  return true;
}

/**
 * Create only our own tables (OWN_TABLES) where missing: safe on a Django-managed PostHog database, where
 * `migrate()`'s PostHog tables already exist. Returns the names of the tables it created.
 */
export async function migrateOwnTables(db: Knex): Promise<string[]> {
  const created: string[] = [];
  // Persisted plugin jobs (job-store.ts). Times are epoch milliseconds in bigint columns: the same ordering and
  // comparisons on SQLite and Postgres, no time-zone or text-format pitfalls.
  const job = await createIfMissing(db, 'posthog_plugins_job', (t) => {
    t.increments('id').primary();
    t.integer('plugin_config_id').notNullable();
    t.integer('team_id').notNullable();
    t.string('name', 200).notNullable();
    t.text('payload').notNullable();
    t.bigInteger('run_at').notNullable();
    t.integer('attempts').notNullable().defaultTo(0);
    t.string('locked_by', 200).nullable();
    t.bigInteger('locked_until').nullable();
    t.bigInteger('created_at').notNullable();
    t.index(['run_at'], 'posthog_plugins_job_run_at_idx');
  });
  if (job) created.push('posthog_plugins_job');
  return created;
}
