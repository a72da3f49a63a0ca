import { redisBackoff, reportRedisOutages } from '../../brokers/connect-errors';
import type { Logger } from '../../log';
import { type BoundedRedis, createRedisClient } from '../../redis/client';

/**
 * PostHog publishes on Redis channel `reload-plugins` whenever a plugin, config or attachment is saved. Each
 * message triggers a reload; a burst of messages (Django saves several rows at once) is coalesced into one, and
 * a message that arrives during a reload causes one more reload afterwards, so the last change is never missed.
 * The subscriber reconnects by itself and subscribes on every connection (also when Redis was down at start).
 * Announcements made while it was away are lost with the connection, so each reconnect reloads once. Losing it
 * never stops event processing.
 */
export class ReloadListener {
  private readonly redis: BoundedRedis;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private subscribedBefore = false;

  constructor(
    url: string,
    private readonly channel: string,
    private readonly reload: () => Promise<void>,
    private readonly logger: Logger,
    private readonly debounceMs = 250,
  ) {
    this.redis = createRedisClient(url, { name: `posthog-plugins:reload:${process.pid}`, ...redisBackoff });
    reportRedisOutages(this.redis, `reload channel ${channel}`, logger);
    this.redis.on('message', (ch: string) => {
      if (ch === this.channel) this.schedule();
    });
    this.redis.on('ready', () => void this.subscribe());
  }

  /** Connects; a Redis that is down is retried in the background (the 'ready' of a later attempt subscribes). */
  async start(): Promise<void> {
    await this.redis.connect().catch(() => undefined);
  }

  private async subscribe(): Promise<void> {
    try {
      await this.redis.subscribe(this.channel); // idempotent: ioredis may have resubscribed already
    } catch (err) {
      return void this.logger.warn(`reload channel ${this.channel}: cannot subscribe: ${(err as Error).message}`);
    }
    if (!this.subscribedBefore) {
      this.subscribedBefore = true;
      return void this.logger.info(`listening for plugin changes on Redis channel ${this.channel}`);
    }
    this.logger.info(`reload channel ${this.channel} back: reloading once for changes announced while it was away`);
    this.schedule();
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.running) {
        this.again = true;
        return;
      }
      this.running = this.run().finally(() => (this.running = null));
    }, this.debounceMs);
  }

  private async run(): Promise<void> {
    do {
      this.again = false;
      try {
        await this.reload();
        this.logger.info(`plugins reloaded (${this.channel})`);
      } catch (err) {
        this.logger.error(`plugin reload failed: ${(err as Error).message}`);
      }
    } while (this.again);
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.redis.disconnect();
    await this.running;
  }
}
