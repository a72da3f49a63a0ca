import type { JsonObject } from '../../protocol/types';
import type { Logger } from '../log';
import { maskSecrets, resolveConfig } from '../plugins/loading/config-schema';
import { findConfigs, setConfigValues } from '../store/plugin-admin';
import { openStore } from '../store/open-store';
import { announceReload, type AnnounceTarget } from './reload-notice';

/** `posthog-plugins config show CONFIG_ID`: the stored config as JSON on stdout, secret fields masked as PostHog's API did. */
export async function runConfigShow(id: number, databaseUrl: string, logger: Logger): Promise<void> {
  const { db, store } = await openStore(databaseUrl, logger);
  try {
    const [c] = await findConfigs(store, [id]);
    process.stdout.write(JSON.stringify(maskSecrets(c.configSchema, c.config), null, 2) + '\n');
  } finally {
    await db.destroy();
  }
}

/**
 * `posthog-plugins config set CONFIG_ID KEY=VALUE… | --json OBJECT`: change some keys (an empty value or JSON
 * null removes one), check the result against plugin.json as PostHog's form did, store it whole, tell workers.
 */
export async function runConfigSet(
  id: number,
  changes: JsonObject,
  databaseUrl: string,
  announce: AnnounceTarget,
  logger: Logger,
): Promise<void> {
  const { db, store } = await openStore(databaseUrl, logger);
  try {
    const [c] = await findConfigs(store, [id]);
    const r = resolveConfig(c.configSchema, changes, c.config);
    if (r.problems.length > 0)
      throw new Error(`config #${id} (${c.pluginName}) was not changed: ${r.problems.join('; ')}`);
    await setConfigValues(store, id, r.config);
    logger.info(`config #${id} (${c.pluginName}, team ${c.teamId ?? '-'}) set: ${Object.keys(changes).join(', ')}`);
  } finally {
    await db.destroy();
  }
  await announceReload(announce, logger);
}

/** KEY=VALUE pairs (values are strings, as PostHog stores them; `KEY=` removes the key) and/or one JSON object. */
export function configChanges(pairs: string[], json: string | undefined): JsonObject {
  const out: JsonObject = {};
  if (json !== undefined && json.trim() !== '') {
    let v: unknown;
    try {
      v = JSON.parse(json);
    } catch (err) {
      throw new Error(`--json must be a JSON object: ${(err as Error).message}`);
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('--json must be a JSON object');
    Object.assign(out, v);
  }
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new Error(`expected KEY=VALUE, got ${JSON.stringify(p)}`);
    const value = p.slice(eq + 1);
    out[p.slice(0, eq)] = value === '' ? null : value;
  }
  if (Object.keys(out).length === 0) throw new Error('nothing to set: give KEY=VALUE pairs or --json');
  return out;
}
