import type { Logger } from '../log';
import { findConfigs, setConfigEnabled } from '../store/plugin-admin';
import { openStore } from '../store/open-store';
import { announceReload, type AnnounceTarget } from './reload-notice';

/** `posthog-plugins enable|disable CONFIG_ID…`: PostHog's toggle on each config, then running workers are told. */
export async function runSetEnabled(
  ids: number[],
  enabled: boolean,
  databaseUrl: string,
  announce: AnnounceTarget,
  logger: Logger,
): Promise<void> {
  const { db, store } = await openStore(databaseUrl, logger);
  try {
    const found = await findConfigs(store, ids);
    for (const c of found) {
      await setConfigEnabled(store, c.id, enabled);
      logger.info(
        `${enabled ? 'enabled' : 'disabled'} config #${c.id} (${c.pluginName}, team ${c.teamId ?? '-'})${c.enabled === enabled ? ' (it already was)' : ''}`,
      );
    }
  } finally {
    await db.destroy();
  }
  await announceReload(announce, logger);
}
