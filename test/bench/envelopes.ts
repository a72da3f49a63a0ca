/**
 * Benchmark input, generated in Node but shaped exactly like Python Celery 5.2's `send_task` output (PostHog's
 * capture endpoint), so tens of thousands of messages can be queued in a fraction of a second.
 *
 * The message is built by protocol/ (`encodeTaskV2`, then `buildEnvelope` for Redis, `amqpPublishOptions` for
 * RabbitMQ) and then given what differs between a Node producer and a Python one: `lang: "py"`, the producer's
 * `reply_to` uuid, `sent_at` as a Python datetime (kombu 5.2 JSON `...Z`, repr `datetime.datetime(...)`), and the
 * body/envelope text with Python's json.dumps separators (", " and ": ", ensure_ascii). `verifyAgainstFixture`
 * checks the result byte for byte against a message captured from real Celery (fixtures/messages/v2.jsonl).
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { amqpPublishOptions, type AmqpPublishOptions } from '../../protocol/amqp-properties';
import { encodeTaskV2 } from '../../protocol/encode';
import { processEventWithPluginsTask, type IngestionArgs } from '../../protocol/posthog';
import { buildEnvelope } from '../../protocol/redis-envelope';
import { pythonNumberRepr } from '../../protocol/repr';
import type { JsonObject, JsonValue, RawMessage } from '../../protocol/types';
import { celerySaferepr, type PyValue } from './saferepr';

export const INPUT_QUEUE = 'posthog-plugins';
export const OUTPUT_QUEUE = 'celery';

// ------------------------------------------------------------------------------------------- Python's json.dumps

function pyString(s: string): string {
  // JSON.stringify escapes like Python for ASCII (short forms \b \f \n \r \t, \u00XX lowercase for the other
  // controls); ensure_ascii additionally escapes DEL and everything above it as \uXXXX (surrogate pairs split).
  return JSON.stringify(s).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** `json.dumps(value)` with Python's defaults: separators (", ", ": "), ensure_ascii, float repr. */
export function pyDumps(value: JsonValue): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      return pyString(value);
    case 'number':
      return pythonNumberRepr(value);
    case 'boolean':
      return value ? 'true' : 'false';
    default:
      break;
  }
  if (Array.isArray(value)) return `[${value.map(pyDumps).join(', ')}]`;
  const obj = value as JsonObject;
  return `{${Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .map((k) => `${pyString(k)}: ${pyDumps(obj[k])}`)
    .join(', ')}}`;
}

// ------------------------------------------------------------------------------------------ Python's datetimes

/** `datetime.isoformat()` of an aware UTC datetime: microseconds only when non-zero, `+00:00`. */
export function pyIsoformat(ms: number, micro = 0): string {
  const d = new Date(ms);
  const base = d.toISOString().slice(0, 19);
  const us = d.getUTCMilliseconds() * 1000 + micro;
  return `${base}${us ? `.${String(us).padStart(6, '0')}` : ''}+00:00`;
}

/** kombu 5.2's JSON for a datetime: isoformat with `+00:00` turned into `Z`. */
export function kombuDatetime(ms: number, micro = 0): string {
  return pyIsoformat(ms, micro).replace(/\+00:00$/, 'Z');
}

/** `repr(datetime)` of an aware UTC datetime (trailing zero microsecond, then second, left out). */
export function pyDatetimeRepr(ms: number, micro = 0): string {
  const d = new Date(ms);
  const fields = [
    d.getUTCFullYear(),
    d.getUTCMonth() + 1,
    d.getUTCDate(),
    d.getUTCHours(),
    d.getUTCMinutes(),
    d.getUTCSeconds(),
    d.getUTCMilliseconds() * 1000 + micro,
  ];
  if (fields[6] === 0) {
    fields.pop();
    if (fields[5] === 0) fields.pop();
  }
  return `datetime.datetime(${fields.join(', ')}, tzinfo=datetime.timezone.utc)`;
}

// ------------------------------------------------------------------------------------------------ the messages

/** One process_event_with_plugins as PostHog's capture sends it. `sentAtMs` is a datetime on the Python side. */
export interface CaptureTask {
  id: string;
  distinctId: string;
  ip: string | null;
  siteUrl: string;
  data: JsonObject;
  teamId: number;
  /** `now` argument: ISO string as Python's `now.isoformat()` wrote it. */
  now: string;
  /** `sent_at` as a datetime (ms since epoch + extra microseconds), or null. */
  sentAt: { ms: number; micro: number } | null;
}

/** A Python producer's identity: `origin` (gen<pid>@<host>) and its reply_to queue id (one per app). */
export interface Producer {
  origin: string;
  replyTo: string;
}

export function benchProducer(): Producer {
  return { origin: `gen${process.pid}@${hostname()}`, replyTo: randomUUID() };
}

/** The task's arguments as the worker reads them off the message (sent_at in kombu 5.2's JSON form). */
export function captureArgs(t: CaptureTask): IngestionArgs {
  return {
    distinct_id: t.distinctId,
    ip: t.ip,
    site_url: t.siteUrl,
    data: t.data,
    team_id: t.teamId,
    now: t.now,
    sent_at: t.sentAt ? kombuDatetime(t.sentAt.ms, t.sentAt.micro) : null,
  };
}

/** The v2 message Python Celery 5.2 would send for this task (headers, properties, body bytes). */
export function captureMessage(t: CaptureTask, producer: Producer): RawMessage {
  const args = captureArgs(t);
  const sentAtJson = args.sent_at;
  const msg = encodeTaskV2(processEventWithPluginsTask(args, { id: t.id, origin: producer.origin }));
  msg.headers.lang = 'py';
  // Celery's own saferepr (not a cut of the full repr), with sent_at shown as the datetime Python had.
  const sentAtRepr: PyValue = t.sentAt ? { pyrepr: pyDatetimeRepr(t.sentAt.ms, t.sentAt.micro) } : null;
  msg.headers.argsrepr = celerySaferepr([t.distinctId, t.ip, t.siteUrl, t.data, t.teamId, t.now, sentAtRepr], 1024);
  msg.headers.kwargsrepr = celerySaferepr({}, 1024);
  msg.properties.reply_to = producer.replyTo;
  const positional: JsonValue[] = [t.distinctId, t.ip, t.siteUrl, t.data, t.teamId, t.now, sentAtJson];
  msg.body = Buffer.from(
    pyDumps([positional, {}, { callbacks: null, errbacks: null, chain: null, chord: null }]),
    'utf8',
  );
  return msg;
}

/** The text kombu LPUSHes onto the Redis list (envelope with Python separators, base64 body). */
export function redisEnvelope(msg: RawMessage, deliveryTag: string = randomUUID(), queue = INPUT_QUEUE): string {
  return pyDumps(JSON.parse(buildEnvelope(msg, { deliveryTag, exchange: '', routingKey: queue })) as JsonValue);
}

/** What py-amqp publishes: the body bytes and the basic properties (amqplib publish options). */
export function amqpMessage(msg: RawMessage): { body: Buffer; options: AmqpPublishOptions } {
  return { body: msg.body, options: amqpPublishOptions(msg) };
}

// --------------------------------------------------------------------------------------------- the bench events

const BROWSERS = ['Chrome', 'Firefox', 'Safari', 'Microsoft Edge'];
const OSES = ['Mac OS X', 'Windows', 'Linux', 'iOS', 'Android'];
const PATHS = [
  '/',
  '/pricing',
  '/docs/getting-started',
  '/blog/what-is-product-analytics',
  '/signup',
  '/features/session-recording',
];

function hex(n: number, width: number): string {
  return (n >>> 0).toString(16).padStart(width, '0').slice(-width);
}

/** A deterministic uuid-looking id for index i (version 4 layout). */
export function benchUuid(prefix: number, i: number): string {
  return `${hex(prefix, 8)}-${hex(i >>> 16, 4)}-4${hex(i, 3)}-8${hex(i * 7919, 3)}-${hex(i, 8)}${hex(prefix, 4)}`;
}

/**
 * A posthog-js `$pageview` as capture hands it over (`data`), about 1 KB of JSON. `sentMs` (the harness's enqueue
 * time, for latency) is a property so it survives every peer unchanged.
 */
export function benchEvent(i: number, distinctId: string, timestampMs: number, sentMs: number): JsonObject {
  const p = PATHS[i % PATHS.length];
  return {
    event: '$pageview',
    properties: {
      $os: OSES[i % OSES.length],
      $browser: BROWSERS[i % BROWSERS.length],
      $device_type: 'Desktop',
      $current_url: `https://app.example.com${p}?utm_source=newsletter&ref=${i % 97}`,
      $host: 'app.example.com',
      $pathname: p,
      $browser_version: 96 + (i % 5),
      $screen_height: 1080,
      $screen_width: 1920,
      $viewport_height: 947,
      $viewport_width: 1920,
      $lib: 'web',
      $lib_version: '1.17.4',
      $insert_id: `${hex(i * 2654435761, 8)}${hex(i, 8)}`,
      $time: Math.round(timestampMs) / 1000,
      distinct_id: distinctId,
      $device_id: `17d${hex(i, 8)}-0b1c2d3e4f5a6b-4c6f6f6b-1fa400-17d${hex(i * 31, 8)}`,
      $referrer: 'https://www.google.com/',
      $referring_domain: 'www.google.com',
      $active_feature_flags: ['new-onboarding', 'session-recording-v2'],
      '$feature/new-onboarding': true,
      '$feature/session-recording-v2': true,
      $initial_referrer: '$direct',
      $initial_referring_domain: '$direct',
      utm_source: 'newsletter',
      utm_medium: 'email',
      utm_campaign: 'november-product-update',
      $session_id: `17d${hex(i >>> 4, 8)}-session-${hex(i >>> 4, 6)}`,
      $window_id: `17d${hex(i >>> 4, 8)}-window-${hex(i >>> 6, 6)}`,
      token: 'phc_bench0123456789abcdefghijklmnopqrstuvwxyz',
      index: i,
      sent_ms: sentMs,
    },
    timestamp: new Date(timestampMs).toISOString(),
    uuid: benchUuid(0xbe4c, i),
  };
}

/** The capture task of bench event i for a team. */
export function benchTask(i: number, teamId: number, runTag: number, sentMs: number): CaptureTask {
  const nowMs = Math.floor(sentMs);
  const distinctId = `user-${i % 5000}`;
  return {
    id: benchUuid(runTag, i),
    distinctId,
    ip: '127.0.0.1',
    siteUrl: 'https://app.example.com',
    data: benchEvent(i, distinctId, nowMs - 120, sentMs),
    teamId,
    now: pyIsoformat(nowMs, 123),
    sentAt: { ms: nowMs - 37, micro: 0 },
  };
}

// ----------------------------------------------------------------------------------------------- verification

/** The repository (this file runs from dist/test/bench; the current directory when compiled elsewhere). */
export const REPO_ROOT =
  [path.resolve(__dirname, '../../..'), process.cwd()].find((d) => existsSync(path.join(d, 'bin/posthog-plugins'))) ??
  process.cwd();

/**
 * Rebuilds the first message of fixtures/messages/v2.jsonl (captured from Celery 5.2.6) from its arguments and
 * compares our envelope text with the captured one byte for byte. Throws with both texts on a difference.
 */
export function verifyAgainstFixture(): void {
  const line = readFileSync(path.join(REPO_ROOT, 'fixtures/messages/v2.jsonl'), 'utf8').split('\n')[0];
  const env = JSON.parse(line) as {
    body: string;
    headers: JsonObject;
    properties: JsonObject & { delivery_tag: string };
  };
  const [args] = JSON.parse(Buffer.from(env.body, 'base64').toString('utf8')) as [JsonValue[]];
  const [distinctId, ip, siteUrl, data, teamId, now, sentAt] = args as [
    string,
    string,
    string,
    JsonObject,
    number,
    string,
    string,
  ];
  const sentMatch = /^(.*\.\d{3})(\d{3})Z$/.exec(sentAt);
  if (!sentMatch) throw new Error(`unexpected sent_at in fixture: ${sentAt}`);
  const task: CaptureTask = {
    id: String(env.headers.id),
    distinctId,
    ip,
    siteUrl,
    data,
    teamId,
    now,
    sentAt: { ms: Date.parse(`${sentMatch[1]}Z`), micro: Number(sentMatch[2]) },
  };
  const msg = captureMessage(task, { origin: String(env.headers.origin), replyTo: String(env.properties.reply_to) });
  const ours = redisEnvelope(msg, env.properties.delivery_tag);
  if (ours !== line) {
    let at = 0;
    while (at < ours.length && ours[at] === line[at]) at++;
    throw new Error(
      `generated envelope differs from fixtures/messages/v2.jsonl[0] at character ${at}:\n` +
        `  fixture: …${line.slice(Math.max(0, at - 60), at + 60)}\n  ours:    …${ours.slice(Math.max(0, at - 60), at + 60)}`,
    );
  }
}

// ------------------------------------------------------------------------------- pre-rendered paced messages

/**
 * The latency phase must stamp `properties.sent_ms` at the moment of sending without paying for a whole
 * Python-shaped message per send (tens of µs of harness CPU per message on a 2-core machine would slow the
 * peer down). So each message is rendered beforehand with a placeholder of the same width, and only the digits
 * (and, on Redis, the base64 of the ~1.4 KB body) are redone at send time.
 */
const SENT_PLACEHOLDER = 1111111111111.111;
const SENT_PLACEHOLDER_TEXT = '1111111111111.111';

/** ms since the epoch as exactly 17 characters (13 digits, point, 3 decimals) until the year 2286. */
function sentText(ms: number): string {
  return ms.toFixed(3);
}

export interface PacedTemplate {
  body: Buffer;
  /** Byte offset of the placeholder in the body. */
  at: number;
  /** Redis: the envelope text around the base64 body (placeholder never occurs in them: checked). */
  prefix: string;
  suffix: string;
  message: RawMessage;
}

export function pacedTemplate(i: number, teamId: number, runTag: number, producer: Producer): PacedTemplate {
  const t = benchTask(i, teamId, runTag, SENT_PLACEHOLDER);
  const now = Math.floor(performance.timeOrigin + performance.now());
  // Real times for everything else (benchTask derived them from the placeholder).
  t.now = pyIsoformat(now, 123);
  t.sentAt = { ms: now - 37, micro: 0 };
  (t.data as { timestamp: string }).timestamp = new Date(now - 120).toISOString();
  ((t.data as { properties: JsonObject }).properties as JsonObject).$time = Math.round(now - 120) / 1000;
  const message = captureMessage(t, producer);
  const at = message.body.indexOf(SENT_PLACEHOLDER_TEXT);
  if (at < 0) throw new Error('paced template: placeholder not found in the body');
  const envelope = redisEnvelope(message);
  const b64 = message.body.toString('base64');
  const k = envelope.indexOf(b64);
  const prefix = envelope.slice(0, k);
  const suffix = envelope.slice(k + b64.length);
  if (k < 0 || prefix.includes(SENT_PLACEHOLDER_TEXT) || suffix.includes(SENT_PLACEHOLDER_TEXT)) {
    throw new Error('paced template: sent_ms must only occur in the body (it would show in argsrepr)');
  }
  return { body: message.body, at, prefix, suffix, message };
}

/** Stamps the send time into the template's body (in place) and returns the Redis envelope. */
export function stampRedis(t: PacedTemplate, sentMs: number): string {
  t.body.write(sentText(sentMs), t.at, 'latin1');
  return `${t.prefix}${t.body.toString('base64')}${t.suffix}`;
}

/** Stamps the send time into the template's body (in place) and returns the AMQP body. */
export function stampAmqp(t: PacedTemplate, sentMs: number): Buffer {
  t.body.write(sentText(sentMs), t.at, 'latin1');
  return t.body;
}
