/**
 * `posthog-plugins install` as an operator runs it (child processes, a SQLite file, a private Redis for the reload
 * channel): broken code is refused with the compiler's message and nothing is stored; --config is checked against
 * plugin.json; local plugins are stored as absolute file: URLs (or relative to a stated --base-dir) and found
 * from any directory; a second install of the same path is refused and --upgrade replaces the code in place.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openDatabase } from '../../src/store/database';
import { REPO } from '../helpers/worker';
import { startPrivateRedis, type PrivateRedis } from '../helpers/private-redis';
import { hasStackTrace, reloadCounter, run } from './run';

describe('install', { timeout: 300_000 }, () => {
  let tmp = '';
  let redis: PrivateRedis;
  let env: Record<string, string> = {};
  let n = 0;
  /** A fresh database per test, so each one reads only its own rows. */
  const freshDb = async (): Promise<string> => {
    const url = `sqlite:${path.join(tmp, `db-${++n}.sqlite3`)}`;
    assert.equal((await run(['migrate', '--database-url', url], { env })).code, 0);
    return url;
  };
  const rows = async (url: string, table: string): Promise<Array<Record<string, unknown>>> => {
    const db = openDatabase(url);
    try {
      return (await db(table).select('*').orderBy('id')) as Array<Record<string, unknown>>;
    } finally {
      await db.destroy();
    }
  };

  before(async () => {
    tmp = mkdtempSync(path.join(tmpdir(), 'pp-cli-install-'));
    redis = await startPrivateRedis({ appendonly: false });
    env = { REDIS_URL: redis.url(), LOG_LEVEL: 'info' };
  });
  after(async () => {
    await redis?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('a folder or a .js file that does not compile is refused with the compiler message; nothing is stored', async () => {
    const db = await freshDb();
    const folder = path.join(tmp, 'broken-folder');
    mkdirSync(folder);
    writeFileSync(path.join(folder, 'plugin.json'), JSON.stringify({ name: 'Broken', main: 'index.js' }));
    writeFileSync(path.join(folder, 'index.js'), 'function processEvent(event) { return [event;] }\n');
    const file = path.join(tmp, 'broken2.js');
    writeFileSync(file, 'function processEvent(event) { return [event;] }\n');
    for (const source of [folder, file]) {
      const r = await run(['install', source, '--database-url', db], { env });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /does not load, nothing was stored: cannot compile \S+:1:\d+: Expected "]" but found ";"/);
      assert.ok(!hasStackTrace(r.stderr), r.stderr);
    }
    const thrower = path.join(tmp, 'throws.js');
    writeFileSync(thrower, 'throw new Error("no config here")\nfunction processEvent(e) { return e }\n');
    const r = await run(['install', thrower, '--database-url', db], { env });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /plugin load failed: .*no config here/);
    assert.deepEqual(await rows(db, 'posthog_plugin'), []);
    assert.deepEqual(await rows(db, 'posthog_pluginconfig'), []);
  });

  test('a missing path is an error naming it', async () => {
    const r = await run(['install', 'fixtures/plugins/not-there', '--database-url', await freshDb()], { env });
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr.trim(),
      `posthog-plugins install: plugin path not found: ${path.join(REPO, 'fixtures/plugins/not-there')}`,
    );
  });

  test('--config is checked against plugin.json: types, unknown keys, required, choices; defaults are filled in', async () => {
    const db = await freshDb();
    const folder = path.join(tmp, 'choosy');
    mkdirSync(folder);
    writeFileSync(
      path.join(folder, 'plugin.json'),
      JSON.stringify({
        name: 'Choosy',
        config: [
          { markdown: 'Pick one' },
          { key: 'mode', type: 'choice', choices: ['fast', 'slow'], default: 'fast' },
          { key: 'token', type: 'string', required: true, secret: true },
          { key: 'mapping', type: 'json' },
          { key: 'file', type: 'attachment' },
        ],
      }),
    );
    writeFileSync(path.join(folder, 'index.js'), 'function processEvent(e) { return e }\n');
    const refused: Array<[string, RegExp]> = [
      ['{"token": 5}', /"token" must be a string .*got 5/],
      ['{"token": "t", "mode": "medium"}', /"mode" must be one of "fast", "slow", got "medium"/],
      ['{"mode": "slow"}', /"token" is required/],
      ['{"token": "t", "tokn": "x"}', /unknown key "tokn" \(plugin.json config has: mode, token, mapping\)/],
      ['{"token": "t", "mapping": "{not json"}', /"mapping" must be JSON text/],
      ['{"token": "t", "file": "x"}', /"file" is an attachment/],
    ];
    for (const [config, why] of refused) {
      const r = await run(['install', folder, '--database-url', db, '--config', config], { env });
      assert.equal(r.code, 1, `${config} was accepted`);
      assert.match(r.stderr, why);
    }
    assert.deepEqual(await rows(db, 'posthog_plugin'), []);

    const ok = await run(['install', folder, '--database-url', db, '--config', '{"token":"secret-1"}'], { env });
    assert.equal(ok.code, 0, ok.stderr);
    const [config] = await rows(db, 'posthog_pluginconfig');
    assert.deepEqual(JSON.parse(String(config!.config)), { token: 'secret-1', mode: 'fast' });
    const shown = await run(['config', 'show', String(config!.id), '--database-url', db], { env });
    assert.deepEqual(JSON.parse(shown.stdout), {
      token: '**************** POSTHOG SECRET FIELD ****************',
      mode: 'fast',
    });
  });

  test('local plugins are stored as absolute file: URLs and found from any directory; --base-dir stores them relative', async () => {
    const db = await freshDb();
    const r = await run(['install', 'fixtures/plugins/add-property', '--database-url', db], { env });
    assert.equal(r.code, 0, r.stderr);
    const [plugin] = await rows(db, 'posthog_plugin');
    assert.equal(plugin!.url, `file:${path.join(REPO, 'fixtures/plugins/add-property')}`);
    assert.equal(plugin!.plugin_type, 'local');
    // replay from another directory loads it (it exits 1 when a config fails to load).
    const input = path.join(tmp, 'empty.jsonl');
    writeFileSync(input, '');
    const elsewhere = await run(['replay', input, '--database-url', db], { cwd: tmp, env });
    assert.equal(elsewhere.code, 0, elsewhere.stderr);

    const based = await freshDb();
    const plugins = path.join(tmp, 'plugins');
    cpSync(path.join(REPO, 'fixtures/plugins/add-property'), path.join(plugins, 'add-property'), { recursive: true });
    const r2 = await run(
      ['install', path.join(plugins, 'add-property'), '--base-dir', plugins, '--database-url', based],
      { env },
    );
    assert.equal(r2.code, 0, r2.stderr);
    assert.equal((await rows(based, 'posthog_plugin'))[0]!.url, 'file:add-property');
    assert.equal(
      (await run(['replay', input, '--database-url', based, '--base-dir', plugins], { cwd: REPO, env })).code,
      0,
    );
    const lost = await run(['replay', input, '--database-url', based], { cwd: REPO, env });
    assert.equal(lost.code, 1);
    assert.match(
      lost.stderr,
      new RegExp(
        `plugin path not found: ${path.join(REPO, 'add-property')} \\(url file:add-property, relative to --base-dir ${REPO}\\)`,
      ),
    );
  });

  test('installing the same path twice is refused; --upgrade replaces the code and keeps the one plugin row', async () => {
    const db = await freshDb();
    const folder = path.join(tmp, 'upgradable');
    cpSync(path.join(REPO, 'fixtures/plugins/add-property'), folder, { recursive: true });
    const reloads = await reloadCounter(redis.url());
    try {
      assert.equal((await run(['install', folder, '--database-url', db, '--team', '2'], { env })).code, 0);
      const again = await run(['install', folder, '--database-url', db, '--team', '2'], { env });
      assert.equal(again.code, 1);
      assert.match(again.stderr, /already installed for team 2 as config #1 \(plugin #1\): use --upgrade/);
      // Another team shares the plugin row.
      assert.equal((await run(['install', folder, '--database-url', db, '--team', '3'], { env })).code, 0);

      const schema = [
        { key: 'propertyName', type: 'string' },
        { key: 'propertyValue', type: 'string' },
        { key: 'label', type: 'string', required: true },
      ];
      writeFileSync(path.join(folder, 'plugin.json'), JSON.stringify({ name: 'Add property v2', config: schema }));
      // The new schema requires a key the team's config lacks: nothing changes.
      const missing = await run(['install', folder, '--database-url', db, '--team', '2', '--upgrade'], { env });
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /config #1: "label" is required/);
      assert.equal((await rows(db, 'posthog_plugin'))[0]!.name, 'Add property');

      const up = await run(
        ['install', folder, '--database-url', db, '--team', '2', '--upgrade', '--config', '{"label":"v"}'],
        { env },
      );
      assert.equal(up.code, 0, up.stderr);
      const plugins = await rows(db, 'posthog_plugin');
      assert.equal(plugins.length, 1);
      assert.equal(plugins[0]!.name, 'Add property v2');
      assert.deepEqual(JSON.parse(String(plugins[0]!.config_schema)), schema);
      const configs = await rows(db, 'posthog_pluginconfig');
      assert.deepEqual(
        configs.map((c) => [c.team_id, JSON.parse(String(c.config))]),
        [
          [2, { propertyName: 'processed_by', propertyValue: 'posthog-plugins', label: 'v' }],
          [3, { propertyName: 'processed_by', propertyValue: 'posthog-plugins' }],
        ],
      );
      // Every successful change was announced (install, install, upgrade); refusals were not.
      await waitFor(() => reloads.messages.length >= 3);
      assert.deepEqual(reloads.messages, ['reload!', 'reload!', 'reload!']);
    } finally {
      reloads.close();
    }
  });
});

async function waitFor(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}
