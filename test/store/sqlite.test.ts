import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { describeDatabaseUrl, openDatabase } from '../../src/store/database';
import { migrate } from '../../src/store/migrate';
import { PluginStore } from '../../src/store/plugin-store';
import { tempDir } from '../helpers/temp';
import { storeSuite } from './suite';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pp-store-'));

storeSuite(
  'SQLite (temp file)',
  async () => openDatabase(`sqlite:${path.join(dir, 'store.sqlite3')}`),
  async (db) => {
    await db.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  },
);

describe('openDatabase / describeDatabaseUrl', () => {
  it('sqlite paths are relative to cwd; WAL is on; :memory: works', async () => {
    const cwd = process.cwd();
    const tmp = tempDir('pp-cwd-');
    process.chdir(tmp);
    try {
      const db = openDatabase('sqlite:rel/../data.sqlite3');
      await migrate(db);
      const mode = (await db.raw('PRAGMA journal_mode')) as Array<{ journal_mode: string }>;
      assert.equal(mode[0].journal_mode, 'wal');
      const timeout = (await db.raw('PRAGMA busy_timeout')) as Array<Record<string, number>>;
      assert.equal(Object.values(timeout[0])[0], 5000);
      await db.destroy();
      assert.ok(fs.existsSync(path.join(tmp, 'data.sqlite3')));
    } finally {
      process.chdir(cwd);
    }
    const mem = openDatabase('sqlite::memory:');
    await migrate(mem);
    const store = new PluginStore(mem);
    const id = await store.installPlugin({ name: 'm', pluginType: 'local', url: 'file:x' });
    await store.createConfig({ pluginId: id, teamId: 1, order: 0 });
    assert.equal((await store.loadEnabledConfigs()).length, 1, 'single connection keeps the in-memory database');
    await mem.destroy();
  });

  it('rejects unknown URLs clearly and masks passwords', () => {
    assert.throws(
      () => openDatabase('mysql://u:hunter2@h/db'),
      (e: Error) => /Unsupported database URL/.test(e.message) && !e.message.includes('hunter2'),
    );
    assert.throws(() => openDatabase('sqlite:'), /missing path/);
    assert.equal(
      describeDatabaseUrl('postgres://user:hunter2@db.example:5432/posthog'),
      'postgres://user:***@db.example:5432/posthog',
    );
    assert.equal(describeDatabaseUrl('postgresql://user@h/db'), 'postgresql://user@h/db');
    assert.equal(describeDatabaseUrl('sqlite:data.sqlite3'), 'sqlite:data.sqlite3');
    assert.ok(!describeDatabaseUrl('weird://u:p@ss@h').includes('p@ss'));
  });
});
