// Must stay the first import: it patches amqplib's field-table decoder before amqplib loads (see the file).
import './amqplib-compat';
import * as amqp from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Message, Options } from 'amqplib';
import { hostname } from 'node:os';
import type { ConnectionOptions as TlsOptions } from 'node:tls';
import type { Logger } from '../../log';
import { AmqpTopologyError, AmqpUnavailableError, errorText } from './errors';
import { type AmqpUrl, connectTarget } from './url';

export type SessionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closing' | 'closed';

/** One AMQP connection with its two channels. Delivery tags are only meaningful within one session. */
export interface Session {
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

export interface SessionConfig {
  url: AmqpUrl;
  /** Named in the log line of close(). */
  inputQueue: string;
  heartbeat: number;
  frameMax: number;
  connectionTimeoutMs: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  closeTimeoutMs: number;
  tls?: TlsOptions;
  connectionName?: string;
  logger: Logger;
  onReconnect?: () => void;
}

/** What each new session needs from the other parts of the broker, in the order the session calls them. */
export interface SessionHooks {
  /** Declares the topology on a new connection, before its channels open. */
  declare(s: Session): Promise<void>;
  /** basic.return of a mandatory publish on the session's confirm channel. */
  returned(s: Session, msg: Message): void;
  /** basic.qos of a new consume channel. */
  qos(): { count: number; global: boolean };
  /** Starts consuming on `ch`; the session is the current one by then. */
  consume(s: Session, ch: Channel): Promise<void>;
  /** A connect attempt failed: true if the failure taught us a setting worth an immediate retry. */
  learn(err: unknown): boolean;
  /** The current session ended: drop what was received on it and not handed out. */
  forget(): void;
  /** Fields of the connected / resumed log lines. */
  logMeta(s: Session): Record<string, unknown>;
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
 * The broker's one current session: opened by connect(), reopened with capped exponential backoff whenever the
 * connection or a channel is lost, given back and closed by close(). Whoever waits for a change (a delivery, a
 * lost or resumed connection, close) waits here; work that close() must let finish is tracked here.
 */
export class ReconnectingSession {
  private readonly displayUrl: string;
  private stateNow: SessionState = 'idle';
  private session: Session | null = null;
  private gen = 0;
  private readonly waiters = new Set<() => void>();
  private readonly inflight = new Set<Promise<unknown>>();
  private reconnectTimer: NodeJS.Timeout | null = null;
  private reconnectAttempt = 0;
  private lostAtMs = 0;
  private lastErrorNow: Error | null = null;
  private closing: Promise<void> | null = null;

  constructor(
    private readonly config: SessionConfig,
    private readonly hooks: SessionHooks,
  ) {
    this.displayUrl = config.url.displayUrl;
  }

  get state(): SessionState {
    return this.stateNow;
  }

  /** The current connection generation (increments on every reconnect). */
  get generation(): number {
    return this.gen;
  }

  get current(): Session | null {
    return this.session;
  }

  get connected(): boolean {
    return this.session !== null && !this.session.broken;
  }

  /** When the connection was last lost (epoch ms; 0 if never). */
  get lostAt(): number {
    return this.lostAtMs;
  }

  get lastError(): Error | null {
    return this.lastErrorNow;
  }

  /** Not narrowed by TypeScript across awaits (the state changes under our feet). */
  isClosing(): boolean {
    return this.stateNow === 'closing' || this.stateNow === 'closed';
  }

  /** Opens the first session; retries once at once if the failure taught the hooks a setting (see learn). */
  async connect(): Promise<void> {
    this.stateNow = 'connecting';
    for (let attempt = 1; ; attempt++) {
      let s: Session | null = null;
      try {
        s = await this.openSession();
        await this.startConsuming(s);
        this.stateNow = 'connected';
        this.config.logger.info(`AMQP connected to ${this.displayUrl}`, this.hooks.logMeta(s));
        return;
      } catch (err) {
        if (s) this.abandon(s);
        this.session = null;
        if (attempt === 1 && this.hooks.learn(err)) continue;
        this.stateNow = 'idle';
        throw err;
      }
    }
  }

  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = this.doClose();
    return this.closing;
  }

  /** The session is gone (connection/channel closed, consumer cancelled): drop it and reconnect. */
  lose(s: Session, err: Error): void {
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
    this.hooks.forget();
    this.lastErrorNow = err;
    this.lostAtMs = Date.now();
    if (this.stateNow !== 'connected') {
      this.notify();
      return;
    }
    this.stateNow = 'reconnecting';
    this.config.logger.warn(`AMQP connection lost: ${err.message}`, {
      broker: this.displayUrl,
      generation: s.gen,
      unsettled: held,
      note: held ? 'RabbitMQ requeues the unsettled deliveries; they come back redelivered' : undefined,
    });
    this.notify();
    this.scheduleReconnect();
  }

  /** Wakes everybody waiting in waitChange(). */
  notify(): void {
    if (this.waiters.size === 0) return;
    const ws = [...this.waiters];
    this.waiters.clear();
    for (const w of ws) w();
  }

  /** Resolves at the next notify() or after `ms`. */
  waitChange(ms: number): Promise<void> {
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

  /** Work on the session (settling, publishing) that close() lets finish before it gives deliveries back. */
  track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    void p.then(
      () => this.inflight.delete(p),
      () => this.inflight.delete(p),
    );
    return p;
  }

  private async openSession(): Promise<Session> {
    const { url, logger } = this.config;
    const gen = ++this.gen;
    const connectOptions: Options.Connect = {
      ...connectTarget(url),
      frameMax: this.config.frameMax,
      heartbeat: this.config.heartbeat,
    };
    const socketOptions: Record<string, unknown> = {
      // Nagle + delayed ACK cost celery-node ~40 ms per round trip; publish/confirm/ack is latency-bound.
      noDelay: true,
      keepAlive: true,
      keepAliveDelay: 30_000,
      timeout: this.config.connectionTimeoutMs,
      clientProperties: {
        connection_name: this.config.connectionName ?? `posthog-plugins ${hostname()}:${process.pid}`,
      },
      ...(url.tls ? { servername: url.hostname, ...this.config.tls } : {}),
    };
    let conn: ChannelModel;
    try {
      conn = await amqp.connect(connectOptions, socketOptions);
    } catch (err) {
      let hint = '';
      const text = errorText(err);
      // RabbitMQ answers connection.open for a vhost that is missing (or not permitted) with connection.close.
      if (/Expected ConnectionOpenOk; got <ConnectionClose/.test(text)) {
        hint = ` (vhost '${url.vhost}' missing or not permitted for '${url.username}': rabbitmqctl add_vhost / set_permissions)`;
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
      this.lose(s, err ?? s.lastError ?? new Error('connection closed'));
    });
    conn.on('blocked', (reason: string) =>
      logger.warn(`RabbitMQ blocked publishing on this connection (${reason}); confirms will wait`, {
        broker: this.displayUrl,
      }),
    );
    conn.on('unblocked', () => logger.info('RabbitMQ unblocked publishing', { broker: this.displayUrl }));
    try {
      await this.hooks.declare(s);
      const pubCh = await conn.createConfirmChannel();
      this.watchChannel(s, pubCh, 'publish channel');
      pubCh.on('return', (msg: Message) => this.hooks.returned(s, msg));
      const consumeCh = await conn.createChannel();
      this.watchChannel(s, consumeCh, 'consume channel');
      const qos = this.hooks.qos();
      // global=true: a channel-wide limit, what kombu asks of RabbitMQ (qos_semantics_matches_spec is False there).
      await consumeCh.prefetch(qos.count, qos.global);
      s.pubCh = pubCh;
      s.consumeCh = consumeCh;
      return s;
    } catch (err) {
      this.abandon(s);
      throw err;
    }
  }

  private async startConsuming(s: Session): Promise<void> {
    const ch = s.consumeCh;
    if (!ch || s.dead)
      throw new AmqpUnavailableError(`AMQP connection lost while starting: ${s.lastError?.message ?? 'closed'}`);
    this.session = s;
    await this.hooks.consume(s, ch);
  }

  private watchChannel(s: Session, ch: Channel, what: string): void {
    ch.on('error', (err: Error) => {
      s.lastError = new Error(`${what}: ${err.message}`);
    });
    // amqplib closes the channels before it emits the connection's 'close' (which carries the reason, e.g.
    // 320 CONNECTION_FORCED is not emitted as 'error'): report from a microtask so the connection speaks first.
    ch.on('close', () => {
      s.broken = true;
      queueMicrotask(() => this.lose(s, s.lastError ?? new Error(`${what} closed`)));
    });
  }

  /** Marks a session dead without reconnecting (setup failed, or we are closing). */
  private abandon(s: Session): void {
    s.dead = true;
    void s.conn.close().catch(() => undefined);
  }

  /** One line per retry step: the failed attempt's reason (if any) and when the next one comes. */
  private scheduleReconnect(failure?: { text: string; topology: boolean }): void {
    if (this.reconnectTimer || this.stateNow !== 'reconnecting') return;
    const { reconnectMinMs, reconnectMaxMs, logger } = this.config;
    const base = Math.min(reconnectMaxMs, reconnectMinMs * 2 ** this.reconnectAttempt);
    const delay = Math.round(base * (0.85 + Math.random() * 0.3));
    this.reconnectAttempt++;
    const next = `reconnecting in ${(delay / 1000).toFixed(1)}s (attempt ${this.reconnectAttempt})`;
    if (!failure) logger.info(`AMQP ${next}`, { broker: this.displayUrl });
    else
      logger.log(failure.topology ? 'error' : 'warn', `AMQP reconnect failed: ${failure.text}; ${next}`, {
        broker: this.displayUrl,
      });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      void this.reconnect();
    }, delay);
  }

  private async reconnect(): Promise<void> {
    if (this.stateNow !== 'reconnecting') return;
    let s: Session | null = null;
    try {
      s = await this.openSession();
      if (this.stateNow !== 'reconnecting') {
        this.abandon(s);
        return;
      }
      await this.startConsuming(s);
      if (s.dead) throw s.lastError ?? new Error('connection lost while resuming');
      this.stateNow = 'connected';
      const down = ((Date.now() - this.lostAtMs) / 1000).toFixed(1);
      this.config.logger.info(`AMQP connection resumed after ${down}s`, this.hooks.logMeta(s));
      this.reconnectAttempt = 0;
      this.config.onReconnect?.();
      this.notify();
    } catch (err) {
      if (s && !s.dead) this.abandon(s);
      if (this.session === s) this.session = null;
      this.lastErrorNow = err instanceof Error ? err : new Error(String(err));
      if (this.stateNow !== 'reconnecting') return;
      this.hooks.learn(err);
      this.scheduleReconnect({ text: errorText(err), topology: err instanceof AmqpTopologyError });
    }
  }

  private async doClose(): Promise<void> {
    if (this.stateNow === 'closed') return;
    const { logger } = this.config;
    const wasIdle = this.stateNow === 'idle';
    this.stateNow = 'closing';
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.notify();
    const s = this.session;
    if (s && !s.dead && !wasIdle) {
      const t = this.config.closeTimeoutMs;
      try {
        if (s.consumeCh && s.consumerTag) await withTimeout(s.consumeCh.cancel(s.consumerTag), t);
      } catch (err) {
        logger.debug(`AMQP cancel failed: ${errorText(err)}`);
      }
      // Let settlements already under way finish (their confirms are coming), then give back the rest.
      if (this.inflight.size) await withTimeout(Promise.allSettled([...this.inflight]), t);
      const held = s.unsettled.size;
      if (!s.broken && s.outstanding.size > 0) {
        try {
          s.consumeCh?.nackAll(true);
        } catch (err) {
          logger.debug(`AMQP nackAll failed: ${errorText(err)}`);
        }
      }
      s.outstanding.clear();
      s.unsettled.clear();
      this.hooks.forget();
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
      logger.info(
        `AMQP connection closed${held ? `; returned ${held} unsettled message(s) to '${this.config.inputQueue}'` : ''}`,
        {
          broker: this.displayUrl,
        },
      );
    } else if (s) {
      this.abandon(s);
      this.session = null;
    }
    this.hooks.forget();
    this.stateNow = 'closed';
    this.notify();
  }
}
