/**
 * PostHog databases of three eras (fixtures/schemas), filled with plain SQL the way PostHog's Django wrote its rows:
 * a local plugin, an archive plugin with an attachment, a `source` plugin, a posthog_pluginsourcefile TypeScript
 * plugin, a deleted config, a NULL-team config, a team whose organization has plugins turned off. Used by
 * test/store/eras.test.ts and test/integration/eras.test.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import { execFileSync } from 'node:child_process';
import { dropPgDatabase, ensurePgDatabase, pgUrl } from './services';
import { needsServices } from './needs-services';

needsServices('PostgreSQL (test/helpers/eras)');

export type Era = '2020-11' | '2021-09' | '2024';
export const ERAS: readonly Era[] = ['2020-11', '2021-09', '2024'];

const SCHEMAS = path.resolve(__dirname, '../../../fixtures/schemas');
export const REPO_DIR = path.resolve(__dirname, '../../..');

export const ORG = '0175f7e4-a1b2-0000-5c3a-6e7f80910001';
export const CLOSED_ORG = '0175f7e4-a1b2-0000-5c3a-6e7f80910002';
/** The team with plugins. */
export const TEAM = 2;
/** A team of an organization with plugins_access_level 0 (2021-09 and 2024 only): its config must not run. */
export const CLOSED_TEAM = 3;

/** What each era's plugins do to a `$pageview` of TEAM (storage: the property the archive plugin sets). */
export function expectedProperties(era: Era, installed: boolean): Record<string, unknown> {
  return {
    local: 'yes',
    archive: 'yes',
    attachment: 'attached ✓',
    storage:
      era === '2020-11'
        ? 'meta.storage is not available: this database has no posthog_pluginstorage table (PostHog added it in migration 0111, Jan 2021)'
        : 'ok',
    ...(era === '2020-11' ? {} : { source: 'yes' }),
    ...(era === '2024' ? { sourcefile: 'yes' } : {}),
    ...(installed ? { installed: 'yes' } : {}),
  };
}

/** The archive plugin: every event gets archive + attachment + storage; `$boom` throws; `$long` logs 6 KB. */
const ARCHIVE_INDEX = `
async function processEvent(event, { attachments, storage }) {
  if (event.event === '$boom') throw new Error('boom from the archive plugin')
  if (event.event === '$long') {
    let s = ''
    let x = 12345
    for (let i = 0; i < 6000; i++) { x = (x * 1103515245 + 12345) % 2147483648; s += 'abcdefghijklmnopqrstuvwxyz0123456789'[x % 36] }
    console.log('long line ' + s)
  }
  console.log('archive plugin saw ' + event.event)
  event.properties.archive = 'yes'
  event.properties.attachment = attachments.label ? attachments.label.contents.toString() : 'none'
  try {
    await storage.set('last', event.event)
    event.properties.storage = (await storage.get('last')) === event.event ? 'ok' : 'mismatch'
  } catch (e) {
    event.properties.storage = e.message
  }
  return event
}
module.exports = { processEvent }
`;
const ARCHIVE_JSON = JSON.stringify({ name: 'Archive plugin', main: 'index.js', config: [] });

const SOURCE_TS = `export function processEvent(event: any) { event.properties.source = 'yes'; return event }`;
const STALE_SOURCE_TS = `export function processEvent(event: any) { event.properties.source = 'stale plugin.source column'; return event }`;
const SOURCEFILE_TS = `import type { PluginEvent } from '@posthog/plugin-scaffold'
export function processEvent(event: PluginEvent): PluginEvent {
  const label: string = 'yes'
  event.properties!.sourcefile = label
  return event
}`;
const MARKER_JS = `export function processEvent(event) { event.properties.must_not_run = 'ran'; return event }`;

export interface EraRows {
  archiveConfigId: number;
  archivePluginId: number;
  localConfigId: number;
  deletedConfigId: number;
  nullTeamConfigId: number;
  closedConfigId: number | null;
}

/** A fresh database `name` with the era's tables. Returns its URL. */
export async function createEraDatabase(name: string, era: Era): Promise<string> {
  await dropPgDatabase(name);
  await ensurePgDatabase(name);
  const db = knexFactory({ client: 'pg', connection: pgUrl(name), pool: { min: 0, max: 1 } });
  try {
    await db.raw(fs.readFileSync(path.join(SCHEMAS, `posthog-${era}.sql`), 'utf8'));
  } finally {
    await db.destroy();
  }
  return pgUrl(name);
}

/** The archive plugin as a GitHub zip (one top-level folder), made by Python's zipfile. */
function archiveBytes(): Buffer {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pp-eras-archive-'));
  try {
    const out = path.join(dir, 'plugin.zip');
    const files = { 'archive-plugin-main/plugin.json': ARCHIVE_JSON, 'archive-plugin-main/index.js': ARCHIVE_INDEX };
    const script =
      'import zipfile, json, sys\nwith zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:\n    for n, c in json.loads(sys.argv[2]).items():\n        z.writestr(n, c)\n';
    execFileSync('python3', ['-c', script, out, JSON.stringify(files)]);
    return fs.readFileSync(out);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * PostHog's rows, by plain SQL with the columns that era's Django wrote (every NOT NULL one, no more), ids from the
 * sequences. Archive plugin at order 2 with an attachment; the local plugin's order is NULL on 2020-11 (0119 came
 * later) and 1 elsewhere.
 */
export async function writePosthogRows(url: string, era: Era): Promise<EraRows> {
  const db = knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 1 } });
  const v2021 = era !== '2020-11';
  const v2024 = era === '2024';
  const q = async (sql: string, bindings: unknown[] = []): Promise<number> => {
    const r = (await db.raw(sql, bindings as Knex.RawBinding[])) as { rows: Array<{ id: number }> };
    return r.rows[0]?.id;
  };
  try {
    // Organizations and teams.
    const orgCols = v2021
      ? 'id, name, created_at, updated_at, plugins_access_level'
      : 'id, name, created_at, updated_at';
    await db.raw(
      `INSERT INTO posthog_organization (${orgCols}) VALUES (?, 'Acme', now(), now()${v2021 ? ', 9' : ''})`,
      [ORG],
    );
    const teamCols = `organization_id, api_token, name, created_at, updated_at, plugins_opt_in${v2024 ? ', inject_web_apps' : ''}`;
    await db.raw(
      `INSERT INTO posthog_team (id, ${teamCols}) VALUES (1, ?, 'tok-1', 'Default', now(), now(), false${v2024 ? ', false' : ''})`,
      [ORG],
    );
    await db.raw(
      `INSERT INTO posthog_team (id, ${teamCols}) VALUES (2, ?, 'tok-2', 'Plugins', now(), now(), true${v2024 ? ', false' : ''})`,
      [ORG],
    );
    if (v2021) {
      await db.raw(`INSERT INTO posthog_organization (${orgCols}) VALUES (?, 'Closed', now(), now(), 0)`, [CLOSED_ORG]);
      await db.raw(
        `INSERT INTO posthog_team (id, ${teamCols}) VALUES (3, ?, 'tok-3', 'Closed', now(), now(), true${v2024 ? ', false' : ''})`,
        [CLOSED_ORG],
      );
    }
    await db.raw(`SELECT setval('posthog_team_id_seq', 3)`);

    // Plugins: the columns each era's Plugin model had.
    const plugin = async (p: {
      name: string;
      url: string | null;
      type: string;
      archive?: Buffer | null;
      source?: string | null;
      tag?: string | null;
    }): Promise<number> => {
      const cols = ['name', 'description', 'url', 'config_schema', 'tag', 'archive', 'from_json', 'from_web', 'error'];
      const vals: unknown[] = [p.name, '', p.url, '[]', p.tag ?? null, p.archive ?? null, false, false, null];
      if (v2021) {
        cols.push(
          'plugin_type',
          'source',
          'organization_id',
          'latest_tag',
          'latest_tag_checked_at',
          'created_at',
          'updated_at',
          'is_global',
          'is_preinstalled',
          'capabilities',
          'metrics',
          'public_jobs',
        );
        vals.push(p.type, p.source ?? null, ORG, null, null, new Date(), new Date(), false, false, '{}', '{}', '{}');
      }
      if (v2024) {
        cols.push('is_stateless', 'log_level', 'icon');
        vals.push(false, null, null);
      }
      return q(
        `INSERT INTO posthog_plugin (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')}) RETURNING id`,
        vals,
      );
    };
    const sourceFile = async (pluginId: number, filename: string, source: string): Promise<void> => {
      await db.raw(
        `INSERT INTO posthog_pluginsourcefile (id, plugin_id, filename, source, error, status, transpiled, updated_at) VALUES (gen_random_uuid(), ?, ?, ?, NULL, NULL, NULL, now())`,
        [pluginId, filename, source],
      );
    };
    const config = async (c: {
      pluginId: number;
      teamId: number | null;
      order: number | null;
      config: object;
      enabled?: boolean;
      deleted?: boolean;
    }): Promise<number> => {
      const cols = ['enabled', '"order"', 'config', 'error', 'plugin_id', 'team_id'];
      const vals: unknown[] = [c.enabled ?? true, c.order, JSON.stringify(c.config), null, c.pluginId, c.teamId];
      if (v2021) {
        cols.push('created_at', 'updated_at');
        vals.push(new Date(), new Date());
      }
      if (v2024) {
        cols.push('web_token', 'deleted', 'description', 'name', 'match_action_id', 'filters');
        vals.push(null, c.deleted ?? false, null, null, null, null);
      }
      return q(
        `INSERT INTO posthog_pluginconfig (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')}) RETURNING id`,
        vals,
      );
    };

    const local = await plugin({ name: 'Local plugin', url: 'file:fixtures/plugins/add-property', type: 'local' });
    const localConfigId = await config({
      pluginId: local,
      teamId: TEAM,
      order: v2021 ? 1 : null,
      config: { propertyName: 'local', propertyValue: 'yes' },
    });

    const archive = archiveBytes();
    const archivePluginId = await plugin({
      name: 'Archive plugin',
      url: 'https://github.com/acme/archive-plugin',
      type: 'custom',
      archive,
      tag: '0123456789abcdef0123456789abcdef01234567',
    });
    if (v2024) {
      // 0243 unpacked archives into source files, the main file as index.ts whatever its language.
      await sourceFile(archivePluginId, 'plugin.json', ARCHIVE_JSON);
      await sourceFile(archivePluginId, 'index.ts', ARCHIVE_INDEX);
    }
    const archiveConfigId = await config({ pluginId: archivePluginId, teamId: TEAM, order: 2, config: {} });
    await db.raw(
      `INSERT INTO posthog_pluginattachment (key, content_type, file_name, file_size, contents, plugin_config_id, team_id) VALUES ('label', 'text/plain', 'label.txt', ?, ?, ?, ?)`,
      [Buffer.byteLength('attached ✓'), Buffer.from('attached ✓'), archiveConfigId, TEAM],
    );

    if (v2021) {
      // Written in the browser editor: plugin.source; on 2024 also copied to source files by 0233 and edited there.
      const source = await plugin({
        name: 'Source plugin',
        url: null,
        type: 'source',
        source: v2024 ? STALE_SOURCE_TS : SOURCE_TS,
      });
      if (v2024) {
        await sourceFile(source, 'plugin.json', JSON.stringify({ name: 'Source plugin', config: [] }));
        await sourceFile(source, 'index.ts', SOURCE_TS);
      }
      await config({ pluginId: source, teamId: TEAM, order: 3, config: {} });
    }
    if (v2024) {
      const ts = await plugin({ name: 'Source file plugin', url: null, type: 'source' });
      await sourceFile(ts, 'plugin.json', JSON.stringify({ name: 'Source file plugin', config: [] }));
      await sourceFile(ts, 'index.ts', SOURCEFILE_TS);
      await config({ pluginId: ts, teamId: TEAM, order: 4, config: {} });
    }

    // Configs that must not run: deleted (2024; disabled elsewhere, where there is no `deleted`), NULL team,
    // a team whose organization has plugins off.
    const marker = v2021 ? await plugin({ name: 'Marker plugin', url: null, type: 'source', source: MARKER_JS }) : null;
    if (v2024 && marker !== null) await sourceFile(marker, 'index.ts', MARKER_JS);
    // The same folder as the local plugin under another url (2024 has UNIQUE(url)).
    const markerLocal = await plugin({
      name: 'Marker local plugin',
      url: 'file:./fixtures/plugins/add-property',
      type: 'local',
    });
    const deletedConfigId = await config({
      pluginId: marker ?? markerLocal,
      teamId: TEAM,
      order: 5,
      config: { propertyName: 'must_not_run', propertyValue: 'ran' },
      enabled: v2024,
      deleted: true,
    });
    const nullTeamConfigId = await config({
      pluginId: markerLocal,
      teamId: null,
      order: 0,
      config: { propertyName: 'must_not_run', propertyValue: 'ran' },
    });
    const closedConfigId = v2021
      ? await config({
          pluginId: local,
          teamId: CLOSED_TEAM,
          order: 0,
          config: { propertyName: 'must_not_run', propertyValue: 'ran' },
        })
      : null;
    return { archiveConfigId, archivePluginId, localConfigId, deletedConfigId, nullTeamConfigId, closedConfigId };
  } finally {
    await db.destroy();
  }
}

export async function dropEraDatabase(name: string): Promise<void> {
  await dropPgDatabase(name);
}
