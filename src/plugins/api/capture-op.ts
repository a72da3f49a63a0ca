import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { encodeTaskV2 } from '../../../protocol/encode';
import { randomTaskId } from '../../../protocol/ids';
import { processEventWithPluginsTask } from '../../../protocol/posthog';
import { formatPythonUtcIso, parseIsoDateTime } from '../../../protocol/time';
import type { JsonObject, OutgoingTask } from '../../../protocol/types';
import type { Outgoing } from '../../brokers/broker';
import { PluginFacingError, type HostOp, type PluginIdentity } from '../vm/bridge';

/**
 * The host half of `posthog.capture(event, properties)` (docs/posthog-plugin-api.md#capture): the event is enqueued
 * as `posthog.tasks.process_event.process_event_with_plugins` on the plugins queue, the way Django's capture
 * endpoint sends it (7 positional args, kwargs {}), so it is ingested like any captured event — and, as in
 * PostHog, goes through the team's plugins again.
 *
 * Request (from the isolate shim): {event: string, properties: object | null}. Result: null, once the broker
 * has the message.
 *
 * The event is PostHog plugin server's (HEAD, Celery path):
 *   data = {distinct_id, event, timestamp, properties: {$lib: 'posthog-plugin-server', $lib_version, distinct_id,
 *           ...properties without distinct_id and timestamp}, team_id, uuid}
 *   distinct_id = properties.distinct_id, else the plugin's name, else `plugin-id-<pluginId>`
 *   timestamp   = properties.timestamp, else now
 * Two deliberate differences: `now` and `sent_at` are the current time (PostHog passed the event timestamp for
 * both; with sent_at == now Python's clock-skew correction leaves the timestamp unchanged, so the event lands at
 * the same time, and `now` stays the real receive time), and `site_url` is the configured site URL or ''
 * (PostHog sent null; our own consumer reads null as '' anyway).
 */

export interface CaptureOpOptions {
  /** The plugins queue (PLUGINS_CELERY_QUEUE, `posthog-plugins`). */
  queue: string;
  /** site_url of captured events (PostHog's SITE_URL); '' when unset. */
  siteUrl?: string;
  /** The plugin's name, PostHog's default distinct_id; undefined/'' falls back to `plugin-id-<pluginId>`. */
  nameOf?: (pluginId: number) => string | null | undefined;
  /** `$lib_version` of captured events (this package's version); left out when unset. */
  libVersion?: string;
  /** Celery `origin` header; default `posthog-plugins-<pid>@<host>` like the worker's own messages. */
  origin?: string;
  /** Largest message body (UTF-8 bytes of the task's JSON), default 1 MB. */
  maxPayloadBytes?: number;
}

export interface CaptureRequest {
  event: string;
  properties: JsonObject;
}

const MAX_EVENT_CHARS = 200;
/** posthog_persondistinctid.distinct_id is a varchar(400). */
const MAX_DISTINCT_ID_CHARS = 400;
export const LIB = 'posthog-plugin-server';

function refuse(message: string): never {
  throw new PluginFacingError('CaptureError', message);
}

function isPlainObject(v: unknown): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** The request as the shim sent it, checked field by field. */
export function parseCaptureRequest(raw: unknown): CaptureRequest {
  if (!isPlainObject(raw)) refuse('posthog.capture: malformed request');
  const { event, properties } = raw;
  if (typeof event !== 'string' || event === '' || event.length > MAX_EVENT_CHARS) {
    refuse(
      `posthog.capture: the event name must be a non-empty string of at most ${MAX_EVENT_CHARS} characters, got ${typeof event === 'string' ? `${event.length} characters` : event === null ? 'null' : typeof event}`,
    );
  }
  if (properties !== null && properties !== undefined && !isPlainObject(properties)) {
    refuse(
      `posthog.capture: properties must be an object, got ${Array.isArray(properties) ? 'an array' : typeof properties}`,
    );
  }
  if (properties !== null && properties !== undefined && depthOver(properties, MAX_DEPTH)) {
    refuse(`posthog.capture: properties are nested more than ${MAX_DEPTH} levels deep`);
  }
  return { event, properties: (properties ?? {}) as JsonObject };
}

/** Python's json (recursion limit ~1000) and every consumer on the way need a sane bound. */
const MAX_DEPTH = 100;

function depthOver(value: unknown, left: number): boolean {
  if (value === null || typeof value !== 'object') return false;
  if (left === 0) return true;
  for (const v of Array.isArray(value) ? value : Object.values(value)) if (depthOver(v, left - 1)) return true;
  return false;
}

/**
 * A time-ordered UUID (RFC 9562 version 7: 48-bit Unix ms, then random): PostHog's UUIDT serves the same purpose
 * (event uuids that sort by time in ClickHouse), and Python reads either as a plain UUID.
 */
export function timeOrderedUuid(now: Date): string {
  const b = randomBytes(16);
  b.writeUIntBE(now.getTime(), 0, 6);
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function distinctIdOf(value: unknown, fallback: string): string {
  if (value === undefined || value === null) return fallback;
  let id: string;
  if (typeof value === 'string') id = value;
  else if (typeof value === 'number' && Number.isSafeInteger(value))
    id = String(value); // as Python's str()
  else
    return refuse(
      `posthog.capture: properties.distinct_id must be a string or an integer, got ${Array.isArray(value) ? 'an array' : typeof value}`,
    );
  if (id === '' || id.length > MAX_DISTINCT_ID_CHARS)
    refuse(
      `posthog.capture: properties.distinct_id must be 1 to ${MAX_DISTINCT_ID_CHARS} characters, got ${id.length}`,
    );
  return id;
}

function timestampOf(value: unknown, now: string): string {
  if (value === undefined || value === null) return now;
  if (typeof value !== 'string')
    refuse(`posthog.capture: properties.timestamp must be an ISO-8601 string, got ${typeof value}`);
  try {
    parseIsoDateTime(value);
  } catch {
    refuse(
      `posthog.capture: properties.timestamp must be an ISO-8601 date-time, got ${JSON.stringify(value.slice(0, 60))}`,
    );
  }
  return value;
}

export interface CaptureContext {
  plugin: PluginIdentity;
  pluginName: string | null | undefined;
  siteUrl: string;
  libVersion?: string;
  origin: string;
  now: Date;
}

/** The process_event_with_plugins task for one posthog.capture call. Pure apart from the random ids. */
export function captureTask(req: CaptureRequest, c: CaptureContext): OutgoingTask {
  const now = formatPythonUtcIso(c.now);
  const fallback = c.pluginName ? c.pluginName : `plugin-id-${c.plugin.pluginId}`;
  const { distinct_id: rawId, timestamp: rawTimestamp, ...rest } = req.properties;
  const distinctId = distinctIdOf(rawId, fallback);
  const timestamp = timestampOf(rawTimestamp, now);
  // PostHog's order and precedence: the plugin's own properties come last and win (even over $lib).
  // fromEntries defines data properties: a "__proto__" key from the plugin stays data, never a prototype.
  const properties = Object.fromEntries([
    ['$lib', LIB],
    ...(c.libVersion !== undefined ? [['$lib_version', c.libVersion]] : []),
    ['distinct_id', distinctId],
    ...Object.entries(rest),
  ]) as JsonObject;
  const data: JsonObject = {
    distinct_id: distinctId,
    event: req.event,
    timestamp,
    properties,
    team_id: c.plugin.teamId,
    uuid: timeOrderedUuid(c.now),
  };
  return processEventWithPluginsTask(
    { distinct_id: distinctId, ip: null, site_url: c.siteUrl, data, team_id: c.plugin.teamId, now, sent_at: now },
    { id: randomTaskId(), origin: c.origin },
  );
}

/** The `posthog.capture` entry of the host ops registry; `publish` is the worker's `broker.publish`. */
export function createCaptureOp(publish: (outgoing: Outgoing[]) => Promise<void>, opts: CaptureOpOptions): HostOp {
  if (typeof opts.queue !== 'string' || opts.queue === '')
    throw new Error('createCaptureOp: queue must be a non-empty string');
  const maxPayloadBytes = opts.maxPayloadBytes ?? 1024 * 1024;
  const origin = opts.origin ?? `posthog-plugins-${process.pid}@${hostname()}`;
  return {
    // the request JSON is about as long as the event it becomes (UTF-16 units ≤ UTF-8 bytes)
    maxArgBytes: maxPayloadBytes + 4096,
    // one broker round trip each; enough for a batch of events that each capture once
    concurrency: 8,
    maxQueued: 256,
    errorName: 'CaptureError',
    async run(raw, ctx) {
      const req = parseCaptureRequest(raw);
      const task = captureTask(req, {
        plugin: ctx.plugin,
        pluginName: opts.nameOf?.(ctx.plugin.pluginId),
        siteUrl: opts.siteUrl ?? '',
        libVersion: opts.libVersion,
        origin,
        now: new Date(),
      });
      let outgoing: Outgoing;
      try {
        outgoing = { queue: opts.queue, message: encodeTaskV2(task), priority: 0 };
      } catch (err) {
        // e.g. an object shaped like kombu's {"__type__", "__value__"} tag, which Python would misread
        refuse(
          `posthog.capture: the event cannot be sent: ${(err as Error).message.replace(/^cannot encode task "[^"]*" id "[^"]*": /, '')}`,
        );
      }
      if (outgoing.message.body.length > maxPayloadBytes) {
        refuse(`posthog.capture: event too large: ${outgoing.message.body.length} bytes, limit ${maxPayloadBytes}`);
      }
      if (ctx.signal.aborted) throw ctx.signal.reason;
      try {
        await publish([outgoing]);
      } catch (err) {
        // the broker's message may name its address: the operator sees it, the plugin does not
        ctx.warn(`posthog.capture: publishing to ${opts.queue} failed: ${(err as Error)?.message ?? String(err)}`);
        throw new PluginFacingError(
          'CaptureError',
          `posthog.capture: the event could not be queued (broker unavailable)`,
          'unavailable',
        );
      }
      return null;
    },
  };
}
