/**
 * Managing what is installed with the real CLI: uninstall, enable/disable, config show/set, order. Each change is
 * written as PostHog would write it and announced on `reload-plugins`, and a running `start` (private Redis broker
 * and reload channel) picks it up without a restart.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { openDatabase } from '../../src/store/database';
import { startPrivateRedis, type PrivateRedis } from '../helpers/private-redis';
import { sendEvents } from '../helpers/python';
import { waitUntil } from '../helpers/services';
import { startWorker, type WorkerProcess } from '../helpers/worker';
import { reloadCounter, run } from './run';

describe('uninstall, enable, disable, config, order', { timeout: 300_000 }, () => {
  let tmp = '';
  let redis: PrivateRedis;
  let db = '';
  let env: Record<string, string> = {};
  let worker: WorkerProcess | undefined;

  const configs = async (): Promise<
    Array<{ id: number; team: number; order: number; enabled: boolean; config: Record<string, string> }>
  > => {
    const k = openDatabase(db);
    try {
      const rows = (await k('posthog_pluginconfig').select('*').orderBy('id')) as Array<Record<string, unknown>>;
      return rows.map((r) => ({
        id: Number(r.id),
        team: Number(r.team_id),
        order: Number(r.order),
        enabled: Boolean(r.enabled),
        config: JSON.parse(String(r.config)),
      }));
    } finally {
      await k.destroy();
    }
  };
  const pluginCount = async (): Promise<number> => {
    const k = openDatabase(db);
    try {
      return ((await k('posthog_plugin').select('id')) as unknown[]).length;
    } finally {
      await k.destroy();
    }
  };
  /** Runs a command that must succeed and must announce itself on the reload channel. */
  const change = async (args: string[]): Promise<void> => {
    const reloads = await reloadCounter(redis.url());
    try {
      const r = await run([...args, '--database-url', db], { env });
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      const deadline = Date.now() + 10_000;
      while (reloads.messages.length === 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
      assert.deepEqual(reloads.messages, ['reload!'], `${args.join(' ')} announced nothing`);
    } finally {
      reloads.close();
    }
  };
  const reloadsSeen = (): number =>
    worker!.logs().filter((l) => typeof l.message === 'string' && l.message.startsWith('plugins loaded:')).length;

  before(async () => {
    tmp = mkdtempSync(path.join(tmpdir(), 'pp-cli-manage-'));
    redis = await startPrivateRedis({ appendonly: false });
    db = `sqlite:${path.join(tmp, 'plugins.sqlite3')}`;
    env = { REDIS_URL: redis.url(), LOG_LEVEL: 'info' };
    await change(['install', 'fixtures/plugins/add-property', '--team', '1']);
    await change(['install', 'fixtures/plugins/drop-events', '--team', '1']);
    await change(['install', 'fixtures/plugins/add-property', '--team', '2', '--config', '{"propertyName":"two"}']);
    worker = await startWorker(
      [
        '--broker',
        redis.url(1),
        '--workers',
        '1',
        '--database-url',
        db,
        '--health-file',
        path.join(tmp, 'health.json'),
      ],
      {},
    );
  });
  after(async () => {
    await worker?.stop();
    await redis?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('every command has --help', async () => {
    for (const cmd of [
      ['uninstall'],
      ['enable'],
      ['disable'],
      ['config', 'show'],
      ['config', 'set'],
      ['order'],
      ['install'],
    ]) {
      const r = await run([...cmd, '--help']);
      assert.equal(r.code, 0, cmd.join(' '));
      assert.match(r.stdout, new RegExp(`posthog-plugins ${cmd.join(' ')}`));
    }
  });

  test('disable and enable toggle the config; the running worker reloads each time', async () => {
    const before = reloadsSeen();
    await change(['disable', '2']);
    assert.deepEqual(
      (await configs()).map((c) => c.enabled),
      [true, false, true],
    );
    await worker!.waitForLog(() => reloadsSeen() > before, 30_000, 'a reload after disable');
    await worker!.waitForLog(
      (l) => l.message === 'plugins loaded: 2 config(s) for 2 team(s), 0 failed',
      30_000,
      'config #2 gone from the chains',
    );
    await change(['enable', '2']);
    assert.deepEqual(
      (await configs()).map((c) => c.enabled),
      [true, true, true],
    );
    await worker!.waitForLog(() => reloadsSeen() > before + 1, 30_000, 'a reload after enable');
  });

  test('config set changes keys (checked against plugin.json), config show prints them; a bad value changes nothing', async () => {
    await change(['config', 'set', '1', 'propertyName=source', '--json', '{"propertyValue":"cli"}']);
    const shown = await run(['config', 'show', '1', '--database-url', db]);
    assert.deepEqual(JSON.parse(shown.stdout), { propertyName: 'source', propertyValue: 'cli' });
    const bad = await run(['config', 'set', '1', '--json', '{"propertyName": 5}', '--database-url', db], { env });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /config #1 \(Add property\) was not changed: "propertyName" must be a string/);
    const unknown = await run(['config', 'set', '1', 'nope=1', '--database-url', db], { env });
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /unknown key "nope"/);
    assert.deepEqual((await configs())[0]!.config, { propertyName: 'source', propertyValue: 'cli' });
    await change(['config', 'set', '1', 'propertyValue=']);
    // A removed key with a default gets the default back, as PostHog's form showed it.
    assert.deepEqual((await configs())[0]!.config, { propertyName: 'source', propertyValue: 'posthog-plugins' });
  });

  test("order puts the given configs first and renumbers the team's chain; other teams are untouched", async () => {
    await change(['order', '2']);
    assert.deepEqual(
      (await configs()).map((c) => [c.id, c.team, c.order]),
      [
        [1, 1, 1],
        [2, 1, 0],
        [3, 2, 0],
      ],
    );
    const mixed = await run(['order', '1', '3', '--database-url', db], { env });
    assert.equal(mixed.code, 1);
    assert.match(mixed.stderr, /belong to different teams/);
    const missing = await run(['order', '9', '--database-url', db], { env });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no plugin config #9/);
  });

  test('uninstall removes the config, and the plugin once no config uses it; the worker drops it', async () => {
    const before = reloadsSeen();
    const logEntries = async (id: number): Promise<number> => {
      const k = openDatabase(db);
      try {
        return ((await k('posthog_pluginlogentry').select('id').where('plugin_config_id', id)) as unknown[]).length;
      } finally {
        await k.destroy();
      }
    };
    // Workers create an isolate on its config's first event: send team 2 one so config #3 loads and logs it.
    await sendEvents({ brokerUrl: redis.url(1), count: 1, teamId: 2, timeoutMs: 60_000 });
    await waitUntil(async () => (await logEntries(3)) > 0, 30_000, 'the worker logged the load of config #3');
    await change(['uninstall', '3']);
    assert.equal(await logEntries(3), 0, "its log entries went with it, as Django's cascade did");
    assert.deepEqual(
      (await configs()).map((c) => c.id),
      [1, 2],
    );
    assert.equal(await pluginCount(), 2, 'add-property is still used by config #1');
    await worker!.waitForLog(() => reloadsSeen() > before, 30_000, 'a reload after uninstall');
    await change(['uninstall', '1', '2']);
    assert.deepEqual(await configs(), []);
    assert.equal(await pluginCount(), 0);
    const list = await run(['list', '--database-url', db]);
    assert.match(list.stdout, /no plugin configs/);
    const again = await run(['uninstall', '1', '--database-url', db], { env });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no plugin config #1/);
  });
});
