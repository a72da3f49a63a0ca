import type { Logger } from '../log';
import { describeDatabaseUrl, openDatabase } from '../store/database';
import { migrate } from '../store/migrate';

/** `posthog-plugins migrate`: create the missing plugin tables; never touches existing ones. */
export async function runMigrate(url: string, logger: Logger): Promise<void> {
  const db = openDatabase(url);
  try {
    await migrate(db);
    logger.info(`plugin tables ready in ${describeDatabaseUrl(url)}`);
  } finally {
    await db.destroy();
  }
}
