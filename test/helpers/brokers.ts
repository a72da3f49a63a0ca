import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import amqp from 'amqplib';
import Redis from 'ioredis';
import { amqpUrl, deleteVhost, flushRedisDb, redisUrl, resetVhost } from './services';
import { needsServices } from './needs-services';

needsServices('Redis and RabbitMQ (test/helpers/brokers)');

const execFileAsync = promisify(execFile);

/**
 * One broker as the integration suite sees it, so the same suite runs on Redis and on RabbitMQ.
 * `pushRaw` injects hand-made bad messages; `setAside` reads what the worker set aside with reasons;
 * `unsettled` counts messages of a queue taken but not yet acked (must be 0 when the worker is done).
 */
export interface BrokerFixture {
  readonly kind: 'redis' | 'amqp';
  readonly url: string;
  reset(): Promise<void>;
  pushRaw(queue: string, messages: RawInjection[]): Promise<void>;
  setAside(queue: string): Promise<Array<{ reason: string }>>;
  unsettled(queue: string): Promise<number>;
  /** Disconnect and remove what the test left: the Redis db is flushed, the RabbitMQ vhost deleted. */
  close(): Promise<void>;
}

/** A deliberately broken message: each broker renders it in its own wire form. */
export type RawInjection =
  | { kind: 'not-json' }
  | { kind: 'content-type'; contentType: string }
  | { kind: 'v2-body'; headers: Record<string, unknown>; body: string };

export function redisFixture(db: number): BrokerFixture {
  const url = redisUrl(db);
  const redis = new Redis(url, { lazyConnect: true });
  const envelope = (
    queue: string,
    headers: Record<string, unknown>,
    body: string,
    contentType = 'application/json',
  ): string =>
    JSON.stringify({
      body: Buffer.from(body).toString('base64'),
      'content-encoding': 'utf-8',
      'content-type': contentType,
      headers,
      properties: {
        correlation_id: String(headers['id'] ?? 'x'),
        reply_to: '',
        delivery_mode: 2,
        delivery_info: { exchange: '', routing_key: queue },
        priority: 0,
        body_encoding: 'base64',
        delivery_tag: `bad-${Math.random().toString(36).slice(2)}`,
      },
    });
  return {
    kind: 'redis',
    url,
    reset: () => flushRedisDb(db),
    async pushRaw(queue, messages) {
      for (const m of messages) {
        const text =
          m.kind === 'not-json'
            ? 'this is not an envelope'
            : m.kind === 'content-type'
              ? envelope(
                  queue,
                  { lang: 'py', task: 'posthog.tasks.process_event.process_event_with_plugins', id: 'ct-1' },
                  '<xml/>',
                  m.contentType,
                )
              : envelope(queue, m.headers, m.body);
        await redis.lpush(queue, text);
      }
    },
    async setAside(queue) {
      const items = await redis.lrange(`${queue}.rejected`, 0, -1);
      return items.map((i) => JSON.parse(i) as { reason: string });
    },
    async unsettled(queue) {
      const records = await redis.hvals('unacked');
      return records.filter((r) => (JSON.parse(r) as [unknown, string, string])[2] === queue).length;
    },
    async close() {
      redis.disconnect();
      await flushRedisDb(db);
    },
  };
}

export function amqpFixture(vhost: string): BrokerFixture {
  const url = amqpUrl(vhost);
  let conn: amqp.ChannelModel | null = null;
  const connection = async (): Promise<amqp.ChannelModel> => (conn ??= await amqp.connect(url));
  return {
    kind: 'amqp',
    url,
    reset: () => resetVhost(vhost),
    async pushRaw(queue, messages) {
      const ch = await (await connection()).createConfirmChannel();
      for (const m of messages) {
        const id = m.kind === 'v2-body' ? String(m.headers['id']) : 'raw';
        const [body, contentType, headers] =
          m.kind === 'not-json'
            ? ['this is not a message', 'application/json', {}]
            : m.kind === 'content-type'
              ? [
                  '<xml/>',
                  m.contentType,
                  { lang: 'py', task: 'posthog.tasks.process_event.process_event_with_plugins', id: 'ct-1' },
                ]
              : [m.body, 'application/json', m.headers];
        ch.sendToQueue(queue, Buffer.from(body), {
          contentType,
          contentEncoding: 'utf-8',
          headers,
          deliveryMode: 2,
          correlationId: id,
        });
      }
      await ch.waitForConfirms();
      await ch.close();
    },
    async setAside(queue) {
      // Read without consuming: get everything unacked, then close the channel so it all goes back.
      const ch = await (await connection()).createChannel();
      const out: Array<{ reason: string }> = [];
      try {
        for (;;) {
          const msg = await ch.get(`${queue}.rejected`, { noAck: false });
          if (msg === false) break;
          out.push(JSON.parse(msg.content.toString()) as { reason: string });
        }
      } catch (err) {
        if (!/NOT_FOUND/.test(String(err))) throw err;
        return out;
      }
      await ch.close();
      return out;
    },
    async unsettled(queue) {
      const { stdout } = await execFileAsync('rabbitmqctl', [
        '-q',
        'list_queues',
        '-p',
        vhost,
        'name',
        'messages_unacknowledged',
        '--no-table-headers',
      ]);
      return stdout
        .split('\n')
        .map((l) => l.trim().split(/\s+/))
        .filter((cols) => cols.length === 2 && cols[0] === queue)
        .reduce((sum, cols) => sum + Number(cols[1]), 0);
    },
    async close() {
      await conn?.close().catch(() => undefined);
      conn = null;
      await deleteVhost(vhost);
    },
  };
}
