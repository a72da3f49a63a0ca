import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import * as net from 'node:net';
import { after, before, describe, it } from 'node:test';
import Redis from 'ioredis';
import { cacheKey, createCacheOp } from '../../../src/plugins/api/cache-op';
import {
  PluginFacingError,
  type HostOp,
  type HostOpContext,
  type PluginIdentity,
} from '../../../src/plugins/vm/bridge';
import { createLogger } from '../../../src/log';
import { redisUrl } from '../../helpers/services';

/**
 * meta.cache's host op against the real Redis (db 11, shared with schedule-lock.test.ts: this file only touches
 * keys of a random plugin id and deletes them at the end, never FLUSHDB).
 */
const DB = 11;
const logger = createLogger('error');

function context(
  plugin: PluginIdentity,
  signal = new AbortController().signal,
): HostOpContext & { warnings: string[] } {
  const warnings: string[] = [];
  return { plugin, signal, logger, logMeta: { ...plugin }, warn: (m) => void warnings.push(m), warnings };
}

async function refused(p: Promise<unknown>, pattern: RegExp): Promise<PluginFacingError> {
  const err = await p.then(
    (v) => assert.fail(`expected a CacheError, got ${JSON.stringify(v)}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof PluginFacingError, `not a PluginFacingError: ${String(err)}`);
  assert.equal(err.name, 'CacheError');
  assert.match(err.message, pattern);
  return err;
}

describe('cache host op (Redis db 11)', () => {
  let redis: Redis;
  let op: HostOp;
  // a plugin id no other test uses, so the keys are ours alone
  const pluginId = 900_000 + randomInt(99_999);
  const teamA: PluginIdentity = { pluginConfigId: 1, pluginId, teamId: 7 };
  const teamB: PluginIdentity = { pluginConfigId: 2, pluginId, teamId: 8 };
  const ctxA = context(teamA);
  const ctxB = context(teamB);
  const run = (args: unknown, ctx: HostOpContext = ctxA): Promise<unknown> => op.run(args, ctx);

  before(async () => {
    redis = new Redis(redisUrl(DB), { maxRetriesPerRequest: 1 });
    op = createCacheOp(redis, { maxValueBytes: 1000, maxKeyChars: 50 });
  });
  after(async () => {
    const keys = await redis.keys(`@plugin/${pluginId}/*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  });

  it('set/get store plain strings under PostHog key @plugin/{pluginId}/{teamId}/{key}', async () => {
    assert.equal(await run({ cmd: 'set', key: 'k1', value: '{"a":1}', ttl: null }), null);
    assert.equal(await redis.get(`@plugin/${pluginId}/7/k1`), '{"a":1}');
    assert.equal(cacheKey(teamA, 'k1'), `@plugin/${pluginId}/7/k1`);
    assert.equal(await run({ cmd: 'get', key: 'k1' }), '{"a":1}');
    assert.equal(await run({ cmd: 'get', key: 'missing' }), null);
    assert.equal(await redis.ttl(`@plugin/${pluginId}/7/k1`), -1, 'no ttl → no expiry');
  });

  it('teams are isolated: the same key of another team is another Redis key', async () => {
    await run({ cmd: 'set', key: 'shared', value: 'team 7', ttl: null });
    assert.equal(await run({ cmd: 'get', key: 'shared' }, ctxB), null);
    await run({ cmd: 'set', key: 'shared', value: 'team 8', ttl: null }, ctxB);
    assert.equal(await run({ cmd: 'get', key: 'shared' }), 'team 7');
  });

  it('a key with slashes or unicode stays inside the plugin/team prefix', async () => {
    await run({ cmd: 'set', key: '../../1/1/x ☃', value: 'v', ttl: null });
    assert.equal(await redis.get(`@plugin/${pluginId}/7/../../1/1/x ☃`), 'v');
  });

  it('set with a positive ttl sets EX; ttl 0 or null means no expiry (PostHog: falsy ttl)', async () => {
    await run({ cmd: 'set', key: 'ttl', value: 'x', ttl: 100 });
    const ttl = await redis.ttl(cacheKey(teamA, 'ttl'));
    assert.ok(ttl > 90 && ttl <= 100, `ttl ${ttl}`);
    await run({ cmd: 'set', key: 'ttl', value: 'y', ttl: 0 });
    assert.equal(await redis.ttl(cacheKey(teamA, 'ttl')), -1);
  });

  it('incr counts from a missing key and from a numeric string; expire answers whether the key exists', async () => {
    assert.equal(await run({ cmd: 'incr', key: 'n' }), 1);
    assert.equal(await run({ cmd: 'incr', key: 'n' }), 2);
    await run({ cmd: 'set', key: 'n2', value: '41', ttl: null });
    assert.equal(await run({ cmd: 'incr', key: 'n2' }), 42);
    assert.equal(await run({ cmd: 'expire', key: 'n', ttl: 50 }), true);
    const ttl = await redis.ttl(cacheKey(teamA, 'n'));
    assert.ok(ttl > 40 && ttl <= 50, `ttl ${ttl}`);
    assert.equal(await run({ cmd: 'expire', key: 'nope', ttl: 50 }), false);
    assert.equal(await run({ cmd: 'expire', key: 'n', ttl: 0 }), true, 'ttl 0 removes the key, as in Redis');
    assert.equal(await run({ cmd: 'get', key: 'n' }), null);
  });

  it('list commands: lpush, lrange, llen, lrem, lpop (with [] for a missing key)', async () => {
    assert.equal(await run({ cmd: 'lpush', key: 'l', values: ['a', 'b', 'c'] }), 3);
    assert.equal(await run({ cmd: 'lpush', key: 'l', values: ['b'] }), 4);
    assert.deepEqual(await run({ cmd: 'lrange', key: 'l', start: 0, stop: -1 }), ['b', 'c', 'b', 'a']);
    assert.deepEqual(await run({ cmd: 'lrange', key: 'l', start: 1, stop: 2 }), ['c', 'b']);
    assert.equal(await run({ cmd: 'llen', key: 'l' }), 4);
    assert.equal(await run({ cmd: 'lrem', key: 'l', count: 0, value: 'b' }), 2);
    assert.deepEqual(await run({ cmd: 'lpop', key: 'l', count: 1 }), ['c']);
    assert.deepEqual(await run({ cmd: 'lpop', key: 'l', count: 5 }), ['a']);
    assert.deepEqual(await run({ cmd: 'lpop', key: 'l', count: 5 }), []);
    assert.equal(await run({ cmd: 'llen', key: 'l' }), 0);
    assert.deepEqual(await run({ cmd: 'lrange', key: 'none', start: 0, stop: -1 }), []);
    const many = Array.from({ length: 1000 }, (_, i) => String(i % 10));
    assert.equal(await run({ cmd: 'lpush', key: 'l1000', values: many }), 1000);
  });

  it('refuses malformed requests with a CacheError that names the command and the field', async () => {
    await refused(run(null), /malformed request/);
    await refused(run(['get', 'k']), /malformed request/);
    await refused(run({ cmd: 'flushall', key: 'k' }), /unknown command "flushall"/);
    await refused(run({ cmd: 'get' }), /cache\.get: key must be a string, got undefined/);
    await refused(run({ cmd: 'get', key: 5 }), /cache\.get: key must be a string, got number/);
    await refused(run({ cmd: 'get', key: 'x'.repeat(51) }), /key too long: 51 characters, limit 50/);
    await refused(
      run({ cmd: 'set', key: 'k', value: { a: 1 }, ttl: null }),
      /cache\.set: value must be a string, got object/,
    );
    await refused(
      run({ cmd: 'set', key: 'k', value: 'é'.repeat(501), ttl: null }),
      /value too large: 1002 bytes, limit 1000/,
    );
    await refused(
      run({ cmd: 'set', key: 'k', value: 'v', ttl: 1.5 }),
      /ttl must be an integer from 0 to 2147483647, got 1.5/,
    );
    await refused(run({ cmd: 'set', key: 'k', value: 'v', ttl: -1 }), /ttl must be an integer/);
    await refused(run({ cmd: 'set', key: 'k', value: 'v', ttl: '60' }), /ttl must be an integer .* got string/);
    await refused(run({ cmd: 'expire', key: 'k', ttl: null }), /cache\.expire: ttl must be an integer/);
    await refused(
      run({ cmd: 'lpush', key: 'k', values: 'a' }),
      /values must be an array of 1 to 1000 strings, got string/,
    );
    await refused(run({ cmd: 'lpush', key: 'k', values: [] }), /got 0 items/);
    await refused(run({ cmd: 'lpush', key: 'k', values: Array(1001).fill('a') }), /got 1001 items/);
    await refused(run({ cmd: 'lpush', key: 'k', values: ['a', 1] }), /values\[1\] must be a string, got number/);
    await refused(
      run({ cmd: 'lpush', key: 'k', values: ['x'.repeat(600), 'y'.repeat(600)] }),
      /value too large: 1200 bytes/,
    );
    await refused(run({ cmd: 'lrange', key: 'k', start: 0 }), /cache\.lrange: stop must be an integer/);
    await refused(run({ cmd: 'lrange', key: 'k', start: 0.5, stop: 1 }), /start must be an integer/);
    await refused(
      run({ cmd: 'lrem', key: 'k', count: 1, value: null }),
      /cache\.lrem: value must be a string, got null/,
    );
    await refused(
      run({ cmd: 'lpop', key: 'k', count: 0 }),
      /cache\.lpop: count must be an integer from 1 to 100000, got 0/,
    );
    assert.equal(await redis.exists(cacheKey(teamA, 'k')), 0, 'nothing was written by a refused call');
  });

  it('Redis errors become CacheErrors naming the command (WRONGTYPE, not an integer)', async () => {
    await run({ cmd: 'lpush', key: 'list', values: ['a'] });
    const e1 = await refused(run({ cmd: 'get', key: 'list' }), /^cache\.get failed: WRONGTYPE/);
    assert.equal(e1.type, 'redis-error');
    await refused(run({ cmd: 'incr', key: 'k1' }), /^cache\.incr failed: ERR value is not an integer/);
    await refused(run({ cmd: 'lpush', key: 'k1', values: ['x'] }), /^cache\.lpush failed: WRONGTYPE/);
  });

  it('a Redis that cannot be reached gives "Redis unavailable" without its address', async () => {
    // port 1 on loopback: nothing listens there (connection refused at once)
    const down = new Redis({
      host: '127.0.0.1',
      port: 1,
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      retryStrategy: () => null,
    });
    down.on('error', () => undefined);
    try {
      const downOp = createCacheOp(down);
      const ctx = context(teamA);
      const err = await refused(downOp.run({ cmd: 'get', key: 'k' }, ctx), /^cache\.get failed: Redis unavailable$/);
      assert.equal(ctx.warnings.length, 1, 'the operator is told the reason');
      assert.equal(err.type, 'unavailable');
      assert.doesNotMatch(err.message, /127\.0\.0\.1|:1\b/);
    } finally {
      down.disconnect();
    }
  });

  it('a command without a reply in timeoutMs fails with a CacheError (a server that accepts and never answers)', async () => {
    // not CLIENT PAUSE: that would stall the other test files sharing this Redis
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((s) => void sockets.add(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const port = (silent.address() as net.AddressInfo).port;
    const stuck = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1 });
    stuck.on('error', () => undefined);
    try {
      const stuckOp = createCacheOp(stuck, { timeoutMs: 200 });
      const err = await refused(
        stuckOp.run({ cmd: 'incr', key: 'stuck' }, ctxA),
        /^cache\.incr failed: no reply from Redis within 200 ms$/,
      );
      assert.equal(err.type, 'timeout');
    } finally {
      stuck.disconnect();
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('an aborted context (isolate disposed) runs nothing', async () => {
    const ac = new AbortController();
    ac.abort(new Error('plugin isolate closed'));
    await assert.rejects(
      op.run({ cmd: 'set', key: 'aborted', value: 'v', ttl: null }, context(teamA, ac.signal)),
      /plugin isolate closed/,
    );
    assert.equal(await redis.exists(cacheKey(teamA, 'aborted')), 0);
  });

  it('declares bridge limits that admit a full-size value', () => {
    const big = JSON.stringify({ cmd: 'set', key: 'x'.repeat(50), value: '"'.repeat(1000), ttl: 60 });
    assert.ok(big.length <= op.maxArgBytes, `${big.length} > ${op.maxArgBytes}`);
    assert.equal(op.errorName, 'CacheError');
    assert.ok(op.concurrency >= 1 && op.maxQueued >= 100);
  });
});
