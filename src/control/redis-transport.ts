import { randomUUID } from 'node:crypto';
import { EVENT_EXCHANGE } from '../../protocol/celery-events';
import { PIDBOX_EXCHANGE, redisFanoutChannel } from '../../protocol/pidbox';
import { buildEnvelope, parseBindingMember, parseEnvelope } from '../../protocol/redis-envelope';
import type { JsonObject } from '../../protocol/types';
import type { EventBody } from '../../protocol/celery-events';
import { kombuBindingKey } from '../brokers/redis/keys';
import type { Logger } from '../log';
import { type BoundedRedis, createRedisClient } from '../redis/client';
import { JSON_CONTENT, type ControlTransport, type MailboxMessage } from './transport';

/**
 * kombu's Redis transport for remote control and events: the `celery.pidbox` and `celeryev` fanout exchanges are
 * pub/sub channels (`/{db}.celery.pidbox`, `/{db}.celeryev/<routing key>`), a reply goes through the direct
 * exchange's binding set (`_kombu.binding.reply.celery.pidbox`) and is LPUSHed to each bound queue. Two
 * connections of its own (a subscriber cannot send other commands).
 */
export class RedisControlTransport implements ControlTransport {
  private readonly sub: BoundedRedis;
  private readonly cmd: BoundedRedis;
  private readonly db: number;

  constructor(
    url: string,
    private readonly logger: Logger,
  ) {
    // Bounded clients (see createRedisClient): while Redis is away an event or reply fails at once; one that
    // late is worthless, and nothing of the event path ever waits on these connections.
    this.sub = createRedisClient(url, { name: `posthog-plugins:control-sub:${process.pid}` });
    this.cmd = createRedisClient(url, { name: `posthog-plugins:control:${process.pid}` });
    this.db = this.cmd.options.db ?? 0;
    for (const c of [this.sub, this.cmd])
      c.on('error', (err: Error) => logger.debug(`remote control redis: ${err.message}`));
  }

  async start(_nodeName: string, onMessage: (m: MailboxMessage) => void): Promise<void> {
    await Promise.all([this.sub.connect(), this.cmd.connect()]);
    const channel = redisFanoutChannel(this.db, PIDBOX_EXCHANGE);
    this.sub.on('message', (ch: string, text: string) => {
      if (ch !== channel) return;
      const env = parseEnvelope(text);
      if (!env.ok) return void this.logger.warn(`remote control: unreadable message on ${channel}: ${env.reason}`);
      let body: unknown;
      try {
        body = JSON.parse(env.message.body.toString('utf8'));
      } catch {
        return void this.logger.warn(`remote control: message on ${channel} is not JSON (${env.message.contentType})`);
      }
      if (typeof body !== 'object' || body === null || Array.isArray(body)) return;
      onMessage({ body: body as JsonObject, headers: env.message.headers });
    });
    // ioredis subscribes again by itself after a reconnect.
    await this.sub.subscribe(channel);
  }

  async reply(exchange: string, routingKey: string, body: JsonObject, headers: JsonObject): Promise<void> {
    // kombu's direct exchange on Redis: the queues bound with this routing key, from the exchange's binding set.
    const members = await this.cmd.smembers(kombuBindingKey(exchange));
    const queues = members
      .map((m) => parseBindingMember(m))
      .filter((b) => b !== null && b.routingKey === routingKey)
      .map((b) => b!.queue);
    if (queues.length === 0) return; // the client is gone: nobody waits for this reply
    const envelope = this.envelope(body, headers, exchange, routingKey);
    const multi = this.cmd.multi();
    for (const q of new Set(queues)) multi.lpush(q, envelope);
    await multi.exec();
  }

  async publishEvent(routingKey: string, body: EventBody, headers: JsonObject): Promise<void> {
    await this.cmd.publish(
      redisFanoutChannel(this.db, EVENT_EXCHANGE, routingKey),
      this.envelope(body, headers, EVENT_EXCHANGE, routingKey),
    );
  }

  async close(): Promise<void> {
    // Nothing of ours is pending once the offline event is out: drop the connections.
    for (const c of [this.sub, this.cmd]) c.disconnect();
  }

  private envelope(body: unknown, headers: JsonObject, exchange: string, routingKey: string): string {
    return buildEnvelope(
      {
        headers,
        properties: { delivery_mode: 1, priority: 0 },
        ...JSON_CONTENT,
        body: Buffer.from(JSON.stringify(body)),
      },
      { deliveryTag: randomUUID(), exchange, routingKey },
    );
  }
}
