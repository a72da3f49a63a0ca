import type { JsonObject } from '../../protocol/types';
import type { EventBody } from '../../protocol/celery-events';

/** A control message as it arrived: its JSON body and its headers (`clock`, `expires`). */
export interface MailboxMessage {
  body: JsonObject;
  headers: JsonObject;
}

/**
 * One broker connection of its own for remote control and events, so neither touches the event path. Redis
 * and RabbitMQ implement it (redis-transport.ts, amqp-transport.ts) the way kombu's transports do.
 */
export interface ControlTransport {
  /** Connect, make the node's mailbox and deliver each control message to `onMessage`. */
  start(nodeName: string, onMessage: (m: MailboxMessage) => void): Promise<void>;
  /** Publish a reply on a direct exchange (the client's `reply_to`). */
  reply(exchange: string, routingKey: string, body: JsonObject, headers: JsonObject): Promise<void>;
  /** Publish one event (or a list of buffered ones) on `celeryev`. */
  publishEvent(routingKey: string, body: EventBody, headers: JsonObject): Promise<void>;
  close(): Promise<void>;
}

/** Control messages are JSON, as Celery's `accept_content` default requires. */
export const JSON_CONTENT = { contentType: 'application/json', contentEncoding: 'utf-8' } as const;
