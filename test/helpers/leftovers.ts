/**
 * The last step of `make test`: fails (exit 1, one line per resource) when the suite left something behind on
 * the shared services: a RabbitMQ vhost `posthog-plugins-test-*`, a key in a Redis db assigned to test files
 * (services.ts), a Postgres database `posthog_plugins_test_*` (the shared `_store_api` one counts only while a
 * test file's schema is still in it). `--vhost NAME`, `--redis-db N`, `--pg NAME` (repeatable) check only those
 * resources: for a test file's own run while other files are running. A full check also fails on `pp-*` entries
 * in the temp dir (test scratch dirs), only those changed since PP_TEST_STARTED (Unix seconds) when it is set.
 */
import { execFile } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import Redis from 'ioredis';
import knex from 'knex';
import { BENCH_REDIS_DB, CAPTURE_REDIS_DB, pgUrl, redisUrl } from './services';

const execFileAsync = promisify(execFile);
const STORE_API_DB = 'posthog_plugins_test_store_api';

interface Only {
  vhosts: string[];
  redisDbs: number[];
  pgDbs: string[];
}

function parseArgs(argv: string[]): Only | null {
  const only: Only = { vhosts: [], redisDbs: [], pgDbs: [] };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--vhost') only.vhosts.push(value);
    else if (flag === '--redis-db') only.redisDbs.push(Number(value));
    else if (flag === '--pg') only.pgDbs.push(value);
    else throw new Error(`unknown option ${flag} (--vhost NAME, --redis-db N, --pg NAME)`);
  }
  return argv.length > 0 ? only : null;
}

async function leftVhosts(only: Only | null): Promise<string[]> {
  const { stdout } = await execFileAsync('rabbitmqctl', ['-q', 'list_vhosts', 'name', '--no-table-headers'], {
    timeout: 60_000,
  });
  const names = stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((n) => n.startsWith('posthog-plugins-test-'));
  return names.filter((n) => only === null || only.vhosts.includes(n)).map((n) => `RabbitMQ vhost ${n}`);
}

async function leftRedisKeys(only: Only | null): Promise<string[]> {
  const dbs =
    only?.redisDbs ??
    Array.from({ length: 16 }, (_, i) => i).filter((d) => d !== 0 && d !== BENCH_REDIS_DB && d !== CAPTURE_REDIS_DB);
  const out: string[] = [];
  for (const db of dbs) {
    const redis = new Redis(redisUrl(db), { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await redis.connect();
      const keys = await redis.keys('*');
      if (keys.length > 0)
        out.push(
          `Redis db ${db}: ${keys.length} key(s): ${keys
            .slice(0, 5)
            .map((k) => JSON.stringify(k))
            .join(', ')}${keys.length > 5 ? ', …' : ''}`,
        );
    } finally {
      redis.disconnect();
    }
  }
  return out;
}

function leftTempDirs(only: Only | null): string[] {
  if (only !== null) return [];
  const since = Number(process.env.PP_TEST_STARTED ?? 0) * 1000;
  return readdirSync(tmpdir())
    .filter((name) => name.startsWith('pp-'))
    .map((name) => path.join(tmpdir(), name))
    .filter((p) => (statSync(p, { throwIfNoEntry: false })?.mtimeMs ?? 0) >= since)
    .map((p) => `temp dir ${p}`);
}

async function leftPgDatabases(only: Only | null): Promise<string[]> {
  const admin = knex({ client: 'pg', connection: pgUrl('postgres'), pool: { min: 0, max: 1 } });
  try {
    const rows = (await admin.raw(`SELECT datname FROM pg_database WHERE datname LIKE 'posthog\\_plugins\\_test\\_%'`))
      .rows as Array<{ datname: string }>;
    const out: string[] = [];
    for (const { datname } of rows) {
      if (only !== null && !only.pgDbs.includes(datname)) continue;
      if (datname === STORE_API_DB) {
        const schemas = await testSchemas(datname);
        if (schemas.length > 0) out.push(`Postgres database ${datname}: schema(s) ${schemas.join(', ')}`);
        continue;
      }
      out.push(`Postgres database ${datname}`);
    }
    return out;
  } finally {
    await admin.destroy();
  }
}

/** Schemas a test file created and did not drop (the database itself is shared by several files). */
async function testSchemas(database: string): Promise<string[]> {
  const db = knex({ client: 'pg', connection: pgUrl(database), pool: { min: 0, max: 1 } });
  try {
    const rows = (
      await db.raw(
        `SELECT nspname FROM pg_namespace WHERE nspname NOT IN ('public', 'information_schema') AND nspname NOT LIKE 'pg\\_%'`,
      )
    ).rows as Array<{ nspname: string }>;
    return rows.map((r) => r.nspname);
  } finally {
    await db.destroy();
  }
}

async function main(): Promise<void> {
  const only = parseArgs(process.argv.slice(2));
  const left = [
    ...(await leftVhosts(only)),
    ...(await leftRedisKeys(only)),
    ...(await leftPgDatabases(only)),
    ...leftTempDirs(only),
  ];
  if (left.length === 0) {
    process.stdout.write(
      'leftovers: none (test vhosts, Redis test dbs, posthog_plugins_test_* databases, pp-* temp dirs are clean)\n',
    );
    return;
  }
  for (const l of left) process.stderr.write(`leftover: ${l}\n`);
  process.stderr.write(`leftovers: ${left.length} resource(s) left behind by the tests\n`);
  process.exitCode = 1;
}

main().catch((err: Error) => {
  process.stderr.write(`leftovers check failed: ${err.message}\n`);
  process.exit(1);
});
