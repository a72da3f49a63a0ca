/**
 * The two databases the plugin-API stores are tested on: a temp SQLite file (through openDatabase, as in
 * production) and Postgres database `posthog_plugins_test_store_api`, where each test file works in its own
 * schema (dropped and recreated at the start) so the files can run in parallel.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import knexFactory, { Knex } from 'knex';
import { openDatabase } from '../../src/store/database';
import { ensurePgDatabase, pgUrl } from '../helpers/services';

export const PG_DATABASE = 'posthog_plugins_test_store_api';

/** How a separate process reaches the same database. */
export type DbTarget = { kind: 'sqlite'; file: string } | { kind: 'postgres'; url: string; schema: string };

export interface ApiDatabase {
  label: string;
  target: DbTarget;
  /** A new knex pool on the database (call several times for several pools). */
  open(): Knex;
  /** Prepare an empty database / schema. */
  setup(): Promise<void>;
  /** Remove the temp file / schema; pools opened by the test must be destroyed first. */
  cleanup(): Promise<void>;
}

export function connect(target: DbTarget): Knex {
  if (target.kind === 'sqlite') return openDatabase(`sqlite:${target.file}`);
  return knexFactory({ client: 'pg', connection: target.url, searchPath: [target.schema], pool: { min: 0, max: 10 } });
}

/** SQLite and Postgres for one test file; `schema` names the file's Postgres schema. */
export function apiDatabases(schema: string): ApiDatabase[] {
  let dir = '';
  const sqliteTarget: DbTarget = { kind: 'sqlite', file: '' };
  const pgTarget: DbTarget = { kind: 'postgres', url: pgUrl(PG_DATABASE), schema };
  return [
    {
      label: 'SQLite (temp file)',
      target: sqliteTarget,
      open: () => connect(sqliteTarget),
      setup: async () => {
        dir = fs.mkdtempSync(path.join(os.tmpdir(), `pp-${schema}-`));
        sqliteTarget.file = path.join(dir, 'api.sqlite3');
      },
      cleanup: async () => fs.rmSync(dir, { recursive: true, force: true }),
    },
    {
      label: `PostgreSQL (${PG_DATABASE}, schema ${schema})`,
      target: pgTarget,
      open: () => connect(pgTarget),
      setup: async () => {
        await ensurePgDatabase(PG_DATABASE);
        await withAdmin((db) => db.raw(`DROP SCHEMA IF EXISTS ?? CASCADE; CREATE SCHEMA ??`, [schema, schema]));
      },
      cleanup: async () => {
        await withAdmin((db) => db.raw(`DROP SCHEMA IF EXISTS ?? CASCADE`, [schema]));
      },
    },
  ];
}

async function withAdmin<T>(fn: (db: Knex) => Promise<T>): Promise<T> {
  const db = knexFactory({ client: 'pg', connection: pgUrl(PG_DATABASE), pool: { min: 0, max: 1 } });
  try {
    return await fn(db);
  } finally {
    await db.destroy();
  }
}

/**
 * Run one test/store/concurrency-child.js per request, all released at the same moment (each connects, says
 * "ready", and starts when told "go"), so that they really race. Resolves with each child's JSON answer.
 */
export async function runChildren<T>(requests: object[]): Promise<T[]> {
  const children = requests.map((request) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'concurrency-child.js'), JSON.stringify(request)], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let markReady: () => void = () => undefined;
    const ready = new Promise<void>((resolve) => (markReady = resolve));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.startsWith('ready\n')) markReady();
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const done = new Promise<T>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => {
        markReady(); // never leave the barrier waiting on a dead child
        if (code !== 0) return reject(new Error(`concurrency child exited ${code}: ${err}`));
        try {
          resolve(JSON.parse(out.replace(/^ready\n/, '')) as T);
        } catch (e) {
          reject(new Error(`concurrency child printed no JSON (${(e as Error).message}): ${out} ${err}`));
        }
      });
    });
    return { child, ready, done };
  });
  await Promise.all(children.map((c) => c.ready));
  for (const c of children) c.child.stdin.end('go\n');
  return Promise.all(children.map((c) => c.done));
}
