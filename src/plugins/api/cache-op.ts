import type Redis from 'ioredis';
import { PluginFacingError, type HostOp, type PluginIdentity } from '../vm/bridge';

/**
 * The host half of `meta.cache` (docs/posthog-plugin-api.md#cache): PostHog's per-plugin, per-team Redis cache,
 * same keys (`@plugin/{pluginId}/{teamId}/{key}`), so values written by PostHog's own plugin server stay readable.
 *
 * The isolate shim sends one request per call, already reduced to plain JSON:
 *   {cmd:'set', key, value: string, ttl: number|null}  → null
 *   {cmd:'get', key}                                   → string | null
 *   {cmd:'incr', key}                                  → number
 *   {cmd:'expire', key, ttl}                           → boolean
 *   {cmd:'lpush', key, values: string[]}               → number (list length)
 *   {cmd:'lrange', key, start, stop}                   → string[]
 *   {cmd:'llen', key}                                  → number
 *   {cmd:'lrem', key, count, value: string}            → number (removed)
 *   {cmd:'lpop', key, count}                           → string[] ([] when the key is missing)
 * JSON (de)serialisation and get's default value live in the shim; the host only stores strings.
 */

export interface CacheOpOptions {
  /** Largest value (UTF-8 bytes) one call may store: a `set` value, or all `lpush` values together. */
  maxValueBytes?: number;
  /** Longest key a plugin may use, in characters (the `@plugin/…/` prefix not counted). */
  maxKeyChars?: number;
  /** A command that got no reply in this time fails (it may still run later on the server). */
  timeoutMs?: number;
}

const DEFAULTS: Required<CacheOpOptions> = { maxValueBytes: 1024 * 1024, maxKeyChars: 1000, timeoutMs: 5000 };

/** PostHog's own limit on lpush values per call. */
export const MAX_LPUSH_VALUES = 1000;
/** TTLs in seconds: at most ~68 years, which every Redis accepts for EX/EXPIRE. */
const MAX_TTL_S = 2 ** 31 - 1;
/** lpop count: anything larger only makes one host reply huge. */
const MAX_LPOP_COUNT = 100_000;

export type CacheCommand = 'set' | 'get' | 'incr' | 'expire' | 'lpush' | 'lrange' | 'llen' | 'lrem' | 'lpop';
const COMMANDS: ReadonlySet<string> = new Set<CacheCommand>([
  'set',
  'get',
  'incr',
  'expire',
  'lpush',
  'lrange',
  'llen',
  'lrem',
  'lpop',
]);

/** The Redis key of a plugin's cache key, exactly PostHog's. */
export function cacheKey(plugin: Pick<PluginIdentity, 'pluginId' | 'teamId'>, key: string): string {
  return `@plugin/${plugin.pluginId}/${plugin.teamId}/${key}`;
}

function refuse(message: string): never {
  throw new PluginFacingError('CacheError', message);
}

type Args = Record<string, unknown>;

function str(a: Args, cmd: string, field: string): string {
  const v = a[field];
  if (typeof v !== 'string') refuse(`cache.${cmd}: ${field} must be a string, got ${typeName(v)}`);
  return v;
}

function int(a: Args, cmd: string, field: string, min: number, max: number): number {
  const v = a[field];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    refuse(
      `cache.${cmd}: ${field} must be an integer from ${min} to ${max}, got ${typeof v === 'number' ? String(v) : typeName(v)}`,
    );
  }
  return v;
}

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v;
}

/**
 * Runs a command with a deadline and turns Redis failures into errors the plugin may see. Server replies
 * (WRONGTYPE, "not an integer") are shown as Redis wrote them; anything else (connection refused, closed,
 * retries exhausted) is reduced to "Redis unavailable": those messages can carry the server's address.
 */
async function call<T>(
  cmd: CacheCommand,
  timeoutMs: number,
  signal: AbortSignal,
  warn: (m: string) => void,
  run: () => Promise<T>,
): Promise<T> {
  if (signal.aborted) throw signal.reason;
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const stop = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new PluginFacingError(
            'CacheError',
            `cache.${cmd} failed: no reply from Redis within ${timeoutMs} ms`,
            'timeout',
          ),
        ),
      timeoutMs,
    );
    onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([run(), stop]);
  } catch (err) {
    if (err instanceof PluginFacingError || err === signal.reason) throw err;
    const e = err as { name?: unknown; message?: unknown };
    if (e?.name === 'ReplyError' && typeof e.message === 'string') {
      throw new PluginFacingError('CacheError', `cache.${cmd} failed: ${e.message.slice(0, 300)}`, 'redis-error');
    }
    // the operator gets the real reason (rate-limited per config), the plugin only that Redis is down
    warn(`cache.${cmd} failed: ${String(e?.message ?? err)}`);
    throw new PluginFacingError('CacheError', `cache.${cmd} failed: Redis unavailable`, 'unavailable');
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort!);
  }
}

/** The `cache` entry of the host ops registry. */
export function createCacheOp(redis: Redis, options: CacheOpOptions = {}): HostOp {
  const opts = { ...DEFAULTS, ...options };
  const checkValue = (cmd: string, bytes: number): void => {
    if (bytes > opts.maxValueBytes)
      refuse(`cache.${cmd}: value too large: ${bytes} bytes, limit ${opts.maxValueBytes}`);
  };
  return {
    // the value, JSON-escaped (quotes, backslashes: up to twice as long), plus key and fields
    maxArgBytes: opts.maxValueBytes * 2 + opts.maxKeyChars * 2 + 4096,
    // Commands share the one connection (Redis pipelines them), so more in flight buys little; the queue
    // absorbs a batch of events each awaiting cache.get at once, and bounds host memory held by a plugin
    // that fires big sets without awaiting: (8 + 128) × maxArgBytes at worst per config.
    concurrency: 8,
    maxQueued: 128,
    errorName: 'CacheError',
    async run(raw, ctx) {
      if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) refuse('cache: malformed request');
      const a = raw as Args;
      const cmd = a.cmd;
      if (typeof cmd !== 'string' || !COMMANDS.has(cmd))
        refuse(`cache: unknown command ${JSON.stringify(String(cmd).slice(0, 40))}`);
      const c = cmd as CacheCommand;
      const key = str(a, c, 'key');
      if (key.length > opts.maxKeyChars)
        refuse(`cache.${c}: key too long: ${key.length} characters, limit ${opts.maxKeyChars}`);
      const k = cacheKey(ctx.plugin, key);
      const exec = <T>(run: () => Promise<T>): Promise<T> =>
        call(c, opts.timeoutMs, ctx.signal, (m) => ctx.warn(m), run);

      switch (c) {
        case 'set': {
          const value = str(a, c, 'value');
          checkValue(c, Buffer.byteLength(value, 'utf8'));
          // PostHog: a falsy ttl (null, 0) stores without expiry
          const ttl = a.ttl === null || a.ttl === undefined || a.ttl === 0 ? 0 : int(a, c, 'ttl', 0, MAX_TTL_S);
          await exec(() => (ttl > 0 ? redis.set(k, value, 'EX', ttl) : redis.set(k, value)));
          return null;
        }
        case 'get':
          return await exec(() => redis.get(k));
        case 'incr':
          return await exec(() => redis.incr(k));
        case 'expire': {
          // 0 removes the key at once, as Redis does
          const ttl = int(a, c, 'ttl', 0, MAX_TTL_S);
          return (await exec(() => redis.expire(k, ttl))) === 1;
        }
        case 'lpush': {
          const values = a.values;
          if (!Array.isArray(values) || values.length === 0 || values.length > MAX_LPUSH_VALUES) {
            refuse(
              `cache.lpush: values must be an array of 1 to ${MAX_LPUSH_VALUES} strings, got ${Array.isArray(values) ? `${values.length} items` : typeName(values)}`,
            );
          }
          let bytes = 0;
          for (let i = 0; i < values.length; i++) {
            if (typeof values[i] !== 'string')
              refuse(`cache.lpush: values[${i}] must be a string, got ${typeName(values[i])}`);
            bytes += Buffer.byteLength(values[i] as string, 'utf8');
          }
          checkValue(c, bytes);
          return await exec(() => redis.lpush(k, ...(values as string[])));
        }
        case 'lrange': {
          const start = int(a, c, 'start', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
          const stop = int(a, c, 'stop', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
          return await exec(() => redis.lrange(k, start, stop));
        }
        case 'llen':
          return await exec(() => redis.llen(k));
        case 'lrem': {
          const count = int(a, c, 'count', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
          const value = str(a, c, 'value');
          checkValue(c, Buffer.byteLength(value, 'utf8'));
          return await exec(() => redis.lrem(k, count, value));
        }
        case 'lpop': {
          const count = int(a, c, 'count', 1, MAX_LPOP_COUNT);
          return (await exec(() => redis.lpop(k, count))) ?? [];
        }
      }
    },
  };
}
