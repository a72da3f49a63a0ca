import type { Logger } from '../log';
import { readPluginRowSource } from '../plugins/loading/source';
import { importNotAvailable, transpilePlugin } from '../plugins/loading/transpile';
import type { InspectedConfig } from '../store/plugin-store';
import {
  accessRuleOf,
  describeSchema,
  pluginLogDestination,
  storageUnavailableReason,
  type Columns,
  type PosthogSchema,
} from '../store/schema';
import type { PluginRow } from '../store/types';
import { openStore } from '../store/open-store';

/** Modules plugins may require with fetch on (PluginManager's list). */
const HOST_MODULES = new Set(['@posthog/plugin-scaffold', 'node-fetch']);

export interface DoctorReport {
  lines: string[];
  runnable: number;
}

function present(name: string, cols: Columns | null): string {
  return cols ? `${name} (${cols.size} columns)` : `no ${name}`;
}

/** What the schema gives the worker, one line each. */
export function schemaLines(s: PosthogSchema, baseDir: string): string[] {
  const rule = accessRuleOf(s);
  const code = [
    s.sourceFile ? 'posthog_pluginsourcefile rows' : null,
    s.plugin.has('source') ? 'posthog_plugin.source' : null,
    'posthog_plugin.archive',
    `file: urls (relative to ${baseDir})`,
  ].filter((x) => x !== null);
  return [
    `tables: ${describeSchema(s)}`,
    `  ${[present('posthog_plugin', s.plugin), present('posthog_pluginconfig', s.config), present('posthog_pluginattachment', s.attachment), present('posthog_pluginstorage', s.storage), present('posthog_pluginlogentry', s.logEntry), present('posthog_pluginsourcefile', s.sourceFile)].join(', ')}`,
    `plugin type: ${s.plugin.has('plugin_type') ? 'posthog_plugin.plugin_type' : 'inferred as migration 0107 did (file: url → local, else custom)'}`,
    `code from, first found: ${code.join(' → ')}`,
    `configs run when: enabled${s.config.has('deleted') ? ', deleted is not true' : ''}, team set${rule.level ? ", the team's organization has plugins_access_level > 0" : ''}${rule.sameOrganization ? ", the plugin is the team's organization's or global" : ''}`,
    `meta.storage: ${storageUnavailableReason(s) === null ? 'posthog_pluginstorage' : `fails: ${storageUnavailableReason(s)}`}`,
    `plugin logs: ${pluginLogDestination(s)}`,
    `errors: posthog_pluginconfig.error`,
  ];
}

/** Why a config that should run cannot: its code cannot be read or compiled here. Null when it can. */
function codeProblem(
  c: InspectedConfig,
  plugins: ReadonlyMap<number, PluginRow>,
  baseDir: string,
): { problem: string | null; origin: string | null } {
  const plugin = plugins.get(c.pluginId);
  if (!plugin) return { problem: 'its posthog_plugin row is missing', origin: null };
  try {
    const src = readPluginRowSource(plugin, { baseDir });
    const t = transpilePlugin(src.code, src.main);
    const missing = t.imports.find((m) => !HOST_MODULES.has(m));
    if (missing !== undefined) return { problem: importNotAvailable(missing), origin: src.origin };
    return { problem: null, origin: src.origin };
  } catch (err) {
    return { problem: (err as Error).message, origin: null };
  }
}

/**
 * `posthog-plugins doctor`: which PostHog plugin tables and columns the database has, where code and logs come
 * from, every config that does not run with the reason, and every one whose code cannot be loaded. Exit 1 when
 * nothing can run.
 */
export async function runDoctor(url: string, baseDir: string, logger: Logger): Promise<DoctorReport> {
  const { db, store, description } = await openStore(url, logger);
  try {
    const s = await store.schema();
    const lines = [`database: ${description}`, ...schemaLines(s, baseDir)];
    const configs = await store.inspectConfigs();
    const candidates = configs.filter((c) => c.skipReason === null);
    const plugins = await store.loadPlugins([...new Set(candidates.map((c) => c.pluginId))]);
    let runnable = 0;
    const problems: string[] = [];
    const runs: string[] = [];
    const label = (c: InspectedConfig): string =>
      `config ${c.id} (team ${c.teamId ?? '-'}, order ${c.order}, plugin ${JSON.stringify(c.pluginName)} #${c.pluginId}, ${c.pluginType ?? '?'})`;
    for (const c of configs) {
      if (c.skipReason !== null) {
        problems.push(`  ${label(c)}: not run: ${c.skipReason}`);
        continue;
      }
      const { problem, origin } = codeProblem(c, plugins, baseDir);
      if (problem !== null) problems.push(`  ${label(c)}: cannot load: ${problem}`);
      else {
        runnable++;
        runs.push(`  ${label(c)}: runs, code from ${origin}`);
      }
    }
    lines.push(`configs: ${configs.length} found, ${runnable} can run`, ...runs);
    if (problems.length > 0) lines.push(`not running (${problems.length}):`, ...problems);
    if (runnable === 0) lines.push('nothing can run');
    return { lines, runnable };
  } finally {
    await db.destroy();
  }
}
