import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Knex } from 'knex';
import { databaseKind } from '../../src/store/database';
import { migrate, OWN_TABLES, PLUGIN_TABLES } from '../../src/store/migrate';
import { parseJsonColumn, PluginStore } from '../../src/store/plugin-store';

/** The same store tests on every database: `open` gives a fresh, empty database. */
export function storeSuite(label: string, open: () => Promise<Knex>, cleanup: (db: Knex) => Promise<void>): void {
  describe(`PluginStore on ${label}`, () => {
    let db: Knex;
    let store: PluginStore;
    const archive = Buffer.from([0x50, 0x4b, 0x03, 0x04, 0x00, 0xff, 0xc3, 0xa9]);

    before(async () => {
      db = await open();
      store = new PluginStore(db);
    });
    after(() => cleanup(db));

    it('migrate creates the five PostHog tables and our job table, then is a no-op', async () => {
      assert.deepEqual((await migrate(db)).sort(), [...PLUGIN_TABLES, ...OWN_TABLES].sort());
      assert.deepEqual(await migrate(db), []);
      for (const t of [...PLUGIN_TABLES, ...OWN_TABLES]) assert.ok(await db.schema.hasTable(t), t);
      const cols = Object.keys(await db('posthog_pluginconfig').columnInfo()).sort();
      assert.deepEqual(cols, [
        'config',
        'created_at',
        'enabled',
        'error',
        'id',
        'order',
        'plugin_id',
        'team_id',
        'updated_at',
      ]);
    });

    it('installPlugin / createConfig / loadEnabledConfigs: filter, join, order by team, order, id', async () => {
      const p1 = await store.installPlugin({
        name: 'first',
        pluginType: 'local',
        url: 'file:a',
        configSchema: [{ key: 'x', type: 'string' }],
      });
      const p2 = await store.installPlugin({
        name: 'second',
        pluginType: 'custom',
        url: 'https://github.com/x/y',
        archive,
      });
      const p3 = await store.installPlugin({
        name: 'third',
        pluginType: 'source',
        source: 'export function processEvent(e) { return e }',
      });
      assert.ok(p1 > 0 && p2 > p1 && p3 > p2);
      const c = {
        t2o5: await store.createConfig({ pluginId: p1, teamId: 2, order: 5, config: { a: '1' } }),
        t1o3: await store.createConfig({ pluginId: p2, teamId: 1, order: 3, config: { nested: { k: [1, 'é'] } } }),
        t1o1: await store.createConfig({ pluginId: p3, teamId: 1, order: 1 }),
        t1o3b: await store.createConfig({ pluginId: p1, teamId: 1, order: 3 }),
        disabled: await store.createConfig({ pluginId: p1, teamId: 1, order: 0, enabled: false }),
        noTeam: await store.createConfig({ pluginId: p1, teamId: null, order: 0 }),
        orphan: await store.createConfig({ pluginId: 9999, teamId: 1, order: 2 }),
      };
      await store.addAttachment({
        pluginConfigId: c.t1o3,
        teamId: 1,
        key: 'key',
        contentType: 'application/json',
        fileName: 'k.json',
        contents: Buffer.from('{"é":1}'),
      });
      const loaded = await store.loadEnabledConfigs();
      assert.deepEqual(
        loaded.map((l) => l.id),
        [c.t1o1, c.t1o3, c.t1o3b, c.t2o5],
      );
      const byId = new Map(loaded.map((l) => [l.id, l]));
      const a = byId.get(c.t1o3)!;
      assert.equal(a.teamId, 1);
      assert.equal(a.order, 3);
      assert.equal(a.plugin.name, 'second');
      assert.equal(a.plugin.pluginType, 'custom');
      assert.ok(a.plugin.archive?.equals(archive), 'archive bytes round trip');
      assert.deepEqual(a.config, { nested: { k: [1, 'é'] } });
      assert.equal(a.error, null);
      assert.equal(a.attachments.length, 1);
      assert.equal(a.attachments[0].contents.toString(), '{"é":1}');
      assert.equal(a.attachments[0].fileName, 'k.json');
      assert.deepEqual(byId.get(c.t2o5)!.plugin.configSchema, [{ key: 'x', type: 'string' }]);
      assert.equal(byId.get(c.t1o1)!.plugin.source, 'export function processEvent(e) { return e }');
      assert.equal(byId.get(c.t1o1)!.plugin.url, null);
      // plugin rows shared between configs
      assert.equal(byId.get(c.t2o5)!.plugin, byId.get(c.t1o3b)!.plugin);
    });

    it('setError writes PostHog error JSON, null clears it; disable turns a config off', async () => {
      const [first] = await store.loadEnabledConfigs();
      const error = {
        message: 'boom',
        time: new Date().toISOString(),
        name: 'TypeError',
        stack: 'TypeError: boom\n    at x',
        event: { event: '$pageview', distinct_id: 'd', properties: { é: [1] } },
      };
      await store.setError(first.id, error);
      assert.deepEqual(await store.getError(first.id), error);
      const raw = (await db('posthog_pluginconfig').select('error').where('id', first.id).first()) as {
        error: unknown;
      };
      if (databaseKind(db) === 'postgres') assert.equal(typeof raw.error, 'object', 'jsonb on Postgres');
      else assert.equal(typeof raw.error, 'string', 'text JSON on SQLite');
      assert.deepEqual(parseJsonColumn(raw.error), error);
      assert.equal((await store.loadEnabledConfigs())[0].error?.message, 'boom');
      await store.setError(first.id, null);
      assert.equal(await store.getError(first.id), null);
      await store.disable(first.id, { message: 'disabled after errors', time: new Date().toISOString() });
      assert.ok(!(await store.loadEnabledConfigs()).some((l) => l.id === first.id));
      assert.equal((await store.getError(first.id))?.message, 'disabled after errors');
    });

    it('listConfigs shows every config with its plugin', async () => {
      const list = await store.listConfigs();
      assert.equal(list.length, 7);
      assert.ok(list.some((l) => l.teamId === null && l.pluginName === 'first'));
      assert.ok(list.some((l) => !l.enabled));
      assert.ok(list.some((l) => l.pluginId === 9999 && l.pluginName === 'plugin-9999'));
      for (const l of list) assert.equal(typeof l.config, 'object');
    });

    it('reads JSON columns whether the driver returns text or parsed values', async () => {
      assert.deepEqual(parseJsonColumn('{"a":1}'), { a: 1 });
      assert.deepEqual(parseJsonColumn({ a: 1 }), { a: 1 });
      assert.deepEqual(parseJsonColumn(Buffer.from('[1]')), [1]);
      assert.equal(parseJsonColumn(null), null);
      // a config written as raw text by someone else
      const id = await store.createConfig({
        pluginId: (await store.loadEnabledConfigs())[0].pluginId,
        teamId: 7,
        order: 0,
      });
      await db('posthog_pluginconfig').where('id', id).update({ config: '{"raw": "text ✓"}' });
      assert.deepEqual((await store.loadEnabledConfigs()).find((l) => l.id === id)?.config, { raw: 'text ✓' });
    });
  });
}
