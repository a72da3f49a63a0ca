/**
 * kombu's Redis transport wire format (docs/celery-wire.md#redis-envelope and below): the envelope in the lists, the
 * priority list names, the BRPOP key order, the `unacked` hash records, restore flags and the binding members.
 * Pure string/Buffer work; the Redis commands themselves live in the broker.
 */
import {
  containsTaggedShape,
  decodeStrictBase64,
  describe,
  reviveKombuTags,
  stringifyForPython,
  stringifyIfPlain,
  truncate,
} from './json';
import { utf8Join } from './utf8-join';
import { MAX_ENVELOPE_CHARS, MAX_NESTING_DEPTH, jsonTextTooDeep, tooDeepReason, tooLargeReason } from './limits';
import type { JsonObject, JsonValue, RawMessage } from './types';

/** kombu defaults (transport options `sep`, `priority_steps`). */
export const DEFAULT_SEP = '\x06\x16';
export const DEFAULT_PRIORITY_STEPS: readonly number[] = [0, 3, 6, 9];
/** kombu's message priority range on Redis (`min_priority`, `max_priority`, `default_priority`). */
export const MIN_PRIORITY = 0;
export const MAX_PRIORITY = 9;

export interface KeyOptions {
  /** Transport option `sep`; default "\x06\x16". */
  sep?: string;
  /** Transport option `priority_steps`, ascending; default [0, 3, 6, 9]. */
  steps?: readonly number[];
}

export type EnvelopeResult =
  | {
      ok: true;
      message: RawMessage;
      deliveryTag: string;
      exchange: string;
      routingKey: string;
      /** kombu's view of the priority: properties.priority as int, 0 when missing/invalid, clamped to 0..9. */
      priority: number;
      /** Set by kombu when it restored the message (headers.redelivered / delivery_info.redelivered). */
      redelivered: boolean;
    }
  | { ok: false; reason: string };

function isPlainObject(v: unknown): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

// The Redis-transport-only property keys, body_encoding, delivery_info and delivery_tag, are returned separately
// by parseEnvelope, not as part of the transport-neutral RawMessage, and always written by buildEnvelope.

/** kombu's `_get_message_priority`: int(properties.priority) clamped to 0..9, default 0 on any error. */
export function messagePriority(properties: JsonObject): number {
  const raw = properties.priority;
  let n: number;
  if (typeof raw === 'number') n = raw;
  else if (typeof raw === 'string' && /^\s*[+-]?\d+\s*$/.test(raw))
    n = Number(raw); // int("5") works in Python
  else if (typeof raw === 'boolean')
    n = raw ? 1 : 0; // bool is an int in Python
  else return MIN_PRIORITY;
  if (!Number.isFinite(n)) return MIN_PRIORITY;
  return Math.max(MIN_PRIORITY, Math.min(MAX_PRIORITY, Math.trunc(n)));
}

/** Parses a list item as kombu wrote it. Never throws. */
export function parseEnvelope(text: string): EnvelopeResult {
  const fail = (reason: string): EnvelopeResult => ({ ok: false, reason });
  if (typeof text !== 'string') return fail(`envelope is not a string (got ${describe(text)})`);
  if (text.length > MAX_ENVELOPE_CHARS)
    return fail(tooLargeReason('envelope', text.length, MAX_ENVELOPE_CHARS, 'characters'));
  // The headers sit one level down: the envelope may be one level deeper than the headers limit.
  if (jsonTextTooDeep(text, MAX_NESTING_DEPTH + 1)) return fail(tooDeepReason('envelope', MAX_NESTING_DEPTH + 1));
  let env: unknown;
  try {
    // Plain JSON.parse: tagged values inside headers are converted below, the rest of the envelope is ours.
    env = JSON.parse(text);
  } catch (err) {
    return fail(`envelope is not valid JSON: ${(err as Error).message} (text ${JSON.stringify(truncate(text, 80))})`);
  }
  if (!isPlainObject(env)) return fail(`envelope is not a JSON object (got ${describe(env)})`);

  const props = env.properties;
  if (!isPlainObject(props)) return fail(`envelope has no properties object (got ${describe(props ?? null)})`);
  const tag = props.delivery_tag;
  if (typeof tag !== 'string' || tag === '') {
    return fail(`envelope properties.delivery_tag must be a non-empty string, got ${describe(tag ?? null)}`);
  }
  const ctx = ` (delivery_tag ${tag})`;
  const info = props.delivery_info;
  if (!isPlainObject(info)) return fail(`envelope has no properties.delivery_info object${ctx}`);
  if (typeof info.exchange !== 'string') {
    return fail(`envelope delivery_info.exchange must be a string, got ${describe(info.exchange ?? null)}${ctx}`);
  }
  if (typeof info.routing_key !== 'string') {
    return fail(`envelope delivery_info.routing_key must be a string, got ${describe(info.routing_key ?? null)}${ctx}`);
  }

  if (typeof env.body !== 'string')
    return fail(`envelope body must be a string, got ${describe(env.body ?? null)}${ctx}`);
  const encoding = props.body_encoding;
  let body: Buffer;
  if (encoding === 'base64') {
    // Buffer.from(…, 'base64') silently skips garbage; validate so corruption is reported, not decoded.
    // Line breaks are dropped first; a text that is valid as it is has none, so it is tried first, uncopied.
    const text = env.body;
    const decoded =
      decodeStrictBase64(text) ?? (/[\r\n]/.test(text) ? decodeStrictBase64(text.replace(/[\r\n]/g, '')) : null);
    if (decoded === null) return fail(`envelope body is not valid base64${ctx}`);
    body = decoded;
  } else if (encoding === undefined || encoding === null || encoding === 'utf-8' || encoding === 'utf8') {
    // kombu uses the body as-is when body_encoding is absent (and newer kombu for "utf-8").
    body = Buffer.from(env.body, 'utf8');
  } else {
    return fail(`unsupported envelope body_encoding ${JSON.stringify(encoding)}${ctx}`);
  }

  const contentType = env['content-type'];
  const contentEncoding = env['content-encoding'];
  if (contentType !== undefined && contentType !== null && typeof contentType !== 'string') {
    return fail(`envelope content-type must be a string, got ${describe(contentType)}${ctx}`);
  }
  if (contentEncoding !== undefined && contentEncoding !== null && typeof contentEncoding !== 'string') {
    return fail(`envelope content-encoding must be a string, got ${describe(contentEncoding)}${ctx}`);
  }

  let headers: JsonValue = env.headers === undefined ? {} : env.headers;
  if (!isPlainObject(headers)) return fail(`envelope headers must be an object, got ${describe(headers)}${ctx}`);
  try {
    // Without a tagged shape reviveKombuTags would only deep-copy headers, a fresh object nothing else holds.
    if (containsTaggedShape(headers)) headers = reviveKombuTags(headers);
  } catch (err) {
    return fail(`envelope headers: ${(err as Error).message}${ctx}`);
  }

  // Rest destructuring copies like Object.fromEntries would (own enumerable keys in order, "__proto__" as data),
  // leaving out the transport keys, without the intermediate arrays.
  const { body_encoding: _encoding, delivery_info: _info, delivery_tag: _tag, ...properties } = props;

  return {
    ok: true,
    message: {
      headers: headers as JsonObject,
      properties,
      contentType: contentType ?? '',
      contentEncoding: contentEncoding ?? '',
      body,
    },
    deliveryTag: tag,
    exchange: info.exchange,
    routingKey: info.routing_key,
    priority: messagePriority(props),
    redelivered: (headers as JsonObject).redelivered === true || info.redelivered === true,
  };
}

export interface EnvelopeOptions {
  /** A fresh uuid4 per published message (kombu); reused unchanged on restore. */
  deliveryTag: string;
  /** "" for Celery's default publish path (routing by queue name). */
  exchange: string;
  /** The queue name when exchange is "". */
  routingKey: string;
}

/**
 * The envelope kombu LPUSHes: hyphenated content keys, base64 body, and properties with delivery_info,
 * priority, body_encoding and delivery_tag. Throws rather than produce an envelope that would crash a Python
 * worker (no delivery_tag → KeyError, no exchange/routing_key → KeyError 'exchange').
 */
export function buildEnvelope(message: RawMessage, opts: EnvelopeOptions): string {
  return envelopeParts(message, opts).join('');
}

/** buildEnvelope's text as UTF-8 bytes, written without first joining the text into one string. */
export function buildEnvelopeBytes(message: RawMessage, opts: EnvelopeOptions): Buffer {
  return utf8Join(envelopeParts(message, opts));
}

/** The envelope's text in pieces (joined, exactly buildEnvelope's text). */
function envelopeParts(message: RawMessage, opts: EnvelopeOptions): string[] {
  if (opts === null || typeof opts !== 'object') throw new Error('buildEnvelope: options are required');
  const { deliveryTag, exchange, routingKey } = opts;
  if (typeof deliveryTag !== 'string' || deliveryTag === '') {
    throw new Error(`buildEnvelope: deliveryTag must be a non-empty string, got ${describe(deliveryTag ?? null)}`);
  }
  if (typeof exchange !== 'string')
    throw new Error(`buildEnvelope: exchange must be a string, got ${describe(exchange ?? null)}`);
  if (typeof routingKey !== 'string' || routingKey === '') {
    throw new Error(`buildEnvelope: routingKey must be a non-empty string, got ${describe(routingKey ?? null)}`);
  }
  if (message === null || typeof message !== 'object') throw new Error('buildEnvelope: message is required');
  if (!isPlainObject(message.headers))
    throw new Error(`buildEnvelope: message headers must be an object (delivery_tag ${deliveryTag})`);
  if (!isPlainObject(message.properties)) {
    throw new Error(`buildEnvelope: message properties must be an object (delivery_tag ${deliveryTag})`);
  }
  if (typeof message.contentType !== 'string' || message.contentType === '') {
    throw new Error(`buildEnvelope: message contentType must be a non-empty string (delivery_tag ${deliveryTag})`);
  }
  if (typeof message.contentEncoding !== 'string') {
    throw new Error(`buildEnvelope: message contentEncoding must be a string (delivery_tag ${deliveryTag})`);
  }
  if (!Buffer.isBuffer(message.body))
    throw new Error(`buildEnvelope: message body must be a Buffer (delivery_tag ${deliveryTag})`);

  const src = message.properties;
  const priority = src.priority ?? 0;
  if (typeof priority !== 'number' || !Number.isInteger(priority) || priority < 0) {
    throw new Error(`buildEnvelope: properties.priority must be a non-negative integer, got ${describe(priority)}`);
  }
  // Caller properties first, then the transport keys in kombu's order; any stale transport keys are replaced.
  // (Rest destructuring: the copy Object.fromEntries of the other keys would make, without the arrays.)
  const {
    priority: _priority,
    body_encoding: _encoding,
    delivery_info: _info,
    delivery_tag: _tag,
    ...properties
  } = src;
  properties.delivery_info = { exchange, routing_key: routingKey };
  properties.priority = priority;
  properties.body_encoding = 'base64';
  properties.delivery_tag = deliveryTag;

  const body = message.body.toString('base64');
  const headers = message.headers;
  // Usually headers and properties are plain data: then the envelope is written from its parts, which gives
  // the very text JSON.stringify(envelope) would (no indentation, so a nested object is written exactly as on
  // its own) without scanning the base64 body, ~2/3 of the text, for characters to escape: it has none.
  const headersJson = stringifyIfPlain(headers);
  const propertiesJson = typeof headersJson === 'string' ? stringifyIfPlain(properties) : null;
  if (typeof headersJson === 'string' && typeof propertiesJson === 'string') {
    return [
      '{"body":"',
      body,
      `","content-encoding":${JSON.stringify(message.contentEncoding)},"content-type":${JSON.stringify(message.contentType)},"headers":`,
      headersJson,
      ',"properties":',
      propertiesJson,
      '}',
    ];
  }
  const envelope = {
    body,
    'content-encoding': message.contentEncoding,
    'content-type': message.contentType,
    headers,
    properties,
  };
  try {
    return [stringifyForPython(envelope)];
  } catch (err) {
    throw new Error(`buildEnvelope: ${(err as Error).message} (delivery_tag ${deliveryTag})`);
  }
}

function stepsOf(opts?: KeyOptions): readonly number[] {
  const steps = opts?.steps ?? DEFAULT_PRIORITY_STEPS;
  if (steps.length === 0) throw new Error('priority steps must not be empty');
  return steps;
}

/** The step a priority maps to: kombu's `steps[bisect(steps, p) - 1]`, p clamped to 0..9. */
export function priorityStep(priority: number, opts?: KeyOptions): number {
  const steps = stepsOf(opts);
  const p = Number.isFinite(priority) ? Math.max(MIN_PRIORITY, Math.min(MAX_PRIORITY, Math.trunc(priority))) : 0;
  let i = 0;
  while (i < steps.length && steps[i] <= p) i++; // bisect_right
  // Python's steps[-1] when p is below the first step (only possible with custom steps not starting at 0).
  return i === 0 ? steps[steps.length - 1] : steps[i - 1];
}

/** The list a message of this priority is pushed to: the bare queue for step 0, else queue + sep + step. */
export function priorityKey(queue: string, priority: number, opts?: KeyOptions): string {
  const step = priorityStep(priority, opts);
  return step === 0 ? queue : `${queue}${opts?.sep ?? DEFAULT_SEP}${step}`;
}

/**
 * The keys to BRPOP, in kombu's order: for each step ascending, every queue — so priority 0 is served first
 * (the reverse of AMQP).
 */
export function consumeKeys(queues: string | readonly string[], opts?: KeyOptions): string[] {
  const list = typeof queues === 'string' ? [queues] : queues;
  const sep = opts?.sep ?? DEFAULT_SEP;
  const keys: string[] = [];
  for (const step of stepsOf(opts)) {
    for (const q of list) keys.push(step === 0 ? q : `${q}${sep}${step}`);
  }
  return keys;
}

/** Maps a popped key back to its queue name like kombu: cut at the last separator. */
export function queueFromKey(key: string, opts?: KeyOptions): string {
  const sep = opts?.sep ?? DEFAULT_SEP;
  const at = key.lastIndexOf(sep);
  return at < 0 ? key : key.slice(0, at);
}

/**
 * The value kombu stores in the `unacked` hash under the delivery tag: `[<envelope>, "<exchange>",
 * "<routing_key>"]`. The envelope text is embedded verbatim so the restored message is byte-identical.
 */
export function unackedRecord(envelopeText: string, exchange: string, routingKey: string): string {
  if (typeof envelopeText !== 'string') throw new Error('unackedRecord: envelope text must be a string');
  const trimmed = envelopeText.trim();
  // Cheap shape check only (the envelope was parsed when it was popped); a Python restore needs an object.
  if (!trimmed.startsWith('{') || !trimmed.endsWith('}')) {
    throw new Error(`unackedRecord: envelope text is not a JSON object: ${JSON.stringify(truncate(envelopeText, 60))}`);
  }
  if (typeof exchange !== 'string') throw new Error('unackedRecord: exchange must be a string');
  if (typeof routingKey !== 'string') throw new Error('unackedRecord: routing key must be a string');
  return `[${envelopeText}, ${JSON.stringify(exchange)}, ${JSON.stringify(routingKey)}]`;
}

export type UnackedRecordResult =
  | { ok: true; envelopeText: string; envelope: JsonObject; exchange: string; routingKey: string }
  | { ok: false; reason: string };

// The record's tail: two JSON strings and the closing bracket. JSON strings cannot hold a raw '"', so this is exact.
const RECORD_TAIL = /,\s*"(?:[^"\\]|\\.)*"\s*,\s*"(?:[^"\\]|\\.)*"\s*\]\s*$/;

/** Parses an `unacked` hash value (ours or Python's). The envelope text is the original slice, not re-serialized. */
export function parseUnackedRecord(text: string): UnackedRecordResult {
  const fail = (reason: string): UnackedRecordResult => ({ ok: false, reason });
  if (typeof text !== 'string') return fail(`unacked record is not a string (got ${describe(text)})`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return fail(`unacked record is not valid JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(value) || value.length !== 3) {
    return fail(`unacked record must be [envelope, exchange, routing_key], got ${describe(value)}`);
  }
  const [envelope, exchange, routingKey] = value as unknown[];
  if (!isPlainObject(envelope)) return fail(`unacked record envelope is not an object (got ${describe(envelope)})`);
  if (typeof exchange !== 'string') return fail(`unacked record exchange is not a string (got ${describe(exchange)})`);
  if (typeof routingKey !== 'string')
    return fail(`unacked record routing key is not a string (got ${describe(routingKey)})`);
  const open = text.indexOf('[');
  const tail = RECORD_TAIL.exec(text);
  // Both always succeed for a text that parsed as [object, string, string]; fall back defensively anyway.
  const envelopeText = tail !== null && open >= 0 ? text.slice(open + 1, tail.index).trim() : JSON.stringify(envelope);
  return { ok: true, envelopeText, envelope, exchange, routingKey };
}

/**
 * What kombu's restore does to a message before pushing it back: headers.redelivered = true and
 * properties.delivery_info.redelivered = true (each only when its parent object exists — kombu stops at the
 * first missing key). Re-serializes the envelope; tagged values are kept as they were.
 */
export function markRedelivered(envelopeText: string): string {
  let env: unknown;
  try {
    env = JSON.parse(envelopeText);
  } catch (err) {
    throw new Error(`markRedelivered: envelope is not valid JSON: ${(err as Error).message}`);
  }
  if (!isPlainObject(env)) throw new Error(`markRedelivered: envelope is not a JSON object (got ${describe(env)})`);
  if (!isPlainObject(env.headers)) return JSON.stringify(env); // KeyError in kombu: nothing is marked
  env.headers.redelivered = true;
  const props = env.properties;
  if (isPlainObject(props) && isPlainObject(props.delivery_info)) props.delivery_info.redelivered = true;
  return JSON.stringify(env);
}

/** A member of the `_kombu.binding.<exchange>` set: routing key, empty pattern, queue, joined by sep. */
export function bindingMember(routingKey: string, queue: string, opts?: KeyOptions): string {
  const sep = opts?.sep ?? DEFAULT_SEP;
  return `${routingKey}${sep}${sep}${queue}`;
}

export interface Binding {
  routingKey: string;
  /** Empty for direct/fanout; a regex-ish pattern for topic exchanges. */
  pattern: string;
  queue: string;
}

/** Splits a binding member; null unless it has exactly three parts (kombu could not unpack it either). */
export function parseBindingMember(member: string, opts?: KeyOptions): Binding | null {
  const parts = member.split(opts?.sep ?? DEFAULT_SEP);
  if (parts.length !== 3) return null;
  return { routingKey: parts[0], pattern: parts[1], queue: parts[2] };
}
