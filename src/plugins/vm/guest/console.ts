/**
 * The plugin's `console`: each call becomes one line (arguments formatted and joined, cut to maxLine) sent to the
 * host, at most linesPerSecond lines a second; lines over that are counted and reported as one 'dropped' entry, so
 * that a flood never crosses into the host.
 */
import type { HostLog, LogLevel } from '../contract';
import { cut, DateNow, objectToString, stringify, StringFn } from './primordials';

/** One console argument as text: strings as they are, errors as their stack, objects as JSON. */
export function fmt(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v === undefined) return 'undefined';
  if (typeof v === 'function')
    return '[Function ' + (typeof v.name === 'string' && v.name ? v.name : 'anonymous') + ']';
  if (typeof v === 'symbol' || typeof v === 'bigint') return StringFn(v);
  if (v !== null && typeof v === 'object') {
    if (objectToString(v) === '[object Error]') {
      const e = v as { stack?: unknown; name?: unknown; message?: unknown };
      const st = e.stack;
      return typeof st === 'string' ? st : StringFn(e.name) + ': ' + StringFn(e.message);
    }
    try {
      const s = stringify(v);
      if (typeof s === 'string') return s;
    } catch (_) {
      return '[unserializable object]';
    }
  }
  return StringFn(v);
}

export type PluginConsole = Record<LogLevel, (...args: unknown[]) => void>;

export interface ConsoleSink {
  console: PluginConsole;
  /** Reports the lines dropped since the last report, if any (the driver calls it at the end of every entry). */
  flushDropped(): void;
}

/** The console for one context; now() is the clock of the rate limit. */
export function createConsole(
  hostLog: HostLog,
  maxLine: number,
  linesPerSecond: number,
  now: () => number = DateNow,
): ConsoleSink {
  let logWindow = 0;
  let logCount = 0;
  let logDropped = 0;
  function flushDropped(): void {
    if (logDropped > 0) {
      const n = logDropped;
      logDropped = 0;
      try {
        hostLog('dropped', '' + n);
      } catch (_) {
        // the host is going away: nobody to tell
      }
    }
  }
  function makeLogger(level: LogLevel): (...args: unknown[]) => void {
    // `arguments`, not a rest parameter: no argument list is built for lines over the rate limit, and the bundle
    // test keeps `...` out of the guest altogether.
    return function () {
      const t = now();
      if (t - logWindow >= 1000) {
        logWindow = t;
        logCount = 0;
        flushDropped();
      }
      if (++logCount > linesPerSecond) {
        logDropped++;
        return;
      }
      let line = '';
      try {
        for (let i = 0; i < arguments.length && line.length <= maxLine; i++) {
          // eslint-disable-next-line prefer-rest-params -- see above
          const s = fmt(arguments[i]);
          line = i === 0 ? s : line + ' ' + s;
        }
        line = cut(line, maxLine);
      } catch (_) {
        line = '[unprintable console arguments]';
      }
      try {
        hostLog(level, line);
      } catch (_) {
        // the host is going away: nobody to tell
      }
    };
  }
  const pluginConsole: PluginConsole = {
    log: makeLogger('log'),
    info: makeLogger('info'),
    warn: makeLogger('warn'),
    error: makeLogger('error'),
    debug: makeLogger('debug'),
  };
  return { console: pluginConsole, flushDropped };
}
