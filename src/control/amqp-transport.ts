import '../brokers/amqp/amqplib-compat'; // py-amqp's 64-bit header integers (the `clock` header) decode
import * as amqp from 'amqplib';
import type { Channel, ChannelModel } from 'amqplib';
import { EVENT_EXCHANGE } from '../../protocol/celery-events';
import type { EventBody } from '../../protocol/celery-events';
import { jsonFromFieldValue } from '../../protocol/amqp-properties';
import { isJsonObject } from '../../protocol/json';
import { NODE_QUEUE_ARGUMENTS, PIDBOX_EXCHANGE, nodeQueueName } from '../../protocol/pidbox';
import type { JsonObject } from '../../protocol/types';
import { connectTarget, parseAmqpUrl, type AmqpUrl } from '../brokers/amqp/url';
import type { Logger } from '../log';
import { JSON_CONTENT, type ControlTransport, type MailboxMessage } from './transport';

/**
 * Remote control and events on RabbitMQ, declared exactly as kombu declares them (a different argument would
 * make RabbitMQ refuse Python's own declarations): fanout exchange `celery.pidbox` (not durable), the node's
 * queue `<node>.celery.pidbox` (auto-delete, x-expires 10 s, x-message-ttl 300 s) consumed without acks,
 * replies on the direct exchange `reply.celery.pidbox`, events on the durable topic exchange `celeryev`. Its
 * own connection; reconnects with backoff (0.5 s doubling to 10 s) when it is lost.
 */
export class AmqpControlTransport implements ControlTransport {
  private readonly url: AmqpUrl;
  private conn: ChannelModel | null = null;
  private ch: Channel | null = null;
  private closing = false;
  private nodeName = '';
  private onMessage: (m: MailboxMessage) => void = () => undefined;
  private readonly declared = new Set<string>();

  constructor(
    url: string,
    private readonly logger: Logger,
  ) {
    this.url = parseAmqpUrl(url);
  }

  async start(nodeName: string, onMessage: (m: MailboxMessage) => void): Promise<void> {
    this.nodeName = nodeName;
    this.onMessage = onMessage;
    await this.open();
  }

  async reply(exchange: string, routingKey: string, body: JsonObject, headers: JsonObject): Promise<void> {
    await this.publish(exchange, 'direct', { durable: false }, routingKey, body, headers);
  }

  async publishEvent(routingKey: string, body: EventBody, headers: JsonObject): Promise<void> {
    await this.publish(EVENT_EXCHANGE, 'topic', { durable: true }, routingKey, body, headers);
  }

  async close(): Promise<void> {
    this.closing = true;
    try {
      // The channel first: its close follows the last publish (worker-offline) on the same channel, whereas a
      // connection close could overtake frames still queued for the channel.
      await this.ch?.close();
      await this.conn?.close();
    } catch {
      // already gone
    }
  }

  private async publish(
    exchange: string,
    type: string,
    opts: { durable: boolean },
    routingKey: string,
    body: unknown,
    headers: JsonObject,
  ): Promise<void> {
    const ch = this.ch;
    if (!ch) return; // reconnecting: an event or reply now would be stale by the time it could go out
    if (!this.declared.has(exchange)) {
      await ch.assertExchange(exchange, type, { ...opts, autoDelete: false });
      this.declared.add(exchange);
    }
    ch.publish(exchange, routingKey, Buffer.from(JSON.stringify(body)), {
      ...JSON_CONTENT,
      headers,
      deliveryMode: 1,
      priority: 0,
    });
  }

  private async open(): Promise<void> {
    const u = this.url;
    const conn = await amqp.connect(
      {
        ...connectTarget(u),
        heartbeat: u.heartbeat ?? 60,
      },
      {
        noDelay: true,
        clientProperties: { connection_name: `posthog-plugins control ${this.nodeName}` },
        ...(u.tls ? { servername: u.hostname } : {}),
      },
    );
    conn.on('error', (err: Error) => this.logger.debug(`remote control connection: ${err.message}`));
    try {
      await this.setUp(conn);
    } catch (err) {
      await conn.close().catch(() => undefined);
      throw err;
    }
    conn.on('close', () => {
      this.conn = null;
      this.ch = null;
      this.declared.clear();
      if (!this.closing) this.reconnect(500);
    });
  }

  private async setUp(conn: ChannelModel): Promise<void> {
    const ch = await conn.createChannel();
    ch.on('error', (err: Error) => this.logger.warn(`remote control channel closed: ${err.message}`));
    ch.on('close', () => {
      // A channel error (e.g. a reply exchange that vanished) closes only the channel: start over.
      if (!this.closing && this.conn === conn) void conn.close().catch(() => undefined);
    });
    await ch.assertExchange(PIDBOX_EXCHANGE, 'fanout', { durable: false, autoDelete: false });
    const queue = nodeQueueName(this.nodeName);
    await ch.assertQueue(queue, { durable: false, autoDelete: true, arguments: { ...NODE_QUEUE_ARGUMENTS } });
    await ch.bindQueue(queue, PIDBOX_EXCHANGE, '');
    await ch.consume(
      queue,
      (msg) => {
        if (!msg) return;
        let body: unknown;
        try {
          body = JSON.parse(msg.content.toString('utf8'));
        } catch {
          return void this.logger.warn(
            `remote control: message on ${queue} is not JSON (${msg.properties.contentType})`,
          );
        }
        if (typeof body !== 'object' || body === null || Array.isArray(body)) return;
        const headers = jsonFromFieldValue(msg.properties.headers ?? {});
        this.onMessage({ body: body as JsonObject, headers: isJsonObject(headers) ? headers : {} });
      },
      { noAck: true },
    );
    this.conn = conn;
    this.ch = ch;
  }

  private reconnect(delayMs: number): void {
    setTimeout(() => {
      if (this.closing) return;
      this.open().catch((err: Error) => {
        this.logger.warn(
          `remote control: cannot reconnect to ${this.url.displayUrl}: ${err.message}; retrying in ${delayMs} ms`,
        );
        this.reconnect(Math.min(delayMs * 2, 10_000));
      });
    }, delayMs).unref();
  }
}
