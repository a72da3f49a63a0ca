/**
 * Celery events (celery/events/dispatcher.py), the messages `celery events`, Flower and `app.events.Receiver`
 * read: a flat JSON object with `type`, `hostname`, `utcoffset`, `pid`, `clock`, `timestamp` and the event's
 * fields, published on exchange `celeryev` with routing key = type with `-` → `.` (`worker.heartbeat`). Buffered
 * task events go out as one JSON list with routing key `task.multi`. Pure; see docs/celery-remote-control.md.
 */
import type { JsonObject, JsonValue } from './types';

/** Celery's `event_exchange`: a topic exchange on AMQP, a fanout (PUBLISH) on Redis. */
export const EVENT_EXCHANGE = 'celeryev';
/** Seconds between worker-heartbeat events (Celery's default; receivers expect one within ~2× this). */
export const HEARTBEAT_INTERVAL_S = 2;
/** What `sw_ident` says instead of `py-celery`. */
export const SOFTWARE_IDENT = 'posthog-plugins';

export interface EventSource {
  hostname: string;
  pid: number;
}

/** Routing key of an event type: `task-succeeded` → `task.succeeded`. */
export function eventRoutingKey(type: string): string {
  return type.replace(/-/g, '.');
}

/**
 * Celery's utcoffset(): the local time's offset in hours, west positive (Python's time.timezone, or altzone in
 * DST), floor-divided. `timezoneOffsetMinutes` is Date#getTimezoneOffset(), which has the same sign.
 */
export function utcOffsetHours(timezoneOffsetMinutes: number): number {
  return Math.floor((timezoneOffsetMinutes * 60) / 3600);
}

/** One event as the dispatcher builds it. `nowMs` and the zone offset are passed in: no clock here. */
export function celeryEvent(
  type: string,
  source: EventSource,
  clock: number,
  nowMs: number,
  timezoneOffsetMinutes: number,
  fields: JsonObject = {},
): JsonObject {
  return {
    hostname: source.hostname,
    utcoffset: utcOffsetHours(timezoneOffsetMinutes),
    pid: source.pid,
    clock,
    ...fields,
    timestamp: nowMs / 1000,
    type,
  };
}

export interface WorkerLoad {
  /** Requests in flight now. */
  active: number;
  /** Tasks finished since start. */
  processed: number;
  /** os.loadavg(), rounded to 2 places as Celery does. */
  loadavg: number[];
  /** platform.system(): 'Linux', 'Darwin', 'Windows'. */
  system: string;
  version: string;
}

/** The fields of worker-online / worker-heartbeat / worker-offline (celery/worker/heartbeat.py). */
export function workerEventFields(load: WorkerLoad): JsonObject {
  return {
    freq: HEARTBEAT_INTERVAL_S,
    active: load.active,
    processed: load.processed,
    loadavg: load.loadavg.map((x) => Math.round(x * 100) / 100),
    sw_ident: SOFTWARE_IDENT,
    sw_ver: load.version,
    sw_sys: load.system,
  };
}

/** Node's os.type() names the same thing Python's platform.system() does, except on Windows. */
export function platformSystem(osType: string): string {
  return osType === 'Windows_NT' ? 'Windows' : osType;
}

export interface ReceivedTask {
  id: string;
  name: string;
  /** Python reprs, as Celery's argsrepr/kwargsrepr. */
  argsrepr: string;
  kwargsrepr: string;
  rootId: string | null;
  parentId: string | null;
  retries: number;
  eta: string | null;
  expires: string | null;
}

/** task-received fields (celery/worker/strategy.py). */
export function taskReceivedFields(t: ReceivedTask): JsonObject {
  return {
    uuid: t.id,
    name: t.name,
    args: t.argsrepr,
    kwargs: t.kwargsrepr,
    root_id: t.rootId,
    parent_id: t.parentId,
    retries: t.retries,
    eta: t.eta,
    expires: t.expires,
  };
}

/** task-started: only the id. */
export function taskStartedFields(id: string): JsonObject {
  return { uuid: id };
}

/** task-succeeded: the result's repr and the run time in seconds. */
export function taskSucceededFields(id: string, resultRepr: string, runtimeS: number): JsonObject {
  return { uuid: id, result: resultRepr, runtime: runtimeS };
}

/** task-failed: the exception's repr and a traceback text. */
export function taskFailedFields(id: string, exceptionRepr: string, traceback: string): JsonObject {
  return { uuid: id, exception: exceptionRepr, traceback };
}

/** Headers of every event message (EventDispatcher.headers). */
export function eventHeaders(hostname: string): JsonObject {
  return { hostname };
}

/** Routing key of a buffered group sent as one list: `task.multi`. */
export function multiRoutingKey(group: string): string {
  return `${group}.multi`;
}

export type EventBody = JsonObject | JsonValue[];
