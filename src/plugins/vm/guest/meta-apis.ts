/**
 * The host-backed meta APIs: meta.cache, meta.storage, meta.utils.cursor, meta.jobs and the global posthog
 * (capture), each a host op (cache, storage, jobs, capture) whose request JSON is assembled here. An API whose op
 * this worker does not offer rejects every call, saying why.
 */
import type { OpLimits } from '../contract';
import type { BridgeClient, Fail, Wrap } from './bridge-client';
import { apiError } from './errors';
import { intJson, q } from './json';
import {
  dateGetTime,
  DateNow,
  DateParse,
  hasOwn,
  isArray,
  MathFloor,
  NumberFn,
  ObjectCreate,
  objectToString,
  parse,
  ProxyCtor,
  rejected,
  stringify,
  strCharCodeAt,
  StringFn,
  TypeErrorCtor,
} from './primordials';

const cacheFail = apiError('CacheError');
const storageFail = apiError('StorageError');
const jobsFail = apiError('JobError');
const captureFail = apiError('CaptureError');

// Job delays, in ms. A month is 30 days (PostHog's own server made it 30 weeks: a known bug, fixed).
const UNIT_MS = ObjectCreate(null) as Record<string, number | undefined>;
const unitTable: Array<[string, number]> = [
  ['millisecond', 1],
  ['second', 1000],
  ['minute', 60000],
  ['hour', 3600000],
  ['day', 86400000],
  ['week', 604800000],
  ['month', 2592000000],
  ['quarter', 7776000000],
  ['year', 31536000000],
];
for (let i = 0; i < unitTable.length; i++) {
  UNIT_MS[unitTable[i][0]] = unitTable[i][1];
  UNIT_MS[unitTable[i][0] + 's'] = unitTable[i][1];
}
UNIT_MS.ms = 1;

function same(v: unknown): unknown {
  return v;
}
function nothing(): undefined {
  return undefined;
}

/** build()'s promise, or a rejected one when build throws (bad arguments reject, as the API is async). */
function guarded(build: () => Promise<unknown>): Promise<unknown> {
  try {
    return build();
  } catch (e) {
    return rejected(e);
  }
}

function jsonSerialize(options: unknown): boolean {
  return !(
    options !== null &&
    typeof options === 'object' &&
    (options as { jsonSerialize?: unknown }).jsonSerialize === false
  );
}

export type MetaApis = ReturnType<typeof createMetaApis>;

/** ops: the host ops offered; unavailable: why the others are missing (e.g. no Redis for meta.cache). */
export function createMetaApis(
  bridge: BridgeClient,
  ops: Record<string, OpLimits>,
  unavailable: Record<string, string>,
) {
  /** A host call, or a rejected promise saying why this API is missing here. */
  function api(op: string, what: string, json: string, wrap: Wrap, fail: Fail): Promise<unknown> {
    if (!hasOwn(ops, op))
      return rejected(
        fail(what + ' is not available in this worker: ' + (unavailable[op] || 'not configured'), 'unavailable'),
      );
    return bridge.hostCall(op, json, wrap, fail);
  }
  const cacheCall = (json: string, wrap: Wrap): Promise<unknown> => api('cache', 'meta.cache', json, wrap, cacheFail);

  const cache = {
    set(key: unknown, value: unknown, ttlSeconds?: unknown, options?: unknown) {
      return guarded(() => {
        let v = jsonSerialize(options) ? stringify(value === undefined ? null : value) : StringFn(value);
        if (typeof v !== 'string') v = 'null';
        const ttl = ttlSeconds === undefined || ttlSeconds === null ? 'null' : intJson(ttlSeconds, 'ttlSeconds');
        return cacheCall('{"cmd":"set","key":' + q(key) + ',"value":' + stringify(v) + ',"ttl":' + ttl + '}', nothing);
      });
    },
    get(key: unknown, defaultValue?: unknown, options?: unknown) {
      const serialize = jsonSerialize(options);
      // A missing key gives the default (PostHog's own server returned null here: a known bug, fixed).
      const wrap = (v: unknown): unknown =>
        v === null || v === undefined ? defaultValue : serialize ? parse(v as string) : v;
      return guarded(() => cacheCall('{"cmd":"get","key":' + q(key) + '}', wrap));
    },
    incr(key: unknown) {
      return guarded(() => cacheCall('{"cmd":"incr","key":' + q(key) + '}', same));
    },
    expire(key: unknown, ttlSeconds: unknown) {
      return guarded(() =>
        cacheCall('{"cmd":"expire","key":' + q(key) + ',"ttl":' + intJson(ttlSeconds, 'ttlSeconds') + '}', same),
      );
    },
    lpush(key: unknown, elementOrArray: unknown) {
      return guarded(() => {
        let values = '';
        if (isArray(elementOrArray)) {
          for (let i = 0; i < elementOrArray.length; i++) values += (i === 0 ? '' : ',') + q(elementOrArray[i]);
        } else values = q(elementOrArray);
        return cacheCall('{"cmd":"lpush","key":' + q(key) + ',"values":[' + values + ']}', same);
      });
    },
    lrange(key: unknown, startIndex: unknown, endIndex: unknown) {
      return guarded(() =>
        cacheCall(
          '{"cmd":"lrange","key":' +
            q(key) +
            ',"start":' +
            intJson(startIndex, 'startIndex') +
            ',"stop":' +
            intJson(endIndex, 'endIndex') +
            '}',
          same,
        ),
      );
    },
    llen(key: unknown) {
      return guarded(() => cacheCall('{"cmd":"llen","key":' + q(key) + '}', same));
    },
    lrem(key: unknown, count: unknown, elementKey: unknown) {
      return guarded(() =>
        cacheCall(
          '{"cmd":"lrem","key":' + q(key) + ',"count":' + intJson(count, 'count') + ',"value":' + q(elementKey) + '}',
          same,
        ),
      );
    },
    lpop(key: unknown, count?: unknown) {
      return guarded(() =>
        cacheCall(
          '{"cmd":"lpop","key":' + q(key) + ',"count":' + intJson(count === undefined ? 1 : count, 'count') + '}',
          same,
        ),
      );
    },
  };

  function storageDel(key: unknown): Promise<unknown> {
    return guarded(() => api('storage', 'meta.storage', '{"cmd":"del","key":' + q(key) + '}', nothing, storageFail));
  }
  const storage = {
    get(key: unknown, defaultValue?: unknown) {
      const wrap = (v: unknown): unknown => (v === null || v === undefined ? defaultValue : parse(v as string));
      return guarded(() => api('storage', 'meta.storage', '{"cmd":"get","key":' + q(key) + '}', wrap, storageFail));
    },
    set(key: unknown, value: unknown) {
      // PostHog: storing undefined deletes the key.
      if (value === undefined) return storageDel(key);
      return guarded(() => {
        const v = stringify(value);
        if (typeof v !== 'string') throw new TypeErrorCtor('meta.storage.set: the value does not serialize to JSON');
        return api(
          'storage',
          'meta.storage',
          '{"cmd":"set","key":' + q(key) + ',"value":' + stringify(v) + '}',
          nothing,
          storageFail,
        );
      });
    },
    del(key: unknown) {
      return storageDel(key);
    },
  };

  const cursor = {
    init(key: unknown, initialValue?: unknown) {
      return guarded(() =>
        api(
          'storage',
          'meta.utils.cursor',
          '{"cmd":"cursorInit","key":' +
            q(key) +
            ',"initial":' +
            intJson(initialValue === undefined ? 0 : initialValue, 'initialValue') +
            '}',
          nothing,
          storageFail,
        ),
      );
    },
    increment(key: unknown, incrementBy?: unknown) {
      return guarded(() =>
        api(
          'storage',
          'meta.utils.cursor',
          '{"cmd":"cursorIncrement","key":' +
            q(key) +
            ',"by":' +
            intJson(incrementBy === undefined ? 1 : incrementBy, 'incrementBy') +
            '}',
          same,
          storageFail,
        ),
      );
    },
  };

  function enqueueJob(name: string, payload: unknown, runAtMs: number): Promise<unknown> {
    return guarded(() => {
      if (!(runAtMs === runAtMs) || runAtMs < 0 || runAtMs > 8.64e15)
        throw new TypeErrorCtor('job ' + name + ': invalid run time');
      const p = stringify(payload === undefined ? null : payload);
      if (typeof p !== 'string') throw new TypeErrorCtor('job ' + name + ': the payload does not serialize to JSON');
      return api(
        'jobs',
        'meta.jobs',
        '{"name":' + q(name) + ',"payload":' + stringify(p) + ',"runAt":' + MathFloor(runAtMs) + '}',
        nothing,
        jobsFail,
      );
    });
  }
  function jobBuilder(name: string): (payload: unknown) => unknown {
    return function (payload) {
      return {
        runNow() {
          return enqueueJob(name, payload, DateNow());
        },
        runIn(duration: unknown, unit: unknown) {
          const ms = UNIT_MS[StringFn(unit)];
          const n = typeof duration === 'number' ? duration : NumberFn(duration);
          if (ms === undefined)
            return rejected(
              new TypeErrorCtor(
                'runIn: unknown unit ' +
                  StringFn(unit) +
                  ' (use milliseconds, seconds, minutes, hours, days, weeks, months, quarters or years)',
              ),
            );
          if (!(n === n) || n < 0) return rejected(new TypeErrorCtor('runIn: duration must be a number ≥ 0'));
          return enqueueJob(name, payload, DateNow() + n * ms);
        },
        runAt(date: unknown) {
          let t: number;
          try {
            t =
              objectToString(date) === '[object Date]'
                ? dateGetTime(date)
                : typeof date === 'number'
                  ? date
                  : DateParse(StringFn(date));
          } catch (e) {
            return rejected(e);
          }
          return enqueueJob(name, payload, t);
        },
      };
    };
  }
  const jobs = new ProxyCtor(ObjectCreate(null), {
    __proto__: null,
    get(_: unknown, prop: string | symbol) {
      // Not a job: what 'await meta.jobs' and JSON.stringify look up.
      if (typeof prop !== 'string' || prop === 'then' || prop === 'toJSON') return undefined;
      return jobBuilder(prop);
    },
  } as ProxyHandler<Record<string, unknown>>) as Record<string, (payload: unknown) => unknown>;

  const posthog = {
    capture(event: unknown, properties?: unknown) {
      return guarded(() => {
        const props = properties === undefined || properties === null ? '{}' : stringify(properties);
        if (typeof props !== 'string' || strCharCodeAt(props, 0) !== 123)
          throw new TypeErrorCtor('posthog.capture: properties must be an object');
        return api(
          'capture',
          'posthog.capture',
          '{"event":' + q(event) + ',"properties":' + props + '}',
          nothing,
          captureFail,
        );
      });
    },
  };

  return { cache, storage, cursor, jobs, posthog };
}
