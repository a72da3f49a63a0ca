import path from 'node:path';
import knexFactory, { Knex } from 'knex';

export type DatabaseKind = 'sqlite' | 'postgres';

/** Which client a knex instance talks to (our own databases are always one of these two). */
export function databaseKind(db: Knex): DatabaseKind {
  const client = String((db.client as { config?: { client?: unknown } }).config?.client ?? '');
  return client === 'pg' || client === 'postgres' || client === 'postgresql' ? 'postgres' : 'sqlite';
}

/** `sqlite:PATH` / `sqlite://PATH` / `sqlite::memory:` → file path or ':memory:'; null when not a sqlite URL. */
function sqlitePath(url: string): string | null {
  if (!url.startsWith('sqlite:')) return null;
  let rest = url.slice('sqlite:'.length);
  if (rest.startsWith('//')) rest = rest.slice(2); // sqlite://rel/path, sqlite:///abs/path
  if (rest === '') throw new Error(`Invalid database URL "${url}": missing path (use sqlite:PATH or sqlite::memory:)`);
  if (rest === ':memory:') return ':memory:';
  return path.resolve(process.cwd(), rest);
}

/**
 * knex prints the stack of every failed connection attempt; the error also reaches the caller, who names the
 * database in one line, so those are dropped here. knex's other warnings pass.
 */
const knexLog = {
  warn(message: string): void {
    if (!String(message).startsWith('Acquire connection error')) process.emitWarning(String(message), 'KnexWarning');
  },
};

/**
 * Open a knex connection from a URL:
 * - `sqlite:PATH` (relative to the current directory), `sqlite:///abs/path`, `sqlite::memory:` — better-sqlite3,
 *   WAL journal, 5 s busy timeout, one connection (better-sqlite3 is synchronous anyway).
 * - `postgres://…` / `postgresql://…` — pg.
 * `readOnly`: the database refuses writes (SQLite opened read-only, Postgres sessions read-only).
 */
export function openDatabase(url: string, opts: { readOnly?: boolean } = {}): Knex {
  const file = sqlitePath(url);
  const readOnly = opts.readOnly === true;
  if (file !== null) {
    return knexFactory({
      client: 'better-sqlite3',
      log: knexLog,
      connection: { filename: file, options: { readonly: readOnly } },
      useNullAsDefault: true,
      pool: {
        min: 1,
        max: 1,
        afterCreate: (conn: { pragma(s: string): unknown }, done: (err: Error | null, conn: unknown) => void) => {
          try {
            if (file !== ':memory:' && !readOnly) conn.pragma('journal_mode = WAL');
            conn.pragma('busy_timeout = 5000');
            done(null, conn);
          } catch (err) {
            done(err as Error, conn);
          }
        },
      },
    });
  }
  if (/^postgres(ql)?:\/\//i.test(url)) {
    // Read-only: every transaction of the session is READ ONLY, so Postgres itself refuses any write.
    const connection = readOnly ? { connectionString: url, options: '-c default_transaction_read_only=on' } : url;
    return knexFactory({ client: 'pg', log: knexLog, connection, pool: { min: 0, max: 10 } });
  }
  throw new Error(
    `Unsupported database URL "${describeDatabaseUrl(url)}": expected sqlite:PATH, sqlite::memory:, postgres://… or postgresql://…`,
  );
}

/** The URL for logs, with any password replaced by `***`. */
export function describeDatabaseUrl(url: string): string {
  if (url.startsWith('sqlite:')) return url;
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    // Not parseable: mask anything between "//user:" and "@".
    return url.replace(/(\/\/[^:/@]*:)[^@]*@/, '$1***@');
  }
}
