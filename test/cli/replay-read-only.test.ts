/**
 * `replay` against PostHog's kind of database (Postgres `posthog_plugins_test_cli`) never writes to it: a plugin
 * that fails to load or set up leaves `posthog_pluginconfig.error` as it was (errors go to stderr), a good load
 * does not clear an old error, and the run exits 1 when a config failed to load unless --allow-load-errors.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openDatabase } from '../../src/store/database';
import { dropPgDatabase, ensurePgDatabase, pgUrl } from '../helpers/services';
import { hasStackTrace, run } from './run';

const PG = 'posthog_plugins_test_cli';

describe('replay is read-only', { timeout: 300_000 }, () => {
  let tmp = '';
  const url = pgUrl(PG);
  const env = { LOG_LEVEL: 'info', REDIS_URL: '', PLUGINS_RELOAD_PUBSUB_CHANNEL: '' };
  const errors = async (): Promise<Array<[number, unknown]>> => {
    const db = openDatabase(url);
    try {
      const rows = (await db('posthog_pluginconfig').select('id', 'error').orderBy('id')) as Array<{
        id: number;
        error: unknown;
      }>;
      return rows.map((r) => [r.id, r.error]);
    } finally {
      await db.destroy();
    }
  };

  before(async () => {
    tmp = mkdtempSync(path.join(tmpdir(), 'pp-cli-replay-'));
    await dropPgDatabase(PG);
    await ensurePgDatabase(PG);
    assert.equal((await run(['migrate', '--database-url', url], { env })).code, 0);
    const failsSetup = path.join(tmp, 'fails-setup.js');
    writeFileSync(
      failsSetup,
      'function setupPlugin() { throw new Error("setup needs the network") }\nfunction processEvent(e) { return e }\n',
    );
    const vanishing = path.join(tmp, 'vanishing.js');
    writeFileSync(vanishing, 'function processEvent(e) { return e }\n');
    for (const source of ['fixtures/plugins/add-property', failsSetup, vanishing]) {
      const r = await run(['install', source, '--team', '1', '--database-url', url], { env });
      assert.equal(r.code, 0, r.stderr);
    }
    rmSync(vanishing);
    // An old error on the good config: a worker would clear it after a good load, replay must not.
    const db = openDatabase(url);
    try {
      await db('posthog_pluginconfig')
        .where('id', 1)
        .update({ error: JSON.stringify({ message: 'old', time: '2020-01-01T00:00:00.000Z' }) });
    } finally {
      await db.destroy();
    }
  });
  after(async () => {
    await dropPgDatabase(PG);
    rmSync(tmp, { recursive: true, force: true });
  });

  test('failed loads go to stderr and the exit code, never to posthog_pluginconfig.error', async () => {
    const before = await errors();
    const input = path.join(tmp, 'empty.jsonl');
    writeFileSync(input, '');
    const r = await run(['replay', input, '--database-url', url], { env });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /setup needs the network/);
    assert.match(r.stderr, new RegExp(`plugin path not found: ${path.join(tmp, 'vanishing.js')}`));
    assert.match(r.stderr, /plugin config #3 \(vanishing, team 1\) failed to load/);
    assert.ok(
      !hasStackTrace(
        r.stderr
          .split('\n')
          .filter((l) => !l.includes('setup needs the network'))
          .join('\n'),
      ),
      r.stderr,
    );
    assert.deepEqual(await errors(), before);
    assert.deepEqual(
      before.map(([id, e]) => [id, e === null ? null : (e as { message: string }).message]),
      [
        [1, 'old'],
        [2, null],
        [3, null],
      ],
    );

    const allowed = await run(['replay', input, '--database-url', url, '--allow-load-errors'], { env });
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.deepEqual(await errors(), before);
  });

  test('a SQLite replay opens the file read-only and creates nothing', async () => {
    const missing = path.join(tmp, 'no-such.sqlite3');
    const r = await run(['replay', path.join(tmp, 'empty.jsonl'), '--database-url', `sqlite:${missing}`], { env });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`cannot read plugin tables in SQLite database ${missing}`));
    assert.ok(!hasStackTrace(r.stderr), r.stderr);
    assert.equal(existsSync(missing), false);
  });
});
