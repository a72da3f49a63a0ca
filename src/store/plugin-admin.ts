import { isJsonObject } from '../../protocol/json';
import type { JsonObject, JsonValue } from '../../protocol/types';
import { parseJsonColumn, type PluginStore } from './plugin-store';
import type { Columns } from './schema';
import type { InstallPluginInput } from './types';

/**
 * The writes of the plugin-management commands (uninstall, enable/disable, config set, order, install
 * --upgrade), one function per operation, each touching only PostHog's rows for that operation. Columns a
 * database does not have (older PostHog schemas) are skipped, as in PluginStore.
 */
const T_PLUGIN = 'posthog_plugin';
const T_CONFIG = 'posthog_pluginconfig';

/** One config with what the commands need of its plugin. */
export interface ConfigRecord {
  id: number;
  teamId: number | null;
  pluginId: number;
  pluginName: string;
  url: string | null;
  enabled: boolean;
  order: number;
  config: JsonObject;
  configSchema: JsonValue;
}

/** A config by id (a config soft-deleted by newer PostHog counts as missing). */
export async function findConfig(store: PluginStore, id: number): Promise<ConfigRecord | null> {
  const cols = (await store.schema()).config;
  const q = store
    .db(`${T_CONFIG} as c`)
    .leftJoin(`${T_PLUGIN} as p`, 'p.id', 'c.plugin_id')
    .select([
      'c.id',
      'c.team_id',
      'c.plugin_id',
      'c.enabled',
      'c.order',
      'c.config',
      'p.name as plugin_name',
      'p.url as url',
      'p.config_schema as config_schema',
    ])
    .where('c.id', id);
  if (cols.has('deleted')) q.andWhere((w) => w.where('c.deleted', false).orWhereNull('c.deleted'));
  const r = (await q.first()) as Record<string, unknown> | undefined;
  if (!r) return null;
  const config = parseJsonColumn(r.config);
  return {
    id: Number(r.id),
    teamId: r.team_id === null || r.team_id === undefined ? null : Number(r.team_id),
    pluginId: Number(r.plugin_id),
    pluginName: typeof r.plugin_name === 'string' ? r.plugin_name : `plugin-${String(r.plugin_id)}`,
    url: typeof r.url === 'string' ? r.url : null,
    enabled: r.enabled === true || r.enabled === 1 || r.enabled === '1' || r.enabled === 't',
    order: r.order === null || r.order === undefined ? 0 : Number(r.order),
    config: isJsonObject(config) ? config : {},
    configSchema: parseJsonColumn(r.config_schema) ?? {},
  };
}

/** The configs of these ids, in order; one error naming every id that does not exist (nothing is done then). */
export async function findConfigs(store: PluginStore, ids: readonly number[]): Promise<ConfigRecord[]> {
  const found = await Promise.all(ids.map((id) => findConfig(store, id)));
  const missing = ids.filter((_, i) => found[i] === null);
  if (missing.length > 0) throw new Error(`no plugin config #${missing.join(', #')} (see \`posthog-plugins list\`)`);
  return found as ConfigRecord[];
}

/** Ids of plugins stored with this url (PostHog keeps urls unique since 2024). */
export async function findPluginsByUrl(store: PluginStore, url: string): Promise<number[]> {
  const rows = (await store.db(T_PLUGIN).select('id').where('url', url).orderBy('id')) as Array<{ id: unknown }>;
  return rows.map((r) => Number(r.id));
}

/** Config ids of a plugin for a team. */
export async function configsOfPlugin(store: PluginStore, pluginId: number, teamId: number): Promise<number[]> {
  const cols = (await store.schema()).config;
  const q = store.db(T_CONFIG).select('id').where({ plugin_id: pluginId, team_id: teamId }).orderBy('id');
  if (cols.has('deleted')) q.andWhere((w) => w.where('deleted', false).orWhereNull('deleted'));
  return ((await q) as Array<{ id: unknown }>).map((r) => Number(r.id));
}

/** `enabled` of one config (PostHog's toggle). */
export async function setConfigEnabled(store: PluginStore, id: number, enabled: boolean): Promise<void> {
  await updateConfig(store, id, { enabled });
}

/** The whole `config` of one config (PostHog's config form saves it whole). */
export async function setConfigValues(store: PluginStore, id: number, config: JsonObject): Promise<void> {
  await updateConfig(store, id, { config: JSON.stringify(config) });
}

/** New `order` values for several configs at once (PostHog's rearrange), in one transaction. */
export async function setConfigOrders(store: PluginStore, orders: ReadonlyMap<number, number>): Promise<void> {
  const cols = (await store.schema()).config;
  await store.db.transaction(async (trx) => {
    for (const [id, order] of orders) {
      await trx(T_CONFIG)
        .where('id', id)
        .update(onlyColumns({ order, updated_at: new Date().toISOString() }, cols));
    }
  });
}

/**
 * Remove one config. Newer PostHog soft-deletes (`deleted = true`, disabled); on older schemas the row goes with
 * its attachments, storage, log entries and our jobs (Django's cascade deleted those rows first, and PostHog's
 * foreign keys refuse the delete otherwise). The plugin row goes too when no config is
 * left on it, as PostHog's uninstall removed the plugin. Returns whether the plugin row was removed.
 */
export async function removeConfig(store: PluginStore, id: number, pluginId: number): Promise<boolean> {
  const cols = (await store.schema()).config;
  return store.db.transaction(async (trx) => {
    const soft = cols.has('deleted');
    if (soft)
      await trx(T_CONFIG)
        .where('id', id)
        .update(onlyColumns({ deleted: true, enabled: false, updated_at: new Date().toISOString() }, cols));
    else {
      for (const table of [
        'posthog_pluginattachment',
        'posthog_pluginstorage',
        'posthog_pluginlogentry',
        'posthog_plugins_job',
      ]) {
        if (await trx.schema.hasTable(table)) await trx(table).where('plugin_config_id', id).delete();
      }
      await trx(T_CONFIG).where('id', id).delete();
    }
    const left = (await trx(T_CONFIG).count({ n: '*' }).where('plugin_id', pluginId).first()) as
      { n: unknown } | undefined;
    if (Number(left?.n ?? 0) > 0) return false;
    if (await trx.schema.hasTable('posthog_pluginsourcefile'))
      await trx('posthog_pluginsourcefile').where('plugin_id', pluginId).delete();
    await trx(T_PLUGIN).where('id', pluginId).delete();
    return true;
  });
}

/** New code for an installed plugin (install --upgrade): what PostHog's "update" rewrote. */
export async function updatePluginCode(store: PluginStore, id: number, input: InstallPluginInput): Promise<void> {
  const cols = (await store.schema()).plugin;
  const row = {
    name: input.name,
    plugin_type: input.pluginType,
    url: input.url ?? null,
    archive: input.archive ?? null,
    source: input.source ?? null,
    config_schema: JSON.stringify(input.configSchema ?? {}),
    description: input.description ?? '',
    tag: input.tag ?? null,
    updated_at: new Date().toISOString(),
  };
  await store.db(T_PLUGIN).where('id', id).update(onlyColumns(row, cols));
}

async function updateConfig(store: PluginStore, id: number, changes: Record<string, unknown>): Promise<void> {
  const cols = (await store.schema()).config;
  const n = await store
    .db(T_CONFIG)
    .where('id', id)
    .update(onlyColumns({ ...changes, updated_at: new Date().toISOString() }, cols));
  if (n === 0) throw new Error(`plugin config #${id} not found`);
}

function onlyColumns(row: Record<string, unknown>, cols: Columns): Record<string, unknown> {
  return Object.fromEntries(Object.entries(row).filter(([k]) => cols.has(k)));
}
