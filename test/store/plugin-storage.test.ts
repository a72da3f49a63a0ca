import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Knex } from 'knex';
import { migrate } from '../../src/store/migrate';
import { PluginStorage, STORAGE_KEY_MAX_CHARS } from '../../src/store/plugin-storage';
import { apiDatabases, runChildren } from './api-databases';

for (const target of apiDatabases('storage')) {
  describe(`PluginStorage on ${target.label}`, () => {
    let db: Knex;
    let storage: PluginStorage;

    before(async () => {
      await target.setup();
      db = target.open();
      await migrate(db);
      storage = new PluginStorage(db);
    });
    after(async () => {
      await db?.destroy();
      await target.cleanup();
    });

    it('get / set (upsert) / del, scoped per plugin config, values kept as raw JSON text', async () => {
      assert.equal(await storage.get(1, 'k'), null);
      await storage.set(1, 'k', '{"a":[1,"é ✓"]}');
      await storage.set(2, 'k', '"other config"');
      assert.equal(await storage.get(1, 'k'), '{"a":[1,"é ✓"]}');
      await storage.set(1, 'k', 'null');
      assert.equal(await storage.get(1, 'k'), 'null', 'upsert replaces; JSON null is a stored value, not absence');
      assert.equal(await storage.get(2, 'k'), '"other config"');
      const rows = (await db('posthog_pluginstorage')
        .where({ plugin_config_id: 1 })
        .select('key', 'value')) as unknown[];
      assert.deepEqual(rows, [{ key: 'k', value: 'null' }], 'one row per (config, key)');
      await storage.del(1, 'k');
      await storage.del(1, 'never-set');
      assert.equal(await storage.get(1, 'k'), null);
      assert.equal(await storage.get(2, 'k'), '"other config"');
    });

    it(`keys up to ${STORAGE_KEY_MAX_CHARS} characters (code points, as Postgres counts) work; longer ones fail clearly`, async () => {
      const emojiKey = '🙂'.repeat(STORAGE_KEY_MAX_CHARS); // 400 UTF-16 units, 200 characters
      await storage.set(3, emojiKey, '1');
      assert.equal(await storage.get(3, emojiKey), '1');
      const long = 'x'.repeat(STORAGE_KEY_MAX_CHARS + 1);
      for (const op of [
        () => storage.get(3, long),
        () => storage.set(3, long, '1'),
        () => storage.del(3, long),
        () => storage.cursorIncrement(3, long, 1),
      ]) {
        await assert.rejects(op, /201 characters, the limit is 200/);
      }
    });

    it('cursor: init inserts only when absent; increment adds (absent counts as 0) and returns the new value', async () => {
      assert.equal(await storage.cursorIncrement(4, 'fresh', 5), 5);
      await storage.cursorInit(4, 'c', 10);
      await storage.cursorInit(4, 'c', 99);
      assert.equal(await storage.get(4, 'c'), '10');
      assert.equal(await storage.cursorIncrement(4, 'c', 1), 11);
      assert.equal(await storage.cursorIncrement(4, 'c', -3), 8);
      assert.equal(await storage.cursorIncrement(4, 'c', 0.5), 8.5);
      assert.equal(JSON.parse((await storage.get(4, 'c'))!), 8.5, 'stored value stays JSON a plugin can read');
      await storage.set(4, 'text', '"abc"');
      await assert.rejects(storage.cursorIncrement(4, 'text', 1), /cursor "text" of config 4/);
      assert.equal(await storage.get(4, 'text'), '"abc"', 'a failed increment changes nothing');
      await assert.rejects(storage.cursorIncrement(4, 'c', NaN), /finite number/);
    });

    it('concurrent increments from two pools in this process lose no update', async () => {
      const other = target.open();
      try {
        const a = new PluginStorage(db);
        const b = new PluginStorage(other);
        const values = await Promise.all(
          Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).cursorIncrement(5, 'pools', 1)),
        );
        assert.deepEqual(
          [...values].sort((x, y) => x - y),
          Array.from({ length: 200 }, (_, i) => i + 1),
        );
        assert.equal(await storage.get(5, 'pools'), '200');
      } finally {
        await other.destroy();
      }
    });

    it('concurrent increments from three processes lose no update (every value returned exactly once)', async () => {
      const perChild = 300;
      const answers = await runChildren<number[]>(
        [1, 2, 3].map(() => ({
          op: 'increment',
          target: target.target,
          configId: 6,
          key: 'procs',
          count: perChild,
          parallel: 4,
        })),
      );
      const all = answers.flat().sort((x, y) => x - y);
      assert.deepEqual(
        all,
        Array.from({ length: 3 * perChild }, (_, i) => i + 1),
      );
      assert.equal(await storage.get(6, 'procs'), String(3 * perChild));
    });
  });
}
