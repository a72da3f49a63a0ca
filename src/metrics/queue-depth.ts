import * as amqp from 'amqplib';
import type { ChannelModel } from 'amqplib';
import { consumeKeys } from '../../protocol/redis-envelope';
import { connectTarget, parseAmqpUrl } from '../brokers/amqp/url';
import { type BoundedRedis, createRedisClient } from '../redis/client';

/** Messages waiting in each queue, read at scrape time on a connection of its own. */
export interface QueueDepthSampler {
  sample(queues: readonly string[]): Promise<Map<string, number>>;
  close(): Promise<void>;
}

/** Redis: the lengths of the queue's priority lists (a `.rejected` list has only one). */
class RedisDepth implements QueueDepthSampler {
  private readonly client: BoundedRedis;

  constructor(url: string) {
    this.client = createRedisClient(url, { name: `posthog-plugins:metrics:${process.pid}`, lazyConnect: false });
    this.client.on('error', () => undefined); // a failed sample leaves the gauge out of that scrape
  }

  async sample(queues: readonly string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    const pipe = this.client.pipeline();
    const keys = queues.map((q) => (q.endsWith('.rejected') ? [q] : consumeKeys(q)));
    for (const ks of keys) for (const k of ks) pipe.llen(k);
    const results = (await pipe.exec()) ?? [];
    let i = 0;
    queues.forEach((q, n) => {
      let total = 0;
      for (let k = 0; k < (keys[n] as string[]).length; k++) {
        const [err, len] = results[i++] ?? [null, 0];
        if (!err) total += Number(len);
      }
      out.set(q, total);
    });
    return out;
  }

  async close(): Promise<void> {
    this.client.disconnect();
  }
}

/** RabbitMQ: queue.declare passive (message count); a missing queue is left out. */
class AmqpDepth implements QueueDepthSampler {
  private conn: Promise<ChannelModel> | null = null;

  constructor(private readonly url: string) {}

  private connection(): Promise<ChannelModel> {
    if (!this.conn) {
      const u = parseAmqpUrl(this.url);
      this.conn = amqp.connect({
        ...connectTarget(u),
        heartbeat: 60,
      });
      this.conn.then(
        (c) => {
          c.on('error', () => undefined);
          c.on('close', () => (this.conn = null));
        },
        () => (this.conn = null),
      );
    }
    return this.conn;
  }

  async sample(queues: readonly string[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    const conn = await this.connection();
    for (const q of queues) {
      // A passive declare of a missing queue closes the channel: one channel per queue.
      const ch = await conn.createChannel();
      ch.on('error', () => undefined);
      try {
        out.set(q, (await ch.checkQueue(q)).messageCount);
        await ch.close();
      } catch {
        // not declared (yet)
      }
    }
    return out;
  }

  async close(): Promise<void> {
    const c = this.conn;
    this.conn = null;
    if (c) await c.then((x) => x.close()).catch(() => undefined);
  }
}

export function queueDepthSampler(brokerUrl: string): QueueDepthSampler {
  return /^rediss?:/i.test(brokerUrl) ? new RedisDepth(brokerUrl) : new AmqpDepth(brokerUrl);
}
