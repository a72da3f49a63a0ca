import type { Logger } from '../log';
import { type BoundedRedis, createRedisClient } from '../redis/client';

/**
 * PostHog publishes on Redis channel `reload-plugins` whenever a plugin, config or attachment is saved. Each
 * message triggers a reload; a burst of messages (Django saves several rows at once) is coalesced into one, and
 * a message that arrives during a reload causes one more reload afterwards, so the last change is never missed.
 * The subscriber reconnects and resubscribes by itself; losing it never stops event processing.
 */
export class ReloadListener {
  private readonly redis: BoundedRedis;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;

  constructor(
    url: string,
    private readonly channel: string,
    private readonly reload: () => Promise<void>,
    private readonly logger: Logger,
    private readonly debounceMs = 250,
  ) {
    this.redis = createRedisClient(url, { name: `posthog-plugins:reload:${process.pid}` });
    this.redis.on('error', (err: Error) => logger.warn(`reload channel: redis error: ${err.message}`));
    this.redis.on('message', (ch: string) => {
      if (ch === this.channel) this.schedule();
    });
  }

  async start(): Promise<void> {
    await this.redis.connect();
    await this.redis.subscribe(this.channel);
    this.logger.info(`listening for plugin changes on Redis channel ${this.channel}`);
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
