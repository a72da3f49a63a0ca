/**
 * Test access to the real services (Redis, RabbitMQ, Postgres) and the resources each test file may use.
 *
 * Test files run in parallel (node --test runs each file in its own process), so every file works in
 * resources reserved for it alone. Reserve a new row here before using anything not listed.
 *
 * | resource                              | owner                                                      |
 * |---------------------------------------|------------------------------------------------------------|
 * | Redis db 0                            | nobody: developers' manual runs, never touched by tests    |
 * | Redis dbs 1–9                         | integration test files, one db per file (or per suite),    |
 * |                                       | assigned on request: add `<db>: <file>` to REDIS_DBS below |
 * |                                       | taken: 1, 2 test/integration/pipeline.test.ts;             |
 * |                                       |        3 test/integration/crash.test.ts;                   |
 * |                                       |        4 test/integration/health.test.ts;                  |
 * |                                       |        5 test/integration/replay.test.ts;                  |
 * |                                       |        6 test/integration/timing.test.ts;                  |
 * |                                       |        7 test/integration/supervisor.test.ts;              |
 * |                                       |        8 test/integration/fatal-oom.test.ts;               |
 * |                                       |        9 test/brokers/redis-broker.test.ts                 |
 * | Redis db 10                           | test/integration/reload.test.ts                            |
 * | Redis db 11                           | test/plugins/api/cache-op.test.ts and                      |
 * |                                       | test/plugins/background/schedule-lock.test.ts (shared:     |
 * |                                       | each uses its own random key prefix and deletes only its   |
 * |                                       | keys, no FLUSH)                                            |
 * | Redis db 13                           | test/plugins/api/capture-op.test.ts (flushed by it)        |
 * | Redis db 12                           | test/bench/run.ts (`make bench`; flushed on each run)      |
 * | Redis db 14                           | test/helpers/harness.test.ts (the harness's own test)      |
 * | Redis db 15                           | fixtures/capture/capture.py (scratch, flushed on each run) |
 * | RabbitMQ vhost `/`                    | nobody (manual runs)                                       |
 * | RabbitMQ vhosts `posthog-plugins-test-<name>` | the test file <name>; in use: `-harness`            |
 * |                                       | (harness.test.ts), `-amqp` (test/brokers/amqp.test.ts),    |
 * |                                       | `-pipeline-sqlite`, `-pipeline-postgres` (pipeline.test.ts)|
 * |                                       | `-supervisor` (test/integration/supervisor.test.ts)        |
 * |                                       | `-crash` (test/integration/crash.test.ts),                 |
 * |                                       | `-shared` (test/integration/shared-queue.test.ts)          |
 * |                                       | `-fuzz` (test/integration/fuzz.test.ts)                    |
 * |                                       | `-cli` (test/cli/start-errors.test.ts)                     |
 * |                                       | `-observe` (test/integration/observe.test.ts)              |
 * |                                       | `-numbers` (test/integration/numbers.test.ts)              |
 * |                                       | `-chaos` (test/integration/rabbitmq-chaos.test.ts)         |
 * | RabbitMQ vhost `posthog-plugins-capture` | fixtures/capture/capture.py                             |
 * | RabbitMQ vhost `posthog-plugins-bench` | test/bench/run.ts (`make bench`; reset on each run)       |
 * | Postgres dbs `posthog_plugins_test_<name>` | the test file <name> (create with ensurePgDatabase);  |
 * |                                       | in use: `_pipeline_redis`, `_pipeline_rabbitmq`            |
 * | Postgres dbs `posthog_plugins_test_era_store_*` | test/store/eras.test.ts (one per schema era, dropped) |
 * | Postgres dbs `posthog_plugins_test_era_pipe_*` | test/integration/eras.test.ts (one per era, dropped)  |
 * | Postgres db `posthog_plugins_test_cli` | test/cli/replay-read-only.test.ts (dropped at its end)   |
 * | Postgres db `posthog_plugins_test_store_outage` | test/integration/store-outage.test.ts (dropped)|
 * | Postgres db `posthog_plugins_test_store_api` | test/store/{plugin-storage,plugin-log-writer,job-store}  |
 * |                                       | .test.ts, one schema per file (`storage`, `logs`, `jobs`)  |
 * | Postgres dbs `postgres`, `root`       | nobody: maintenance connections only                       |
 * | private Redis servers (free ports)    | test files that restart or flood Redis: startPrivateRedis  |
 * |                                       | in test/helpers/private-redis.ts, one server per file;     |
 * |                                       | in use: fuzz, numbers, redis-restart, eras (integration),  |
 * |                                       | test/redis/client.test.ts,                                 |
 * |                                       | test/brokers/redis-scripts.test.ts (struct)                |
 * | private RabbitMQ nodes (free ports)   | test files that restart the broker: startPrivateRabbit in  |
 * |                                       | test/helpers/private-rabbitmq.ts (rabbitmq-chaos.test.ts)  |
 *
 * Connection defaults (all on this machine): Redis 127.0.0.1:6379, RabbitMQ 127.0.0.1:5672 guest/guest
 * (`rabbitmqctl` on PATH), Postgres 127.0.0.1:5432 user root, trust auth. Override the bases with
 * TEST_REDIS_BASE (e.g. redis://127.0.0.1:6379), TEST_AMQP_BASE (amqp://guest:guest@127.0.0.1:5672),
 * TEST_PG_BASE (postgres://root@127.0.0.1:5432).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import Redis from 'ioredis';
import knex from 'knex';
import { needsServices } from './needs-services';

needsServices('Redis, RabbitMQ and PostgreSQL (test/helpers/services)');

const execFileAsync = promisify(execFile);

/** Redis dbs 1–9 assigned to integration test files. Add a row when you take one. */
export const REDIS_DBS: Readonly<Record<number, string>> = {
  1: 'test/integration/pipeline.test.ts (redis, sqlite)',
  2: 'test/integration/pipeline.test.ts (redis, postgres)',
  3: 'test/integration/crash.test.ts',
  4: 'test/integration/health.test.ts',
  5: 'test/integration/replay.test.ts (Python sink for the replay output)',
  6: 'test/integration/timing.test.ts',
  7: 'test/integration/supervisor.test.ts',
  8: 'test/integration/fatal-oom.test.ts',
  9: 'test/brokers/redis-broker.test.ts',
  10: 'test/integration/reload.test.ts',
  11: 'test/plugins/api/cache-op.test.ts, test/plugins/background/schedule-lock.test.ts (shared, own key prefixes, never flushed)',
  13: 'test/plugins/api/capture-op.test.ts',
};
/** The harness's own test (test/helpers/harness.test.ts). */
export const HARNESS_REDIS_DB = 14;
/** Scratch db of fixtures/capture/capture.py. */
export const CAPTURE_REDIS_DB = 15;
/** `make bench` (test/bench/run.ts): flushed at the start and end of each run. */
export const BENCH_REDIS_DB = 12;
/** `make bench` (test/bench/run.ts): deleted and recreated at the start of each run. */
export const BENCH_VHOST = 'posthog-plugins-bench';

const REDIS_BASE = (process.env.TEST_REDIS_BASE ?? 'redis://127.0.0.1:6379').replace(/\/+$/, '');
const AMQP_BASE = (process.env.TEST_AMQP_BASE ?? 'amqp://guest:guest@127.0.0.1:5672').replace(/\/+$/, '');
const PG_BASE = (process.env.TEST_PG_BASE ?? 'postgres://root@127.0.0.1:5432').replace(/\/+$/, '');

function checkDb(db: number): void {
  if (!Number.isInteger(db) || db < 0 || db > 15) throw new Error(`invalid Redis db ${db}`);
}

/** `redis://127.0.0.1:6379/<db>` — the URL form both kombu and our worker accept. */
export function redisUrl(db: number): string {
  checkDb(db);
  return `${REDIS_BASE}/${db}`;
}

/** FLUSHDB on one Redis db (never db 0). */
export async function flushRedisDb(db: number): Promise<void> {
  checkDb(db);
  if (db === 0) throw new Error('refusing to flush Redis db 0 (reserved for manual runs)');
  const client = new Redis(redisUrl(db), { lazyConnect: true, maxRetriesPerRequest: 2 });
  try {
    await client.connect();
    await client.flushdb();
  } finally {
    client.disconnect();
  }
}

/** `amqp://guest:guest@127.0.0.1:5672/<vhost>` with the vhost URL-encoded (`/` → `%2F`). */
export function amqpUrl(vhost: string): string {
  return `${AMQP_BASE}/${encodeURIComponent(vhost)}`;
}

async function rabbitmqctl(...args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync('rabbitmqctl', ['-q', ...args], { timeout: 60_000 });
    return stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string; code?: number };
    throw new Error(`rabbitmqctl ${args.join(' ')} failed (${e.code}): ${e.stderr ?? e.message}`);
  }
}

/** Creates the vhost if missing and gives guest full permissions on it. Idempotent. */
export async function ensureVhost(vhost: string): Promise<void> {
  await rabbitmqctl('add_vhost', vhost); // exits 0 when it already exists
  await rabbitmqctl('set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*');
}

/** Deletes the vhost with everything in it (queues, exchanges, messages). Missing vhost is fine. */
export async function deleteVhost(vhost: string): Promise<void> {
  if (vhost === '/') throw new Error('refusing to delete vhost /');
  try {
    await rabbitmqctl('delete_vhost', vhost);
  } catch (err) {
    if (!/does not exist|no_such_vhost/i.test(String(err))) throw err;
  }
}

/** A fresh, empty vhost: delete then ensure. */
export async function resetVhost(vhost: string): Promise<void> {
  await deleteVhost(vhost);
  await ensureVhost(vhost);
}

/** `postgres://root@127.0.0.1:5432/<db>` */
export function pgUrl(db: string): string {
  return `${PG_BASE}/${encodeURIComponent(db)}`;
}

function checkPgName(name: string): void {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`invalid Postgres database name ${name}`);
  if (name === 'postgres' || name === 'root' || name.startsWith('template')) {
    throw new Error(`refusing to touch Postgres database ${name}`);
  }
}

async function withMaintenanceDb<T>(fn: (db: ReturnType<typeof knex>) => Promise<T>): Promise<T> {
  const db = knex({ client: 'pg', connection: pgUrl('postgres'), pool: { min: 0, max: 1 } });
  try {
    return await fn(db);
  } finally {
    await db.destroy();
  }
}

/** Creates the database if it does not exist (name: posthog_plugins_test_<name>). */
export async function ensurePgDatabase(name: string): Promise<void> {
  checkPgName(name);
  await withMaintenanceDb(async (db) => {
    const found = await db.raw('SELECT 1 FROM pg_database WHERE datname = ?', [name]);
    if (found.rows.length > 0) return;
    try {
      await db.raw('CREATE DATABASE ??', [name]);
    } catch (err) {
      // 42P04 duplicate_database (created concurrently), 23505 unique violation on pg_database
      const code = (err as { code?: string }).code;
      if (code !== '42P04' && code !== '23505') throw err;
    }
  });
}

/** Drops the database, disconnecting any session still on it. Missing database is fine. */
export async function dropPgDatabase(name: string): Promise<void> {
  checkPgName(name);
  await withMaintenanceDb(async (db) => {
    await db.raw('DROP DATABASE IF EXISTS ?? WITH (FORCE)', [name]);
  });
}

/**
 * Polls `fn` (sync or async) every `intervalMs` until it returns a truthy value, which is returned.
 * Throws `timed out after <ms> ms waiting for <what>` (with the last error thrown by fn, if any).
 */
export async function waitUntil<T>(
  fn: () => T | Promise<T>,
  timeoutMs: number,
  what: string,
  intervalMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value as NonNullable<T>;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const suffix = lastError ? ` (last error: ${String(lastError)})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${suffix}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
