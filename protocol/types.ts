/**
 * Shared types of the Celery wire contract. Pure data: no I/O anywhere in protocol/.
 */
import type { LosslessNumber } from './lossless-number';

/** A LosslessNumber is a number token JSON.parse would have changed, kept as written (lossless-number.ts). */
export type JsonValue = null | boolean | number | string | LosslessNumber | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/**
 * A message as a broker hands it over, after transport unwrapping (Redis base64 envelope, AMQP frame),
 * before Celery decoding. Property names use Celery/kombu's snake_case AMQP names
 * (correlation_id, reply_to, delivery_mode, priority, expiration).
 */
export interface RawMessage {
  headers: JsonObject;
  properties: JsonObject;
  contentType: string;
  contentEncoding: string;
  /** Serialized payload, possibly compressed (see headers.compression). */
  body: Buffer;
}

/** A Celery task request after decoding, whatever protocol version carried it. */
export interface TaskMessage {
  protocol: 1 | 2 | 'hybrid';
  id: string;
  task: string;
  args: JsonValue[];
  kwargs: JsonObject;
  /** v2 embed ({callbacks, errbacks, chain, chord}) or null. */
  embed: JsonObject | null;
  eta: Date | null;
  expires: Date | null;
  retries: number;
  rootId: string | null;
  parentId: string | null;
  group: string | null;
  /** Normalised v2-style headers (v1 fields lifted into them); unknown keys kept. */
  headers: JsonObject;
}

/** What we want to publish: a task by name, turned into a v2 message by protocol/encode. */
export interface OutgoingTask {
  task: string;
  id: string;
  args: JsonValue[];
  kwargs: JsonObject;
  /** Sending node name, Celery's `origin` header (`name@host`). */
  origin: string;
  priority?: number;
  eta?: Date | null;
  expires?: Date | null;
  rootId?: string;
  parentId?: string | null;
}
