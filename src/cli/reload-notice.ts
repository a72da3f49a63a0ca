import type { Options } from 'yargs';
import { connectionOptions, reloadOptions } from '../config';
import type { Logger } from '../log';

/** Where a command that changed plugins tells running workers: the same Redis and channel `start` listens on. */
export const announceOptions = {
  broker: connectionOptions.broker,
  'redis-url': reloadOptions['redis-url'],
  'reload-channel': reloadOptions['reload-channel'],
} satisfies Record<string, Options>;

export interface AnnounceTarget {
  broker: string;
  redisUrl: string;
  reloadChannel: string;
}

export function announceTargetFrom(argv: {
  broker: string;
  'redis-url': string;
  'reload-channel': string;
}): AnnounceTarget {
  return { broker: argv.broker, redisUrl: argv['redis-url'], reloadChannel: argv['reload-channel'] };
}

/**
 * Publish on PostHog's reload channel, as Django does after saving a plugin, config or attachment (the message is
 * Django's "reload!"; workers reload on any message). The change is already stored: when Redis cannot be reached
 * the command says so and still succeeds, and workers pick the change up at their next reload or restart.
 */
export async function announceReload(target: AnnounceTarget, logger: Logger): Promise<void> {
  const url = target.redisUrl || (/^rediss?:/i.test(target.broker) ? target.broker : '');
  if (target.reloadChannel === '' || url === '') {
    logger.warn(
      'running workers were not told (no --reload-channel, or no Redis: set --redis-url); they see this change at their next restart',
    );
    return;
  }
  const { default: Redis } = await import('ioredis'); // loaded only by the commands that announce
  const redis = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    connectTimeout: 5000,
    retryStrategy: () => null,
  });
  let cause = '';
  redis.on('error', (err: Error) => (cause = err.message)); // the failed publish below says it once
  try {
    await redis.connect();
    const listeners = await redis.publish(target.reloadChannel, 'reload!');
    logger.info(`announced on Redis channel ${target.reloadChannel}: ${listeners} running worker(s) reload now`);
  } catch (err) {
    logger.warn(
      `could not announce on Redis channel ${target.reloadChannel} (${maskUrl(url)}): ${cause || (err as Error).message}; running workers see this change at their next restart`,
    );
  } finally {
    redis.disconnect();
  }
}

function maskUrl(url: string): string {
  return url.replace(/(\/\/[^:/@]*:)[^@]*@/, '$1***@');
}
