import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Redis from 'ioredis';
import { POP_SCRIPT, RESTORE_SCRIPT, SETTLE_SCRIPT } from '../../src/brokers/redis/scripts';
import { luaScript } from '../../src/redis/lua';
import { type PrivateRedis, startPrivateRedis } from '../helpers/private-redis';

/**
 * Our Lua scripts (the broker's in src/brokers/redis/lua/, the schedule lock's in src/plugins/background/lua/): each
 * one documents every KEYS[n] and ARGV[n] it reads in its header, is what the code sends, and compiles in Redis
 * (SCRIPT LOAD on a private server).
 */
const SRC = path.resolve(__dirname, '../../../src');
const LUA_DIRS = ['brokers/redis/lua', 'plugins/background/lua'];
const FILES = LUA_DIRS.flatMap((dir) =>
  readdirSync(path.join(SRC, dir))
    .filter((f) => f.endsWith('.lua'))
    .sort()
    .map((f) => `${dir}/${f}`),
);

/** The `--[[ … ]]` header and the code after it. */
function split(text: string): { header: string; code: string } {
  assert.ok(text.startsWith('--[[\n'), 'starts with a --[[ header');
  const end = text.indexOf('\n]]\n');
  assert.ok(end > 0, 'the header ends with ]] on a line of its own');
  return { header: text.slice(0, end), code: text.slice(end + 4) };
}

/** Whether the header documents table[n]: its own line `table[n]`, or a range `table[a..]` with a <= n. */
function documented(header: string, table: 'KEYS' | 'ARGV', n: number): boolean {
  for (const m of header.matchAll(new RegExp(`^\\s+${table}\\[(\\d+)(\\.\\.)?\\]\\s+\\S`, 'gm'))) {
    const at = Number(m[1]);
    if (at === n || (m[2] !== undefined && at <= n)) return true;
  }
  return false;
}

describe('Redis Lua scripts', () => {
  test('every script is a file', () => {
    assert.deepEqual(FILES, [
      'brokers/redis/lua/pop.lua',
      'brokers/redis/lua/restore.lua',
      'brokers/redis/lua/settle.lua',
      'plugins/background/lua/schedule-release.lua',
      'plugins/background/lua/schedule-try-start.lua',
    ]);
  });

  for (const file of FILES) {
    test(`${file}: a header with what it does, every KEYS[n] and ARGV[n] it reads, and its output`, () => {
      const { header, code } = split(readFileSync(path.join(SRC, file), 'utf8'));
      assert.match(header, /^--\[\[\n {2}\S/, 'says what it does first');
      assert.match(header, /\n {4}Input:\n/);
      assert.match(header, /\n {4}Output:\n/);
      assert.ok(documented(header, 'KEYS', 1) && documented(header, 'ARGV', 1), 'KEYS[1] and ARGV[1] are documented');
      for (const m of code.matchAll(/\b(KEYS|ARGV)\[(\d+)\]/g)) {
        assert.ok(documented(header, m[1] as 'KEYS' | 'ARGV', Number(m[2])), `${m[0]} is documented in the header`);
      }
    });
  }

  test('the broker sends the files as they are', () => {
    assert.equal(POP_SCRIPT, readFileSync(path.join(SRC, 'brokers/redis/lua/pop.lua'), 'utf8'));
    assert.equal(SETTLE_SCRIPT, luaScript('brokers/redis/lua', 'settle'));
    assert.equal(RESTORE_SCRIPT, luaScript('brokers/redis/lua', 'restore'));
    assert.throws(() => luaScript('brokers/redis/lua', 'missing'), /cannot read Redis script .*missing\.lua/);
  });

  describe('in Redis', () => {
    let server: PrivateRedis;
    let redis: Redis;
    before(async () => {
      server = await startPrivateRedis({ appendonly: false });
      redis = new Redis(server.url(0), { maxRetriesPerRequest: 1 });
    });
    after(async () => {
      redis?.disconnect();
      await server?.stop();
    });

    for (const file of FILES) {
      test(`${file} compiles (SCRIPT LOAD)`, async () => {
        const sha = (await redis.script('LOAD', readFileSync(path.join(SRC, file), 'utf8'))) as string;
        assert.match(sha, /^[0-9a-f]{40}$/);
      });
    }

    test('restore.lua runs: nothing unacked, nothing restored', async () => {
      assert.equal(
        await redis.eval(RESTORE_SCRIPT, 3, 'unacked', 'unacked_index', 'inflight', '0', 'tag', 'queue', '{}'),
        0,
      );
      assert.equal(await redis.exists('queue'), 0);
    });
  });
});
