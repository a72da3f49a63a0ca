import type { Logger } from '../log';
import { findConfig, setConfigEnabled } from '../store/plugin-admin';
import { openStore } from './open-store';
import { announceReload, type AnnounceTarget } from './reload-notice';

/** `posthog-plugins enable|disable CONFIG_ID…`: PostHog's toggle on each config, then running workers are told. */
export async function runSetEnabled(ids: number[], enabled: boolean, databaseUrl: string, announce: AnnounceTarget, logger: Logger): Promise<void> {
  const { db, store } = await openStore(databaseUrl, logger);
  try {
    const found = await Promise.all(ids.map((id) => findConfig(store, id)));
    const missing = ids.filter((_, i) => found[i] === null);
    if (missing.length > 0) throw new Error(`no plugin config #${missing.join(', #')} (see \`posthog-plugins list\`)`);
    for (const c of found) {
      if (c === null) continue;
      await setConfigEnabled(store, c.id, enabled);
      logger.info(`${enabled ? 'enabled' : 'disabled'} config #${c.id} (${c.pluginName}, team ${c.teamId ?? '-'})${c.enabled === enabled ? ' (it already was)' : ''}`);
    }
  } finally {
    await db.destroy();
  }
  await announceReload(announce, logger);
}
