import type { ConsumeMessage, Message } from 'amqplib';
import type { Logger } from '../../log';
import type { Settlement } from '../broker';
import { ackMany, nackOne } from './acks';
import { AmqpUnavailableError } from './errors';
import type { Publisher, Ticket } from './publisher';
import type { ReconnectingSession, Session } from './session';
import type { Topology } from './topology';

export interface SettlerConfig {
  setAsideQueue: string;
  logger: Logger;
  displayUrl: string;
}

/**
 * settle(): requeues are nacked at once; the outputs (ack) and set-aside records (reject) of the whole call are
 * published, then one wait for all their confirms; each input is acked (or nacked without requeue, for set-aside)
 * only once RabbitMQ confirmed every message that belongs to it.
 */
export class Settler {
  constructor(
    private readonly config: SettlerConfig,
    private readonly sessions: ReconnectingSession,
    private readonly topology: Topology,
    private readonly publisher: Publisher,
  ) {}

  async settle(settlements: Settlement[]): Promise<void> {
    if (settlements.length === 0) return;
    const { logger, displayUrl } = this.config;
    const current = this.sessions.current;
    const s = current && !current.broken ? current : null;
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
      logger.warn(
        `skipped ${stale} settlement(s) of deliveries from a lost AMQP connection; RabbitMQ redelivers them`,
        {
          broker: displayUrl,
        },
      );
    }
    if (twice)
      logger.warn(`skipped ${twice} settlement(s) of deliveries that were already settled`, { broker: displayUrl });
    if (live.length === 0 || !s) return;
    await this.sessions.track(this.settleLive(s, live));
  }

  private async settleLive(s: Session, live: Array<{ st: Settlement; msg: ConsumeMessage }>): Promise<void> {
    const { setAsideQueue } = this.config;
    // Give back first: nothing to wait for.
    for (const { st, msg } of live) if (st.kind === 'requeue') nackOne(s, msg, true);

    const destinations: string[] = [];
    for (const { st } of live) {
      if (st.kind === 'ack') for (const out of st.outputs) destinations.push(out.queue);
      else if (st.kind === 'reject') destinations.push(setAsideQueue);
    }
    const undeclared = destinations.length ? await this.topology.ensure(s, destinations) : new Map<string, Error>();

    const pending: Array<{ st: Settlement; msg: ConsumeMessage; tickets: Ticket[]; error?: Error }> = [];
    for (const { st, msg } of live) {
      if (st.kind === 'requeue') continue;
      const queues = st.kind === 'ack' ? st.outputs.map((o) => o.queue) : [setAsideQueue];
      const missing = queues.find((q) => undeclared.has(q));
      if (missing !== undefined) {
        pending.push({ st, msg, tickets: [], error: undeclared.get(missing)! });
        continue;
      }
      const tickets =
        st.kind === 'ack'
          ? st.outputs.map((out) => this.publisher.publishOutgoing(s, out))
          : [this.publisher.publishRecord(s, st.reason, st.delivery.rawText)];
      pending.push({ st, msg, tickets });
    }
    await this.publisher.flushed(s);

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
        else if (this.publisher.wasReturned(s, t))
          error ??= new Error(`RabbitMQ could not route a message to queue '${t.queue}'`);
      }
      if (s.broken) {
        lost++;
        continue;
      }
      if (error) {
        if (!nackOne(s, p.msg, true)) lost++;
        failures.push(error.message);
      } else if (p.st.kind === 'ack') {
        acks.push(p.msg);
      } else if (!nackOne(s, p.msg, false)) {
        lost++;
      }
    }
    if (!ackMany(s, acks)) lost += acks.length;
    if (lost) {
      throw new AmqpUnavailableError(
        `AMQP connection lost before ${lost} settlement(s) completed (${s.lastError?.message ?? 'closed'}); RabbitMQ redelivers their inputs, ` +
          `outputs already stored will be duplicated`,
      );
    }
    if (failures.length) {
      throw new Error(
        `RabbitMQ did not accept the outputs of ${failures.length} message(s) (${[...new Set(failures)].join('; ')}); inputs requeued`,
      );
    }
  }
}
