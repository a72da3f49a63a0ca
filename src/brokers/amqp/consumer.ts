import type { Channel, ConsumeMessage, Message } from 'amqplib';
import { jsonFromFieldValue, rawFromAmqp, utf8OrBase64 } from '../../../protocol/amqp-properties';
import { tooDeepReason, valueTooDeep } from '../../../protocol/limits';
import type { JsonObject, RawMessage } from '../../../protocol/types';
import type { Logger } from '../../log';
import type { Delivery, SetAsideListener } from '../broker';
import { nackOne } from './acks';
import { UNDECODABLE_TABLE, type UndecodableTable } from './amqplib-compat';
import { AmqpUnavailableError, errorText } from './errors';
import type { Publisher } from './publisher';
import type { ReconnectingSession, Session } from './session';

export interface ConsumerConfig {
  inputQueue: string;
  /** basic.qos prefetch_count before deliveries held for their eta. */
  prefetch: number;
  /** basic.qos global (Celery on RabbitMQ) until a quorum queue refuses it. */
  globalQos: boolean;
  logger: Logger;
  displayUrl: string;
  onSetAside?: SetAsideListener;
}

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
    properties[k] =
      k === 'headers' && valueTooDeep(v) ? `(left out: ${tooDeepReason('headers')})` : jsonFromFieldValue(v);
  }
  const { text, encoding } = utf8OrBase64(msg.content);
  return JSON.stringify({ fields: jsonFromFieldValue(msg.fields), properties, body: text, body_encoding: encoding });
}

/**
 * basic.consume(no_ack=false) on the input queue into a buffer that receive() drains; basic.qos as Celery sets it,
 * widened by the deliveries the pipeline holds for their eta. A delivery that cannot even be read is set aside here.
 */
export class Consumer {
  private buffer: AmqpDelivery[] = [];
  /** Deliveries the pipeline holds back until their eta; they count against prefetch, so it grows by this. */
  private held = 0;
  /**
   * basic.qos global=true (Celery on RabbitMQ) unless the queue is a quorum queue: RabbitMQ closes the connection
   * (540 NOT_IMPLEMENTED "does not support global qos") when such a queue is consumed under global QoS, and
   * Celery 5.5 switches to per-consumer QoS for them too. Learned at the first failure when not configured.
   */
  private global: boolean;

  constructor(
    private readonly config: ConsumerConfig,
    private readonly sessions: ReconnectingSession,
    private readonly publisher: Publisher,
  ) {
    this.global = config.globalQos;
  }

  get globalQos(): boolean {
    return this.global;
  }

  /** Configured prefetch plus the deliveries held back for their eta (kombu's qos.increment_eventually). */
  qos(): { count: number; global: boolean } {
    return { count: this.prefetchNow(), global: this.global };
  }

  /** True if `err` says the queue refuses global QoS (quorum queue) and we switched to per-consumer QoS. */
  learnQos(err: unknown): boolean {
    if (!this.global || !/does not support global qos/i.test(errorText(err))) return false;
    this.global = false;
    this.config.logger.warn(
      `'${this.config.inputQueue}' does not support global QoS (quorum queue): using per-consumer prefetch`,
      {
        broker: this.config.displayUrl,
      },
    );
    return true;
  }

  adjustHeld(delta: number): void {
    const before = this.prefetchNow();
    this.held = Math.max(0, this.held + delta);
    const ch = this.sessions.current?.consumeCh;
    if (!ch || this.prefetchNow() === before) return;
    ch.prefetch(this.prefetchNow(), this.global).catch((err: Error) =>
      this.config.logger.warn(`could not change prefetch to ${this.prefetchNow()}: ${err.message}`, {
        broker: this.config.displayUrl,
      }),
    );
  }

  async start(s: Session, ch: Channel): Promise<void> {
    try {
      const ok = await ch.consume(this.config.inputQueue, (msg) => this.onDelivery(s, msg), { noAck: false });
      s.consumerTag = ok.consumerTag;
    } catch (err) {
      // The reason is often on the connection/channel (e.g. 540 for global QoS on a quorum queue), not in the RPC error.
      await new Promise((r) => setImmediate(r));
      const why = s.lastError ? `${s.lastError.message} (${errorText(err)})` : errorText(err);
      throw new AmqpUnavailableError(`cannot consume from '${this.config.inputQueue}': ${why}`);
    }
  }

  /** Drops the buffered deliveries of a session that ended (RabbitMQ requeues them). */
  forget(): void {
    this.buffer = [];
  }

  async receive(max: number, waitMs: number): Promise<Delivery[]> {
    const sessions = this.sessions;
    if (sessions.state === 'idle' || sessions.state === 'connecting')
      throw new Error('AmqpBroker.receive() before connect() finished');
    if (sessions.isClosing()) throw new Error('AmqpBroker is closed');
    if (max <= 0) return [];
    if (this.buffer.length === 0 && waitMs > 0) {
      const deadline = Date.now() + waitMs;
      while (this.buffer.length === 0 && !sessions.isClosing()) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        await sessions.waitChange(left);
      }
    }
    if (this.buffer.length > 0)
      return max >= this.buffer.length ? this.buffer.splice(0) : this.buffer.splice(0, Math.max(1, max));
    if (sessions.isClosing()) throw new Error('AmqpBroker is closed');
    if (!sessions.connected) {
      const down = sessions.lostAt ? ` for ${((Date.now() - sessions.lostAt) / 1000).toFixed(1)}s` : '';
      throw new AmqpUnavailableError(
        `RabbitMQ at ${this.config.displayUrl} is unreachable${down} (${sessions.lastError?.message ?? 'connection lost'}); reconnecting`,
      );
    }
    return [];
  }

  private prefetchNow(): number {
    return Math.min(65535, this.config.prefetch + this.held);
  }

  private onDelivery(s: Session, msg: ConsumeMessage | null): void {
    if (msg === null) {
      const err = new Error(`RabbitMQ cancelled our consumer on '${this.config.inputQueue}' (queue deleted?)`);
      s.lastError = err;
      this.sessions.lose(s, err);
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
    this.buffer.push(new AmqpDelivery(tag, this.config.inputQueue, raw, msg));
    this.sessions.notify();
  }

  /** A message we cannot even hand to the pipeline: record it in the set-aside queue, then drop it from the input. */
  private setAsideOwn(s: Session, tag: string, msg: ConsumeMessage, reason: string): void {
    const { logger, displayUrl, inputQueue } = this.config;
    const rawText = rawTextOf(msg);
    const work = (async () => {
      const ticket = this.publisher.publishRecord(s, reason, rawText);
      await this.publisher.flushed(s);
      await ticket.confirmed;
      if (this.publisher.wasReturned(s, ticket)) throw new Error(`set-aside queue '${ticket.queue}' is missing`);
      if (s.unsettled.delete(tag) && !nackOne(s, msg, false)) throw new Error('connection lost before the nack');
      logger.error(`set aside an unreadable message from '${inputQueue}': ${reason}`, { broker: displayUrl });
      this.config.onSetAside?.(reason, rawText);
    })().catch((err: unknown) => {
      // Left unacked: redelivered after a reconnect, or given back at close.
      logger.error(`could not set aside an unreadable message (${reason}): ${errorText(err)}`, { broker: displayUrl });
    });
    void this.sessions.track(work);
  }
}
