/**
 * PostHog's ingestion tasks (docs/celery-wire.md#posthog-tasks):
 *
 *   in : posthog.tasks.process_event.process_event_with_plugins(distinct_id, ip, site_url, data, team_id, now,
 *        sent_at) — sent by Django's capture endpoint as 7 positional args, kwargs {};
 *   out: posthog.tasks.process_event.process_event with args [] and kwargs {distinct_id, ip, site_url, data,
 *        team_id, now, sent_at} — what the plugin server sent back to the Python workers (queue `celery`).
 *
 * Plugins see one flat "plugin event": the six top-level fields plus the keys of `data`.
 */
import { describe, isJsonObject } from './json';
import { LosslessNumber } from './lossless-number';
import { holdsLosslessNumbers, markLosslessHolder } from './lossless-numbers';
import type { JsonObject, JsonValue, OutgoingTask, TaskMessage } from './types';

export const PROCESS_EVENT_WITH_PLUGINS = 'posthog.tasks.process_event.process_event_with_plugins';
export const PROCESS_EVENT = 'posthog.tasks.process_event.process_event';

/** Parameter names of both tasks, in positional order (Python binds args and kwargs against these). */
export const INGESTION_PARAMS = ['distinct_id', 'ip', 'site_url', 'data', 'team_id', 'now', 'sent_at'] as const;
type IngestionParam = (typeof INGESTION_PARAMS)[number];

/** The event fields that travel beside `data` rather than inside it. */
export const TOP_LEVEL_FIELDS = ['distinct_id', 'ip', 'site_url', 'team_id', 'now', 'sent_at'] as const;
const TOP_LEVEL_SET: ReadonlySet<string> = new Set(TOP_LEVEL_FIELDS);

export interface IngestionArgs {
  distinct_id: string;
  /** null when the team anonymizes IPs. */
  ip: string | null;
  site_url: string;
  /** The captured event: event, properties, timestamp, offset, $set, … */
  data: JsonObject;
  team_id: number;
  /** Server receive time, ISO string. */
  now: string;
  /** Client send time, ISO string, or null. */
  sent_at: string | null;
  /** team_id as it was written when JSON.parse would have changed it (`2.0`): published back as written. */
  teamIdToken?: LosslessNumber;
}

export type PluginEvent = JsonObject & {
  distinct_id: string;
  ip: string | null;
  site_url: string;
  team_id: number;
  now: string;
  sent_at: string | null;
};

export type IngestionArgsResult = { ok: true; args: IngestionArgs } | { ok: false; reason: string };

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

function isPlainObject(v: unknown): v is JsonObject {
  return isJsonObject(v);
}

/**
 * distinct_id as the string Python's str() would give. Only strings and integers (a kept token beyond 2^53 has
 * all its digits): Python prints floats differently from JS (1e+16 vs 10000…).
 */
function distinctIdToString(v: JsonValue | undefined): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' && Number.isSafeInteger(v)) return String(v);
  if (v instanceof LosslessNumber && v.isInteger) return BigInt(v.text).toString();
  return null;
}

/** team_id as an integer; numeric strings are accepted (Python's int() would be). */
function toTeamId(v: JsonValue | undefined): number | null {
  let n: number;
  if (typeof v === 'number') n = v;
  else if (v instanceof LosslessNumber) n = v.value;
  else if (typeof v === 'string' && /^\s*[+-]?\d+\s*$/.test(v)) n = Number(v);
  else return null;
  return Number.isSafeInteger(n) ? n : null;
}

/**
 * Binds the task's args/kwargs to the 7 parameters the way Python would call the function (positional first,
 * then keywords; unknown or duplicate keywords and missing required parameters are errors), then checks types.
 * `sent_at` is optional (6 positional args → null). Never throws.
 */
export function ingestionArgsFromTask(task: TaskMessage): IngestionArgsResult {
  const fail = (reason: string): IngestionArgsResult => ({ ok: false, reason: `${task.task}[${task.id}]: ${reason}` });
  const { args, kwargs } = task;
  if (!Array.isArray(args)) return fail(`args must be an array, got ${describe(args)}`);
  if (!isPlainObject(kwargs)) return fail(`kwargs must be an object, got ${describe(kwargs)}`);
  if (args.length > INGESTION_PARAMS.length) {
    return fail(`takes at most ${INGESTION_PARAMS.length} positional arguments but ${args.length} were given`);
  }
  const bound = new Map<IngestionParam, JsonValue>();
  args.forEach((v, i) => bound.set(INGESTION_PARAMS[i], v));
  for (const key of Object.keys(kwargs)) {
    if (!(INGESTION_PARAMS as readonly string[]).includes(key))
      return fail(`got an unexpected keyword argument '${key}'`);
    const param = key as IngestionParam;
    if (bound.has(param)) return fail(`got multiple values for argument '${key}'`);
    bound.set(param, kwargs[key]);
  }
  const missing = INGESTION_PARAMS.filter((p) => p !== 'sent_at' && !bound.has(p));
  if (missing.length > 0) {
    return fail(`missing required argument${missing.length > 1 ? 's' : ''} ${missing.map((m) => `'${m}'`).join(', ')}`);
  }

  const distinctId = distinctIdToString(bound.get('distinct_id'));
  if (distinctId === null) {
    return fail(`distinct_id must be a string or a safe integer, got ${describe(bound.get('distinct_id') ?? null)}`);
  }
  const ip = bound.get('ip') ?? null;
  if (ip !== null && typeof ip !== 'string') return fail(`ip must be a string or null, got ${describe(ip)}`);
  const siteUrl = bound.get('site_url') ?? null;
  if (siteUrl !== null && typeof siteUrl !== 'string')
    return fail(`site_url must be a string or null, got ${describe(siteUrl)}`);
  const data = bound.get('data');
  if (!isPlainObject(data)) return fail(`data must be an object, got ${describe(data ?? null)}`);
  const teamIdValue = bound.get('team_id');
  const teamId = toTeamId(teamIdValue);
  if (teamId === null) return fail(`team_id must be an integer, got ${describe(teamIdValue ?? null)}`);
  const now = bound.get('now');
  if (typeof now !== 'string') return fail(`now must be a string, got ${describe(now ?? null)}`);
  const sentAt = bound.get('sent_at') ?? null;
  if (sentAt !== null && typeof sentAt !== 'string')
    return fail(`sent_at must be a string or null, got ${describe(sentAt)}`);

  const out: IngestionArgs = {
    distinct_id: distinctId,
    ip,
    site_url: siteUrl ?? '',
    data,
    team_id: teamId,
    now,
    sent_at: sentAt,
  };
  if (teamIdValue instanceof LosslessNumber) out.teamIdToken = teamIdValue;
  return { ok: true, args: out };
}

/**
 * The flat event plugins see: the six top-level fields first, then every key of `data`.
 *
 * PostHog's plugin server built `{distinct_id, ip, site_url, team_id, now, sent_at, ...data}`, so a key of
 * `data` with one of those six names silently replaced the argument (capture's raw event often carries its own
 * `distinct_id`, possibly of another type, and a client could put a `team_id` in it). We take these six from
 * the task arguments instead — they are what Python validated and what the output is routed by — while every
 * other key of `data` is passed through untouched. Key order stays PostHog's (the six first).
 */
export function toPluginEvent(args: IngestionArgs): PluginEvent {
  const event = {
    distinct_id: args.distinct_id,
    ip: args.ip,
    site_url: args.site_url,
    team_id: args.team_id,
    now: args.now,
    sent_at: args.sent_at,
    ...args.data,
  } as PluginEvent;
  // Re-assign after the spread: keeps the six keys in front and their values from args.
  event.distinct_id = args.distinct_id;
  event.ip = args.ip;
  event.site_url = args.site_url;
  event.team_id = args.team_id;
  event.now = args.now;
  event.sent_at = args.sent_at;
  // Numbers kept as written in data are now in the event: restoreLosslessNumbers must look for them there.
  if (holdsLosslessNumbers(args.data)) markLosslessHolder(event);
  return event;
}

/**
 * Splits a (plugin-processed) event back into process_event's kwargs. `data` is the event minus the six
 * top-level fields, as PostHog's `const {distinct_id, ip, site_url, team_id, now, sent_at, ...data} = event`.
 * team_id always comes from the original arguments: a plugin cannot move an event to another team (PostHog
 * enforced the same from v0.20.5). Plugins may change the other five; a value of the wrong type (the event is
 * plugin output, i.e. untrusted) throws an Error naming the field, since Python's process_event would fail on it.
 */
export function toProcessEventKwargs(event: PluginEvent, original: IngestionArgs): JsonObject {
  if (!isPlainObject(event)) throw new Error(`plugin event must be an object, got ${describe(event)}`);
  const bad = (field: string, expected: string, got: unknown): Error =>
    new Error(`plugin event field ${field} must be ${expected}, got ${describe(got)} (team ${original.team_id})`);

  const distinctId = distinctIdToString(event.distinct_id);
  if (distinctId === null) throw bad('distinct_id', 'a string', event.distinct_id ?? null);
  const ip = hasOwn(event, 'ip') && event.ip !== undefined ? event.ip : null;
  if (ip !== null && typeof ip !== 'string') throw bad('ip', 'a string or null', ip);
  const siteUrl = hasOwn(event, 'site_url') && event.site_url !== undefined ? event.site_url : null;
  if (siteUrl !== null && typeof siteUrl !== 'string') throw bad('site_url', 'a string or null', siteUrl);
  const now = event.now;
  if (typeof now !== 'string') throw bad('now', 'a string', now ?? null);
  const sentAt = hasOwn(event, 'sent_at') && event.sent_at !== undefined ? event.sent_at : null;
  if (sentAt !== null && typeof sentAt !== 'string') throw bad('sent_at', 'a string or null', sentAt);

  // Object.fromEntries defines own properties: a "__proto__" key in the event stays plain data.
  const data = Object.fromEntries(
    Object.keys(event)
      .filter((k) => !TOP_LEVEL_SET.has(k))
      .map((k) => [k, event[k]]),
  ) as JsonObject;
  return {
    distinct_id: distinctId,
    ip,
    site_url: siteUrl ?? '',
    data,
    team_id: original.teamIdToken ?? original.team_id,
    now,
    sent_at: sentAt,
  };
}

export interface TaskOptions {
  id: string;
  /** Celery `origin` header, `name@host`. */
  origin: string;
  /** Id of the task this one was produced for (Celery parent_id). */
  parentId?: string;
  /** Workflow root (Celery root_id); defaults to the task's own id when encoded. */
  rootId?: string;
  priority?: number;
}

function withOptions(task: string, args: JsonValue[], kwargs: JsonObject, opts: TaskOptions): OutgoingTask {
  const out: OutgoingTask = { task, id: opts.id, args, kwargs, origin: opts.origin, parentId: opts.parentId ?? null };
  if (opts.rootId !== undefined) out.rootId = opts.rootId;
  if (opts.priority !== undefined) out.priority = opts.priority;
  return out;
}

/** process_event for the Python workers: args [], everything by keyword (as PostHog's plugin server sent it). */
export function processEventTask(kwargs: JsonObject, opts: TaskOptions): OutgoingTask {
  return withOptions(PROCESS_EVENT, [], kwargs, opts);
}

/** process_event_with_plugins as Django sends it (7 positional args, kwargs {}): for tests and posthog.capture. */
export function processEventWithPluginsTask(args: IngestionArgs, opts: TaskOptions): OutgoingTask {
  const positional: JsonValue[] = [
    args.distinct_id,
    args.ip,
    args.site_url,
    args.data,
    args.team_id,
    args.now,
    args.sent_at,
  ];
  return withOptions(PROCESS_EVENT_WITH_PLUGINS, positional, {}, opts);
}
