/**
 * AMQP basic properties <-> RawMessage (kombu `pyamqp` transport, docs/celery-wire.md#amqp-properties).
 * Pure: no I/O and no amqplib import; the structural types below match amqplib's MessageProperties and
 * Options.Publish closely enough to be passed straight through.
 */
import type { JsonObject, JsonValue, RawMessage } from './types';

/** What amqplib hands a consumer as `msg.properties` (camelCase), declared structurally. */
export interface AmqpLikeProperties {
  contentType?: unknown;
  contentEncoding?: unknown;
  headers?: unknown;
  deliveryMode?: unknown;
  priority?: unknown;
  correlationId?: unknown;
  replyTo?: unknown;
  expiration?: unknown;
  messageId?: unknown;
  timestamp?: unknown;
  type?: unknown;
  userId?: unknown;
  appId?: unknown;
}

/** Options for amqplib `publish`/`sendToQueue`, exactly what a Python Celery 5.2 producer sets. */
export interface AmqpPublishOptions {
  contentType: string;
  contentEncoding: string;
  /** The headers as an amqplib field table, integers carrying explicit type tags (see pyAmqpFieldTable). */
  headers: Record<string, unknown>;
  deliveryMode: 2;
  priority: number;
  correlationId: string | undefined;
  replyTo: string | undefined;
  expiration?: string;
}

/** camelCase amqplib name -> Celery/kombu snake_case name, for the properties that are not content type/encoding/headers. */
const PROPERTY_NAMES: ReadonlyArray<readonly [keyof AmqpLikeProperties, string]> = [
  ['correlationId', 'correlation_id'],
  ['replyTo', 'reply_to'],
  ['deliveryMode', 'delivery_mode'],
  ['expiration', 'expiration'],
  ['messageId', 'message_id'],
  ['timestamp', 'timestamp'],
  ['type', 'type'],
  ['userId', 'user_id'],
  ['appId', 'app_id'],
];

/**
 * Turns a value amqplib decoded from a field table into JSON. Tables and arrays map 1:1; a byte array (`x`)
 * arrives as a Buffer and becomes its UTF-8 text (base64 if it is not valid UTF-8); bigint/Date (not produced by
 * amqplib 0.10, but cheap to cover) become a number/ISO string; anything else unknown becomes its string form.
 */
export function jsonFromFieldValue(value: unknown): JsonValue {
  if (value === null || value === undefined) return null;
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      return Number.isFinite(value) ? value : String(value);
    case 'bigint':
      return Number(value);
    case 'object':
      break;
    default:
      return String(value);
  }
  if (Buffer.isBuffer(value)) return utf8OrBase64(value).text;
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return value.map(jsonFromFieldValue);
  const tagged = value as { '!'?: unknown; value?: unknown };
  if (tagged['!'] === 'timestamp' && typeof tagged.value === 'number') {
    // py-amqp writes a datetime as 'T' (whole Unix seconds, UTC); amqplib hands over {'!': 'timestamp', value}.
    const d = new Date(tagged.value * 1000);
    return Number.isNaN(d.getTime()) ? tagged.value : d.toISOString();
  }
  if (tagged['!'] === 'decimal' && tagged.value !== null && typeof tagged.value === 'object') {
    // py-amqp writes a Decimal as 'D' {places, digits}; kombu's JSON writes Decimals as strings, so do we.
    const { places, digits } = tagged.value as { places?: unknown; digits?: unknown };
    if (typeof places === 'number' && typeof digits === 'number') return decimalString(digits, places);
  }
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) out[k] = jsonFromFieldValue(v);
  return out;
}

function decimalString(digits: number, places: number): string {
  const negative = digits < 0;
  let text = String(Math.abs(digits));
  if (places > 0) {
    text = text.padStart(places + 1, '0');
    text = `${text.slice(0, text.length - places)}.${text.slice(text.length - places)}`;
  }
  return negative ? `-${text}` : text;
}

/** A body (or byte array) as text: UTF-8 when it round-trips, otherwise base64. */
export function utf8OrBase64(buf: Buffer): { text: string; encoding: 'utf-8' | 'base64' } {
  const text = buf.toString('utf8');
  // U+FFFD appears only where decoding replaced invalid bytes, or where the text really contains it.
  if (!text.includes('\uFFFD') || Buffer.from(text, 'utf8').equals(buf)) return { text, encoding: 'utf-8' };
  return { text: buf.toString('base64'), encoding: 'base64' };
}

/**
 * An amqplib delivery (properties + body) as a RawMessage. Property names become kombu's snake_case names;
 * `priority` is always present (0 when the publisher left it out, as kombu reports it); undefined
 * properties are left out. Headers are JSON-ified (see jsonFromFieldValue); a missing table is `{}`.
 */
export function rawFromAmqp(props: AmqpLikeProperties, body: Buffer): RawMessage {
  const properties: JsonObject = {};
  for (const [camel, snake] of PROPERTY_NAMES) {
    const v = props[camel];
    if (v !== undefined && v !== null) properties[snake] = jsonFromFieldValue(v);
  }
  const priority = typeof props.priority === 'number' && Number.isFinite(props.priority) ? props.priority : 0;
  properties.priority = priority;
  const headers =
    props.headers !== null &&
    typeof props.headers === 'object' &&
    !Array.isArray(props.headers) &&
    !Buffer.isBuffer(props.headers)
      ? (jsonFromFieldValue(props.headers) as JsonObject)
      : {};
  return {
    headers,
    properties,
    contentType: typeof props.contentType === 'string' ? props.contentType : '',
    contentEncoding: typeof props.contentEncoding === 'string' ? props.contentEncoding : '',
    body,
  };
}

function optionalString(v: JsonValue | undefined): string | undefined {
  if (v === undefined || v === null) return undefined;
  return typeof v === 'string' ? v : String(v);
}

/** Clamps a priority to AMQP's 0..255 octet (RabbitMQ itself caps it at the queue's x-max-priority). */
export function amqpPriority(v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) return 0;
  return Math.min(255, Math.max(0, Math.trunc(v)));
}

/**
 * Publish options for a RawMessage, the way py-amqp sends a Celery task: content type/encoding, headers table,
 * delivery_mode 2 (persistent), priority (0 default), correlation_id, reply_to and, when set, expiration
 * (milliseconds as a string; RabbitMQ enforces it as a per-message TTL).
 */
export function amqpPublishOptions(message: RawMessage): AmqpPublishOptions {
  const p = message.properties;
  const options: AmqpPublishOptions = {
    contentType: message.contentType || 'application/json',
    contentEncoding: message.contentEncoding || 'utf-8',
    headers: pyAmqpFieldTable(message.headers),
    deliveryMode: 2,
    priority: amqpPriority(p.priority),
    correlationId: optionalString(p.correlation_id),
    replyTo: optionalString(p.reply_to),
  };
  const expiration = p.expiration;
  if (expiration !== undefined && expiration !== null && expiration !== '') {
    options.expiration =
      typeof expiration === 'number' ? String(Math.max(0, Math.trunc(expiration))) : String(expiration);
  }
  return options;
}

const INT32_MIN = -0x80000000;
const INT32_MAX = 0x7fffffff;

/**
 * A JSON value as an amqplib field value that py-amqp 5.x decodes to the same value.
 *
 * amqplib guesses integer widths: -128..127 -> 'b', else int16 -> 's', else int32 -> 'I', else 'l'. py-amqp
 * (serialization.py `_read_item`) reads 'b' as UNSIGNED (-5 arrives as 251) and 's' as a SHORT STRING (300
 * arrives as garbage and the rest of the table is misparsed, i.e. a Python worker's connection error),
 * 'l' as unsigned 64-bit. py-amqp itself writes 'I' (signed 32) and 'L' (signed 64). So integers are tagged
 * explicitly: int32 range -> 'I' (`{'!': 'int'}`), larger positive -> 'l' (`{'!': 'long'}`, read correctly
 * as unsigned), larger negative -> double (amqplib cannot write 'L'). Floats stay doubles, strings 'S',
 * booleans 't', null 'V', arrays 'A', objects 'F'. An object that has its own '!' key would be taken by amqplib
 * as a type tag, so it is wrapped as an explicit table.
 */
export function pyAmqpFieldValue(value: JsonValue): unknown {
  if (value === null) return null;
  switch (typeof value) {
    case 'number':
      if (!Number.isInteger(value)) return value;
      if (value >= INT32_MIN && value <= INT32_MAX) return { '!': 'int', value };
      if (value > 0) return { '!': 'long', value };
      return { '!': 'double', value };
    case 'string':
    case 'boolean':
      return value;
    default:
      break;
  }
  if (Array.isArray(value)) return value.map(pyAmqpFieldValue);
  const table = pyAmqpFieldTable(value as JsonObject);
  return Object.prototype.hasOwnProperty.call(value, '!') ? { '!': 'object', value: table } : table;
}

/** Headers (a JSON object) as an amqplib field table that py-amqp reads back unchanged (see pyAmqpFieldValue). */
export function pyAmqpFieldTable(headers: JsonObject): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(headers)) {
    const v = headers[key];
    if (v !== undefined) out[key] = pyAmqpFieldValue(v);
  }
  return out;
}
