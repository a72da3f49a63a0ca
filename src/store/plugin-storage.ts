import { Knex } from 'knex';
import { databaseKind } from './database';

const T_STORAGE = 'posthog_pluginstorage';

/** posthog_pluginstorage.key is varchar(200) in Django's schema. */
export const STORAGE_KEY_MAX_CHARS = 200;

function checkConfigId(configId: number): void {
  if (!Number.isSafeInteger(configId)) throw new Error(`plugin storage: invalid plugin config id ${String(configId)}`);
}

/** Postgres counts varchar length in characters (code points), so count them the same way here. */
function checkKey(key: string): void {
  if (typeof key !== 'string') throw new Error(`plugin storage: key must be a string, got ${typeof key}`);
  if (key.length > STORAGE_KEY_MAX_CHARS && Array.from(key).length > STORAGE_KEY_MAX_CHARS) {
    throw new Error(
      `plugin storage: key is ${Array.from(key).length} characters, the limit is ${STORAGE_KEY_MAX_CHARS} (key starts "${key.slice(0, 40)}…")`,
    );
  }
}

function checkFinite(what: string, n: number): void {
  if (typeof n !== 'number' || !Number.isFinite(n))
    throw new Error(`plugin storage: ${what} must be a finite number, got ${String(n)}`);
}

/**
 * `meta.storage` and `meta.utils.cursor` on PostHog's `posthog_pluginstorage` table, scoped per plugin config.
 * Values are raw JSON text, exactly as PostHog stores them (the caller serialises and parses).
 */
export class PluginStorage {
  private readonly pg: boolean;

  constructor(readonly db: Knex) {
    this.pg = databaseKind(db) === 'postgres';
  }

  /** The stored JSON text, or null when the key is absent. */
  async get(configId: number, key: string): Promise<string | null> {
    checkConfigId(configId);
    checkKey(key);
    const row = (await this.db(T_STORAGE).select('value').where({ plugin_config_id: configId, key }).first()) as
      { value: unknown } | undefined;
    if (!row || row.value === null || row.value === undefined) return null;
    return Buffer.isBuffer(row.value) ? row.value.toString('utf8') : String(row.value);
  }

  /** Upsert the JSON text of a key. */
  async set(configId: number, key: string, valueJson: string): Promise<void> {
    checkConfigId(configId);
    checkKey(key);
    if (typeof valueJson !== 'string')
      throw new Error(`plugin storage: value of key "${key}" must be JSON text, got ${typeof valueJson}`);
    await this.db(T_STORAGE)
      .insert({ plugin_config_id: configId, key, value: valueJson })
      .onConflict(['plugin_config_id', 'key'])
      .merge(['value']);
  }

  async del(configId: number, key: string): Promise<void> {
    checkConfigId(configId);
    checkKey(key);
    await this.db(T_STORAGE).where({ plugin_config_id: configId, key }).delete();
  }

  /** `cursor.init(key, n)`: store n only when the key does not exist yet. */
  async cursorInit(configId: number, key: string, initial: number): Promise<void> {
    checkConfigId(configId);
    checkKey(key);
    checkFinite('cursor initial value', initial);
    await this.db(T_STORAGE)
      .insert({ plugin_config_id: configId, key, value: JSON.stringify(initial) })
      .onConflict(['plugin_config_id', 'key'])
      .ignore();
  }

  /**
   * `cursor.increment(key, by)`: one upsert statement (an absent key counts as 0), so concurrent increments
   * from any number of connections or processes serialise on the row and none is lost. Returns the new value.
   * A stored value that is not a JSON number is an error (it is left unchanged).
   */
  async cursorIncrement(configId: number, key: string, by: number): Promise<number> {
    checkConfigId(configId);
    checkKey(key);
    checkFinite('cursor increment', by);
    const initial = JSON.stringify(by);
    // SQLite would silently read a non-number as 0; the WHERE turns that case into "no row returned" instead,
    // like Postgres's numeric cast error. better-sqlite3 binds every JS number as REAL, so `by` goes in as text
    // and is cast to NUMERIC (an integer when whole) to store "2", not "2.0". Postgres: `by` is bound twice so each use gets its
    // own parameter type.
    const sql = this.pg
      ? `INSERT INTO ${T_STORAGE} (plugin_config_id, key, value) VALUES (?, ?, ?)
         ON CONFLICT (plugin_config_id, key) DO UPDATE SET value = (${T_STORAGE}.value::numeric + ?::numeric)::text
         RETURNING value`
      : `INSERT INTO ${T_STORAGE} (plugin_config_id, key, value) VALUES (?, ?, ?)
         ON CONFLICT (plugin_config_id, key) DO UPDATE SET value = CAST(CAST(${T_STORAGE}.value AS NUMERIC) + CAST(? AS NUMERIC) AS TEXT)
         WHERE json_valid(${T_STORAGE}.value) AND json_type(${T_STORAGE}.value) IN ('integer', 'real')
         RETURNING value`;
    let rows: Array<{ value: unknown }>;
    try {
      const result = (await this.db.raw(sql, [configId, key, initial, this.pg ? by : initial])) as
        { rows?: Array<{ value: unknown }> } | Array<{ value: unknown }>;
      rows = Array.isArray(result) ? result : (result.rows ?? []);
    } catch (err) {
      throw new Error(
        `plugin storage: cannot increment cursor "${key}" of config ${configId}: ${(err as Error).message}`,
      );
    }
    const value = rows.length > 0 ? Number(rows[0].value) : NaN;
    if (!Number.isFinite(value)) {
      const stored = await this.get(configId, key);
      throw new Error(
        `plugin storage: cannot increment cursor "${key}" of config ${configId}: stored value ${String(stored)} is not a number`,
      );
    }
    return value;
  }
}
