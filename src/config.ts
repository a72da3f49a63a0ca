import { availableParallelism } from 'node:os';
import type { Options } from 'yargs';

/**
 * Every setting, with PostHog's names and defaults: each one can be given as a flag or as the environment
 * variable named in its description (flags win). CELERY_BROKER_URL falls back to REDIS_URL as in PostHog's
 * settings.
 */
const DEFAULT_REDIS = 'redis://127.0.0.1:6379/0';

/** An environment variable, or undefined when unset or empty. */
export function env(name: string): string | undefined {
  const v = process.env[name];
  return v === undefined || v === '' ? undefined : v;
}

/** yargs option definitions shared by the commands that need them. */
export const connectionOptions = {
  broker: {
    type: 'string',
    describe: 'Celery broker URL: redis://, rediss:// or amqp:// (env CELERY_BROKER_URL, then REDIS_URL)',
    default: env('CELERY_BROKER_URL') ?? env('REDIS_URL') ?? DEFAULT_REDIS,
  },
  'database-url': {
    type: 'string',
    describe: "PostHog's database: postgres://… or sqlite:PATH (env DATABASE_URL)",
    default: env('DATABASE_URL') ?? 'sqlite:./posthog-plugins.sqlite3',
  },
  'base-dir': {
    type: 'string',
    describe: 'Directory that relative file: plugin URLs are resolved against (env BASE_DIR)',
    default: env('BASE_DIR') ?? process.cwd(),
  },
} satisfies Record<string, Options>;

/** Where PostHog announces plugin changes (live reload). */
export const reloadOptions = {
  'redis-url': {
    type: 'string',
    describe:
      "PostHog's Redis, for the plugin reload channel; also with a RabbitMQ broker (env REDIS_URL; default: the broker when it is Redis)",
    default: env('REDIS_URL') ?? '',
  },
  'reload-channel': {
    type: 'string',
    describe:
      'Redis pub/sub channel PostHog publishes plugin changes on; empty disables live reload (env PLUGINS_RELOAD_PUBSUB_CHANNEL)',
    default: env('PLUGINS_RELOAD_PUBSUB_CHANNEL') ?? 'reload-plugins',
  },
} satisfies Record<string, Options>;

export const queueOptions = {
  queue: {
    type: 'string',
    describe: 'Queue to consume process_event_with_plugins from (env PLUGINS_CELERY_QUEUE)',
    default: env('PLUGINS_CELERY_QUEUE') ?? 'posthog-plugins',
  },
  'output-queue': {
    type: 'string',
    describe: 'Queue to publish process_event to (env CELERY_DEFAULT_QUEUE)',
    default: env('CELERY_DEFAULT_QUEUE') ?? 'celery',
  },
} satisfies Record<string, Options>;

export const sandboxOptions = {
  'memory-limit-mb': {
    type: 'number',
    describe: 'Heap limit of each plugin isolate, MB (env PLUGIN_MEMORY_LIMIT_MB)',
    default: num('PLUGIN_MEMORY_LIMIT_MB', 64),
  },
  'cpu-timeout-ms': {
    type: 'number',
    describe: 'CPU time per entry into a plugin, ms (env PLUGIN_CPU_TIMEOUT_MS)',
    default: num('PLUGIN_CPU_TIMEOUT_MS', 1000),
  },
  'wall-timeout-ms': {
    type: 'number',
    describe: 'Wall-clock deadline per plugin call, ms (env PLUGIN_WALL_TIMEOUT_MS)',
    default: num('PLUGIN_WALL_TIMEOUT_MS', 30_000),
  },
  'max-result-bytes': {
    type: 'number',
    describe: 'Largest result a plugin call may return, bytes (env PLUGIN_MAX_RESULT_BYTES)',
    default: num('PLUGIN_MAX_RESULT_BYTES', 16 * 1024 * 1024),
  },
  'fetch-timeout-ms': {
    type: 'number',
    describe: 'Whole plugin fetch (DNS, connect, redirects, body), ms (env PLUGIN_FETCH_TIMEOUT_MS)',
    default: num('PLUGIN_FETCH_TIMEOUT_MS', 10_000),
  },
  'fetch-max-bytes': {
    type: 'number',
    describe:
      'Largest plugin fetch response (after decompression) and request body, bytes (env PLUGIN_FETCH_MAX_BYTES)',
    default: num('PLUGIN_FETCH_MAX_BYTES', 5 * 1024 * 1024),
  },
  'fetch-allow': {
    type: 'string',
    describe:
      'Hosts, *.domains, IPs and CIDRs plugin fetch may reach although loopback/private/link-local/metadata, comma-separated (env PLUGIN_FETCH_ALLOW)',
    default: env('PLUGIN_FETCH_ALLOW') ?? '',
  },
} satisfies Record<string, Options>;

/** The plugin API beyond processEvent: background calls, setup retries, posthog.capture. */
export const pluginApiOptions = {
  'task-timeout-ms': {
    type: 'number',
    describe:
      'Wall-clock limit of one background plugin call: onEvent, exportEvents, runEvery*, a job, ms (env PLUGIN_TASK_TIMEOUT_MS)',
    default: num('PLUGIN_TASK_TIMEOUT_MS', 300_000),
  },
  'setup-retries': {
    type: 'number',
    describe:
      'setupPlugin failures retried (3 s, 6 s, 12 s…) before the config is disabled; 0 = no retries (env PLUGIN_SETUP_RETRIES)',
    default: num('PLUGIN_SETUP_RETRIES', 10),
  },
  'setup-retry-ms': {
    type: 'number',
    describe: 'Delay before the first setupPlugin retry, doubled for each next one, ms (env PLUGIN_SETUP_RETRY_MS)',
    default: num('PLUGIN_SETUP_RETRY_MS', 3_000),
  },
  'isolate-idle-ms': {
    type: 'number',
    describe:
      "Evict a plugin config's isolate after this long without calls (teardownPlugin, then disposed; the next call recreates it), ms; 0 = never (env PLUGIN_ISOLATE_IDLE_MS)",
    default: num('PLUGIN_ISOLATE_IDLE_MS', 15 * 60_000),
  },
  'isolate-memory-budget-mb': {
    type: 'number',
    describe:
      "Memory the plugin isolates of one worker process may hold, MB: past it the least recently used without a call for a minute are evicted (teardownPlugin, then disposed; the next call recreates it). Isolates are created on a config's first call; 0 = no budget (env PLUGIN_ISOLATE_MEMORY_BUDGET_MB)",
    default: num('PLUGIN_ISOLATE_MEMORY_BUDGET_MB', 256),
  },
  'site-url': {
    type: 'string',
    describe: 'site_url of events plugins send with posthog.capture (env SITE_URL)',
    default: env('SITE_URL') ?? '',
  },
} satisfies Record<string, Options>;

export const workerOptions = {
  concurrency: {
    type: 'number',
    describe: 'Batches in flight at once in each worker process (env WORKER_CONCURRENCY)',
    default: num('WORKER_CONCURRENCY', 1),
  },
  // 1000: per-batch costs (broker round trip, one isolate call per config and team) spread over more events, which
  // matters most with many teams of few events each; a batch is still cut at what the queue holds, so at low rates
  // batches stay small and latency low (bench: p99 at half of peak 24–41 ms, as with 100 and 500).
  'batch-size': {
    type: 'number',
    describe: 'Messages taken from the broker per batch, at most (env BATCH_SIZE)',
    default: num('BATCH_SIZE', 1000),
  },
  'visibility-timeout': {
    type: 'number',
    describe:
      "Redis: kombu's visibility_timeout in seconds, for restoring messages of vanished workers (env CELERY_VISIBILITY_TIMEOUT)",
    default: num('CELERY_VISIBILITY_TIMEOUT', 3600),
  },
  'lease-ttl-ms': {
    type: 'number',
    describe:
      'Redis: how long a silent worker keeps its messages before others restore them; keep it above --heartbeat-timeout-ms, ms (env WORKER_LEASE_TTL_MS)',
    default: num('WORKER_LEASE_TTL_MS', 45_000),
  },
  'prefetch-multiplier': {
    type: 'number',
    describe: 'AMQP: prefetch = batch size x concurrency x this (env CELERY_PREFETCH_MULTIPLIER)',
    default: num('CELERY_PREFETCH_MULTIPLIER', 1),
  },
  'amqp-passive': {
    type: 'boolean',
    describe: 'AMQP: only check that queues exist, never declare them (env AMQP_PASSIVE)',
    default: env('AMQP_PASSIVE') === 'true' || env('AMQP_PASSIVE') === '1',
  },
  'amqp-queue-arguments': {
    type: 'string',
    describe:
      'AMQP: JSON arguments to declare the input queue with, e.g. {"x-max-priority":10} (env AMQP_QUEUE_ARGUMENTS)',
    default: env('AMQP_QUEUE_ARGUMENTS') ?? '',
  },
  'amqp-output-queue-arguments': {
    type: 'string',
    describe:
      'AMQP: JSON arguments to declare the output queue with; must match what the Python workers declare (env AMQP_OUTPUT_QUEUE_ARGUMENTS)',
    default: env('AMQP_OUTPUT_QUEUE_ARGUMENTS') ?? '',
  },
} satisfies Record<string, Options>;

/** What operators watch it with: Celery remote control and events, Prometheus. */
export const observeOptions = {
  hostname: {
    type: 'string',
    describe:
      "Celery node name of each worker process, as Celery's -n: %h host, %n its first label, %d domain, %i worker index; more than one worker without %i gets -%i (env WORKER_HOSTNAME)",
    default: env('WORKER_HOSTNAME') ?? 'posthog-plugins@%h',
  },
  'task-events': {
    type: 'boolean',
    describe:
      "Send Celery task events (task-received, -started, -succeeded, -failed) as Celery's -E does (env WORKER_SEND_TASK_EVENTS)",
    default: env('WORKER_SEND_TASK_EVENTS') === 'true' || env('WORKER_SEND_TASK_EVENTS') === '1',
  },
} satisfies Record<string, Options>;

/** `start` only: the worker processes it supervises. */
export const supervisorOptions = {
  workers: {
    type: 'number',
    describe:
      'Worker processes, each a complete consumer with its own plugins (env WORKER_PROCESSES; default: one per core)',
    default: num('WORKER_PROCESSES', availableParallelism()),
  },
  'heartbeat-interval-ms': {
    type: 'number',
    describe: 'How often each worker process is asked whether it is alive, ms (env WORKER_HEARTBEAT_INTERVAL_MS)',
    default: num('WORKER_HEARTBEAT_INTERVAL_MS', 2_000),
  },
  'heartbeat-timeout-ms': {
    type: 'number',
    describe:
      'A worker process that has not answered for this long is killed and replaced, ms (env WORKER_HEARTBEAT_TIMEOUT_MS)',
    default: num('WORKER_HEARTBEAT_TIMEOUT_MS', 30_000),
  },
  'stuck-timeout-ms': {
    type: 'number',
    describe:
      'A worker process that holds messages without settling any for this long is killed and replaced (as `health` fails it), ms (env WORKER_STUCK_TIMEOUT_MS)',
    default: num('WORKER_STUCK_TIMEOUT_MS', 300_000),
  },
  'shutdown-timeout-ms': {
    type: 'number',
    describe:
      'On SIGTERM, how long worker processes get to finish before they are killed, ms (env WORKER_SHUTDOWN_TIMEOUT_MS)',
    default: num('WORKER_SHUTDOWN_TIMEOUT_MS', 30_000),
  },
  'crash-limit': {
    type: 'number',
    describe:
      'A plugin config that crashes its worker process this many times within --crash-window-ms is disabled (env PLUGIN_CRASH_LIMIT)',
    default: num('PLUGIN_CRASH_LIMIT', 3),
  },
  'crash-window-ms': {
    type: 'number',
    describe: 'Window for --crash-limit, ms (env PLUGIN_CRASH_WINDOW_MS)',
    default: num('PLUGIN_CRASH_WINDOW_MS', 600_000),
  },
  'metrics-port': {
    type: 'number',
    describe: 'Serve Prometheus metrics of the whole instance on this port at /metrics; 0: off (env METRICS_PORT)',
    default: num('METRICS_PORT', 0),
  },
  'metrics-host': {
    type: 'string',
    describe: 'Address the metrics port listens on (env METRICS_HOST)',
    default: env('METRICS_HOST') ?? '127.0.0.1',
  },
} satisfies Record<string, Options>;

/** A flag given twice (a wrapper script's default plus the operator's own) takes the last value. */
function last(v: unknown): string {
  return String(Array.isArray(v) ? v[v.length - 1] : v);
}

export const logOptions = {
  'log-level': {
    type: 'string',
    describe: 'error, warn, info, debug (env LOG_LEVEL)',
    default: env('LOG_LEVEL') ?? 'info',
    coerce: last,
  },
  'log-format': {
    type: 'string',
    choices: ['pretty', 'json'],
    describe: 'Log format (env LOG_FORMAT)',
    default: env('LOG_FORMAT') === 'json' ? 'json' : 'pretty',
    coerce: last,
  },
} satisfies Record<string, Options>;

/** A numeric environment variable, the fallback when unset; anything else that is not a number throws. */
export function num(name: string, fallback: number): number {
  const v = env(name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`environment variable ${name} must be a number, got ${JSON.stringify(v)}`);
  return n;
}

/** A flag holding a JSON object ('' is {}); anything else throws, naming the flag. */
export function parseJsonObject(text: string, what: string): Record<string, unknown> {
  if (text.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`${what} must be a JSON object: ${(err as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new Error(`${what} must be a JSON object`);
  return value as Record<string, unknown>;
}
