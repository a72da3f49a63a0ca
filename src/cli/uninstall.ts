import type { Logger } from '../log';
import { findConfig, removeConfig } from '../store/plugin-admin';
import { openStore } from './open-store';
import { announceReload, type AnnounceTarget } from './reload-notice';

/**
 * `posthog-plugins uninstall CONFIG_ID…`: remove plugin configs (the ids `list` shows), and each plugin row that no
 * config uses any more, then tell running workers. Every id is checked before anything is removed.
 */
export async function runUninstall(ids: number[], databaseUrl: string, announce: AnnounceTarget, logger: Logger): Promise<void> {
  const { db, store } = await openStore(databaseUrl, logger);
  try {
    const found = await Promise.all(ids.map((id) => findConfig(store, id)));
    const missing = ids.filter((_, i) => found[i] === null);
    if (missing.length > 0) throw new Error(`no plugin config #${missing.join(', #')} (see \`posthog-plugins list\`)`);
    for (const c of found) {
      if (c === null) continue;
      const pluginGone = await removeConfig(store, c.id, c.pluginId);
      logger.info(`uninstalled config #${c.id} (${c.pluginName}, team ${c.teamId ?? '-'})${pluginGone ? `; plugin #${c.pluginId} removed, no config uses it` : ''}`);
    }
  } finally {
    await db.destroy();
  }
  await announceReload(announce, logger);
}
