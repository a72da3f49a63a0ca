/**
 * Finding the plugin's functions once its code has run, as PostHog does: exports, exports.default,
 * module.exports (+ module.exports.default, where esbuild puts "export default"); globals only when nothing at all
 * is exported.
 */
import { G, NullProto, ObjectCreate, ObjectKeys, put, stringify } from './primordials';

/** A plugin function with the object it is called on. */
export interface Bound extends NullProto {
  fn: (...args: unknown[]) => unknown;
  self: unknown;
}

export interface PluginFns extends NullProto {
  processEvent: Bound | null;
  processEventBatch: Bound | null;
  setupPlugin: Bound | null;
  teardownPlugin: Bound | null;
  onEvent: Bound | null;
  exportEvents: Bound | null;
  runEveryMinute: Bound | null;
  runEveryHour: Bound | null;
  runEveryDay: Bound | null;
  /** name → job function, from the first export holder with a `jobs` object (null-prototype table). */
  jobs: Record<string, Bound | undefined> | null;
}

type Holder = Record<string, unknown>;

function isHolder(d: unknown): d is Holder {
  return d !== null && d !== undefined && typeof d === 'object';
}

/** The plugin's functions, and the ExportsAnswer JSON (see contract.ts) that tells the host which exist. */
export function findPluginFns(): { fns: PluginFns; json: string } {
  const e = (G as unknown as Holder).exports;
  const m = (G as unknown as Holder).module;
  const me = isHolder(m) ? m.exports : undefined;
  const candidates = [e, isHolder(e) ? e.default : undefined, me, isHolder(me) ? me.default : undefined];
  const dests: Holder[] = [];
  for (let i = 0; i < candidates.length; i++) {
    const d = candidates[i];
    if (!isHolder(d)) continue;
    let seen = false;
    for (let j = 0; j < dests.length; j++) if (dests[j] === d) seen = true;
    if (!seen) put(dests, dests.length, d);
  }
  let any = false;
  for (let i = 0; i < dests.length; i++) if (ObjectKeys(dests[i]).length > 0) any = true;
  if (!any) put(dests, dests.length, G as unknown as Holder);
  const get = (key: string): Bound | null => {
    for (let i = 0; i < dests.length; i++) {
      const f = dests[i][key];
      if (typeof f === 'function') return { __proto__: null, fn: f as Bound['fn'], self: dests[i] };
    }
    return null;
  };
  const fns: PluginFns = {
    __proto__: null,
    processEvent: get('processEvent'),
    processEventBatch: get('processEventBatch'),
    setupPlugin: get('setupPlugin'),
    teardownPlugin: get('teardownPlugin'),
    onEvent: get('onEvent'),
    exportEvents: get('exportEvents'),
    runEveryMinute: get('runEveryMinute'),
    runEveryHour: get('runEveryHour'),
    runEveryDay: get('runEveryDay'),
    jobs: null,
  };
  let jobNames = '';
  for (let i = 0; i < dests.length && fns.jobs === null; i++) {
    const j = dests[i].jobs;
    if (j === null || typeof j !== 'object') continue;
    const jobsHolder = j as Holder;
    const table = ObjectCreate(null) as Record<string, Bound | undefined>;
    const keys = ObjectKeys(jobsHolder);
    for (let k = 0; k < keys.length; k++) {
      const f = jobsHolder[keys[k]];
      if (typeof f !== 'function') continue;
      table[keys[k]] = { __proto__: null, fn: f as Bound['fn'], self: j };
      jobNames += (jobNames === '' ? '' : ',') + stringify(keys[k]);
    }
    fns.jobs = table;
  }
  const json =
    '{"processEvent":' +
    !!fns.processEvent +
    ',"processEventBatch":' +
    !!fns.processEventBatch +
    ',"setupPlugin":' +
    !!fns.setupPlugin +
    ',"teardownPlugin":' +
    !!fns.teardownPlugin +
    ',"onEvent":' +
    !!fns.onEvent +
    ',"exportEvents":' +
    !!fns.exportEvents +
    ',"runEveryMinute":' +
    !!fns.runEveryMinute +
    ',"runEveryHour":' +
    !!fns.runEveryHour +
    ',"runEveryDay":' +
    !!fns.runEveryDay +
    ',"jobs":[' +
    jobNames +
    ']}';
  return { fns, json };
}
