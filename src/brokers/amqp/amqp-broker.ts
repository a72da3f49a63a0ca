// Must stay the first import: it patches amqplib's field-table decoder before amqplib loads (see the file).
import { UNDECODABLE_TABLE, amqplibPatchState, type UndecodableTable } from './amqplib-compat';
import * as amqp from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Message, Options } from 'amqplib';
import { hostname } from 'node:os';
import type { ConnectionOptions as TlsOptions } from 'node:tls';
import { amqpPriority, amqpPublishOptions, jsonFromFieldValue, pyAmqpFieldTable, rawFromAmqp, utf8OrBase64 } from '../../../protocol/amqp-properties';
import { tooDeepReason, valueTooDeep } from '../../../protocol/limits';
import type { JsonObject, JsonValue, RawMessage } from '../../../protocol/types';
import type { Logger } from '../../log';
import type { Broker, Delivery, Outgoing, SetAsideListener, Settlement } from '../broker';
import { AmqpTopologyError, AmqpUnavailableError, describeDeclareError } from './errors';
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

type State = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closing' | 'closed';

/** One AMQP connection with its two channels. Delivery tags are only meaningful within one session. */
interface Session {
  readonly gen: number;
  readonly conn: ChannelModel;
  consumeCh: Channel | null;
  pubCh: ConfirmChannel | null;
  consumerTag: string | null;
  /** Deliveries handed to us and not yet acked/nacked, by our tag. */
  readonly unsettled: Map<string, ConsumeMessage>;
  /** Queues known to exist on this connection (declared or checked). */
  readonly declared: Set<string>;
  readonly declaring: Map<string, Promise<void>>;
  /** basic.return'ed publishes (mandatory, unroutable), by returnKey, until the publisher looks. */
  readonly returned: Map<string, number>;
  /** Delivery tags acked/nacked on the wire not yet, in delivery order (includes settlements under way). */
  readonly outstanding: Set<number>;
  dead: boolean;
  /** A channel or the connection closed; set synchronously (onLost runs a microtask later). */
  broken: boolean;
  lastError: Error | null;
  /** amqplib's publish() returned false: its channel buffer is over the high-water mark until 'drain'. */
  needDrain: boolean;
}

interface Ticket {
  key: string;
  confirmed: Promise<void>;
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

const SET_ASIDE_PUBLISH: Options.Publish = {
  contentType: 'application/json',
  contentEncoding: 'utf-8',
  deliveryMode: 2,
  mandatory: true,
};

/** A delivery as handed to the pipeline; rawText is built only when somebody asks for it (set-aside, logs). */
class AmqpDelivery implements Delivery {
  private text: string | undefined;
  constructor(
    readonly tag: string,
    readonly queue: string,
    readonly message: RawMessage,
    private readonly amqpMessage: Message,
  ) {}

  get redelivered(): boolean {
    return this.amqpMessage.fields.redelivered;
  }

  get rawText(): string {
    if (this.text === undefined) this.text = rawTextOf(this.amqpMessage);
    return this.text;
  }
}

/** The message as RabbitMQ delivered it, as JSON: {fields, properties (amqplib names), body, body_encoding}. */
export function rawTextOf(msg: Message): string {
  const properties: JsonObject = {};
  for (const [k, v] of Object.entries(msg.properties as unknown as Record<string, unknown>)) {
    if (v === undefined) continue;
    // Headers nested too deep to write (amqplib decodes a few thousand levels, JSON.stringify overflows sooner) are
    // left out, so that the set-aside record of such a message can still be made.
    properties[k] = k === 'headers' && valueTooDeep(v) ? `(left out: ${tooDeepReason('headers')})` : jsonFromFieldValue(v);
  }
  const { text, encoding } = utf8OrBase64(msg.content);
  return JSON.stringify({ fields: jsonFromFieldValue(msg.fields), properties, body: text, body_encoding: encoding });
}

function returnKey(queue: string, correlationId: unknown): string {
  return `${queue}\u0000${typeof correlationId === 'string' ? correlationId : ''}`;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Celery's kombu `pyamqp` transport on RabbitMQ, consumer and producer side.
 *
 * - Topology as Celery declares it (durable direct exchange named like the queue, durable queue, binding key =
 *   queue name, arguments only when configured), or passive checks only. Publishing through the default exchange
 *   with routing key = queue name, `mandatory` so an unroutable output is noticed instead of silently dropped.
 * - Consuming: basic.qos(prefetch, global=true) like Celery on RabbitMQ, basic.consume(no_ack=false) into a
 *   buffer that receive() drains.
 * - settle(): outputs and set-aside records are published on a confirm channel; inputs are acked (or nacked
 *   without requeue, for set-aside) only once RabbitMQ confirmed every message that belongs to them. One confirm
 *   wait per settle() call.
 * - Connection/channel loss: reconnect with capped exponential backoff, declare again, consume again. RabbitMQ
 *   requeues every unacked delivery of the dead connection itself, so settlements for them are skipped: a
 *   delivery whose outputs were published but whose ack was lost is processed again (at-least-once, possible
 *   duplicate outputs; the redelivered copy carries redelivered=true).
 */
export class AmqpBroker implements Broker {
  readonly displayUrl: string;
  private readonly url: AmqpUrl;
  private readonly opts: typeof DEFAULTS & AmqpBrokerOptions;
  private readonly setAsideQueue: string;
  private readonly queueArguments: Record<string, JsonValue>;
  private readonly outputQueueArguments: Record<string, JsonValue>;
  /** Deliveries the pipeline holds back until their eta; they count against prefetch, so it grows by this. */
  private held = 0;
  private readonly logger: Logger;

  private state: State = 'idle';
  private session: Session | null = null;
  private generation = 0;
  private buffer: AmqpDelivery[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly inflight = new Set<Promise<unknown>>();
  private reconnectTimer: NodeJS.Timeout | null = null;
  private reconnectAttempt = 0;
  private lostAt = 0;
  private lastError: Error | null = null;
  private closing: Promise<void> | null = null;
  private readonly warnedOnce = new Set<string>();
  /**
   * basic.qos global=true (Celery on RabbitMQ) unless the queue is a quorum queue: RabbitMQ closes the connection
   * (540 NOT_IMPLEMENTED "does not support global qos") when such a queue is consumed under global QoS, and
   * Celery 5.5 switches to per-consumer QoS for them too. Learned at the first failure when not configured.
   */
  private globalQos = true;

  constructor(options: AmqpBrokerOptions) {
    this.url = parseAmqpUrl(options.url);
    this.displayUrl = this.url.displayUrl;
    const fromUrl: Partial<typeof DEFAULTS> = {};
    if (this.url.heartbeat !== undefined) fromUrl.heartbeat = this.url.heartbeat;
    if (this.url.connectionTimeoutMs !== undefined) fromUrl.connectionTimeoutMs = this.url.connectionTimeoutMs;
    if (this.url.frameMax !== undefined) fromUrl.frameMax = this.url.frameMax;
    const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) as AmqpBrokerOptions;
    this.opts = { ...DEFAULTS, ...fromUrl, ...given };
    this.setAsideQueue = options.setAsideQueue ?? `${options.inputQueue}.rejected`;
    this.queueArguments = { ...(options.queueArguments ?? {}) } as Record<string, JsonValue>;
    this.outputQueueArguments = { ...(options.outputQueueArguments ?? {}) } as Record<string, JsonValue>;
    this.logger = options.logger;
    if (!Number.isInteger(this.opts.prefetch) || this.opts.prefetch < 0 || this.opts.prefetch > 65535) {
      throw new Error(`AMQP prefetch must be an integer 0..65535, got ${this.opts.prefetch}`);
    }
    if (this.setAsideQueue === options.inputQueue) throw new Error('the set-aside queue must differ from the input queue');
    if (this.queueArguments['x-queue-type'] === 'quorum') this.globalQos = false;
  }

  /** The current connection generation (increments on every reconnect); for tests and logs. */
  get connectionGeneration(): number {
    return this.generation;
  }

  get connected(): boolean {
    return this.session !== null && !this.session.broken;
  }

  /** Deliveries received from RabbitMQ and not yet settled (buffered or handed out). */
  get unsettledCount(): number {
    return this.session?.unsettled.size ?? 0;
  }

  async connect(): Promise<void> {
    if (this.state !== 'idle') throw new Error(`AmqpBroker.connect() called in state ${this.state}`);
    if (!amqplibPatchState.patched) {
      this.logger.warn(
        `amqplib field-table patch not installed (${amqplibPatchState.reason ?? 'unknown'}): a Python message with an integer header beyond 32 bits will drop the connection`,
      );
    }
    for (const key of this.url.unknownOptions) this.logger.warn(`ignoring unknown AMQP URL option '${key}'`, { broker: this.displayUrl });
    this.state = 'connecting';
    for (let attempt = 1; ; attempt++) {
      let s: Session | null = null;
      try {
        s = await this.openSession();
        await this.startConsuming(s);
        this.state = 'connected';
        this.logger.info(`AMQP connected to ${this.displayUrl}`, this.logMeta(s));
        return;
      } catch (err) {
        if (s) this.abandon(s);
        this.session = null;
        if (attempt === 1 && this.learnQos(err)) continue;
        this.state = 'idle';
        throw err;
      }
    }
  }

  /** True if `err` says the queue refuses global QoS (quorum queue) and we switched to per-consumer QoS. */
  private learnQos(err: unknown): boolean {
    if (!this.globalQos || !/does not support global qos/i.test(errorText(err))) return false;
    this.globalQos = false;
    this.logger.warn(`'${this.opts.inputQueue}' does not support global QoS (quorum queue): using per-consumer prefetch`, { broker: this.displayUrl });
    return true;
  }

  async receive(max: number, waitMs: number): Promise<Delivery[]> {
    if (this.state === 'idle' || this.state === 'connecting') throw new Error('AmqpBroker.receive() before connect() finished');
    if (this.state === 'closing' || this.state === 'closed') throw new Error('AmqpBroker is closed');
    if (max <= 0) return [];
    if (this.buffer.length === 0 && waitMs > 0) {
      const deadline = Date.now() + waitMs;
      while (this.buffer.length === 0 && !this.isClosing()) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        await this.waitChange(left);
      }
    }
    if (this.buffer.length > 0) return max >= this.buffer.length ? this.buffer.splice(0) : this.buffer.splice(0, Math.max(1, max));
    if (this.isClosing()) throw new Error('AmqpBroker is closed');
    if (!this.connected) {
      const down = this.lostAt ? ` for ${((Date.now() - this.lostAt) / 1000).toFixed(1)}s` : '';
      throw new AmqpUnavailableError(
        `RabbitMQ at ${this.displayUrl} is unreachable${down} (${this.lastError?.message ?? 'connection lost'}); reconnecting`,
      );
    }
    return [];
  }

  async settle(settlements: Settlement[]): Promise<void> {
    if (settlements.length === 0) return;
    const s = this.session && !this.session.broken ? this.session : null;
    const live: Array<{ st: Settlement; msg: ConsumeMessage }> = [];
    let stale = 0;
    let twice = 0;
    for (const st of settlements) {
      const msg = s?.unsettled.get(st.delivery.tag);
      if (!s || !msg) {
        if (s && st.delivery.tag.startsWith(`${s.gen}:`)) twice++;
        else stale++;
        continue;
      }
      s.unsettled.delete(st.delivery.tag);
      live.push({ st, msg });
    }
    if (stale) {
      // RabbitMQ requeued these when their connection died; they come back (redelivered=true) and are processed
      // again. Any outputs already published for them will then exist twice.
      this.logger.warn(`skipped ${stale} settlement(s) of deliveries from a lost AMQP connection; RabbitMQ redelivers them`, {
        broker: this.displayUrl,
      });
    }
    if (twice) this.logger.warn(`skipped ${twice} settlement(s) of deliveries that were already settled`, { broker: this.displayUrl });
    if (live.length === 0 || !s) return;
    await this.track(this.settleLive(s, live));
  }

  async publish(outgoing: Outgoing[]): Promise<void> {
    if (outgoing.length === 0) return;
    await this.track(this.publishWithRetry(outgoing));
  }

  async close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = this.doClose();
    return this.closing;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // connection lifecycle

  /** Not narrowed by TypeScript across awaits (the state changes under our feet). */
  private isClosing(): boolean {
    return this.state === 'closing' || this.state === 'closed';
  }

  private logMeta(s?: Session): Record<string, unknown> {
    return {
      broker: this.displayUrl,
      vhost: this.url.vhost,
      input: this.opts.inputQueue,
      output: this.opts.outputQueue,
      ...(s ? { generation: s.gen } : {}),
      prefetch: this.opts.prefetch,
      globalQos: this.globalQos,
      passive: !!this.opts.passive,
    };
  }

  private async openSession(): Promise<Session> {
    const gen = ++this.generation;
    const connectOptions: Options.Connect = {
      protocol: this.url.tls ? 'amqps' : 'amqp',
      hostname: this.url.hostname,
      port: this.url.port,
      username: this.url.username,
      password: this.url.password,
      // amqplib unescapes the vhost it is given (querystring.unescape), so hand it over escaped.
      vhost: encodeURIComponent(this.url.vhost),
      frameMax: this.opts.frameMax,
      heartbeat: this.opts.heartbeat,
      locale: 'en_US',
    };
    const socketOptions: Record<string, unknown> = {
      // Nagle + delayed ACK cost celery-node ~40 ms per round trip; publish/confirm/ack is latency-bound.
      noDelay: true,
      keepAlive: true,
      keepAliveDelay: 30_000,
      timeout: this.opts.connectionTimeoutMs,
      clientProperties: { connection_name: this.opts.connectionName ?? `posthog-plugins ${hostname()}:${process.pid}` },
      ...(this.url.tls ? { servername: this.url.hostname, ...this.opts.tls } : {}),
    };
    let conn: ChannelModel;
    try {
      conn = await amqp.connect(connectOptions, socketOptions);
    } catch (err) {
      let hint = '';
      const text = errorText(err);
      // RabbitMQ answers connection.open for a vhost that is missing (or not permitted) with connection.close.
      if (/Expected ConnectionOpenOk; got <ConnectionClose/.test(text)) {
        hint = ` (vhost '${this.url.vhost}' missing or not permitted for '${this.url.username}': rabbitmqctl add_vhost / set_permissions)`;
      } else if (/ACCESS_REFUSED/.test(text)) {
        hint = ' (wrong user name or password)';
      }
      throw new AmqpUnavailableError(`cannot connect to RabbitMQ at ${this.displayUrl}: ${text}${hint}`);
    }
    const s: Session = {
      gen,
      conn,
      consumeCh: null,
      pubCh: null,
      consumerTag: null,
      unsettled: new Map(),
      declared: new Set(),
      declaring: new Map(),
      returned: new Map(),
      outstanding: new Set(),
      dead: false,
      broken: false,
      lastError: null,
      needDrain: false,
    };
    conn.on('error', (err: Error) => {
      s.lastError = err;
    });
    conn.on('close', (err?: Error) => {
      s.broken = true;
      this.onLost(s, err ?? s.lastError ?? new Error('connection closed'));
    });
    conn.on('blocked', (reason: string) =>
      this.logger.warn(`RabbitMQ blocked publishing on this connection (${reason}); confirms will wait`, { broker: this.displayUrl }),
    );
    conn.on('unblocked', () => this.logger.info('RabbitMQ unblocked publishing', { broker: this.displayUrl }));
    try {
      await this.declareTopology(s);
      const pubCh = await conn.createConfirmChannel();
      this.watchChannel(s, pubCh, 'publish channel');
      pubCh.on('return', (msg: Message) => this.onReturn(s, msg));
      const consumeCh = await conn.createChannel();
      this.watchChannel(s, consumeCh, 'consume channel');
      // global=true: a channel-wide limit, what kombu asks of RabbitMQ (qos_semantics_matches_spec is False there).
      await consumeCh.prefetch(this.prefetchNow(), this.globalQos);
      s.pubCh = pubCh;
      s.consumeCh = consumeCh;
      return s;
    } catch (err) {
      this.abandon(s);
      throw err;
    }
  }

  /** Configured prefetch plus the deliveries held back for their eta (kombu's qos.increment_eventually). */
  private prefetchNow(): number {
    return Math.min(65535, this.opts.prefetch + this.held);
  }

  adjustHeld(delta: number): void {
    const before = this.prefetchNow();
    this.held = Math.max(0, this.held + delta);
    const ch = this.session?.consumeCh;
    if (!ch || this.prefetchNow() === before) return;
    ch.prefetch(this.prefetchNow(), this.globalQos).catch((err: Error) =>
      this.logger.warn(`could not change prefetch to ${this.prefetchNow()}: ${err.message}`, { broker: this.displayUrl }),
    );
  }

  private async startConsuming(s: Session): Promise<void> {
    const ch = s.consumeCh;
    if (!ch || s.dead) throw new AmqpUnavailableError(`AMQP connection lost while starting: ${s.lastError?.message ?? 'closed'}`);
    this.session = s;
    try {
      const ok = await ch.consume(this.opts.inputQueue, (msg) => this.onDelivery(s, msg), { noAck: false });
      s.consumerTag = ok.consumerTag;
    } catch (err) {
      // The reason is often on the connection/channel (e.g. 540 for global QoS on a quorum queue), not in the RPC error.
      await new Promise((r) => setImmediate(r));
      const why = s.lastError ? `${s.lastError.message} (${errorText(err)})` : errorText(err);
      throw new AmqpUnavailableError(`cannot consume from '${this.opts.inputQueue}': ${why}`);
    }
  }

  private watchChannel(s: Session, ch: Channel, what: string): void {
    ch.on('error', (err: Error) => {
      s.lastError = new Error(`${what}: ${err.message}`);
    });
    // amqplib closes the channels before it emits the connection's 'close' (which carries the reason, e.g.
    // 320 CONNECTION_FORCED is not emitted as 'error'): report from a microtask so the connection speaks first.
    ch.on('close', () => {
      s.broken = true;
      queueMicrotask(() => this.onLost(s, s.lastError ?? new Error(`${what} closed`)));
    });
  }

  /** Marks a session dead without reconnecting (setup failed, or we are closing). */
  private abandon(s: Session): void {
    s.dead = true;
    void s.conn.close().catch(() => undefined);
  }

  private onLost(s: Session, err: Error): void {
    if (s.dead) return;
    s.dead = true;
    s.broken = true;
    s.outstanding.clear();
    // A channel-level error leaves the connection open: close it so RabbitMQ requeues everything unacked.
    void s.conn.close().catch(() => undefined);
    if (this.session !== s) return;
    this.session = null;
    const held = s.unsettled.size;
    s.unsettled.clear();
    this.buffer = [];
    this.lastError = err;
    this.lostAt = Date.now();
    if (this.state !== 'connected') {
      this.notify();
      return;
    }
    this.state = 'reconnecting';
    this.logger.warn(`AMQP connection lost: ${err.message}`, {
      broker: this.displayUrl,
      generation: s.gen,
      unsettled: held,
      note: held ? 'RabbitMQ requeues the unsettled deliveries; they come back redelivered' : undefined,
    });
    this.notify();
    this.scheduleReconnect();
  }

  /** One line per retry step: the failed attempt's reason (if any) and when the next one comes. */
  private scheduleReconnect(failure?: { text: string; topology: boolean }): void {
    if (this.reconnectTimer || this.state !== 'reconnecting') return;
    const base = Math.min(this.opts.reconnectMaxMs, this.opts.reconnectMinMs * 2 ** this.reconnectAttempt);
    const delay = Math.round(base * (0.85 + Math.random() * 0.3));
    this.reconnectAttempt++;
    const next = `reconnecting in ${(delay / 1000).toFixed(1)}s (attempt ${this.reconnectAttempt})`;
    if (!failure) this.logger.info(`AMQP ${next}`, { broker: this.displayUrl });
    else this.logger.log(failure.topology ? 'error' : 'warn', `AMQP reconnect failed: ${failure.text}; ${next}`, { broker: this.displayUrl });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.reconnect();
    }, delay);
  }

  private async reconnect(): Promise<void> {
    if (this.state !== 'reconnecting') return;
    let s: Session | null = null;
    try {
      s = await this.openSession();
      if (this.state !== 'reconnecting') {
        this.abandon(s);
        return;
      }
      await this.startConsuming(s);
      if (s.dead) throw s.lastError ?? new Error('connection lost while resuming');
      this.state = 'connected';
      const down = ((Date.now() - this.lostAt) / 1000).toFixed(1);
      this.logger.info(`AMQP connection resumed after ${down}s`, this.logMeta(s));
      this.reconnectAttempt = 0;
      this.opts.onReconnect?.();
      this.notify();
    } catch (err) {
      if (s && !s.dead) this.abandon(s);
      if (this.session === s) this.session = null;
      this.lastError = err instanceof Error ? err : new Error(String(err));
      if (this.state !== 'reconnecting') return;
      this.learnQos(err);
      this.scheduleReconnect({ text: errorText(err), topology: err instanceof AmqpTopologyError });
    }
  }

  private async doClose(): Promise<void> {
    if (this.state === 'closed') return;
    const wasIdle = this.state === 'idle';
    this.state = 'closing';
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.notify();
    const s = this.session;
    if (s && !s.dead && !wasIdle) {
      const t = this.opts.closeTimeoutMs;
      try {
        if (s.consumeCh && s.consumerTag) await withTimeout(s.consumeCh.cancel(s.consumerTag), t);
      } catch (err) {
        this.logger.debug(`AMQP cancel failed: ${errorText(err)}`);
      }
      // Let settlements already under way finish (their confirms are coming), then give back the rest.
      if (this.inflight.size) await withTimeout(Promise.allSettled([...this.inflight]), t);
      const held = s.unsettled.size;
      if (!s.broken && s.outstanding.size > 0) {
        try {
          s.consumeCh?.nackAll(true);
        } catch (err) {
          this.logger.debug(`AMQP nackAll failed: ${errorText(err)}`);
        }
      }
      s.outstanding.clear();
      s.unsettled.clear();
      this.buffer = [];
      s.dead = true;
      this.session = null;
      for (const ch of [s.consumeCh, s.pubCh]) {
        if (!ch) continue;
        try {
          await withTimeout(ch.close(), t);
        } catch {
          /* already closed */
        }
      }
      try {
        await withTimeout(s.conn.close(), t);
      } catch {
        /* already closed */
      }
      this.logger.info(`AMQP connection closed${held ? `; returned ${held} unsettled message(s) to '${this.opts.inputQueue}'` : ''}`, {
        broker: this.displayUrl,
      });
    } else if (s) {
      this.abandon(s);
      this.session = null;
    }
    this.buffer = [];
    this.state = 'closed';
    this.notify();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // topology

  private async declareTopology(s: Session): Promise<void> {
    const queues = [...new Set([this.opts.inputQueue, this.opts.outputQueue])];
    for (const q of queues) {
      await this.declareCeleryQueue(s.conn, q, true);
      s.declared.add(q);
    }
    await this.declareSetAside(s.conn);
    s.declared.add(this.setAsideQueue);
  }

  /** Runs `fn` on a short-lived channel: a failed declare (406/404) closes only that channel. */
  private async onTempChannel<T>(conn: ChannelModel, fn: (ch: Channel) => Promise<T>): Promise<T> {
    const ch = await conn.createChannel();
    ch.on('error', () => undefined); // surfaces as the rejected RPC
    try {
      return await fn(ch);
    } finally {
      try {
        await ch.close();
      } catch {
        /* closed by the server already */
      }
    }
  }

  /** The input queue has its own arguments; every other Celery queue we declare shares the output's. */
  private argumentsFor(queue: string): { flag: string; args: Record<string, JsonValue> } {
    return queue === this.opts.inputQueue
      ? { flag: '--amqp-queue-arguments', args: this.queueArguments }
      : { flag: '--amqp-output-queue-arguments', args: this.outputQueueArguments };
  }

  private describe(err: unknown, kind: 'queue' | 'exchange', name: string): Error {
    const { flag, args } = this.argumentsFor(name);
    return describeDeclareError(err, { kind, name, vhost: this.url.vhost, passive: !!this.opts.passive, queueArguments: args, argumentsFlag: flag });
  }

  /**
   * A Celery queue: exchange `queue` (direct, durable), queue `queue` (durable, arguments as configured), binding
   * `queue` → `queue` with key `queue` (kombu `Queue(q, Exchange(q), q)`). Passive: checkQueue (must exist) and
   * checkExchange (only warns: we publish through the default exchange). `strict` = a 406 is fatal (our input/output
   * at connect); otherwise an existing queue with other arguments is used as it is, with a warning.
   */
  private async declareCeleryQueue(conn: ChannelModel, queue: string, strict: boolean): Promise<void> {
    if (this.opts.passive) {
      try {
        await this.onTempChannel(conn, (ch) => ch.checkQueue(queue));
      } catch (err) {
        throw this.describe(err, 'queue', queue);
      }
      try {
        await this.onTempChannel(conn, (ch) => ch.checkExchange(queue));
      } catch (err) {
        this.warnOnce(`exchange:${queue}`, `passive mode: ${this.describe(err, 'exchange', queue).message} (not needed by us; Python producers routing via exchange '${queue}' will fail)`);
      }
      return;
    }
    let stage: 'exchange' | 'queue' = 'exchange';
    try {
      await this.onTempChannel(conn, async (ch) => {
        await ch.assertExchange(queue, 'direct', { durable: true, autoDelete: false, internal: false });
        stage = 'queue';
        // Integers typed like py-amqp writes them ('I' signedint), so RabbitMQ stores exactly what Celery declares.
        await ch.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false, arguments: pyAmqpFieldTable(this.argumentsFor(queue).args) });
        await ch.bindQueue(queue, queue, queue);
      });
    } catch (err) {
      const described = this.describe(err, stage, queue);
      if (strict || !(described instanceof AmqpTopologyError) || described.code !== 406) throw described;
      try {
        await this.onTempChannel(conn, (ch) => ch.checkQueue(queue));
      } catch (err2) {
        throw this.describe(err2, 'queue', queue);
      }
      this.warnOnce(`mismatch:${queue}`, `${described.message} Publishing to the existing queue as it is.`);
    }
  }

  /** Ours: a durable queue without arguments. If it exists with other arguments, it is used as it is. */
  private async declareSetAside(conn: ChannelModel): Promise<void> {
    const q = this.setAsideQueue;
    try {
      await this.onTempChannel(conn, (ch) => ch.assertQueue(q, { durable: true, exclusive: false, autoDelete: false }));
    } catch (err) {
      const described = this.describe(err, 'queue', q);
      if (!(described instanceof AmqpTopologyError) || described.code !== 406) throw described;
      await this.onTempChannel(conn, (ch) => ch.checkQueue(q));
      this.warnOnce(`mismatch:${q}`, `${described.message} Using the set-aside queue as it is.`);
    }
  }

  /** Makes sure a publish destination exists on this connection (declared once per connection, like kombu's maybe_declare). */
  private ensureQueue(s: Session, queue: string): Promise<void> | undefined {
    if (s.declared.has(queue)) return undefined;
    let p = s.declaring.get(queue);
    if (!p) {
      p = (queue === this.setAsideQueue ? this.declareSetAside(s.conn) : this.declareCeleryQueue(s.conn, queue, false))
        .then(() => {
          s.declared.add(queue);
        })
        .finally(() => s.declaring.delete(queue));
      s.declaring.set(queue, p);
    }
    return p;
  }

  private warnOnce(key: string, message: string): void {
    if (this.warnedOnce.has(key)) return;
    this.warnedOnce.add(key);
    this.logger.warn(message, { broker: this.displayUrl });
  }

  // ---------------------------------------------------------------------------------------------------------------
  // consuming

  private onDelivery(s: Session, msg: ConsumeMessage | null): void {
    if (msg === null) {
      const err = new Error(`RabbitMQ cancelled our consumer on '${this.opts.inputQueue}' (queue deleted?)`);
      s.lastError = err;
      this.onLost(s, err);
      return;
    }
    if (s.dead) return;
    const tag = `${s.gen}:${msg.fields.deliveryTag}`;
    s.unsettled.set(tag, msg);
    s.outstanding.add(msg.fields.deliveryTag);
    const headers = msg.properties.headers as Record<string | symbol, unknown> | undefined;
    const undecodable = headers?.[UNDECODABLE_TABLE] as UndecodableTable | undefined;
    if (undecodable) {
      this.setAsideOwn(s, tag, msg, `AMQP headers table cannot be decoded: ${undecodable.error}`);
      return;
    }
    // Converting the headers recurses: refuse a table nested too deep first (amqplib decodes a few thousand levels).
    if (valueTooDeep(headers)) {
      this.setAsideOwn(s, tag, msg, tooDeepReason('message headers'));
      return;
    }
    let raw: RawMessage;
    try {
      raw = rawFromAmqp(msg.properties, msg.content);
    } catch (err) {
      this.setAsideOwn(s, tag, msg, `AMQP message cannot be read: ${errorText(err)}`);
      return;
    }
    this.buffer.push(new AmqpDelivery(tag, this.opts.inputQueue, raw, msg));
    if (this.waiters.size) this.notify();
  }

  /** A message we cannot even hand to the pipeline: record it in the set-aside queue, then drop it from the input. */
  private setAsideOwn(s: Session, tag: string, msg: ConsumeMessage, reason: string): void {
    const rawText = rawTextOf(msg);
    const work = (async () => {
      const ticket = this.publishRecord(s, reason, rawText);
      await this.flushed(s);
      await ticket.confirmed;
      if (this.wasReturned(s, ticket.key)) throw new Error(`set-aside queue '${this.setAsideQueue}' is missing`);
      if (s.unsettled.delete(tag) && !this.nackOne(s, msg, false)) throw new Error('connection lost before the nack');
      this.logger.error(`set aside an unreadable message from '${this.opts.inputQueue}': ${reason}`, { broker: this.displayUrl });
      this.opts.onSetAside?.(reason, rawText);
    })().catch((err: unknown) => {
      // Left unacked: redelivered after a reconnect, or given back at close.
      this.logger.error(`could not set aside an unreadable message (${reason}): ${errorText(err)}`, { broker: this.displayUrl });
    });
    void this.track(work);
  }

  private notify(): void {
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }

  private waitChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    void p.then(
      () => this.inflight.delete(p),
      () => this.inflight.delete(p),
    );
    return p;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // publishing

  /** Publishes one message on the confirm channel; the ticket resolves when RabbitMQ confirmed it. */
  private publishOne(s: Session, queue: string, content: Buffer, options: Options.Publish): Ticket {
    const key = returnKey(queue, options.correlationId);
    const ch = s.pubCh;
    const confirmed = new Promise<void>((resolve, reject) => {
      if (!ch || s.broken) {
        reject(new AmqpUnavailableError(`AMQP connection lost: ${s.lastError?.message ?? 'closed'}`));
        return;
      }
      try {
        const ok = ch.publish('', queue, content, options, (err: unknown) =>
          err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(),
        );
        if (!ok) s.needDrain = true;
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
    confirmed.catch(() => undefined); // observed by the caller; avoid unhandled rejections meanwhile
    return { key, confirmed };
  }

  private publishOutgoing(s: Session, out: Outgoing): Ticket {
    const options: Options.Publish = { ...amqpPublishOptions(out.message), priority: amqpPriority(out.priority), mandatory: true };
    return this.publishOne(s, out.queue, out.message.body, options);
  }

  private publishRecord(s: Session, reason: string, rawText: string): Ticket {
    const record = JSON.stringify({ reason, time: new Date().toISOString(), queue: this.opts.inputQueue, message: rawText });
    return this.publishOne(s, this.setAsideQueue, Buffer.from(record, 'utf8'), SET_ASIDE_PUBLISH);
  }

  /** Waits until the publish channel's write buffer drained (amqplib's publish() returned false meanwhile). */
  private async flushed(s: Session): Promise<void> {
    const ch = s.pubCh;
    if (!ch || s.broken || !s.needDrain) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        ch.off('drain', done);
        ch.off('close', done);
        s.needDrain = false;
        resolve();
      };
      ch.on('drain', done);
      ch.on('close', done);
    });
  }

  private onReturn(s: Session, msg: Message): void {
    const queue = msg.fields.routingKey;
    const key = returnKey(queue, msg.properties.correlationId);
    s.returned.set(key, (s.returned.get(key) ?? 0) + 1);
    s.declared.delete(queue); // declare it again before the next publish
    this.logger.error(`RabbitMQ returned a message published to '${queue}': ${String((msg.fields as { replyText?: string }).replyText ?? 'unroutable')}`, {
      broker: this.displayUrl,
    });
  }

  /** Whether RabbitMQ returned (did not route) a publish with this key; consumes one return. */
  private wasReturned(s: Session, key: string): boolean {
    const n = s.returned.get(key);
    if (!n) return false;
    if (n === 1) s.returned.delete(key);
    else s.returned.set(key, n - 1);
    return true;
  }

  private async declareDestinations(s: Session, queues: Iterable<string>): Promise<Map<string, Error>> {
    const failed = new Map<string, Error>();
    const waits: Promise<void>[] = [];
    for (const q of new Set(queues)) {
      const p = this.ensureQueue(s, q);
      if (p) waits.push(p.catch((err: unknown) => void failed.set(q, err instanceof Error ? err : new Error(String(err)))));
    }
    if (waits.length) await Promise.all(waits);
    return failed;
  }

  /** basic.nack of one delivery; false if the channel is gone (RabbitMQ requeues it anyway). */
  private nackOne(s: Session, msg: Message, requeue: boolean): boolean {
    if (s.broken || !s.consumeCh) return false;
    try {
      s.consumeCh.nack(msg, false, requeue);
      s.outstanding.delete(msg.fields.deliveryTag);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * basic.ack of many deliveries: a single `multiple=true` ack when they are exactly the oldest outstanding
   * deliveries of the channel (the usual case: whole batches settled in order), otherwise one ack each.
   * Returns false if the channel is gone.
   */
  private ackMany(s: Session, msgs: Message[]): boolean {
    if (msgs.length === 0) return true;
    if (s.broken || !s.consumeCh) return false;
    const ch = s.consumeCh;
    const mine = new Set(msgs.map((m) => m.fields.deliveryTag));
    let last: Message = msgs[0]!;
    for (const m of msgs) if (m.fields.deliveryTag > last.fields.deliveryTag) last = m;
    const top = last.fields.deliveryTag;
    let prefix = true;
    for (const t of s.outstanding) {
      if (t > top) break; // insertion order = delivery order
      if (!mine.has(t)) {
        prefix = false;
        break;
      }
    }
    try {
      if (prefix && msgs.length > 1) {
        ch.ack(last, true);
      } else {
        for (const m of msgs) ch.ack(m);
      }
    } catch {
      return false;
    }
    for (const t of mine) s.outstanding.delete(t);
    return true;
  }

  private async settleLive(s: Session, live: Array<{ st: Settlement; msg: ConsumeMessage }>): Promise<void> {
    // Give back first: nothing to wait for.
    for (const { st, msg } of live) if (st.kind === 'requeue') this.nackOne(s, msg, true);

    const destinations: string[] = [];
    for (const { st } of live) {
      if (st.kind === 'ack') for (const out of st.outputs) destinations.push(out.queue);
      else if (st.kind === 'reject') destinations.push(this.setAsideQueue);
    }
    const undeclared = destinations.length ? await this.declareDestinations(s, destinations) : new Map<string, Error>();

    const pending: Array<{ st: Settlement; msg: ConsumeMessage; tickets: Ticket[]; error?: Error }> = [];
    for (const { st, msg } of live) {
      if (st.kind === 'requeue') continue;
      const queues = st.kind === 'ack' ? st.outputs.map((o) => o.queue) : [this.setAsideQueue];
      const missing = queues.find((q) => undeclared.has(q));
      if (missing !== undefined) {
        pending.push({ st, msg, tickets: [], error: undeclared.get(missing)! });
        continue;
      }
      const tickets =
        st.kind === 'ack' ? st.outputs.map((out) => this.publishOutgoing(s, out)) : [this.publishRecord(s, st.reason, st.delivery.rawText)];
      pending.push({ st, msg, tickets });
    }
    await this.flushed(s);

    // One wait for the whole call: every confirm of this batch.
    const results = await Promise.allSettled(pending.flatMap((p) => p.tickets.map((t) => t.confirmed)));
    let i = 0;
    let lost = 0;
    const failures: string[] = [];
    const acks: Message[] = [];
    for (const p of pending) {
      let error = p.error;
      for (const t of p.tickets) {
        const r = results[i++]!;
        if (r.status === 'rejected') error ??= r.reason instanceof Error ? r.reason : new Error(String(r.reason));
        else if (this.wasReturned(s, t.key)) error ??= new Error(`RabbitMQ could not route a message to queue '${t.key.split('\u0000')[0]}'`);
      }
      if (s.broken) {
        lost++;
        continue;
      }
      if (error) {
        if (!this.nackOne(s, p.msg, true)) lost++;
        failures.push(error.message);
      } else if (p.st.kind === 'ack') {
        acks.push(p.msg);
      } else if (!this.nackOne(s, p.msg, false)) {
        lost++;
      }
    }
    if (!this.ackMany(s, acks)) lost += acks.length;
    if (lost) {
      throw new AmqpUnavailableError(
        `AMQP connection lost before ${lost} settlement(s) completed (${s.lastError?.message ?? 'closed'}); RabbitMQ redelivers their inputs, ` +
          `outputs already stored will be duplicated`,
      );
    }
    if (failures.length) {
      throw new Error(`RabbitMQ did not accept the outputs of ${failures.length} message(s) (${[...new Set(failures)].join('; ')}); inputs requeued`);
    }
  }

  private async waitForSession(deadline: number): Promise<Session> {
    for (;;) {
      if (this.state === 'closing' || this.state === 'closed') throw new Error('AmqpBroker is closed');
      const s = this.session;
      if (s && !s.broken && this.state === 'connected') return s;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new AmqpUnavailableError(`RabbitMQ at ${this.displayUrl} unreachable (${this.lastError?.message ?? 'not connected'}); publish gave up`);
      }
      await this.waitChange(left);
    }
  }

  private async publishWithRetry(outgoing: Outgoing[]): Promise<void> {
    const deadline = Date.now() + this.opts.publishWaitMs;
    let remaining = outgoing;
    for (;;) {
      const s = await this.waitForSession(deadline);
      const undeclared = await this.declareDestinations(
        s,
        remaining.map((o) => o.queue),
      );
      if (undeclared.size) throw [...undeclared.values()][0]!;
      const tickets = remaining.map((out) => this.publishOutgoing(s, out));
      await this.flushed(s);
      const results = await Promise.allSettled(tickets.map((t) => t.confirmed));
      const failed: Outgoing[] = [];
      let reason = '';
      results.forEach((r, idx) => {
        const returned = r.status === 'fulfilled' && this.wasReturned(s, tickets[idx]!.key);
        if (r.status === 'rejected' || returned) {
          failed.push(remaining[idx]!);
          reason ||= r.status === 'rejected' ? errorText(r.reason) : `unroutable to '${remaining[idx]!.queue}'`;
        }
      });
      if (failed.length === 0) return;
      if (!s.broken) throw new Error(`RabbitMQ did not accept ${failed.length} published message(s): ${reason}`);
      // The connection died before the confirms: publish them again on the next one (at-least-once).
      this.logger.warn(`AMQP connection lost while publishing; republishing ${failed.length} message(s) after reconnect`, { broker: this.displayUrl });
      remaining = failed;
    }
  }
}
