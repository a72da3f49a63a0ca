import type { Logger } from '../log';
import { findConfigs, removeConfig } from '../store/plugin-admin';
import { openStore } from '../store/open-store';
import { announceReload, type AnnounceTarget } from './reload-notice';

/**
 * `posthog-plugins uninstall CONFIG_ID…`: remove plugin configs (the ids `list` shows), and each plugin row that no
 * config uses any more, then tell running workers. Every id is checked before anything is removed.
 */
export async function runUninstall(
  ids: number[],
  databaseUrl: string,
  announce: AnnounceTarget,
  logger: Logger,
): Promise<void> {
  const { db, store } = await openStore(databaseUrl, logger);
  try {
    const found = await findConfigs(store, ids);
    for (const c of found) {
      const pluginGone = await removeConfig(store, c.id, c.pluginId);
      logger.info(
        `uninstalled config #${c.id} (${c.pluginName}, team ${c.teamId ?? '-'})${pluginGone ? `; plugin #${c.pluginId} removed, no config uses it` : ''}`,
      );
    }
  } finally {
    await db.destroy();
  }
  await announceReload(announce, logger);
}
