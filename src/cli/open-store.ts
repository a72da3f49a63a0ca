import type { Knex } from 'knex';
import type { Logger } from '../log';
import { describeDatabaseUrl, openDatabase } from '../store/database';
import { migrate } from '../store/migrate';
import { PluginStore } from '../store/plugin-store';

/**
 * Open PostHog's plugin tables. The embedded SQLite default creates its tables on first use so that
 * `posthog-plugins start` works on a fresh machine; a Postgres database is PostHog's own (Django owns its
 * schema), so it is only created there by an explicit `posthog-plugins migrate`.
 */
export async function openStore(url: string, logger: Logger): Promise<{ db: Knex; store: PluginStore; description: string }> {
  const db = openDatabase(url);
  const description = describeDatabaseUrl(url);
  if (url.startsWith('sqlite:')) await migrate(db);
  const store = new PluginStore(db);
  try {
    await store.listConfigs();
  } catch (err) {
    await db.destroy();
    throw new Error(`cannot read plugin tables in ${description}: ${(err as Error).message} (run \`posthog-plugins migrate\` on an empty database)`);
  }
  logger.debug(`plugin store: ${description}`);
  return { db, store, description };
}
