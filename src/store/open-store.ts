import path from 'node:path';
import type { Knex } from 'knex';
import type { Logger } from '../log';
import { describeDatabaseUrl, openDatabase } from './database';
import { migrate, migrateOwnTables } from './migrate';
import { PluginStore } from './plugin-store';
import { describeSchema } from './schema';

/**
 * Open PostHog's plugin tables. The embedded SQLite default creates its tables on first use so that
 * `posthog-plugins start` works on a fresh machine; a Postgres database is PostHog's own (Django owns its
 * schema), so it is only created there by an explicit `posthog-plugins migrate`; only our own job table is
 * added there when missing. `readOnly` (replay): nothing is created and the database refuses every write.
 * A database that cannot be opened or read is one line naming it.
 */
export async function openStore(
  url: string,
  logger: Logger,
  opts: { readOnly?: boolean } = {},
): Promise<{ db: Knex; store: PluginStore; description: string }> {
  const readOnly = opts.readOnly === true;
  const db = openDatabase(url, { readOnly });
  const description = describeDatabaseUrl(url);
  const sqlite = url.startsWith('sqlite:');
  try {
    if (sqlite && !readOnly) await migrate(db);
  } catch (err) {
    await db.destroy();
    throw new Error(`cannot use SQLite database ${sqliteFile(url)}: ${firstLine(err)}`);
  }
  const store = new PluginStore(db);
  try {
    await store.schema();
    if (!sqlite && !readOnly) {
      // Several worker processes start at once: one of them creates it, the others find it.
      await migrateOwnTables(db).catch(async (err: Error) => {
        if (!(await db.schema.hasTable('posthog_plugins_job'))) throw err;
      });
    }
  } catch (err) {
    await db.destroy();
    const where = sqlite ? `SQLite database ${sqliteFile(url)}` : description;
    throw new Error(
      `cannot read plugin tables in ${where}: ${firstLine(err)}${sqlite && readOnly ? '' : ' (run `posthog-plugins migrate` on an empty database)'}`,
    );
  }
  logger.debug(
    `plugin store: ${description}${readOnly ? ' (read-only)' : ''}: ${describeSchema(await store.schema())}`,
  );
  return { db, store, description };
}

/** The file a sqlite: URL names, absolute, for messages. */
function sqliteFile(url: string): string {
  const rest = url.slice('sqlite:'.length).replace(/^\/\//, '');
  return rest === ':memory:' ? rest : path.resolve(rest);
}

/** A driver error's first line (knex may prepend the whole statement, better-sqlite3 its stack). */
function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/^(select|insert|update|delete|create|alter|pragma)\b[\s\S]*? - /i, '').split('\n')[0]!;
}
