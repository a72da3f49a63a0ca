/**
 * Celery task message decoding: RawMessage (headers + properties + serialized body) → TaskMessage.
 *
 * Mirrors what a Python Celery 5.x worker does (docs/celery-wire.md#how-a-worker-decodes):
 * - a `task` key in the headers means protocol v2 (the body is `[args, kwargs, embed]`), unless the body is an
 *   object with `args`: then it is a "hybrid" message whose v2 headers are built from the body fields and
 *   overlaid with the message headers;
 * - no `task` header: the body must be a v1 object with a `task` key (converted like Python does);
 * - anything else is an "unknown message".
 * Only JSON is accepted: pickle would be arbitrary code execution (and cannot be read in JS anyway), and we
 * refuse every other serializer rather than guess.
 *
 * decodeTask never throws: the caller (a broker consume loop) must keep running whatever arrives, so every
 * failure is a `{ok: false, reason}` that says precisely what was wrong, for the set-aside record and logs.
 */
import { decompress } from './compression';
import { KombuTagError, describe, isJsonObject, parseKombuJson, truncate } from './json';
import { MAX_MESSAGE_BYTES, jsonTextTooDeep, tooDeepReason, tooLargeReason, valueTooDeep } from './limits';
import { truncatedRepr } from './repr';
import { NaiveZone, parseIsoDateTime } from './time';
import type { JsonObject, JsonValue, RawMessage, TaskMessage } from './types';

export type DecodeResult = { ok: true; task: TaskMessage } | { ok: false; reason: string };

export interface DecodeOptions {
  /** Limit for a compressed body once inflated (see compression.ts); default MAX_MESSAGE_BYTES. */
  maxDecompressedBytes?: number;
}

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

function isPlainObject(v: unknown): v is JsonObject {
  return isJsonObject(v) && !Buffer.isBuffer(v);
}

const fail = (reason: string): DecodeResult => ({ ok: false, reason });

/** fatal: invalid UTF-8 is an error, not silently replaced (Python's bytes.decode('utf-8') raises too). */
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Known content types, for refusal messages that say what the producer used. */
const SERIALIZER_NAMES: Record<string, string> = {
  'application/x-python-serialize': 'pickle',
  'application/x-msgpack': 'msgpack',
  'application/x-yaml': 'yaml',
  'application/data': 'raw bytes',
  'application/text': 'raw text',
  'text/plain': 'raw text',
};

/** Charsets that are UTF-8 or a subset of it; "binary" is what kombu sets when it hands bytes to json.loads. */
const UTF8_ENCODINGS = new Set(['', 'utf-8', 'utf8', 'ascii', 'us-ascii', 'binary', 'ascii-8bit']);

/** Returns a refusal reason, or null when content type and encoding are acceptable JSON-in-UTF-8. */
export function checkContentType(contentType: unknown, contentEncoding: unknown): string | null {
  // Exactly "application/json" (what Celery sends) has nothing more to check: no parameters, no charset.
  if (contentType !== 'application/json') {
    const refusal = checkMime(contentType);
    if (refusal !== null) return refusal;
  }
  if (contentEncoding !== undefined && contentEncoding !== null) {
    if (typeof contentEncoding !== 'string') {
      return `content encoding must be a string, got ${describe(contentEncoding)}`;
    }
    // 'utf-8' first: what Celery sends, and a member of UTF8_ENCODINGS as it is.
    if (contentEncoding !== 'utf-8' && !UTF8_ENCODINGS.has(contentEncoding.trim().toLowerCase())) {
      return `unsupported content encoding ${JSON.stringify(contentEncoding)} for application/json (only utf-8)`;
    }
  }
  return null;
}

/** The content type part of checkContentType: a refusal reason, or null for application/json in UTF-8. */
function checkMime(contentType: unknown): string | null {
  if (typeof contentType !== 'string' || contentType.trim() === '') {
    return `message has no content type (got ${describe(contentType)})`;
  }
  const [mimePart, ...params] = contentType.split(';');
  const mime = mimePart.trim().toLowerCase();
  if (mime === 'application/x-python-serialize') {
    return 'refusing to deserialize untrusted content of type application/x-python-serialize (pickle)';
  }
  if (mime !== 'application/json') {
    const name = SERIALIZER_NAMES[mime];
    return (
      `refusing to deserialize content of type ${truncate(mime, 100)}${name ? ` (${name})` : ''}: ` +
      'only application/json is accepted'
    );
  }
  for (const param of params) {
    const eq = param.indexOf('=');
    if (eq < 0) continue;
    if (param.slice(0, eq).trim().toLowerCase() !== 'charset') continue;
    const charset = param
      .slice(eq + 1)
      .trim()
      .replace(/^"(.*)"$/, '$1')
      .toLowerCase();
    if (!UTF8_ENCODINGS.has(charset)) {
      return `unsupported charset ${JSON.stringify(charset)} in content type ${JSON.stringify(contentType)}`;
    }
  }
  return null;
}

/** Decodes one message. Never throws. */
export function decodeTask(raw: RawMessage, opts: DecodeOptions = {}): DecodeResult {
  try {
    return decodeOrFail(raw, opts);
  } catch (err) {
    // Defensive only: every expected failure is returned explicitly below.
    return fail(`cannot decode message: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function decodeOrFail(raw: RawMessage, opts: DecodeOptions): DecodeResult {
  if (raw === null || typeof raw !== 'object') return fail(`message is not an object (got ${describe(raw)})`);
  const headers: unknown = raw.headers;
  // Python: headers that are not a mapping make the message an "unknown message" (rejected).
  if (!isPlainObject(headers)) return fail(`message headers are not a mapping (got ${describe(headers)})`);
  // Limits first (protocol/limits.ts): nothing below may recurse into, copy or inflate an outsized message.
  if (valueTooDeep(headers)) return fail(tooDeepReason('message headers'));

  const refusal = checkContentType(raw.contentType, raw.contentEncoding);
  if (refusal !== null) return fail(refusal);

  let bodyBytes: Buffer = raw.body;
  if (!Buffer.isBuffer(bodyBytes)) return fail(`message body is not a Buffer (got ${describe(bodyBytes)})`);
  if (bodyBytes.length > MAX_MESSAGE_BYTES) return fail(tooLargeReason('message body', bodyBytes.length));

  const compression = headers.compression;
  if (compression !== undefined && compression !== null && compression !== '') {
    if (typeof compression !== 'string') {
      return fail(`compression header must be a string, got ${describe(compression)}`);
    }
    try {
      bodyBytes = decompress(bodyBytes, compression, {
        maxOutputBytes: opts.maxDecompressedBytes ?? MAX_MESSAGE_BYTES,
      });
    } catch (err) {
      return fail((err as Error).message);
    }
  }

  let text: string;
  try {
    text = UTF8.decode(bodyBytes);
  } catch {
    return fail(`body is not valid UTF-8 (${bodyBytes.length} bytes)`);
  }

  if (jsonTextTooDeep(text)) return fail(tooDeepReason('message body'));
  let body: JsonValue;
  try {
    body = parseKombuJson(text);
  } catch (err) {
    if (err instanceof KombuTagError) return fail(`body has an unsupported kombu tagged value: ${err.message}`);
    return fail(`body is not valid JSON: ${(err as Error).message}`);
  }

  // docs/celery-wire.md#how-a-worker-decodes, step 2: a `task` header (whatever its value) selects the v2 path.
  if (hasOwn(headers, 'task')) {
    if (isPlainObject(body) && hasOwn(body, 'args')) return fromV1Body(body, headers, 'hybrid');
    return fromV2(body, headers);
  }
  if (isPlainObject(body) && hasOwn(body, 'task')) return fromV1Body(body, headers, 1);
  return fail(`unknown message: no "task" header and the body is not a v1 task object (body is ${bodyShape(body)})`);
}

function bodyShape(body: JsonValue): string {
  if (Array.isArray(body)) return `an array of ${body.length} elements`;
  if (isPlainObject(body)) return `an object with keys ${truncate(JSON.stringify(Object.keys(body)), 100)}`;
  return describe(body);
}

function fromV2(body: JsonValue, headers: JsonObject): DecodeResult {
  if (!Array.isArray(body)) {
    return fail(`v2 body must be [args, kwargs, embed], got ${bodyShape(body)}`);
  }
  if (body.length !== 3) {
    // A 2-element body crashes a Python 5.2.6 worker (ValueError on unpacking); never accept or forward it.
    return fail(`v2 body must be [args, kwargs, embed], got ${body.length} elements`);
  }
  const [args, kwargsRaw, embed] = body;
  if (!Array.isArray(args)) return fail(`v2 args must be an array, got ${describe(args)}`);
  // Null kwargs come from JS producers that passed `undefined` (PostHog fixed this in 65995604); be lenient.
  const kwargs = kwargsRaw === null ? {} : kwargsRaw;
  if (!isPlainObject(kwargs)) return fail(`v2 kwargs must be an object, got ${describe(kwargsRaw)}`);
  if (embed !== null && !isPlainObject(embed)) {
    return fail(`v2 embed must be an object or null, got ${describe(embed)}`);
  }
  // Spread (not Object.assign) so that a "__proto__" header stays an own data property.
  return finish(2, { ...headers }, args, kwargs, embed, 'utc');
}

/** Keys of a v1 body that are the payload, not task metadata. */
const V1_PAYLOAD_KEYS = new Set(['args', 'kwargs', 'callbacks', 'errbacks', 'chord', 'chain']);

/**
 * v1 bodies and hybrid messages, converted the way Celery's hybrid_to_proto2 / proto1_to_proto2 do: v2 headers
 * from the body's fields, then the message headers laid over them (empty for real v1 messages).
 */
function fromV1Body(body: JsonObject, messageHeaders: JsonObject, protocol: 1 | 'hybrid'): DecodeResult {
  const label = protocol === 1 ? 'v1' : 'hybrid';
  const hasArgs = hasOwn(body, 'args');
  const args = hasArgs ? body.args : [];
  if (!Array.isArray(args)) return fail(`${label} args must be an array, got ${describe(args)}`);
  let kwargs: JsonValue;
  if (hasOwn(body, 'kwargs')) kwargs = body.kwargs;
  else if (hasArgs)
    kwargs = {}; // hybrid_to_proto2: body.get('kwargs', {})
  else return fail(`${label} message does not have args/kwargs`); // proto1_to_proto2: body['kwargs']
  if (!isPlainObject(kwargs)) return fail(`${label} task keyword arguments must be a mapping, got ${describe(kwargs)}`);

  const get = (k: string): JsonValue => (hasOwn(body, k) ? body[k] : null);
  let group = get('group');
  // proto1_to_proto2 (no args key) renames the legacy `taskset` field to `group`.
  if (!hasArgs && hasOwn(body, 'taskset')) group = body.taskset;

  const lifted: JsonObject = {
    lang: get('lang'),
    task: get('task'),
    id: get('id'),
    shadow: get('shadow'),
    eta: get('eta'),
    expires: get('expires'),
    group,
    retries: hasOwn(body, 'retries') ? body.retries : 0,
    timelimit: hasOwn(body, 'timelimit') ? body.timelimit : [null, null],
    root_id: get('root_id'),
    parent_id: get('parent_id'),
    argsrepr: get('argsrepr'),
    kwargsrepr: get('kwargsrepr'),
    origin: get('origin'),
    meth: get('meth'),
  };
  // Remaining body metadata (utc, taskset, group_index, …) is kept too, so nothing the producer said is lost.
  const extra = Object.fromEntries(
    Object.keys(body)
      .filter((k) => !V1_PAYLOAD_KEYS.has(k) && !hasOwn(lifted, k))
      .map((k) => [k, body[k]]),
  ) as JsonObject;
  const headers: JsonObject = { ...extra, ...lifted, ...messageHeaders };
  if (headers.argsrepr === null || headers.argsrepr === undefined) headers.argsrepr = truncatedRepr(args);
  if (headers.kwargsrepr === null || headers.kwargsrepr === undefined) headers.kwargsrepr = truncatedRepr(kwargs);

  const embed: JsonObject = {
    callbacks: get('callbacks'),
    errbacks: get('errbacks'),
    chain: null,
    chord: get('chord'),
  };
  // body.get('utc', True): naive eta/expires are UTC unless the producer said utc=false (its local time,
  // which we can only approximate with this process's timezone).
  const naive: NaiveZone = body.utc === false ? 'local' : 'utc';
  return finish(protocol, headers, args, kwargs, embed, naive);
}

function finish(
  protocol: TaskMessage['protocol'],
  headers: JsonObject,
  args: JsonValue[],
  kwargs: JsonObject,
  embed: JsonObject | null,
  naive: NaiveZone,
): DecodeResult {
  const id = headers.id;
  // A missing id crashes a Python worker (KeyError 'id'); we refuse the message instead.
  if (typeof id !== 'string' || id === '')
    return fail(`task id must be a non-empty string, got ${describe(id ?? null)}`);
  const task = headers.task;
  if (typeof task !== 'string' || task === '') {
    return fail(`task name must be a non-empty string, got ${describe(task ?? null)} (task id ${id})`);
  }

  const eta = parseTime('eta', headers.eta, naive);
  if (typeof eta === 'string') return fail(`${eta} (task ${task} id ${id})`);
  const expires = parseTime('expires', headers.expires, naive);
  if (typeof expires === 'string') return fail(`${expires} (task ${task} id ${id})`);

  const retriesRaw = headers.retries;
  let retries = 0;
  if (retriesRaw !== undefined && retriesRaw !== null) {
    if (typeof retriesRaw !== 'number' || !Number.isSafeInteger(retriesRaw) || retriesRaw < 0) {
      return fail(`retries must be a non-negative integer, got ${describe(retriesRaw)} (task ${task} id ${id})`);
    }
    retries = retriesRaw;
  }

  // Informational links: a wrong type is not worth refusing the task over.
  const str = (v: JsonValue | undefined): string | null => (typeof v === 'string' ? v : null);
  return {
    ok: true,
    task: {
      protocol,
      id,
      task,
      args,
      kwargs,
      embed,
      eta,
      expires,
      retries,
      rootId: str(headers.root_id),
      parentId: str(headers.parent_id),
      group: str(headers.group),
      headers,
    },
  };
}

/** Date, null when absent, or a failure reason string. */
function parseTime(name: string, value: JsonValue | undefined, naive: NaiveZone): Date | null | string {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') return `invalid ${name}: expected an ISO-8601 string, got ${describe(value)}`;
  try {
    return parseIsoDateTime(value, naive);
  } catch (err) {
    return `invalid ${name} ${JSON.stringify(truncate(value, 60))}: ${(err as Error).message}`;
  }
}

export type TaskTiming = { state: 'run' } | { state: 'expired' } | { state: 'wait'; dueMs: number };

/**
 * When to run a decoded task, at time `nowMs` (epoch ms), with Celery's comparisons: expired when
 * now > expires (checked first, so an expired task never waits), wait while eta > now, else run.
 * A task whose eta lies after its expiry is reported expired right away: Python would hold it until the eta
 * and then revoke it as expired, so the outcome is the same without holding the message unacked meanwhile.
 */
export function taskTiming(task: TaskMessage, nowMs: number): TaskTiming {
  const expiresMs = task.expires === null ? null : task.expires.getTime();
  const etaMs = task.eta === null ? null : task.eta.getTime();
  if (expiresMs !== null && nowMs > expiresMs) return { state: 'expired' };
  if (etaMs !== null && etaMs > nowMs) {
    if (expiresMs !== null && etaMs > expiresMs) return { state: 'expired' };
    return { state: 'wait', dueMs: etaMs };
  }
  return { state: 'run' };
}
