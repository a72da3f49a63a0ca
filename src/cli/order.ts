import type { Logger } from '../log';
import { findConfigs, setConfigOrders } from '../store/plugin-admin';
import { openStore } from '../store/open-store';
import { announceReload, type AnnounceTarget } from './reload-notice';

/**
 * `posthog-plugins order CONFIG_ID…`: the team's chain runs the named configs first, in the order given, then its
 * other configs as they were; the whole chain is renumbered 0, 1, 2… (PostHog's drag-and-drop rearrange), then
 * running workers are told. All ids must belong to one team.
 */
export async function runOrder(
  ids: number[],
  databaseUrl: string,
  announce: AnnounceTarget,
  logger: Logger,
): Promise<void> {
  if (new Set(ids).size !== ids.length) throw new Error(`a config id is given twice: ${ids.join(' ')}`);
  const { db, store } = await openStore(databaseUrl, logger);
  try {
    const found = await findConfigs(store, ids);
    const teams = new Set(found.map((c) => c.teamId));
    if (teams.size !== 1)
      throw new Error(
        `configs #${ids.join(', #')} belong to different teams (${[...teams].join(', ')}); order one team's chain at a time`,
      );
    const team = [...teams][0] ?? null;
    const rest = (await store.listConfigs()).filter((c) => c.teamId === team && !ids.includes(c.id)).map((c) => c.id); // already in chain order
    const chain = [...ids, ...rest];
    await setConfigOrders(store, new Map(chain.map((id, i) => [id, i])));
    logger.info(`team ${team ?? '-'} chain: ${chain.map((id) => `#${id}`).join(' → ')}`);
  } finally {
    await db.destroy();
  }
  await announceReload(announce, logger);
}
