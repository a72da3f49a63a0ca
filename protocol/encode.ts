/**
 * OutgoingTask → protocol v2 RawMessage, shaped like what Python Celery 5.2.6 `send_task` emits
 * (docs/celery-wire.md#what-the-producer-must-set), so Python workers, Flower and logs treat our messages exactly
 * like Python-sent ones.
 *
 * Everything that would crash or confuse a Python worker is refused here with an Error, before anything is
 * published: a missing/empty id or task name (KeyError 'id' kills the worker), args that are not an array,
 * kwargs that are not an object (`**None` fails), values JSON cannot carry faithfully (NaN, undefined items),
 * objects that kombu ≥5.3 would misread as tagged values, an invalid priority or date.
 */
import { describe, isJsonObject, stringifyForPython } from './json';
import { truncatedRepr } from './repr';
import { formatPythonUtcIso } from './time';
import { utf8Join } from './utf8-join';
import type { JsonObject, OutgoingTask, RawMessage } from './types';

/** Celery's `lang` header for messages we produce. */
export const LANG = 'js';

/** The embed Python sends when there is no canvas (callbacks/errbacks/chain/chord). */
const EMPTY_EMBED = '{"callbacks":null,"errbacks":null,"chain":null,"chord":null}';
/** What follows the kwargs in the body: the embed and the closing bracket. */
const EMBED_TAIL = `,${EMPTY_EMBED}]`;

function isPlainObject(v: unknown): v is JsonObject {
  return isJsonObject(v) && !Buffer.isBuffer(v);
}

function checkDate(name: string, value: Date | null | undefined, ctx: () => string): string | null {
  if (value === undefined || value === null) return null;
  if (!(value instanceof Date) || !Number.isFinite(value.getTime())) {
    throw new Error(`cannot encode ${ctx()}: ${name} must be a valid Date or null`);
  }
  try {
    return formatPythonUtcIso(value);
  } catch (err) {
    throw new Error(`cannot encode ${ctx()}: ${name}: ${(err as Error).message}`);
  }
}

/** Builds the v2 message. Throws an Error naming the task and id when the task is not publishable. */
export function encodeTaskV2(t: OutgoingTask): RawMessage {
  if (t === null || typeof t !== 'object')
    throw new Error(`cannot encode task: expected an object, got ${describe(t)}`);
  // The error context, built only when an error is thrown (this runs for every published task).
  const taskName: unknown = t.task;
  const taskId: unknown = t.id;
  const ctx = (): string =>
    `task ${typeof taskName === 'string' ? JSON.stringify(taskName) : '?'} id ${
      typeof taskId === 'string' ? JSON.stringify(taskId) : '?'
    }`;
  if (typeof t.task !== 'string' || t.task === '') {
    throw new Error(`cannot encode ${ctx()}: task name must be a non-empty string, got ${describe(t.task ?? null)}`);
  }
  if (typeof t.id !== 'string' || t.id === '') {
    throw new Error(`cannot encode ${ctx()}: id must be a non-empty string, got ${describe(t.id ?? null)}`);
  }
  if (!Array.isArray(t.args))
    throw new Error(`cannot encode ${ctx()}: args must be an array, got ${describe(t.args ?? null)}`);
  if (!isPlainObject(t.kwargs)) {
    throw new Error(`cannot encode ${ctx()}: kwargs must be an object, got ${describe(t.kwargs ?? null)}`);
  }
  if (typeof t.origin !== 'string') throw new Error(`cannot encode ${ctx()}: origin must be a string`);
  const priority = t.priority ?? 0;
  // AMQP allows 0..255 (RabbitMQ honours up to x-max-priority); the Redis transport clamps to 0..9.
  if (!Number.isInteger(priority) || priority < 0 || priority > 255) {
    throw new Error(`cannot encode ${ctx()}: priority must be an integer 0..255, got ${String(priority)}`);
  }
  const rootId = t.rootId ?? t.id;
  if (typeof rootId !== 'string' || rootId === '')
    throw new Error(`cannot encode ${ctx()}: rootId must be a non-empty string`);
  const parentId = t.parentId ?? null;
  if (parentId !== null && typeof parentId !== 'string')
    throw new Error(`cannot encode ${ctx()}: parentId must be a string or null`);
  const eta = checkDate('eta', t.eta, ctx);
  const expires = checkDate('expires', t.expires, ctx);

  let argsJson: string;
  let kwargsJson: string;
  try {
    argsJson = stringifyForPython(t.args);
  } catch (err) {
    throw new Error(`cannot encode ${ctx()}: args: ${(err as Error).message}`);
  }
  try {
    kwargsJson = stringifyForPython(t.kwargs);
  } catch (err) {
    throw new Error(`cannot encode ${ctx()}: kwargs: ${(err as Error).message}`);
  }

  // Key order as Python 5.2.6 writes them (irrelevant to readers; keeps captures comparable).
  const headers: JsonObject = {
    lang: LANG,
    task: t.task,
    id: t.id,
    shadow: null,
    eta,
    expires,
    group: null,
    group_index: null,
    retries: 0,
    timelimit: [null, null],
    root_id: rootId,
    parent_id: parentId,
    argsrepr: truncatedRepr(t.args),
    kwargsrepr: truncatedRepr(t.kwargs),
    origin: t.origin,
    ignore_result: false,
  };
  const properties: JsonObject = {
    correlation_id: t.id,
    // Python sets its rpc reply queue here; we never wait for replies, so empty like celery-node.
    reply_to: '',
    delivery_mode: 2,
    priority,
  };
  // Each part was validated on its own above; joining them avoids a second traversal of the event data.
  const body = utf8Join(['[', argsJson, ',', kwargsJson, EMBED_TAIL]);
  return { headers, properties, contentType: 'application/json', contentEncoding: 'utf-8', body };
}
