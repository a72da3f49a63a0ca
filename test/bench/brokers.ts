/**
 * The harness's side of the brokers: queue the input fast, read the output queue as it fills (arrival times,
 * enqueue-to-output latency from `properties.sent_ms`), and the broker-only ceiling mover.
 */
import amqp from 'amqplib';
import Redis from 'ioredis';
import { amqpPublishOptions } from '../../protocol/amqp-properties';
import {
  amqpMessage,
  benchTask,
  captureMessage,
  INPUT_QUEUE,
  OUTPUT_QUEUE,
  type PacedTemplate,
  pacedTemplate,
  type Producer,
  redisEnvelope,
  stampAmqp,
  stampRedis,
} from './envelopes';
import { nowMs } from './procs';

/** Wall-clock ms with sub-ms precision (what `sent_ms` carries). */
export const epochMs = (): number => performance.timeOrigin + performance.now();

/** One output as the collector saw it. */
export interface Arrival {
  /** performance.now() when the batch holding it was read. */
  at: number;
  /** enqueue-to-output latency in ms, when asked for (decoding every output costs harness CPU). */
  latencyMs?: number;
}

/** What a collector knows after `expected` outputs. */
export interface Collected {
  count: number;
  firstAt: number;
  lastAt: number;
  /** hrtime (µs, CLOCK_MONOTONIC like V8's profiler) of the first and the expected-th output. */
  firstHr: number;
  lastHr: number;
  latencies: number[];
  /** One decoded output ([args, kwargs, embed]) and its headers, to check what the peer published. */
  sample: { headers: Record<string, unknown>; body: unknown } | null;
}

const hrMicros = (): number => Number(process.hrtime.bigint() / 1000n);

/** Decoded process_event output: its kwargs.data.properties (where sent_ms and the added property are). */
export function outputProperties(body: unknown): Record<string, unknown> | null {
  if (!Array.isArray(body) || body.length !== 3) return null;
  const kwargs = body[1] as { data?: { properties?: Record<string, unknown> } };
  return kwargs?.data?.properties ?? null;
}

abstract class CollectorBase {
  protected count = 0;
  protected firstAt = 0;
  protected lastAt = 0;
  protected firstHr = 0;
  protected lastHr = 0;
  protected latencies: number[] = [];
  protected sample: Collected['sample'] = null;
  protected expected = Infinity;
  protected measureLatency = false;
  /** Latencies of outputs whose sent_ms is before this (epoch ms) are dropped (warm-up). */
  protected latencyFrom = 0;
  private waiters: Array<() => void> = [];
  protected lastProgress = nowMs();

  /** Start counting from zero; resolves `done()` when `expected` outputs arrived. */
  reset(expected: number, opts: { latency?: boolean; latencyFrom?: number } = {}): void {
    this.count = 0;
    this.firstAt = this.lastAt = this.firstHr = this.lastHr = 0;
    this.latencies = [];
    this.sample = null;
    this.expected = expected;
    this.measureLatency = opts.latency ?? false;
    this.latencyFrom = opts.latencyFrom ?? 0;
    this.lastProgress = nowMs();
  }

  protected arrived(n: number, at: number, hr: number): void {
    if (n === 0) return;
    if (this.count === 0) {
      this.firstAt = at;
      this.firstHr = hr;
    }
    const before = this.count;
    this.count += n;
    this.lastProgress = at;
    if (before < this.expected && this.count >= this.expected) {
      this.lastAt = at;
      this.lastHr = hr;
      this.waiters.splice(0).forEach((w) => w());
    }
  }

  protected latency(sent: number | null, at: number): void {
    if (sent === null || sent < this.latencyFrom) return;
    this.latencies.push(performance.timeOrigin + at - sent);
  }

  /** Resolves when `expected` outputs arrived; rejects when nothing arrived for `stallMs`. */
  done(stallMs: number, what: string): Promise<Collected> {
    return new Promise((resolve, reject) => {
      const finish = (): void => {
        clearInterval(timer);
        resolve(this.result());
      };
      const timer = setInterval(() => {
        if (nowMs() - this.lastProgress > stallMs) {
          clearInterval(timer);
          reject(new Error(`${what}: no output for ${stallMs} ms, ${this.count} of ${this.expected} arrived`));
        }
      }, 250);
      if (this.count >= this.expected) finish();
      else this.waiters.push(finish);
    });
  }

  result(): Collected {
    return {
      count: this.count,
      firstAt: this.firstAt,
      lastAt: this.lastAt,
      firstHr: this.firstHr,
      lastHr: this.lastHr,
      latencies: this.latencies.slice(),
      sample: this.sample,
    };
  }

  get received(): number {
    return this.count;
  }
}

// ---------------------------------------------------------------------------------------------------------- Redis

export class RedisBench extends CollectorBase {
  readonly cmd: Redis;
  private readonly reader: Redis;
  private running = false;
  private loop: Promise<void> | null = null;

  constructor(readonly url: string) {
    super();
    this.cmd = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 2 });
    this.reader = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: null });
  }

  async connect(): Promise<void> {
    await Promise.all([this.cmd.connect(), this.reader.connect()]);
  }

  async flush(): Promise<void> {
    await this.cmd.flushdb();
  }

  /** LPUSH (like kombu) the bench messages, pipelined in chunks; returns the envelope bytes queued. */
  async queue(
    count: number,
    opts: { teamOf: (i: number) => number; runTag: number; producer: Producer; queue?: string },
  ): Promise<number> {
    const chunk = 500;
    let bytes = 0;
    const sentMs = epochMs();
    for (let start = 0; start < count; start += chunk) {
      const envelopes: string[] = [];
      for (let i = start; i < Math.min(count, start + chunk); i++) {
        const env = redisEnvelope(captureMessage(benchTask(i, opts.teamOf(i), opts.runTag, sentMs), opts.producer));
        bytes += Buffer.byteLength(env);
        envelopes.push(env);
      }
      await this.cmd.lpush(opts.queue ?? INPUT_QUEUE, ...envelopes);
    }
    return bytes;
  }

  /** Reads the output list continuously (BLMPOP up to 1000 at a time) until stop(). */
  startReading(queue = OUTPUT_QUEUE): void {
    if (this.running) return;
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        const reply = (await this.reader.call('BLMPOP', '0.05', '1', queue, 'RIGHT', 'COUNT', '1000')) as
          [string, string[]] | null;
        if (!reply) continue;
        const at = nowMs();
        const hr = hrMicros();
        const items = reply[1];
        if (this.sample === null && items.length > 0) this.sample = decodeRedisOutput(items[0]);
        if (this.measureLatency) for (const item of items) this.latency(sentMsOfEnvelope(item), at);
        this.arrived(items.length, at, hr);
      }
    })();
  }

  async stopReading(): Promise<void> {
    this.running = false;
    await this.loop;
    this.loop = null;
  }

  /** Paced enqueue for the latency phase: `rate` messages/s, `sent_ms` = enqueue time. Returns how many were sent. */
  async paced(rate: number, templates: PacedTemplate[]): Promise<number> {
    return pace(rate, templates.length, async (from, to) => {
      const envelopes: string[] = [];
      const sent = epochMs();
      for (let i = from; i < to; i++) envelopes.push(stampRedis(templates[i], sent));
      await this.cmd.lpush(INPUT_QUEUE, ...envelopes);
    });
  }

  async llen(queue: string): Promise<number> {
    return this.cmd.llen(queue);
  }

  async close(): Promise<void> {
    await this.stopReading();
    this.cmd.disconnect();
    this.reader.disconnect();
  }
}

const SENT_MS = /"sent_ms": ?(\d+(?:\.\d+)?)/;

/** properties.sent_ms of an output envelope, without parsing all of it (harness CPU competes with the peer). */
function sentMsOfEnvelope(text: string): number | null {
  const key = text.indexOf('"body"');
  if (key < 0) return null;
  const open = text.indexOf('"', text.indexOf(':', key) + 1);
  const close = text.indexOf('"', open + 1);
  const m = SENT_MS.exec(Buffer.from(text.slice(open + 1, close), 'base64').toString('latin1'));
  return m ? Number(m[1]) : null;
}

function sentMsOfBody(body: Buffer): number | null {
  const m = SENT_MS.exec(body.toString('latin1'));
  return m ? Number(m[1]) : null;
}

/** Pre-rendered messages for a paced phase (see pacedTemplate). */
export function pacedTemplates(
  count: number,
  opts: { teamOf: (i: number) => number; runTag: number; producer: Producer },
): PacedTemplate[] {
  return Array.from({ length: count }, (_, i) => pacedTemplate(i, opts.teamOf(i), opts.runTag, opts.producer));
}

function decodeRedisOutput(text: string): { headers: Record<string, unknown>; body: unknown } | null {
  try {
    const env = JSON.parse(text) as { headers: Record<string, unknown>; body: string };
    return { headers: env.headers, body: JSON.parse(Buffer.from(env.body, 'base64').toString('utf8')) };
  } catch {
    return null;
  }
}

/** Calls send(from, to) every ~2 ms with the messages due so far at `rate`/s, `total` in all. */
async function pace(rate: number, total: number, send: (from: number, to: number) => Promise<void>): Promise<number> {
  const start = nowMs();
  let sent = 0;
  while (sent < total) {
    const due = Math.min(total, Math.floor(((nowMs() - start) / 1000) * rate) + 1);
    if (due > sent) {
      await send(sent, due);
      sent = due;
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  return sent;
}

/**
 * The broker-only ceiling: the same envelopes moved from the input list to the output list with no decoding, as
 * fast as Redis takes it: one Lua call moves up to `batch` (RPOP count + LPUSH), `depth` calls in flight.
 * Returns messages/s measured from the first call to the last reply.
 */
export async function redisCeiling(
  url: string,
  total: number,
  batch = 1000,
  depth = 4,
): Promise<{ rate: number; ms: number; moved: number }> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 2 });
  await client.connect();
  const script = `local items = redis.call('RPOP', KEYS[1], ARGV[1])
if not items then return 0 end
redis.call('LPUSH', KEYS[2], unpack(items))
return #items`;
  const sha = (await client.script('LOAD', script)) as string;
  let moved = 0;
  const start = nowMs();
  let empty = false;
  const worker = async (): Promise<void> => {
    while (!empty && moved < total) {
      const n = Number(await client.evalsha(sha, 2, INPUT_QUEUE, OUTPUT_QUEUE, String(batch)));
      if (n === 0) empty = true;
      moved += n;
    }
  };
  await Promise.all(Array.from({ length: depth }, worker));
  const ms = nowMs() - start;
  client.disconnect();
  return { rate: (moved / ms) * 1000, ms, moved };
}

// ------------------------------------------------------------------------------------------------------ RabbitMQ

/** How the RabbitMQ relay moves messages (test/bench/amqp-relay.ts compares them). */
export interface RelayOptions {
  /** Messages per publish round: acked together once all their confirms are in. */
  batch: number;
  /** Rounds in flight: the consumer's prefetch is batch × depth. */
  depth: number;
  /** Consume and publish on two connections instead of two channels of one. */
  twoConnections: boolean;
  /** Ack each message of a confirmed round (instead of one multiple ack for the round). */
  ackEach: boolean;
}

/** The relay `make bench` reports as the RabbitMQ ceiling: the fastest of amqp-relay.ts's variants here. */
export const BEST_RELAY: RelayOptions = { batch: 1000, depth: 4, twoConnections: false, ackEach: false };

/**
 * The broker-only ceiling on RabbitMQ, with the guarantees our worker keeps: consume the input (manual acks),
 * publish each body with its properties unchanged to the output queue on a confirm channel (persistent, as Celery
 * publishes), and ack a round once RabbitMQ confirmed all its outputs. No decoding. Returns messages/s from the
 * first delivery to the last ack.
 */
export async function amqpCeiling(
  url: string,
  total: number,
  o: RelayOptions = BEST_RELAY,
): Promise<{ rate: number; ms: number; moved: number }> {
  const subConn = await amqp.connect(url);
  subConn.on('error', () => undefined);
  const pubConn = o.twoConnections ? await amqp.connect(url) : subConn;
  pubConn.on('error', () => undefined);
  try {
    const pub = await pubConn.createConfirmChannel();
    const sub = await subConn.createChannel();
    await sub.prefetch(o.batch * o.depth);
    let moved = 0;
    let taken = 0;
    let start = 0;
    let pending: amqp.ConsumeMessage[] = [];
    let finish!: () => void;
    const done = new Promise<void>((resolve) => (finish = resolve));
    const flush = (): void => {
      const msgs = pending;
      pending = [];
      let left = msgs.length;
      const confirmed = (): void => {
        if (--left > 0) return;
        if (o.ackEach) for (const m of msgs) sub.ack(m);
        else sub.ack(msgs[msgs.length - 1]!, true);
        moved += msgs.length;
        if (moved >= total) finish();
      };
      for (const m of msgs) pub.publish('', OUTPUT_QUEUE, m.content, m.properties, confirmed);
    };
    await sub.consume(INPUT_QUEUE, (msg) => {
      if (!msg) return;
      if (start === 0) start = nowMs();
      taken++;
      pending.push(msg);
      if (pending.length >= o.batch || taken >= total) flush();
    });
    await done;
    const ms = nowMs() - start;
    return { rate: (moved / ms) * 1000, ms, moved };
  } finally {
    await subConn.close().catch(() => undefined);
    if (pubConn !== subConn) await pubConn.close().catch(() => undefined);
  }
}

export class AmqpBench extends CollectorBase {
  private conn: amqp.ChannelModel | null = null;
  private ch: amqp.ConfirmChannel | null = null;
  private readCh: amqp.Channel | null = null;
  private consumerTag: string | null = null;

  constructor(readonly url: string) {
    super();
  }

  async connect(): Promise<void> {
    this.conn = await amqp.connect(this.url);
    this.conn.on('error', () => undefined); // channel errors are handled where they happen
    this.ch = await this.conn.createConfirmChannel();
    // Topology as Celery declares it: a durable direct exchange named like the queue, a durable queue, binding.
    for (const q of [INPUT_QUEUE, OUTPUT_QUEUE]) {
      await this.ch.assertExchange(q, 'direct', { durable: true, autoDelete: false });
      await this.ch.assertQueue(q, { durable: true, exclusive: false, autoDelete: false });
      await this.ch.bindQueue(q, q, q);
    }
  }

  get serverVersion(): string {
    const props = (this.conn as unknown as { connection?: { serverProperties?: Record<string, unknown> } })?.connection
      ?.serverProperties;
    return typeof props?.version === 'string' ? props.version : '?';
  }

  /** Runs fn on a throwaway channel; a missing queue (404 closes the channel) gives null. */
  private async onTempChannel<T>(fn: (ch: amqp.Channel) => Promise<T>): Promise<T | null> {
    const ch = await this.conn!.createChannel();
    ch.on('error', () => undefined);
    try {
      const out = await fn(ch);
      await ch.close().catch(() => undefined);
      return out;
    } catch (err) {
      if (/NOT_FOUND/.test(String(err))) return null;
      throw err;
    }
  }

  async purge(): Promise<void> {
    for (const q of [INPUT_QUEUE, OUTPUT_QUEUE, `${INPUT_QUEUE}.rejected`])
      await this.onTempChannel((ch) => ch.purgeQueue(q));
  }

  /** Ready messages in a queue (0 when it does not exist). */
  async messageCount(queue: string): Promise<number> {
    return (await this.onTempChannel((ch) => ch.checkQueue(queue)))?.messageCount ?? 0;
  }

  /** Publishes like py-amqp (default exchange, routing key = queue), confirmed. */
  async queue(
    count: number,
    opts: { teamOf: (i: number) => number; runTag: number; producer: Producer },
  ): Promise<number> {
    const sentMs = epochMs();
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      const m = amqpMessage(captureMessage(benchTask(i, opts.teamOf(i), opts.runTag, sentMs), opts.producer));
      bytes += m.body.length;
      if (!this.ch!.publish('', INPUT_QUEUE, m.body, m.options)) await new Promise((r) => this.ch!.once('drain', r));
      if (i % 2000 === 1999) await this.ch!.waitForConfirms();
    }
    await this.ch!.waitForConfirms();
    return bytes;
  }

  async paced(rate: number, templates: PacedTemplate[]): Promise<number> {
    const options = templates.map((t) => amqpPublishOptions(t.message));
    return pace(rate, templates.length, async (from, to) => {
      const sent = epochMs();
      for (let i = from; i < to; i++) this.ch!.publish('', INPUT_QUEUE, stampAmqp(templates[i], sent), options[i]);
    });
  }

  async startReading(): Promise<void> {
    if (this.readCh) return;
    this.readCh = await this.conn!.createChannel();
    this.readCh.on('error', () => undefined);
    const { consumerTag } = await this.readCh.consume(
      OUTPUT_QUEUE,
      (msg) => {
        if (!msg) return;
        const at = nowMs();
        const hr = hrMicros();
        if (this.sample === null) {
          let body: unknown = null;
          try {
            body = JSON.parse(msg.content.toString('utf8'));
          } catch {
            /* counted anyway */
          }
          this.sample = { headers: (msg.properties.headers ?? {}) as Record<string, unknown>, body };
        }
        if (this.measureLatency) this.latency(sentMsOfBody(msg.content), at);
        this.arrived(1, at, hr);
      },
      { noAck: true },
    );
    this.consumerTag = consumerTag;
  }

  async stopReading(): Promise<void> {
    if (!this.readCh) return;
    if (this.consumerTag) await this.readCh.cancel(this.consumerTag).catch(() => undefined);
    await this.readCh.close().catch(() => undefined);
    this.readCh = null;
    this.consumerTag = null;
  }

  async close(): Promise<void> {
    await this.stopReading();
    await this.conn?.close().catch(() => undefined);
    this.conn = null;
  }
}
