import type { Message } from 'amqplib';
import type { Session } from './session';

/** basic.nack of one delivery; false if the channel is gone (RabbitMQ requeues it anyway). */
export function nackOne(s: Session, msg: Message, requeue: boolean): boolean {
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
export function ackMany(s: Session, msgs: Message[]): boolean {
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
