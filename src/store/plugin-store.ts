import { Knex } from 'knex';
import { isJsonObject } from '../../protocol/json';
import type { JsonObject, JsonValue } from '../../protocol/types';
import { whyConfigDoesNotRun, type ConfigFacts } from './config-rules';
import { PluginWriter } from './plugin-writer';
import { accessRuleOf, readSchema, type PosthogSchema } from './schema';
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
const T_TEAM = 'posthog_team';
const T_ORGANIZATION = 'posthog_organization';

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

/** posthog_plugin.plugin_type, or what migration 0107 set where the column is absent or NULL. */
export function pluginTypeOf(pluginType: unknown, url: string | null): string {
  if (typeof pluginType === 'string' && pluginType !== '') return pluginType;
  return url?.startsWith('file:') ? 'local' : 'custom';
}

/** A config row with everything that decides whether it runs, and why it does not. */
export interface InspectedConfig extends PluginConfigSummary {
  deleted: boolean;
  updatedAt: string | null;
  /** null: it runs. */
  skipReason: string | null;
}

type Row = Record<string, unknown>;

/**
 * Reads and writes PostHog's plugin tables through knex, on the tables `migrate()` creates and on PostHog's own
 * Django tables of any year: the schema is read at start and on each reload (`refreshSchema`), and every query
 * names the columns it reads, only those the database has (docs/posthog-schema.md).
 */
export class PluginStore {
  private schemaPromise: Promise<PosthogSchema> | null = null;
  private lastSchema: PosthogSchema | null = null;
  readonly writer: PluginWriter;

  constructor(readonly db: Knex) {
    this.writer = new PluginWriter(db, () => this.schema());
  }

  /** The introspected schema (read once, then cached until `refreshSchema`). */
  schema(): Promise<PosthogSchema> {
    if (!this.schemaPromise) {
      const p = readSchema(this.db).then((s) => (this.lastSchema = s));
      p.catch(() => {
        if (this.schemaPromise === p) this.schemaPromise = null;
      });
      this.schemaPromise = p;
    }
    return this.schemaPromise;
  }

  /** The schema as last read (null before the first read): for checks that must not wait. */
  get currentSchema(): PosthogSchema | null {
    return this.lastSchema;
  }

  /** Read the schema again (PostHog may have been migrated meanwhile). */
  refreshSchema(): Promise<PosthogSchema> {
    this.schemaPromise = null;
    return this.schema();
  }

  /**
   * Every config (or only enabled ones) with its plugin's name and type and whether it runs: `enabled`,
   * `deleted IS NOT TRUE`, a team, an existing plugin row, and PostHog's access rule where its columns exist.
   */
  async inspectConfigs(opts: { enabledOnly?: boolean } = {}): Promise<InspectedConfig[]> {
    const s = await this.schema();
    const rule = accessRuleOf(s);
    const cols: string[] = [
      'c.id as id',
      'c.team_id as team_id',
      'c.plugin_id as plugin_id',
      'c.enabled as enabled',
      'c.order as order',
      'c.config as config',
      'c.error as error',
    ];
    if (s.config.has('deleted')) cols.push('c.deleted as deleted');
    if (s.config.has('updated_at')) cols.push('c.updated_at as updated_at');
    cols.push('p.id as p_id', 'p.name as plugin_name', 'p.url as url');
    if (s.plugin.has('plugin_type')) cols.push('p.plugin_type as plugin_type');
    if (s.plugin.has('organization_id')) cols.push('p.organization_id as plugin_org');
    if (s.plugin.has('is_global')) cols.push('p.is_global as is_global');
    const q = this.db(`${T_CONFIG} as c`).leftJoin(`${T_PLUGIN} as p`, 'p.id', 'c.plugin_id');
    if (s.team) {
      q.leftJoin(`${T_TEAM} as t`, 't.id', 'c.team_id');
      cols.push('t.id as t_id');
      if (rule.level) {
        q.leftJoin(`${T_ORGANIZATION} as o`, 'o.id', 't.organization_id');
        cols.push('t.organization_id as team_org', 'o.plugins_access_level as access_level');
      }
    }
    q.select(cols).orderBy([{ column: 'c.team_id' }, { column: 'c.order' }, { column: 'c.id' }]);
    if (opts.enabledOnly) q.where('c.enabled', true);
    const rows = (await q) as Row[];
    return rows.map((r) => {
      const teamId = r.team_id === null || r.team_id === undefined ? null : Number(r.team_id);
      const url = typeof r.url === 'string' && r.url ? r.url : null;
      const pluginExists = r.p_id !== null && r.p_id !== undefined;
      const deleted = r.deleted === undefined || r.deleted === null ? false : toBool(r.deleted);
      const facts: ConfigFacts = {
        enabled: toBool(r.enabled),
        deleted,
        teamId,
        pluginExists,
        ...(s.team ? { teamExists: r.t_id !== null && r.t_id !== undefined } : {}),
        ...(rule.level
          ? {
              accessLevel: r.access_level === null || r.access_level === undefined ? null : Number(r.access_level),
              teamOrganizationId: r.team_org === null || r.team_org === undefined ? null : String(r.team_org),
            }
          : {}),
        pluginOrganizationId: r.plugin_org === null || r.plugin_org === undefined ? null : String(r.plugin_org),
        pluginIsGlobal: r.is_global === undefined ? null : toBool(r.is_global),
      };
      return {
        id: Number(r.id),
        teamId,
        pluginId: Number(r.plugin_id),
        pluginName:
          typeof r.plugin_name === 'string' && r.plugin_name ? r.plugin_name : `plugin-${String(r.plugin_id)}`,
        pluginType: pluginExists ? pluginTypeOf(r.plugin_type, url) : null,
        url,
        enabled: facts.enabled,
        order: r.order === null || r.order === undefined ? 0 : Number(r.order),
        config: jsonObject(r.config),
        error: parseError(r.error),
        deleted,
        updatedAt: toIso(r.updated_at),
        skipReason: whyConfigDoesNotRun(facts, rule),
      };
    });
  }

  /**
   * The configs that run, joined with their plugin row and attachments, ordered by team_id, order (NULL as 0), id.
   * Reads the schema again first: this is what a reload calls.
   */
  async loadEnabledConfigs(): Promise<LoadedPluginConfig[]> {
    await this.refreshSchema();
    const running = (await this.inspectConfigs({ enabledOnly: true })).filter((c) => c.skipReason === null);
    if (running.length === 0) return [];
    const plugins = await this.loadPlugins([...new Set(running.map((c) => c.pluginId))]);
    const attachments = await this.loadAttachments(running.map((c) => c.id));
    const out: LoadedPluginConfig[] = [];
    for (const c of running) {
      const plugin = plugins.get(c.pluginId);
      if (!plugin) continue;
      out.push({
        id: c.id,
        teamId: c.teamId as number,
        pluginId: plugin.id,
        order: c.order,
        config: c.config,
        error: c.error,
        updatedAt: c.updatedAt,
        plugin,
        attachments: attachments.get(c.id) ?? [],
      });
    }
    // NULL orders (before 0119) count as 0; the database sorted them last.
    out.sort((a, b) => a.teamId - b.teamId || a.order - b.order || a.id - b.id);
    return out;
  }

  /** Plugin rows by id with their code columns and, where the table exists, their posthog_pluginsourcefile rows. */
  async loadPlugins(ids: number[]): Promise<Map<number, PluginRow>> {
    const s = await this.schema();
    const wanted = ['id', 'name', 'plugin_type', 'url', 'archive', 'source', 'config_schema', 'updated_at'].filter(
      (c) => s.plugin.has(c),
    );
    const rows: Row[] = [];
    for (const part of chunks(ids, 500))
      rows.push(...((await this.db(T_PLUGIN).select(wanted).whereIn('id', part)) as Row[]));

    const sourceFiles = new Map<number, Record<string, string>>();
    if (s.sourceFile?.has('source')) {
      for (const part of chunks(ids, 500)) {
        const files = (await this.db(T_SOURCEFILE)
          .select(['plugin_id', 'filename', 'source'])
          .whereIn('plugin_id', part)) as Row[];
        for (const f of files) {
          if (typeof f.source !== 'string') continue;
          const pid = Number(f.plugin_id);
          const m = sourceFiles.get(pid) ?? {};
          m[String(f.filename)] = f.source;
          sourceFiles.set(pid, m);
        }
      }
    }

    const out = new Map<number, PluginRow>();
    for (const r of rows) {
      const id = Number(r.id);
      const url = typeof r.url === 'string' && r.url ? r.url : null;
      out.set(id, {
        id,
        name: typeof r.name === 'string' && r.name ? r.name : `plugin-${id}`,
        pluginType: pluginTypeOf(r.plugin_type, url),
        url,
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
    if (!(await this.schema()).attachment) return out; // before 0099
    for (const part of chunks(configIds, 500)) {
      const rows = (await this.db(T_ATTACHMENT)
        .select(['plugin_config_id', 'key', 'content_type', 'file_name', 'contents'])
        .whereIn('plugin_config_id', part)
        .orderBy('id')) as Row[];
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

  /** Write (or clear, with null) `posthog_pluginconfig.error`: the same UPDATE on every PostHog version. */
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

  /** Insert a posthog_plugin row as this database's Django would; returns its id (see PluginWriter). */
  installPlugin(input: InstallPluginInput): Promise<number> {
    return this.writer.installPlugin(input);
  }

  /** Insert a posthog_pluginconfig row as this database's Django would; returns its id. */
  createConfig(input: CreateConfigInput): Promise<number> {
    return this.writer.createConfig(input);
  }

  /** Insert a posthog_pluginattachment row; returns its id. */
  addAttachment(input: AttachmentInput): Promise<number> {
    return this.writer.addAttachment(input);
  }

  /** Every config that is not deleted (enabled or not, with or without team) with its plugin's name, for `list`. */
  async listConfigs(): Promise<PluginConfigSummary[]> {
    return (await this.inspectConfigs())
      .filter((c) => !c.deleted)
      .map(({ deleted: _d, updatedAt: _u, skipReason: _s, ...summary }) => summary);
  }

  /** The stored error of one config (tests, CLI). */
  async getError(configId: number): Promise<PluginError | null> {
    const row = (await this.db(T_CONFIG).select('error').where('id', configId).first()) as
      { error?: unknown } | undefined;
    return row ? parseError(row.error) : null;
  }
}
