import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import Redis from 'ioredis';
import { ReloadListener } from '../../../src/plugins/background/reload-listener';
import { type PrivateRedis, startPrivateRedis } from '../../helpers/private-redis';
import { waitUntil } from '../../helpers/services';
import { captureLogger } from '../helpers';

const CHANNEL = 'reload-plugins';

/** Whether something accepts connections on the port right now. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('error', () => resolve(false));
  });
}

/**
 * PostHog's reload announcements against a Redis that comes and goes (a private server): the listener subscribes
 * whenever it gets a connection, and reloads once after a reconnect, since what was announced meanwhile is lost.
 */
describe('ReloadListener: a Redis that is down at start, and one that drops the subscriber', () => {
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

  test('subscribes once Redis is up, hears announcements, and reloads once after losing its connection', async () => {
    const { logger, logs } = captureLogger();
    let reloads = 0;
    const listener = new ReloadListener(redis.url(0), CHANNEL, async () => void reloads++, logger, 10);
    try {
      const restarting = redis.restart({ downMs: 2_000 });
      await waitUntil(async () => !(await listening(redis.port)), 10_000, 'Redis down');
      await listener.start(); // does not throw: Redis is retried in the background
      assert.ok(
        !logs.some((l) => l.message.startsWith('listening for plugin changes')),
        'not subscribed while Redis is down',
      );
      await restarting;
      await waitUntil(
        () => logs.some((l) => l.message === `listening for plugin changes on Redis channel ${CHANNEL}`),
        20_000,
        'subscribed after Redis came up',
      );
      assert.equal(reloads, 0, 'the first subscription reloads nothing');

      // Published until one reaches a subscriber: exactly one announcement is heard.
      await waitUntil(async () => (await admin.publish(CHANNEL, 'reload!')) > 0, 10_000, 'a subscriber on the channel');
      await waitUntil(() => reloads === 1, 10_000, 'the announcement reloads');
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(reloads, 1, 'one announcement, one reload');

      // The subscriber's connection is killed: whatever was announced until it is back is lost, so it reloads once.
      const list = (await admin.client('LIST')) as string;
      const id = list
        .split('\n')
        .find((l) => l.includes(` name=posthog-plugins:reload:${process.pid} `))
        ?.match(/(?:^| )id=(\d+)/)?.[1];
      assert.ok(id, `the subscriber's connection in CLIENT LIST:\n${list}`);
      await admin.client('KILL', 'ID', id);
      await waitUntil(() => reloads === 2, 20_000, 'one reload after the subscriber is back');
      assert.ok(
        logs.some((l) => l.message.startsWith(`reload channel ${CHANNEL} back`)),
        'the log says why it reloaded',
      );

      await waitUntil(async () => (await admin.publish(CHANNEL, 'reload!')) > 0, 10_000, 'subscribed again');
      await waitUntil(() => reloads === 3, 10_000, 'announcements heard again');
    } finally {
      await listener.stop();
    }
  });
});
