import { randomUUID } from 'node:crypto';
import { Knex } from 'knex';
import type { Columns, PosthogSchema } from './schema';
import type { AttachmentInput, CreateConfigInput, InstallPluginInput } from './types';

type Row = Record<string, unknown>;

export class PluginWriteError extends Error {
  override name = 'PluginWriteError';
}

/**
 * Keep the columns this table has; fail when a NOT NULL column without a server default would be left out (a
 * PostHog migration newer than this code added it, so we cannot know what Django would write there).
 */
export function fitRow(table: string, columns: Columns, row: Row): Row {
  const out: Row = {};
  for (const [k, v] of Object.entries(row)) if (columns.has(k)) out[k] = v;
  // `id` is a serial (Postgres) or the rowid (SQLite), assigned by the database even without a declared default.
  const unfilled = [...columns.entries()]
    .filter(
      ([name, c]) => name !== 'id' && !c.nullable && !c.hasDefault && (out[name] === undefined || out[name] === null),
    )
    .map(([name]) => name);
  if (unfilled.length > 0) {
    throw new PluginWriteError(
      `cannot write ${table}: NOT NULL column(s) ${unfilled.join(', ')} have no value (a PostHog migration newer than posthog-plugins knows?)`,
    );
  }
  return out;
}

/**
 * The posthog_plugin row PostHog's Django wrote on install, for every column any version had; `fitRow` keeps the
 * ones this database has. JSON goes as text (Postgres casts it to jsonb).
 */
export function pluginRow(input: InstallPluginInput, organizationId: string | null, now: string): Row {
  return {
    name: input.name,
    description: input.description ?? '',
    url: input.url ?? null,
    config_schema: JSON.stringify(input.configSchema ?? {}),
    tag: input.tag ?? null,
    archive: input.archive ?? null,
    from_json: false,
    from_web: false,
    error: null,
    plugin_type: input.pluginType,
    source: null,
    organization_id: organizationId,
    latest_tag: null,
    latest_tag_checked_at: null,
    created_at: now,
    updated_at: now,
    is_global: input.isGlobal ?? false,
    is_preinstalled: false,
    capabilities: JSON.stringify({}),
    metrics: JSON.stringify({}),
    public_jobs: JSON.stringify({}),
    is_stateless: false,
    log_level: null,
    icon: null,
  };
}

export function configRow(input: CreateConfigInput, now: string): Row {
  return {
    team_id: input.teamId,
    plugin_id: input.pluginId,
    enabled: input.enabled ?? true,
    order: input.order,
    config: JSON.stringify(input.config ?? {}),
    error: null,
    created_at: now,
    updated_at: now,
    web_token: null,
    deleted: false,
    description: null,
    name: null,
    match_action_id: null,
    filters: null,
  };
}

/**
 * Writes plugin rows as the database's own PostHog version would have: only the columns it has, every NOT NULL
 * one filled (organization_id from 0108 on: the team's organization, else the first one, as 0108 backfilled),
 * source plugins' code in posthog_pluginsourcefile from 0233 on, and an existing row reused for the same url where
 * 0449's UNIQUE(url) exists (PostHog's upsert did the same).
 */
export class PluginWriter {
  constructor(
    private readonly db: Knex,
    private readonly schemaOf: () => Promise<PosthogSchema>,
  ) {}

  async installPlugin(input: InstallPluginInput): Promise<number> {
    const s = await this.schemaOf();
    const now = new Date().toISOString();
    const organizationId = s.plugin.has('organization_id')
      ? (input.organizationId ?? (await this.organizationFor(s, input.teamId ?? null)))
      : null;
    const row = pluginRow(input, organizationId, now);
    const code = input.source ?? null;
    if (code !== null) {
      if (!s.sourceFile && !s.plugin.has('source')) {
        throw new PluginWriteError(
          'this PostHog database keeps no plugin source code (posthog_plugin.source came with migration 0107, Dec 2020): install the plugin as a folder or archive',
        );
      }
      if (!s.sourceFile) row.source = code;
    }
    const fitted = fitRow('posthog_plugin', s.plugin, row);
    let id: number;
    if (s.uniquePluginUrl && typeof fitted.url === 'string') {
      const merge = Object.keys(fitted).filter((k) => k !== 'created_at');
      const result = (await this.db('posthog_plugin')
        .insert(fitted)
        .onConflict('url')
        .merge(merge)
        .returning('id')) as unknown[];
      id = idOf('posthog_plugin', result);
    } else {
      id = await this.insert('posthog_plugin', fitted);
    }
    if (code !== null && s.sourceFile) await this.writeSourceFiles(s, id, input, code, now);
    return id;
  }

  async createConfig(input: CreateConfigInput): Promise<number> {
    const s = await this.schemaOf();
    if (input.teamId !== null && s.team) {
      const team = await this.db('posthog_team').select('id').where('id', input.teamId).first();
      if (!team) throw new PluginWriteError(`team ${input.teamId} does not exist in posthog_team`);
    }
    return this.insert(
      'posthog_pluginconfig',
      fitRow('posthog_pluginconfig', s.config, configRow(input, new Date().toISOString())),
    );
  }

  async addAttachment(input: AttachmentInput): Promise<number> {
    const s = await this.schemaOf();
    if (!s.attachment)
      throw new PluginWriteError(
        'this database has no posthog_pluginattachment table (PostHog added it in migration 0099, Nov 2020)',
      );
    const row: Row = {
      plugin_config_id: input.pluginConfigId,
      team_id: input.teamId,
      key: input.key,
      content_type: input.contentType,
      file_name: input.fileName,
      file_size: input.contents.length,
      contents: input.contents,
    };
    return this.insert('posthog_pluginattachment', fitRow('posthog_pluginattachment', s.attachment, row));
  }

  /** The team's organization (what PostHog's UI used), else the first one (what migration 0108 backfilled). */
  private async organizationFor(s: PosthogSchema, teamId: number | null): Promise<string | null> {
    if (teamId !== null && s.team?.has('organization_id')) {
      const team = (await this.db('posthog_team').select('organization_id').where('id', teamId).first()) as
        { organization_id?: unknown } | undefined;
      if (team?.organization_id) return String(team.organization_id);
    }
    if (!s.organization) return null;
    const org = (await this.db('posthog_organization').select('id').orderBy('id').first()) as
      { id?: unknown } | undefined;
    const id = org?.id === undefined || org.id === null ? null : String(org.id);
    if (id === null && s.plugin.get('organization_id')?.nullable === false) {
      throw new PluginWriteError(
        'posthog_plugin.organization_id is required here, but posthog_organization has no rows',
      );
    }
    return id;
  }

  /** From 0233 on Django kept a source plugin's code as posthog_pluginsourcefile rows plugin.json and index.ts. */
  private async writeSourceFiles(
    s: PosthogSchema,
    pluginId: number,
    input: InstallPluginInput,
    code: string,
    now: string,
  ): Promise<void> {
    const columns = s.sourceFile as Columns;
    const pluginJson = JSON.stringify({ name: input.name, config: input.configSchema ?? [] }, null, 2);
    for (const [filename, source] of [
      ['plugin.json', pluginJson],
      ['index.ts', code],
    ]) {
      const row = fitRow('posthog_pluginsourcefile', columns, {
        id: randomUUID(),
        plugin_id: pluginId,
        filename,
        source,
        error: null,
        status: null,
        transpiled: null,
        updated_at: now,
      });
      await this.db('posthog_pluginsourcefile')
        .insert(row)
        .onConflict(['plugin_id', 'filename'])
        .merge(['source', ...(columns.has('updated_at') ? ['updated_at'] : [])]);
    }
  }

  private async insert(table: string, row: Row): Promise<number> {
    return idOf(table, (await this.db(table).insert(row).returning('id')) as unknown[]);
  }
}

function idOf(table: string, result: unknown[]): number {
  const first = result[0];
  const id = typeof first === 'object' && first !== null ? (first as { id: unknown }).id : first;
  const n = Number(id);
  if (!Number.isFinite(n)) throw new Error(`insert into ${table} returned no id`);
  return n;
}
