import type { Knex } from 'knex';
import type { Logger } from '../log';
import { describeDatabaseUrl, openDatabase } from '../store/database';
import { migrate, migrateOwnTables } from '../store/migrate';
import { PluginStore } from '../store/plugin-store';
import { describeSchema } from '../store/schema';

/**
 * Open PostHog's plugin tables. The embedded SQLite default creates its tables on first use so that
 * `posthog-plugins start` works on a fresh machine; a Postgres database is PostHog's own (Django owns its
 * schema), so it is only created there by an explicit `posthog-plugins migrate`; only our own job table is
 * added there when missing.
 */
export async function openStore(url: string, logger: Logger): Promise<{ db: Knex; store: PluginStore; description: string }> {
  const db = openDatabase(url);
  const description = describeDatabaseUrl(url);
  if (url.startsWith('sqlite:')) await migrate(db);
  const store = new PluginStore(db);
  try {
    await store.schema();
    if (!url.startsWith('sqlite:')) {
      // Several worker processes start at once: one of them creates it, the others find it.
      await migrateOwnTables(db).catch(async (err: Error) => {
        if (!(await db.schema.hasTable('posthog_plugins_job'))) throw err;
      });
    }
  } catch (err) {
    await db.destroy();
    throw new Error(`cannot read plugin tables in ${description}: ${(err as Error).message}`);
  }
  logger.debug(`plugin store: ${description}: ${describeSchema(await store.schema())}`);
  return { db, store, description };
}
