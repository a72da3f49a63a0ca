import type { Message, Options } from 'amqplib';
import { amqpPriority, amqpPublishOptions } from '../../../protocol/amqp-properties';
import type { Logger } from '../../log';
import type { Outgoing } from '../broker';
import { AmqpUnavailableError, errorText } from './errors';
import type { ReconnectingSession, Session } from './session';
import type { Topology } from './topology';

/** One publish on the confirm channel: `confirmed` resolves when RabbitMQ confirmed it. */
export interface Ticket {
  /** Matches a basic.return of this publish (see wasReturned). */
  key: string;
  queue: string;
  confirmed: Promise<void>;
}

export interface PublisherConfig {
  /** Named in set-aside records. */
  inputQueue: string;
  setAsideQueue: string;
  /** How long publish() waits for a lost connection to come back before it throws. */
  publishWaitMs: number;
  logger: Logger;
  displayUrl: string;
}

const SET_ASIDE_PUBLISH: Options.Publish = {
  contentType: 'application/json',
  contentEncoding: 'utf-8',
  deliveryMode: 2,
  mandatory: true,
};

function returnKey(queue: string, correlationId: unknown): string {
  return `${queue}\u0000${typeof correlationId === 'string' ? correlationId : ''}`;
}

/**
 * Publishing through the default exchange with routing key = queue, `mandatory`, on the session's confirm
 * channel: outputs, set-aside records, and publish() of plugin-originated tasks (retried across reconnects).
 */
export class Publisher {
  constructor(
    private readonly config: PublisherConfig,
    private readonly sessions: ReconnectingSession,
    private readonly topology: Topology,
  ) {}

  async publish(outgoing: Outgoing[]): Promise<void> {
    if (outgoing.length === 0) return;
    await this.sessions.track(this.publishWithRetry(outgoing));
  }

  publishOutgoing(s: Session, out: Outgoing): Ticket {
    const options: Options.Publish = {
      ...amqpPublishOptions(out.message),
      priority: amqpPriority(out.priority),
      mandatory: true,
    };
    return this.publishOne(s, out.queue, out.message.body, options);
  }

  /** A set-aside record {reason, time, queue, message} for the set-aside queue. */
  publishRecord(s: Session, reason: string, rawText: string): Ticket {
    const record = JSON.stringify({
      reason,
      time: new Date().toISOString(),
      queue: this.config.inputQueue,
      message: rawText,
    });
    return this.publishOne(s, this.config.setAsideQueue, Buffer.from(record, 'utf8'), SET_ASIDE_PUBLISH);
  }

  /** Waits until the publish channel's write buffer drained (amqplib's publish() returned false meanwhile). */
  async flushed(s: Session): Promise<void> {
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

  /** basic.return of a mandatory publish: remembered until the publisher looks (wasReturned). */
  onReturn(s: Session, msg: Message): void {
    const queue = msg.fields.routingKey;
    const key = returnKey(queue, msg.properties.correlationId);
    s.returned.set(key, (s.returned.get(key) ?? 0) + 1);
    s.declared.delete(queue); // declare it again before the next publish
    this.config.logger.error(
      `RabbitMQ returned a message published to '${queue}': ${String((msg.fields as { replyText?: string }).replyText ?? 'unroutable')}`,
      {
        broker: this.config.displayUrl,
      },
    );
  }

  /** Whether RabbitMQ returned (did not route) the ticket's publish; consumes one return. */
  wasReturned(s: Session, ticket: Ticket): boolean {
    const n = s.returned.get(ticket.key);
    if (!n) return false;
    if (n === 1) s.returned.delete(ticket.key);
    else s.returned.set(ticket.key, n - 1);
    return true;
  }

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
    return { key, queue, confirmed };
  }

  private async waitForSession(deadline: number): Promise<Session> {
    for (;;) {
      if (this.sessions.isClosing()) throw new Error('AmqpBroker is closed');
      const s = this.sessions.current;
      if (s && !s.broken && this.sessions.state === 'connected') return s;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new AmqpUnavailableError(
          `RabbitMQ at ${this.config.displayUrl} unreachable (${this.sessions.lastError?.message ?? 'not connected'}); publish gave up`,
        );
      }
      await this.sessions.waitChange(left);
    }
  }

  private async publishWithRetry(outgoing: Outgoing[]): Promise<void> {
    const deadline = Date.now() + this.config.publishWaitMs;
    let remaining = outgoing;
    for (;;) {
      const s = await this.waitForSession(deadline);
      const undeclared = await this.topology.ensure(
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
        const returned = r.status === 'fulfilled' && this.wasReturned(s, tickets[idx]!);
        if (r.status === 'rejected' || returned) {
          failed.push(remaining[idx]!);
          reason ||= r.status === 'rejected' ? errorText(r.reason) : `unroutable to '${remaining[idx]!.queue}'`;
        }
      });
      if (failed.length === 0) return;
      if (!s.broken) throw new Error(`RabbitMQ did not accept ${failed.length} published message(s): ${reason}`);
      // The connection died before the confirms: publish them again on the next one (at-least-once).
      this.config.logger.warn(
        `AMQP connection lost while publishing; republishing ${failed.length} message(s) after reconnect`,
        {
          broker: this.config.displayUrl,
        },
      );
      remaining = failed;
    }
  }
}
