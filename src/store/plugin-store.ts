import { Knex } from 'knex';
import { isJsonObject } from '../../protocol/json';
import type { JsonObject, JsonValue } from '../../protocol/types';
import type {
  AttachmentInput,
  CreateConfigInput,
  InstallPluginInput,
  LoadedPluginConfig,
  PluginAttachment,
  PluginConfigSummary,
  PluginError,
  PluginRow,
} from './types';

const T_PLUGIN = 'posthog_plugin';
const T_CONFIG = 'posthog_pluginconfig';
const T_ATTACHMENT = 'posthog_pluginattachment';
const T_SOURCEFILE = 'posthog_pluginsourcefile';

/** jsonb comes back parsed from pg, text from SQLite (and bytes, in odd setups): accept all three. */
export function parseJsonColumn(value: unknown): JsonValue | null {
  if (value === null || value === undefined) return null;
  if (Buffer.isBuffer(value)) value = value.toString('utf8');
  if (typeof value === 'string') {
    try {
      return JSON.parse(value) as JsonValue;
    } catch {
      return value; // a bare string stored in a text column
    }
  }
  return value as JsonValue;
}

function jsonObject(value: unknown): JsonObject {
  const v = parseJsonColumn(value);
  return isJsonObject(v) ? v : {};
}

function toBuffer(value: unknown): Buffer | null {
  if (value === null || value === undefined) return null;
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (typeof value === 'string') {
    // pg without type parsing returns bytea as "\x…" hex text
    if (value.startsWith('\\x')) return Buffer.from(value.slice(2), 'hex');
    return Buffer.from(value, 'utf8');
  }
  return null;
}

function toIso(value: unknown): string | null {
  if (value === null || value === undefined) return null;
  if (value instanceof Date) return value.toISOString();
  if (typeof value === 'number') return new Date(value).toISOString();
  return String(value);
}

function toBool(value: unknown): boolean {
  return value === true || value === 1 || value === '1' || value === 't' || value === 'true';
}

function parseError(value: unknown): PluginError | null {
  const v = parseJsonColumn(value);
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return null;
  return v as unknown as PluginError;
}

function chunks<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** Build a PostHog-format error record from anything thrown. */
export function pluginErrorFrom(error: unknown, event?: JsonObject | null, time = new Date()): PluginError {
  if (typeof error === 'string') return { message: error, time: time.toISOString() }; // PostHog: strings carry no event
  const e = (error ?? {}) as { message?: unknown; name?: unknown; stack?: unknown };
  const out: PluginError = {
    message: typeof e.message === 'string' ? e.message : String(error),
    time: time.toISOString(),
    name: typeof e.name === 'string' ? e.name : 'Error',
  };
  if (typeof e.stack === 'string') out.stack = e.stack;
  if (event !== undefined) out.event = event;
  return out;
}

/**
 * Reads and writes PostHog's plugin tables through knex. Works on the tables created by `migrate()` and on
 * PostHog's own Django-managed tables (columns are introspected once: extra columns are ignored, missing
 * optional ones are skipped).
 */
export class PluginStore {
  private columnCache = new Map<string, Promise<Set<string>>>();
  private tableCache = new Map<string, Promise<boolean>>();

  constructor(readonly db: Knex) {}

  /** Column names of a table (lower-case), cached. */
  columns(table: string): Promise<Set<string>> {
    let p = this.columnCache.get(table);
    if (!p) {
      p = this.db(table)
        .columnInfo()
        .then((info) => new Set(Object.keys(info).map((k) => k.toLowerCase())));
      p.catch(() => this.columnCache.delete(table));
      this.columnCache.set(table, p);
    }
    return p;
  }

  private hasTable(table: string): Promise<boolean> {
    let p = this.tableCache.get(table);
    if (!p) {
      p = this.db.schema.hasTable(table);
      p.catch(() => this.tableCache.delete(table));
      this.tableCache.set(table, p);
    }
    return p;
  }

  /** Forget introspected columns (after a migration in the same process). */
  resetSchemaCache(): void {
    this.columnCache.clear();
    this.tableCache.clear();
  }

  /**
   * Enabled configs with a team, joined with their plugin row and attachments, ordered by team_id, order, id.
   * Configs whose plugin row is missing are left out. Rows flagged `deleted` (newer PostHog) are left out.
   */
  async loadEnabledConfigs(): Promise<LoadedPluginConfig[]> {
    const cfgCols = await this.columns(T_CONFIG);
    const q = this.db(T_CONFIG)
      .select(['id', 'team_id', 'plugin_id', 'order', 'config', 'error', ...(cfgCols.has('updated_at') ? ['updated_at'] : [])])
      .where('enabled', true)
      .whereNotNull('team_id')
      .orderBy([{ column: 'team_id' }, { column: 'order' }, { column: 'id' }]);
    if (cfgCols.has('deleted')) q.andWhere((w) => w.where('deleted', false).orWhereNull('deleted'));
    const configRows = (await q) as Array<Record<string, unknown>>;
    if (configRows.length === 0) return [];

    const pluginIds = [...new Set(configRows.map((r) => Number(r.plugin_id)))];
    const plugins = await this.loadPlugins(pluginIds);
    const configIds = configRows.map((r) => Number(r.id));
    const attachments = await this.loadAttachments(configIds);

    const out: LoadedPluginConfig[] = [];
    for (const r of configRows) {
      const plugin = plugins.get(Number(r.plugin_id));
      if (!plugin) continue;
      const id = Number(r.id);
      out.push({
        id,
        teamId: Number(r.team_id),
        pluginId: plugin.id,
        order: r.order === null || r.order === undefined ? 0 : Number(r.order),
        config: jsonObject(r.config),
        error: parseError(r.error),
        updatedAt: toIso(r.updated_at),
        plugin,
        attachments: attachments.get(id) ?? [],
      });
    }
    // The database already sorts; sort again so that text-vs-int collation quirks cannot change the chain order.
    out.sort((a, b) => a.teamId - b.teamId || a.order - b.order || a.id - b.id);
    return out;
  }

  private async loadPlugins(ids: number[]): Promise<Map<number, PluginRow>> {
    const cols = await this.columns(T_PLUGIN);
    const wanted = ['id', 'name', 'plugin_type', 'url', 'archive', 'source', 'config_schema', 'updated_at'].filter((c) =>
      cols.has(c),
    );
    const rows: Array<Record<string, unknown>> = [];
    for (const part of chunks(ids, 500)) rows.push(...((await this.db(T_PLUGIN).select(wanted).whereIn('id', part)) as Array<Record<string, unknown>>));

    const sourceFiles = new Map<number, Record<string, string>>();
    if (await this.hasTable(T_SOURCEFILE)) {
      const sfCols = await this.columns(T_SOURCEFILE);
      if (sfCols.has('plugin_id') && sfCols.has('filename') && sfCols.has('source')) {
        for (const part of chunks(ids, 500)) {
          const files = (await this.db(T_SOURCEFILE).select(['plugin_id', 'filename', 'source']).whereIn('plugin_id', part)) as Array<
            Record<string, unknown>
          >;
          for (const f of files) {
            if (typeof f.source !== 'string') continue;
            const pid = Number(f.plugin_id);
            const m = sourceFiles.get(pid) ?? {};
            m[String(f.filename)] = f.source;
            sourceFiles.set(pid, m);
          }
        }
      }
    }

    const out = new Map<number, PluginRow>();
    for (const r of rows) {
      const id = Number(r.id);
      out.set(id, {
        id,
        name: typeof r.name === 'string' && r.name ? r.name : `plugin-${id}`,
        pluginType: typeof r.plugin_type === 'string' ? r.plugin_type : null,
        url: typeof r.url === 'string' && r.url ? r.url : null,
        archive: toBuffer(r.archive),
        source: typeof r.source === 'string' ? r.source : null,
        sourceFiles: sourceFiles.get(id) ?? null,
        configSchema: parseJsonColumn(r.config_schema) ?? {},
        updatedAt: toIso(r.updated_at),
      });
    }
    return out;
  }

  private async loadAttachments(configIds: number[]): Promise<Map<number, PluginAttachment[]>> {
    const out = new Map<number, PluginAttachment[]>();
    for (const part of chunks(configIds, 500)) {
      const rows = (await this.db(T_ATTACHMENT)
        .select(['plugin_config_id', 'key', 'content_type', 'file_name', 'contents'])
        .whereIn('plugin_config_id', part)
        .orderBy('id')) as Array<Record<string, unknown>>;
      for (const r of rows) {
        const id = Number(r.plugin_config_id);
        const list = out.get(id) ?? [];
        list.push({
          key: String(r.key),
          contentType: String(r.content_type ?? 'application/octet-stream'),
          fileName: String(r.file_name ?? r.key),
          contents: toBuffer(r.contents) ?? Buffer.alloc(0),
        });
        out.set(id, list);
      }
    }
    return out;
  }

  /** Write (or clear, with null) `posthog_pluginconfig.error`. */
  async setError(configId: number, error: PluginError | null): Promise<void> {
    await this.db(T_CONFIG)
      .where('id', configId)
      .update({ error: error === null ? null : JSON.stringify(error) });
  }

  /** `enabled = false` plus the reason in `error` (PostHog's "punish" after repeated failures). */
  async disable(configId: number, error: PluginError | null): Promise<void> {
    await this.db(T_CONFIG)
      .where('id', configId)
      .update({ enabled: false, error: error === null ? null : JSON.stringify(error) });
  }

  /** Insert a posthog_plugin row; returns its id. Django-only NOT NULL columns get Django's defaults. */
  async installPlugin(input: InstallPluginInput): Promise<number> {
    const cols = await this.columns(T_PLUGIN);
    const now = new Date().toISOString();
    let organizationId = input.organizationId ?? null;
    if (organizationId === null && cols.has('organization_id') && (await this.hasTable('posthog_organization'))) {
      try {
        const org = (await this.db('posthog_organization').select('id').first()) as { id?: unknown } | undefined;
        if (org?.id !== undefined && org.id !== null) organizationId = String(org.id);
      } catch {
        // no usable organization table: leave it null
      }
    }
    const row: Record<string, unknown> = {
      name: input.name,
      plugin_type: input.pluginType,
      url: input.url ?? null,
      archive: input.archive ?? null,
      source: input.source ?? null,
      config_schema: JSON.stringify(input.configSchema ?? {}),
      description: input.description ?? '',
      tag: input.tag ?? null,
      is_global: input.isGlobal ?? false,
      is_preinstalled: false,
      from_json: false,
      from_web: false,
      capabilities: JSON.stringify({}),
      metrics: JSON.stringify({}),
      public_jobs: JSON.stringify({}),
      organization_id: organizationId,
      created_at: now,
      updated_at: now,
    };
    if (!cols.has('source') && input.source) {
      throw new Error('posthog_plugin has no "source" column in this database: source plugins cannot be installed here');
    }
    return this.insertReturningId(T_PLUGIN, this.onlyColumns(row, cols));
  }

  /** Insert a posthog_pluginconfig row; returns its id. */
  async createConfig(input: CreateConfigInput): Promise<number> {
    const cols = await this.columns(T_CONFIG);
    const now = new Date().toISOString();
    const row: Record<string, unknown> = {
      team_id: input.teamId,
      plugin_id: input.pluginId,
      enabled: input.enabled ?? true,
      order: input.order,
      config: JSON.stringify(input.config ?? {}),
      error: null,
      deleted: false,
      created_at: now,
      updated_at: now,
    };
    return this.insertReturningId(T_CONFIG, this.onlyColumns(row, cols));
  }

  /** Insert a posthog_pluginattachment row; returns its id. */
  async addAttachment(input: AttachmentInput): Promise<number> {
    const cols = await this.columns(T_ATTACHMENT);
    const row: Record<string, unknown> = {
      plugin_config_id: input.pluginConfigId,
      team_id: input.teamId,
      key: input.key,
      content_type: input.contentType,
      file_name: input.fileName,
      file_size: input.contents.length,
      contents: input.contents,
    };
    return this.insertReturningId(T_ATTACHMENT, this.onlyColumns(row, cols));
  }

  /** Every config (enabled or not, with or without team) with its plugin's name, for a `list` command. */
  async listConfigs(): Promise<PluginConfigSummary[]> {
    const cfgCols = await this.columns(T_CONFIG);
    const q = this.db(`${T_CONFIG} as c`)
      .leftJoin(`${T_PLUGIN} as p`, 'p.id', 'c.plugin_id')
      .select([
        'c.id as id',
        'c.team_id as team_id',
        'c.plugin_id as plugin_id',
        'c.enabled as enabled',
        'c.order as order',
        'c.config as config',
        'c.error as error',
        'p.name as plugin_name',
        'p.plugin_type as plugin_type',
        'p.url as url',
      ])
      .orderBy([{ column: 'c.team_id' }, { column: 'c.order' }, { column: 'c.id' }]);
    if (cfgCols.has('deleted')) q.where((w) => w.where('c.deleted', false).orWhereNull('c.deleted'));
    const rows = (await q) as Array<Record<string, unknown>>;
    return rows.map((r) => ({
      id: Number(r.id),
      teamId: r.team_id === null || r.team_id === undefined ? null : Number(r.team_id),
      pluginId: Number(r.plugin_id),
      pluginName: typeof r.plugin_name === 'string' ? r.plugin_name : `plugin-${String(r.plugin_id)}`,
      pluginType: typeof r.plugin_type === 'string' ? r.plugin_type : null,
      url: typeof r.url === 'string' ? r.url : null,
      enabled: toBool(r.enabled),
      order: r.order === null || r.order === undefined ? 0 : Number(r.order),
      config: jsonObject(r.config),
      error: parseError(r.error),
    }));
  }

  /** The stored error of one config (tests, CLI). */
  async getError(configId: number): Promise<PluginError | null> {
    const row = (await this.db(T_CONFIG).select('error').where('id', configId).first()) as { error?: unknown } | undefined;
    return row ? parseError(row.error) : null;
  }

  private onlyColumns(row: Record<string, unknown>, cols: Set<string>): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(row)) if (cols.has(k)) out[k] = v;
    return out;
  }

  private async insertReturningId(table: string, row: Record<string, unknown>): Promise<number> {
    const result = (await this.db(table).insert(row).returning('id')) as unknown[];
    const first = result[0];
    const id = typeof first === 'object' && first !== null ? (first as { id: unknown }).id : first;
    const n = Number(id);
    if (!Number.isFinite(n)) throw new Error(`insert into ${table} returned no id`);
    return n;
  }
}
