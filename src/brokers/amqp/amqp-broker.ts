// Must stay the first import: it patches amqplib's field-table decoder before amqplib loads (see the file).
import { amqplibPatchState } from './amqplib-compat';
import type { ConnectionOptions as TlsOptions } from 'node:tls';
import type { JsonValue } from '../../../protocol/types';
import type { Logger } from '../../log';
import type { Broker, Delivery, Outgoing, SetAsideListener, Settlement } from '../broker';
import { Consumer } from './consumer';
import { Publisher } from './publisher';
import { ReconnectingSession, type Session } from './session';
import { Settler } from './settler';
import { Topology } from './topology';
import { parseAmqpUrl, type AmqpUrl } from './url';

export interface AmqpBrokerOptions {
  /** `amqp://user:pass@host:port/vhost`, `amqps://…`; `//` at the end means vhost "/". */
  url: string;
  inputQueue: string;
  outputQueue: string;
  /** Where rejected / unreadable messages go, as JSON records {reason, time, queue, message}. Default `<inputQueue>.rejected`. */
  setAsideQueue?: string;
  /** basic.qos prefetch_count, channel-global like Celery on RabbitMQ. Pass concurrency × multiplier. Default 64. */
  prefetch?: number;
  /** Only check that the queues exist (checkQueue/checkExchange); declare nothing. For queues declared with other arguments. */
  passive?: boolean;
  /** Arguments for declaring the input/output queues (and other publish destinations), e.g. {'x-max-priority': 10}. */
  queueArguments?: Record<string, unknown>;
  /**
   * Arguments for the output queue and any other destination. Separate from the input's because PostHog's Python
   * workers declare `celery` themselves (without arguments by default): both sides must declare it identically.
   */
  outputQueueArguments?: Record<string, unknown>;
  /** Heartbeat in seconds (0 = off). Default: the URL's `?heartbeat=`, else 60. */
  heartbeat?: number;
  logger: Logger;
  /** Called when the broker set a message aside on its own (its AMQP headers could not be decoded). */
  onSetAside?: SetAsideListener;
  /** Called each time a lost connection is made again (metrics). */
  onReconnect?: () => void;
  /** AMQP frame_max in bytes. Default: the URL's `?frame_max=`, else 131072 (RabbitMQ's default). */
  frameMax?: number;
  /** TCP+AMQP handshake timeout. Default: the URL's `?connection_timeout=` (seconds), else 10 s. */
  connectionTimeoutMs?: number;
  /** Reconnect backoff: first delay, doubled per failed attempt up to the max. Default 500 ms → 10 s. */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** How long publish() waits for a lost connection to come back before it throws. Default 30 s. */
  publishWaitMs?: number;
  /** Bound on each step of close() (cancel, waiting for settlements in flight, connection close). Default 5 s. */
  closeTimeoutMs?: number;
  /** Extra TLS options for amqps:// (ca, cert, key, rejectUnauthorized, servername). */
  tls?: TlsOptions;
  /** Shown in the RabbitMQ management UI / `rabbitmqctl list_connections client_properties`. */
  connectionName?: string;
}

const DEFAULTS = {
  prefetch: 64,
  heartbeat: 60,
  frameMax: 131072,
  connectionTimeoutMs: 10_000,
  reconnectMinMs: 500,
  reconnectMaxMs: 10_000,
  publishWaitMs: 30_000,
  closeTimeoutMs: 5_000,
};

/**
 * Celery's kombu `pyamqp` transport on RabbitMQ, consumer and producer side: a facade over its parts.
 *
 * - Topology as Celery declares it (durable direct exchange named like the queue, durable queue, binding key =
 *   queue name, arguments only when configured), or passive checks only (topology.ts). Publishing through the
 *   default exchange with routing key = queue name, `mandatory` so an unroutable output is noticed instead of
 *   silently dropped (publisher.ts).
 * - Consuming: basic.qos(prefetch, global=true) like Celery on RabbitMQ, basic.consume(no_ack=false) into a
 *   buffer that receive() drains (consumer.ts).
 * - settle(): outputs and set-aside records are published on a confirm channel; inputs are acked (or nacked
 *   without requeue, for set-aside) only once RabbitMQ confirmed every message that belongs to them. One confirm
 *   wait per settle() call (settler.ts, acks.ts).
 * - Connection/channel loss: reconnect with capped exponential backoff, declare again, consume again (session.ts).
 *   RabbitMQ requeues every unacked delivery of the dead connection itself, so settlements for them are skipped: a
 *   delivery whose outputs were published but whose ack was lost is processed again (at-least-once, possible
 *   duplicate outputs; the redelivered copy carries redelivered=true).
 */
export class AmqpBroker implements Broker {
  readonly displayUrl: string;
  private readonly url: AmqpUrl;
  private readonly opts: typeof DEFAULTS & AmqpBrokerOptions;
  private readonly logger: Logger;
  private readonly sessions: ReconnectingSession;
  private readonly topology: Topology;
  private readonly publisher: Publisher;
  private readonly consumer: Consumer;
  private readonly settler: Settler;

  constructor(options: AmqpBrokerOptions) {
    this.url = parseAmqpUrl(options.url);
    this.displayUrl = this.url.displayUrl;
    const fromUrl: Partial<typeof DEFAULTS> = {};
    if (this.url.heartbeat !== undefined) fromUrl.heartbeat = this.url.heartbeat;
    if (this.url.connectionTimeoutMs !== undefined) fromUrl.connectionTimeoutMs = this.url.connectionTimeoutMs;
    if (this.url.frameMax !== undefined) fromUrl.frameMax = this.url.frameMax;
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as AmqpBrokerOptions;
    const opts = { ...DEFAULTS, ...fromUrl, ...given };
    this.opts = opts;
    const setAsideQueue = options.setAsideQueue ?? `${options.inputQueue}.rejected`;
    const queueArguments = { ...(options.queueArguments ?? {}) } as Record<string, JsonValue>;
    const outputQueueArguments = { ...(options.outputQueueArguments ?? {}) } as Record<string, JsonValue>;
    this.logger = options.logger;
    if (!Number.isInteger(opts.prefetch) || opts.prefetch < 0 || opts.prefetch > 65535) {
      throw new Error(`AMQP prefetch must be an integer 0..65535, got ${opts.prefetch}`);
    }
    if (setAsideQueue === options.inputQueue) throw new Error('the set-aside queue must differ from the input queue');

    const { logger, displayUrl } = this;
    const { inputQueue, outputQueue } = opts;
    this.sessions = new ReconnectingSession(
      {
        url: this.url,
        inputQueue,
        heartbeat: opts.heartbeat,
        frameMax: opts.frameMax,
        connectionTimeoutMs: opts.connectionTimeoutMs,
        reconnectMinMs: opts.reconnectMinMs,
        reconnectMaxMs: opts.reconnectMaxMs,
        closeTimeoutMs: opts.closeTimeoutMs,
        tls: opts.tls,
        connectionName: opts.connectionName,
        logger,
        onReconnect: opts.onReconnect,
      },
      {
        declare: (s) => this.topology.declare(s),
        returned: (s, msg) => this.publisher.onReturn(s, msg),
        qos: () => this.consumer.qos(),
        consume: (s, ch) => this.consumer.start(s, ch),
        learn: (err) => this.consumer.learnQos(err),
        forget: () => this.consumer.forget(),
        logMeta: (s) => this.logMeta(s),
      },
    );
    this.topology = new Topology({
      inputQueue,
      outputQueue,
      setAsideQueue,
      queueArguments,
      outputQueueArguments,
      passive: !!opts.passive,
      vhost: this.url.vhost,
      logger,
      displayUrl,
    });
    this.publisher = new Publisher(
      { inputQueue, setAsideQueue, publishWaitMs: opts.publishWaitMs, logger, displayUrl },
      this.sessions,
      this.topology,
    );
    this.consumer = new Consumer(
      // Quorum queues refuse global QoS (see Consumer); otherwise it is learned at the first refusal.
      {
        inputQueue,
        prefetch: opts.prefetch,
        globalQos: queueArguments['x-queue-type'] !== 'quorum',
        logger,
        displayUrl,
        onSetAside: opts.onSetAside,
      },
      this.sessions,
      this.publisher,
    );
    this.settler = new Settler({ setAsideQueue, logger, displayUrl }, this.sessions, this.topology, this.publisher);
  }

  /** The current connection generation (increments on every reconnect); for tests and logs. */
  get connectionGeneration(): number {
    return this.sessions.generation;
  }

  get connected(): boolean {
    return this.sessions.connected;
  }

  /** Deliveries received from RabbitMQ and not yet settled (buffered or handed out). */
  get unsettledCount(): number {
    return this.sessions.current?.unsettled.size ?? 0;
  }

  async connect(): Promise<void> {
    if (this.sessions.state !== 'idle') throw new Error(`AmqpBroker.connect() called in state ${this.sessions.state}`);
    if (!amqplibPatchState.patched) {
      this.logger.warn(
        `amqplib field-table patch not installed (${amqplibPatchState.reason ?? 'unknown'}): a Python message with an integer header beyond 32 bits will drop the connection`,
      );
    }
    for (const key of this.url.unknownOptions)
      this.logger.warn(`ignoring unknown AMQP URL option '${key}'`, { broker: this.displayUrl });
    await this.sessions.connect();
  }

  receive(max: number, waitMs: number): Promise<Delivery[]> {
    return this.consumer.receive(max, waitMs);
  }

  settle(settlements: Settlement[]): Promise<void> {
    return this.settler.settle(settlements);
  }

  publish(outgoing: Outgoing[]): Promise<void> {
    return this.publisher.publish(outgoing);
  }

  adjustHeld(delta: number): void {
    this.consumer.adjustHeld(delta);
  }

  close(): Promise<void> {
    return this.sessions.close();
  }

  private logMeta(s: Session): Record<string, unknown> {
    return {
      broker: this.displayUrl,
      vhost: this.url.vhost,
      input: this.opts.inputQueue,
      output: this.opts.outputQueue,
      generation: s.gen,
      prefetch: this.opts.prefetch,
      globalQos: this.consumer.globalQos,
      passive: !!this.opts.passive,
    };
  }
}
