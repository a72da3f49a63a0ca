import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Redis from 'ioredis';
import { createRedisClient } from '../../src/redis/client';
import { type PrivateRedis, startPrivateRedis } from '../helpers/private-redis';
import { waitUntil } from '../helpers/services';

/**
 * The bounded Redis client every part of the worker uses: an await on Redis always ends. Against a private Redis
 * server (it is paused, its connections killed, and it is restarted).
 */
describe('createRedisClient: no await on Redis without an end', () => {
  let redis: PrivateRedis;
  let admin: Redis;

  before(async () => {
    redis = await startPrivateRedis({ appendonly: false });
    admin = new Redis(redis.url(0), { maxRetriesPerRequest: null, retryStrategy: () => 100 });
    admin.on('error', () => undefined);
  });
  after(async () => {
    admin?.disconnect();
    await redis?.stop();
  });

  const killByName = async (name: string): Promise<void> => {
    const list = (await admin.client('LIST')) as string;
    const ids = list
      .split('\n')
      .filter((l) => l.includes(` name=${name} `))
      .map((l) => /(?:^| )id=(\d+)/.exec(l)?.[1]);
    assert.ok(ids.length > 0, `a connection named ${name}`);
    for (const id of ids) await admin.client('KILL', 'ID', id as string);
  };

  test('a command in flight when its connection is killed is rejected, and the client works again after', async () => {
    const client = createRedisClient(redis.url(0), { name: 'bounded-kill' });
    client.on('error', () => undefined);
    await client.connect();
    try {
      // Blocks 30 s unless the connection goes: the reply is only ever "lost".
      // Both rejections are expected as soon as the connection dies, possibly in the same tick: take them up now,
      // or the one not yet awaited counts as an unhandled rejection and fails the test.
      const pending = assert.rejects(
        client.blpop('bounded:never', 30),
        /connection to Redis closed before the reply to BLPOP \(bounded-kill\): it may or may not have run/,
      );
      const pendingMulti = assert.rejects(client.multi().set('bounded:a', '1').blpop('bounded:never', 30).exec());
      await waitUntil(
        async () => ((await admin.client('LIST')) as string).includes('cmd=blpop'),
        10_000,
        'BLPOP on the server',
      );
      await killByName('bounded-kill');
      await pending;
      await pendingMulti;
      // Reconnects by itself (with its name) and serves the next command.
      assert.equal(await waitUntil(() => client.ping().catch(() => null), 10_000, 'PONG again'), 'PONG');
      assert.match((await admin.client('LIST')) as string, / name=bounded-kill /);
    } finally {
      client.disconnect();
    }
  });

  test('a killed connection does not take its replacement down later (no stale socket timer)', async () => {
    const client = createRedisClient(redis.url(0), { name: 'bounded-stale', socketTimeoutMs: 3_000 });
    const errors: string[] = [];
    client.on('error', (err: Error) => errors.push(err.message));
    await client.connect();
    try {
      // Written, unanswered (blocking), then its connection is killed: the socket timer was armed for it.
      const pending = assert.rejects(client.blpop('bounded:never', 30)); // taken up now: it rejects at the kill
      await waitUntil(
        async () => ((await admin.client('LIST')) as string).includes('name=bounded-stale age'),
        10_000,
        'the connection',
      );
      await killByName('bounded-stale');
      await pending;
      await waitUntil(() => client.ping().catch(() => null), 10_000, 'PONG again');
      const id = await client.client('ID');
      // Past the moment the old connection's timer would have fired (3 s after the BLPOP was written).
      await new Promise((r) => setTimeout(r, 4_000));
      assert.equal(await client.client('ID'), id, 'still the same connection');
      assert.deepEqual(
        errors.filter((e) => /Socket timeout/.test(e)),
        [],
      );
    } finally {
      client.disconnect();
    }
  });

  test('while Redis is down a command fails at once instead of waiting for the reconnect', async () => {
    const client = createRedisClient(redis.url(0), { name: 'bounded-down' });
    client.on('error', () => undefined);
    await client.connect();
    try {
      const restarted = redis.restart({ downMs: 3_000 });
      await waitUntil(() => client.status !== 'ready', 10_000, 'client notices Redis is gone');
      await assert.rejects(client.get('bounded:x'), /Stream isn't writeable/);
      await restarted;
      assert.equal(await waitUntil(() => client.ping().catch(() => null), 15_000, 'PONG after the restart'), 'PONG');
    } finally {
      client.disconnect();
    }
  });

  test('a connection that stops answering (half-open) is dropped after the socket timeout and rebuilt', async () => {
    const client = createRedisClient(redis.url(0), { name: 'bounded-silent', socketTimeoutMs: 500 });
    client.on('error', () => undefined);
    await client.connect();
    try {
      // The server holds every write until UNPAUSE, as a dead peer would forever: only the timeout can end it.
      await admin.client('PAUSE', '600000', 'WRITE');
      await assert.rejects(client.set('bounded:y', '1'), /connection to Redis closed before the reply to SET/);
      await admin.client('UNPAUSE');
      assert.equal(await waitUntil(() => client.ping().catch(() => null), 15_000, 'PONG after the pause'), 'PONG');
    } finally {
      await admin.client('UNPAUSE').catch(() => undefined);
      client.disconnect();
    }
  });
});
