import { Knex } from 'knex';
import { databaseKind, type DatabaseKind } from './database';

/**
 * What PostHog's plugin tables look like in one database. PostHog's Django migrations added columns and tables
 * from Nov 2020 on (docs/posthog-schema.md); every query the worker makes is built from this, so a column or
 * table added later is never assumed.
 */
export interface Column {
  nullable: boolean;
  /** A server default exists (Django keeps none but for serial ids; our own SQLite tables have some). */
  hasDefault: boolean;
}

/** Column name (lower case) → what it is. */
export type Columns = ReadonlyMap<string, Column>;

export interface PosthogSchema {
  kind: DatabaseKind;
  plugin: Columns;
  config: Columns;
  /** null: the table does not exist (before 0099). */
  attachment: Columns | null;
  /** null before 0111 (Jan 2021). */
  storage: Columns | null;
  /** Only between 0147 (Apr 2021) and 0239 (May 2022). */
  logEntry: Columns | null;
  /** From 0233 (May 2022). */
  sourceFile: Columns | null;
  team: Columns | null;
  organization: Columns | null;
  /** posthog_plugin_has_private_access (0403, Apr 2024). */
  privateAccess: boolean;
  /** posthog_plugin has a UNIQUE constraint on url (0449): installing a url twice must reuse the row. */
  uniquePluginUrl: boolean;
  /** Django's database (posthog_team exists), as opposed to tables created by `posthog-plugins migrate`. */
  django: boolean;
  /** The newest PostHog migration whose mark is in the tables (e.g. "0147_plugin_logs"), null for our own tables. */
  migration: MigrationMark | null;
}

export interface MigrationMark {
  name: string;
  date: string;
}

export class SchemaError extends Error {
  override name = 'SchemaError';
}

const TABLES = {
  plugin: 'posthog_plugin',
  config: 'posthog_pluginconfig',
  attachment: 'posthog_pluginattachment',
  storage: 'posthog_pluginstorage',
  logEntry: 'posthog_pluginlogentry',
  sourceFile: 'posthog_pluginsourcefile',
  team: 'posthog_team',
  organization: 'posthog_organization',
} as const;

async function columnsOf(db: Knex, table: string): Promise<Columns | null> {
  const info = (await db(table).columnInfo()) as unknown as Record<
    string,
    { nullable: boolean; defaultValue: unknown }
  >;
  const names = Object.keys(info);
  if (names.length === 0) return null; // knex answers {} for a table that does not exist
  return new Map(
    names.map((n) => [
      n.toLowerCase(),
      { nullable: info[n].nullable, hasDefault: info[n].defaultValue !== null && info[n].defaultValue !== undefined },
    ]),
  );
}

async function postgresFlags(db: Knex): Promise<{ privateAccess: boolean; uniquePluginUrl: boolean }> {
  const access = (await db.raw(`SELECT to_regclass('posthog_plugin_has_private_access') IS NOT NULL AS present`)) as {
    rows: Array<{ present: boolean }>;
  };
  // A unique index on exactly (url): 0449's posthog_plugin_url_bccac89d_uniq.
  const unique = (await db.raw(
    `SELECT EXISTS (
       SELECT 1 FROM pg_index i
       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
       WHERE i.indrelid = to_regclass('posthog_plugin') AND i.indisunique AND i.indnatts = 1 AND a.attname = 'url'
     ) AS present`,
  )) as { rows: Array<{ present: boolean }> };
  return { privateAccess: access.rows[0]?.present === true, uniquePluginUrl: unique.rows[0]?.present === true };
}

/** Read the plugin tables' columns. Fails (SchemaError) only when posthog_plugin or posthog_pluginconfig is missing. */
export async function readSchema(db: Knex): Promise<PosthogSchema> {
  const kind = databaseKind(db);
  const [plugin, config, attachment, storage, logEntry, sourceFile, team, organization] = await Promise.all(
    Object.values(TABLES).map((t) => columnsOf(db, t)),
  );
  const missing = [plugin ? null : TABLES.plugin, config ? null : TABLES.config].filter((t) => t !== null);
  if (!plugin || !config) {
    throw new SchemaError(
      `no ${missing.join(' or ')} table (point DATABASE_URL at PostHog's database, or run \`posthog-plugins migrate\` on an empty one)`,
    );
  }
  const flags = kind === 'postgres' ? await postgresFlags(db) : { privateAccess: false, uniquePluginUrl: false };
  const schema: PosthogSchema = {
    kind,
    plugin,
    config,
    attachment,
    storage,
    logEntry,
    sourceFile,
    team,
    organization,
    ...flags,
    django: team !== null,
    migration: null,
  };
  schema.migration = schema.django ? newestMigration(schema) : null;
  return schema;
}

/**
 * Marks PostHog's migrations left in the plugin tables, oldest first: each is true when that migration (or a later
 * one) ran. Only changes visible in the database are listed (docs/posthog-schema.md has the whole history).
 */
const MARKS: Array<{ name: string; date: string; ran: (s: PosthogSchema) => boolean }> = [
  { name: '0096_plugins', date: '2020-10', ran: () => true },
  { name: '0099_plugin_attachment', date: '2020-11-04', ran: (s) => s.attachment !== null },
  { name: '0107_plugin_source', date: '2020-12-10', ran: (s) => s.plugin.has('plugin_type') },
  { name: '0108_plugin_organization', date: '2020-12-16', ran: (s) => s.plugin.has('organization_id') },
  { name: '0111_plugin_storage', date: '2021-01-05', ran: (s) => s.storage !== null },
  { name: '0116_plugin_latest_tag', date: '2021-01-25', ran: (s) => s.plugin.has('latest_tag') },
  { name: '0119_mandatory_plugin_order', date: '2021-01-28', ran: (s) => s.config.get('order')?.nullable === false },
  { name: '0131_add_plugins_updated_created_at', date: '2021-03-09', ran: (s) => s.config.has('created_at') },
  { name: '0133_plugins_access_control', date: '2021-03', ran: (s) => s.plugin.has('is_global') },
  {
    name: '0136_global_plugin_attachments',
    date: '2021-03-23',
    ran: (s) => s.attachment?.get('plugin_config_id')?.nullable === true,
  },
  { name: '0147_plugin_logs', date: '2021-04-26', ran: (s) => s.logEntry !== null || s.sourceFile !== null },
  { name: '0151_plugin_preinstalled', date: '2021-05', ran: (s) => s.plugin.has('is_preinstalled') },
  { name: '0153_plugin_capabilities', date: '2021-05-18', ran: (s) => s.plugin.has('capabilities') },
  { name: '0157_plugin_metrics', date: '2021-06-21', ran: (s) => s.plugin.has('metrics') },
  { name: '0166_plugin_public_jobs', date: '2021-09-02', ran: (s) => s.plugin.has('public_jobs') },
  { name: '0197_plugin_is_stateless', date: '2022-01-17', ran: (s) => s.plugin.has('is_stateless') },
  { name: '0209_plugin_logs_disabled', date: '2022-02', ran: (s) => s.plugin.has('log_level') },
  { name: '0233_plugin_source_file', date: '2022-05-16', ran: (s) => s.sourceFile !== null },
  {
    name: '0235_plugin_source_transpilation',
    date: '2022-05-17',
    ran: (s) => s.sourceFile?.has('transpiled') === true,
  },
  {
    name: '0239_delete_postgres_pluginlogentry',
    date: '2022-05-24',
    ran: (s) => s.sourceFile !== null && s.logEntry === null,
  },
  { name: '0263_plugin_config_web_token', date: '2022-09-29', ran: (s) => s.config.has('web_token') },
  {
    name: '0268_plugin_source_file_updated_at',
    date: '2022-10-11',
    ran: (s) => s.sourceFile?.has('updated_at') === true,
  },
  { name: '0274_add_plugin_icon_and_rewrite_urls', date: '2022-10', ran: (s) => s.plugin.has('icon') },
  { name: '0361_add_plugin_config_ui_fields', date: '2023-11-07', ran: (s) => s.config.has('deleted') },
  { name: '0403_plugin_has_private_access', date: '2024-04-19', ran: (s) => s.privateAccess },
  { name: '0418_pluginconfig_filters', date: '2024-05-23', ran: (s) => s.config.has('filters') },
  {
    name: '0449_alter_plugin_organization',
    date: '2024-07-22',
    ran: (s) => s.uniquePluginUrl || s.plugin.get('organization_id')?.nullable === true,
  },
];

function newestMigration(s: PosthogSchema): MigrationMark {
  let found = MARKS[0];
  for (const m of MARKS) if (m.ran(s)) found = m;
  return { name: found.name, date: found.date };
}

/** One line for logs and `doctor`: whose tables these are and how old. */
export function describeSchema(s: PosthogSchema): string {
  if (!s.django || !s.migration) return `posthog-plugins' own plugin tables (${s.kind})`;
  return `PostHog's plugin tables at migration ${s.migration.name} (${s.migration.date}) or later`;
}

/** Where plugin log entries go, for the one line `start` prints. */
export function pluginLogDestination(s: PosthogSchema): string {
  if (s.logEntry) return 'posthog_pluginlogentry (and the worker log)';
  return s.django
    ? 'the worker log only: this PostHog database has no posthog_pluginlogentry table (it exists only from migration 0147 to 0238; newer PostHog keeps plugin logs in ClickHouse)'
    : 'the worker log only (no posthog_pluginlogentry table)';
}

/** Why meta.storage cannot work here, or null when it can. */
export function storageUnavailableReason(s: PosthogSchema): string | null {
  if (s.storage) return null;
  return 'this database has no posthog_pluginstorage table (PostHog added it in migration 0111, Jan 2021)';
}

/** The access rule PostHog's server applied to configs, for this schema. */
export interface AccessRule {
  /** posthog_organization.plugins_access_level must be > 0 (0133 on). */
  level: boolean;
  /** The plugin's organization must be the team's, or the plugin global (2021–2023 servers; dropped by 2024, 0403). */
  sameOrganization: boolean;
}

export function accessRuleOf(s: PosthogSchema): AccessRule {
  const level = s.organization?.has('plugins_access_level') === true && s.team?.has('organization_id') === true;
  const sameOrganization = level && s.plugin.has('organization_id') && s.plugin.has('is_global') && !s.privateAccess;
  return { level, sameOrganization };
}
