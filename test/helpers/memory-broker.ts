/**
 * A Broker in memory, for unit tests of the pipeline without services (kombu's in-memory transport is the model).
 * Messages are stored as the Redis transport's envelope text (protocol/redis-envelope), so receive() parses them
 * like the Redis broker does and `rawText` is what a set-aside record would keep. It keeps the contract's
 * promises: an ack stores its outputs and acks in one step, a failed call changes nothing, a requeued message
 * comes back marked redelivered, close() gives back whatever is unsettled. One FIFO per queue, no priorities.
 */
import { randomUUID } from 'node:crypto';
import { encodeTaskV2 } from '../../protocol/encode';
import { buildEnvelope, markRedelivered, parseEnvelope } from '../../protocol/redis-envelope';
import type { OutgoingTask, RawMessage } from '../../protocol/types';
import type { Broker, Delivery, Outgoing, SetAsideListener, Settlement } from '../../src/brokers/broker';

export interface MemoryBrokerOptions {
  /** The queue receive() takes from (default `posthog-plugins`). */
  inputQueue?: string;
  overlapSettle?: boolean;
  /** Like AMQP prefetch: at most this many unacked deliveries, plus what adjustHeld() added. Default: no limit. */
  prefetch?: number;
  onSetAside?: SetAsideListener;
}

export type BrokerCall = 'receive' | 'settle' | 'publish';

interface Failure {
  error: Error;
  /** The call takes effect and still throws, as when a reply is lost after the broker applied the command. */
  afterApplying: boolean;
}

export class MemoryBroker implements Broker {
  readonly displayUrl = 'memory://';
  readonly overlapSettle: boolean;
  readonly inputQueue: string;
  /** Envelope texts per queue, oldest first. */
  private readonly queues = new Map<string, string[]>();
  private readonly unacked = new Map<string, Delivery>();
  private readonly failures = new Map<BrokerCall, Failure[]>();
  private wakeReceivers: Array<() => void> = [];
  private closed = false;
  /** What reject() set aside, oldest first. */
  readonly setAside: Array<{ reason: string; rawText: string }> = [];
  /** Every call that changed the broker, in order ("publish celery", "ack <tag>", "requeue <tag>"...). */
  readonly log: string[] = [];
  /** The sum of adjustHeld() deltas. */
  held = 0;

  constructor(private readonly opts: MemoryBrokerOptions = {}) {
    this.inputQueue = opts.inputQueue ?? 'posthog-plugins';
    this.overlapSettle = opts.overlapSettle ?? false;
  }

  async connect(): Promise<void> {}

  /** Make the next `times` calls of `call` throw `error` (after taking effect if `afterApplying`). */
  failNext(call: BrokerCall, error: Error, opts: { times?: number; afterApplying?: boolean } = {}): void {
    const list = this.failures.get(call) ?? [];
    for (let i = 0; i < (opts.times ?? 1); i++) list.push({ error, afterApplying: opts.afterApplying ?? false });
    this.failures.set(call, list);
  }

  /** A producer's send: the task encoded by protocol/encode, into the input queue (or `queue`). */
  sendTask(task: OutgoingTask, queue = this.inputQueue): void {
    this.sendRaw(encodeTaskV2(task), queue);
  }

  sendRaw(message: RawMessage, queue = this.inputQueue): void {
    this.push(queue, buildEnvelope(message, { deliveryTag: randomUUID(), exchange: '', routingKey: queue }));
  }

  /** Put any text into a queue, e.g. an envelope no worker can read. */
  push(queue: string, envelopeText: string): void {
    const list = this.queues.get(queue) ?? [];
    list.push(envelopeText);
    this.queues.set(queue, list);
    this.wake();
  }

  private wake(): void {
    const waiting = this.wakeReceivers;
    this.wakeReceivers = [];
    for (const w of waiting) w();
  }

  /** The messages waiting in `queue`, oldest first. */
  messages(queue: string): RawMessage[] {
    return (this.queues.get(queue) ?? []).map((text) => {
      const parsed = parseEnvelope(text);
      if (!parsed.ok) throw new Error(`queue ${queue} holds an unreadable envelope: ${parsed.reason}`);
      return parsed.message;
    });
  }

  /** Deliveries handed out and not settled yet. */
  get unackedTags(): string[] {
    return [...this.unacked.keys()];
  }

  async receive(max: number, waitMs: number): Promise<Delivery[]> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const failure = this.failures.get('receive')?.shift();
      if (failure) {
        // A lost reply: what was taken stays unacked, known to nobody, until close() gives it back.
        if (failure.afterApplying) this.take(max);
        throw failure.error;
      }
      const batch = this.take(max);
      if (batch.length > 0 || this.closed) return batch;
      const remaining = deadline - Date.now();
      if (remaining <= 0) return [];
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.wakeReceivers.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  private take(max: number): Delivery[] {
    const room = this.opts.prefetch === undefined ? Infinity : this.opts.prefetch + this.held - this.unacked.size;
    const cap = Math.min(max, room);
    const queue = this.queues.get(this.inputQueue) ?? [];
    const deliveries: Delivery[] = [];
    while (deliveries.length < cap && queue.length > 0) {
      const rawText = queue.shift() as string;
      const parsed = parseEnvelope(rawText);
      if (!parsed.ok) {
        // As the Redis broker does: a message without a readable envelope is set aside, never handed out.
        this.setAside.push({ reason: parsed.reason, rawText });
        this.opts.onSetAside?.(parsed.reason, rawText);
        continue;
      }
      const delivery: Delivery = {
        tag: parsed.deliveryTag,
        queue: this.inputQueue,
        message: parsed.message,
        redelivered: parsed.redelivered,
        rawText,
      };
      this.unacked.set(delivery.tag, delivery);
      deliveries.push(delivery);
    }
    return deliveries;
  }

  async settle(settlements: Settlement[]): Promise<void> {
    const failure = this.failures.get('settle')?.shift();
    if (failure && !failure.afterApplying) throw failure.error;
    const requeued: Delivery[] = [];
    for (const s of settlements) {
      // A tag no longer unacked (settled by an earlier attempt whose reply was lost) is skipped, as on Redis.
      if (!this.unacked.delete(s.delivery.tag)) continue;
      if (s.kind === 'ack') {
        for (const out of s.outputs) this.store(out);
      } else if (s.kind === 'reject') {
        this.setAside.push({ reason: s.reason, rawText: s.delivery.rawText });
      } else {
        requeued.push(s.delivery);
      }
      this.log.push(`${s.kind} ${s.delivery.tag}`);
    }
    this.requeue(requeued);
    if (failure) throw failure.error;
  }

  /** Back to the front of their queue, in their order, marked redelivered (kombu's restore does the same). */
  private requeue(deliveries: Delivery[]): void {
    for (const d of [...deliveries].reverse()) {
      this.queues.set(d.queue, [markRedelivered(d.rawText), ...(this.queues.get(d.queue) ?? [])]);
    }
    // Settling frees room under a prefetch limit too.
    this.wake();
  }

  async publish(outgoing: Outgoing[]): Promise<void> {
    const failure = this.failures.get('publish')?.shift();
    if (failure && !failure.afterApplying) throw failure.error;
    for (const out of outgoing) this.store(out);
    if (failure) throw failure.error;
  }

  private store(out: Outgoing): void {
    const message = { ...out.message, properties: { ...out.message.properties, priority: out.priority } };
    this.push(out.queue, buildEnvelope(message, { deliveryTag: randomUUID(), exchange: '', routingKey: out.queue }));
    this.log.push(`publish ${out.queue}`);
  }

  adjustHeld(delta: number): void {
    this.held += delta;
  }

  async close(): Promise<void> {
    this.closed = true;
    const unsettled = [...this.unacked.values()];
    this.unacked.clear();
    for (const d of unsettled) this.log.push(`requeue ${d.tag}`);
    this.requeue(unsettled);
  }
}
