import { redisBackoff, reportRedisOutages } from '../brokers/connect-errors';
import { leaseKey } from '../brokers/redis/keys';
import { RESTORE_SCRIPT, type ScriptedRedis } from '../brokers/redis/scripts';
import { UnackedRestorer } from '../brokers/redis/unacked-restorer';
import type { Logger } from '../log';
import { createRedisClient } from '../redis/client';

/**
 * The supervisor's own Redis connection, used for one thing: the moment a worker process dies, put the
 * messages it held (in-flight set and landing list) back at the front of the queue, instead of waiting for a
 * sibling's dead-worker scan. Restores are idempotent (first restorer wins), so racing a sibling is harmless.
 */
export class DeadWorkerRestorer {
  private readonly redis: ScriptedRedis;
  private readonly restorer: UnackedRestorer;

  constructor(
    url: string,
    private readonly inputQueue: string,
    logger: Logger,
  ) {
    // Bounded (see createRedisClient): with Redis down a restore fails at once (siblings' scans or lease expiry
    // take over), so a supervisor never waits on Redis, not even while stopping.
    this.redis = createRedisClient(url, {
      name: 'posthog-plugins:supervisor',
      lazyConnect: false,
      ...redisBackoff,
    }) as ScriptedRedis;
    reportRedisOutages(this.redis, 'supervisor Redis', logger);
    this.redis.defineCommand('phRestore', { lua: RESTORE_SCRIPT });
    this.restorer = new UnackedRestorer(this.redis, logger);
  }

  /** Returns how many messages went back to the queue. */
  async restore(workerId: string): Promise<number> {
    const restored = await this.restorer.restoreWorker(workerId, this.inputQueue);
    await this.redis.del(leaseKey(workerId));
    return restored;
  }

  async close(): Promise<void> {
    await this.redis.quit().catch(() => this.redis.disconnect());
  }
}
