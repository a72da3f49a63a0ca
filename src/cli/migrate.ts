import type { Logger } from '../log';
import { describeDatabaseUrl, openDatabase } from '../store/database';
import { migrate } from '../store/migrate';

/**
 * `posthog-plugins migrate`: create the missing plugin tables in a SQLite file or an empty database; never touches
 * existing ones, and refuses (exit 1 in main.ts) a PostHog database.
 */
export async function runMigrate(url: string, logger: Logger): Promise<void> {
  const db = openDatabase(url);
  try {
    await migrate(db);
    logger.info(`plugin tables ready in ${describeDatabaseUrl(url)}`);
  } finally {
    await db.destroy();
  }
}
