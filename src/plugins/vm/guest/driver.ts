/**
 * The driver: what the host calls (as References) to run the plugin. Its methods and answers are the Driver of
 * contract.ts; answers are JSON text assembled here, results arrays filled with put().
 */
import type { Driver, RunAnswer, RunResults, TaskKind } from '../contract';
import { RetryError } from './errors';
import { describe, eventJson, summaryJson } from './json';
import { findPluginFns, PluginFns } from './plugin-exports';
import {
  isArray,
  NullProto,
  ObjectCreate,
  parse,
  put,
  ReflectApply,
  stringify,
  StringFn,
  TypeErrorCtor,
} from './primordials';

/** A call's results so far: out by event index, errors as comma-separated ErrorReport JSONs, bytes of both. */
interface Acc extends NullProto {
  out: RunResults;
  errors: string;
  bytes: number;
}

/** Where runSync() stopped: processEvent returned thenable r for event i. */
interface Paused extends NullProto {
  inputs: string[];
  i: number;
  r: unknown;
  acc: Acc;
}

function isThenable(r: unknown): boolean {
  return (
    r !== null &&
    (typeof r === 'object' || typeof r === 'function') &&
    typeof (r as { then?: unknown }).then === 'function'
  );
}

function newAcc(): Acc {
  return { __proto__: null, out: [], errors: '', bytes: 0 };
}

/** Event i's result: its JSON, or null when dropped (a result that is not an event throws). */
function settleEvent(acc: Acc, i: number, r: unknown): void {
  if (!r) {
    put(acc.out, i, null);
    return;
  }
  const s = eventJson(r, 'processEvent');
  put(acc.out, i, s);
  acc.bytes += s.length;
}

/** Event i failed: unchanged, with the error reported. */
function failEvent(acc: Acc, i: number, e: unknown): void {
  put(acc.out, i, undefined);
  const d = describe(i, e);
  acc.errors += (acc.errors === '' ? '' : ',') + d.json;
  acc.bytes += d.size;
}

/**
 * meta: the plugin's meta argument; flushDropped: the console's dropped-lines report, sent at the end of every
 * entry; settle: the bridge client's.
 */
export function createDriver(meta: object, flushDropped: () => void, settle: Driver['settle']): Driver {
  let fns: PluginFns = null as unknown as PluginFns; // set by resolve(), which the host calls first
  let lastOut: RunResults | null = null;
  /** Kept by runSync() for resume(), so that no event is run twice. */
  let paused: Paused | null = null;

  function call(f: { fn: (...args: unknown[]) => unknown; self: unknown }, args: unknown[]): unknown {
    return ReflectApply(f.fn, f.self, args);
  }

  function resolve(): string {
    const found = findPluginFns();
    fns = found.fns;
    return found.json;
  }

  /**
   * A call's answer: small enough results go out with the summary, in the same entry (one entry per call instead
   * of two, and nothing that runs in between, such as a looping fire-and-forget continuation, can cost the call
   * its results); larger ones wait for take(), so the host sees their size before it copies anything.
   */
  function answer(r: Acc, maxBytes: number): RunAnswer {
    flushDropped();
    if (r.bytes <= maxBytes) return [summaryJson(r.bytes, r.errors), r.out];
    lastOut = r.out;
    return summaryJson(r.bytes, r.errors);
  }

  async function run(inputs: string[], maxBytes: number): Promise<RunAnswer> {
    lastOut = null;
    paused = null;
    const r = fns.processEvent ? await runEach(inputs, 0, null, newAcc()) : await runBatchFn(inputs);
    return answer(r, maxBytes);
  }

  /**
   * The synchronous fast path (the host calls it with applySync: no thread hand-off). Runs processEvent event by
   * event while it returns plain values; at the first thenable it keeps its state for resume() and returns ''.
   * Only for plugins with processEvent (the host checks).
   */
  function runSync(inputs: string[], maxBytes: number): RunAnswer | '' {
    lastOut = null;
    paused = null;
    const acc = newAcc();
    for (let i = 0; i < inputs.length; i++) {
      let r;
      try {
        r = call(fns.processEvent!, [parse(inputs[i]), meta]);
        if (isThenable(r)) {
          paused = { __proto__: null, inputs, i, r, acc };
          return '';
        }
        settleEvent(acc, i, r);
      } catch (e) {
        failEvent(acc, i, e);
      }
    }
    return answer(acc, maxBytes);
  }

  async function resume(maxBytes: number): Promise<RunAnswer> {
    const p = paused;
    paused = null;
    if (p === null) throw new TypeErrorCtor('nothing to resume');
    return answer(await runEach(p.inputs, p.i, p.r, p.acc), maxBytes);
  }

  /** Events from index start on; first, when not null, is the thenable processEvent already returned for event start. */
  async function runEach(inputs: string[], start: number, first: unknown, acc: Acc): Promise<Acc> {
    for (let i = start; i < inputs.length; i++) {
      try {
        let r;
        if (i === start && first !== null) {
          r = await first;
        } else {
          r = call(fns.processEvent!, [parse(inputs[i]), meta]);
          if (isThenable(r)) r = await r;
        }
        settleEvent(acc, i, r);
      } catch (e) {
        failEvent(acc, i, e);
      }
    }
    return acc;
  }

  /**
   * processEventBatch(events, meta) over the whole call. Results map back by position when the plugin returns as
   * many events as it got (a falsy entry drops that event), else by uuid (events not returned are dropped). A
   * throw, or results that cannot be mapped, leave every event of the call unchanged, each with the error.
   */
  async function runBatchFn(inputs: string[]): Promise<Acc> {
    const n = inputs.length;
    const out: RunResults = [];
    let bytes = 0;
    try {
      const events: unknown[] = [];
      for (let i = 0; i < n; i++) put(events, i, parse(inputs[i]));
      let rs = call(fns.processEventBatch!, [events, meta]);
      if (isThenable(rs)) rs = await rs;
      for (let i = 0; i < n; i++) put(out, i, null);
      if (rs === null || rs === undefined) return { __proto__: null, out, errors: '', bytes: 0 };
      if (!isArray(rs)) throw new TypeErrorCtor('processEventBatch must return an array of events, got ' + typeof rs);
      if (rs.length === n) {
        for (let i = 0; i < n; i++) {
          if (!rs[i]) continue;
          const s = eventJson(rs[i], 'processEventBatch');
          put(out, i, s);
          bytes += s.length;
        }
      } else {
        const byUuid = ObjectCreate(null) as Record<string, number | undefined>;
        for (let i = 0; i < n; i++) {
          const u = (parse(inputs[i]) as { uuid?: unknown }).uuid;
          if (typeof u === 'string') byUuid[u] = i;
        }
        for (let k = 0; k < rs.length; k++) {
          if (!rs[k]) continue;
          const s = eventJson(rs[k], 'processEventBatch');
          const u = (rs[k] as { uuid?: unknown }).uuid;
          const i = typeof u === 'string' ? byUuid[u] : undefined;
          if (i === undefined)
            throw new TypeErrorCtor(
              'processEventBatch returned ' +
                rs.length +
                ' events for ' +
                n +
                ' and event ' +
                k +
                ' has no uuid of an input event, so results cannot be matched to inputs',
            );
          put(out, i, s);
          bytes += s.length;
        }
      }
      return { __proto__: null, out, errors: '', bytes };
    } catch (e) {
      let errors = '';
      for (let i = 0; i < n; i++) {
        put(out, i, undefined);
        const d = describe(i, e);
        errors += (i === 0 ? '' : ',') + d.json;
        bytes += d.size;
      }
      return { __proto__: null, out, errors, bytes };
    }
  }

  function take(keep: boolean): RunResults | null {
    const o = lastOut;
    lastOut = null;
    return keep ? o : null;
  }

  async function setup(): Promise<void> {
    if (fns && fns.setupPlugin) {
      const r = call(fns.setupPlugin, [meta]);
      if (isThenable(r)) await r;
    }
    flushDropped();
  }

  async function teardown(): Promise<void> {
    if (fns && fns.teardownPlugin) {
      const r = call(fns.teardownPlugin, [meta]);
      if (isThenable(r)) await r;
    }
    flushDropped();
  }

  /** Background work outside the event chain (see TaskKind); answers TaskSummary JSON. */
  async function task(kind: TaskKind, name: string, arg: string[]): Promise<string> {
    let failed = 0;
    let error: unknown = null;
    let hasError = false;
    let retry = false;
    const fail = (e: unknown): void => {
      failed++;
      error = e;
      hasError = true;
      try {
        retry =
          e !== null &&
          typeof e === 'object' &&
          (e instanceof RetryError || (e as { name?: unknown }).name === 'RetryError');
      } catch (_) {
        retry = false; // a thrown Proxy or a throwing name getter: not a RetryError
      }
    };
    if (kind === 'onEvent') {
      for (let i = 0; i < arg.length; i++) {
        try {
          const r = call(fns.onEvent!, [parse(arg[i]), meta]);
          if (isThenable(r)) await r;
        } catch (e) {
          fail(e);
        }
      }
    } else {
      try {
        let r;
        if (kind === 'exportEvents') {
          const events: unknown[] = [];
          for (let i = 0; i < arg.length; i++) put(events, i, parse(arg[i]));
          r = call(fns.exportEvents!, [events, meta]);
        } else if (kind === 'schedule') {
          const f = name === 'runEveryMinute' || name === 'runEveryHour' || name === 'runEveryDay' ? fns[name] : null;
          if (!f) throw new TypeErrorCtor('the plugin does not export ' + StringFn(name));
          r = call(f, [meta]);
        } else if (kind === 'job') {
          const j = fns.jobs !== null ? fns.jobs[StringFn(name)] : undefined;
          if (j === undefined) throw new TypeErrorCtor('the plugin has no job named ' + stringify(StringFn(name)));
          r = call(j, [parse(arg[0]), meta]);
        } else {
          throw new TypeErrorCtor('unknown task kind');
        }
        if (isThenable(r)) await r;
      } catch (e) {
        fail(e);
      }
    }
    flushDropped();
    return '{"failed":' + failed + ',"retry":' + retry + (hasError ? ',"error":' + describe(0, error).json : '') + '}';
  }

  function safeSettle(id: number, ok: boolean, json: string): void {
    try {
      settle(id, ok, json);
    } catch (_) {
      // a settle is the host's call: the plugin's errors stay in the isolate
    }
  }

  return { resolve, setup, teardown, run, runSync, resume, take, task, settle: safeSettle };
}
