import type { RawMessage } from '../../protocol/types';

/** One message received from a queue and not yet settled. */
export interface Delivery {
  /** Transport-specific id used to settle it (Redis delivery_tag, AMQP deliveryTag as string). */
  readonly tag: string;
  readonly queue: string;
  readonly message: RawMessage;
  readonly redelivered: boolean;
  /** The message exactly as the broker stored it, kept for set-aside records and logs. */
  readonly rawText: string;
}

/** A message to publish through the default exchange with routing key = queue (Celery's anon-exchange path). */
export interface Outgoing {
  queue: string;
  message: RawMessage;
  /** Celery priority 0..9 (0 if absent in the message properties). */
  priority: number;
}

/**
 * How a delivery ends. `ack` publishes its outputs first and acks only once they are durably stored
 * (one Redis transaction; publisher confirms on AMQP). `reject` sets it aside with a reason and never
 * redelivers it. `requeue` gives it back to the queue (shutdown, worker can't take it now).
 */
export type Settlement =
  | { kind: 'ack'; delivery: Delivery; outputs: Outgoing[] }
  | { kind: 'reject'; delivery: Delivery; reason: string }
  | { kind: 'requeue'; delivery: Delivery };

/** What the pipeline needs from a broker; Redis and AMQP implement it, the pipeline never knows which. */
export interface Broker {
  /** URL with the password masked, for logs. */
  readonly displayUrl: string;
  connect(): Promise<void>;
  /**
   * Up to `max` deliveries from the input queue, waiting at most `waitMs` when none is ready.
   * Returns [] on timeout. A broker error is thrown (the caller backs off and retries); a single
   * undecodable message is never thrown: the broker sets it aside itself and reports it through `onSetAside`.
   */
  receive(max: number, waitMs: number): Promise<Delivery[]>;
  settle(settlements: Settlement[]): Promise<void>;
  /** Publish without any delivery to ack (plugin-originated tasks). */
  publish(outgoing: Outgoing[]): Promise<void>;
  /**
   * The pipeline holds `delta` more (or, negative, fewer) deliveries back until their eta. A broker that limits
   * unacked deliveries (AMQP prefetch) widens the limit by that much, as Celery does, so held messages never
   * stall the ones behind them. Redis has no such limit.
   */
  adjustHeld?(delta: number): void;
  /**
   * Whether the pipeline should go on with the next batch while the previous one settles. Redis: yes (the settle
   * is one Lua call the worker would otherwise sit out; ~10 % more events/s in `make bench`). AMQP: no, it was
   * ~15 % slower that way (publishing one batch while consuming the next made RabbitMQ spend more per event).
   */
  readonly overlapSettle?: boolean;
  /** Give every unsettled delivery back to its queue and disconnect. */
  close(): Promise<void>;
}

/** Called by a broker when it set a message aside on its own (it could not even read the envelope). */
export type SetAsideListener = (reason: string, rawText: string) => void;
