/**
 * Summarises a V8 .cpuprofile of the worker's main thread by area of the hot path: self time of every sample
 * inside a time window, attributed to the innermost frame that belongs to a known area (builtins such as
 * JSON.parse or Buffer.from have no script URL and count for the caller that used them).
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export const AREAS = {
  redis: 'Redis client: Lua pop/settle calls, reply parsing (ioredis)',
  amqp: 'RabbitMQ client (amqplib)',
  decode: 'decode: envelope JSON + base64, Celery message, args',
  sandboxJson: 'sandbox: event JSON in/out of the chain (manager)',
  sandboxCall: 'sandbox: isolated-vm calls (copy in/out; synchronous processEvent runs inside)',
  encode: 'encode: process_event message, argsrepr, uuid5, envelope',
  pipeline: 'pipeline: batching, grouping by team, bookkeeping',
  logging: 'logging (winston)',
  store: 'plugin store (knex/SQLite)',
  runtime: 'Node runtime: sockets, promises, timers',
  gc: 'garbage collection',
  program: 'V8/native, not attributed ((program))',
  idle: 'idle (waiting for Redis or the isolate thread)',
} as const;
export type Area = keyof typeof AREAS;

const DECODE_FUNCS = new Set([
  'parseEnvelope',
  'messagePriority',
  'reviver',
  'parseKombuJson',
  'reviveKombuTags',
  'convertTagged',
  'ingestionArgsFromTask',
  'rawFromAmqp',
  'jsonFromFieldValue',
  'utf8OrBase64',
]);
const ENCODE_FUNCS = new Set([
  'buildEnvelope',
  'replacer',
  'stringifyForPython',
  'toProcessEventKwargs',
  'processEventTask',
  'withOptions',
  'amqpPublishOptions',
  'pyAmqpFieldTable',
  'pyAmqpFieldValue',
  'envelopeFor',
]);

/** The area of one frame, or null when the caller should decide (builtins, Node internals, shared helpers). */
function frameArea(cf: CallFrame): Area | null {
  const { url, functionName: fn } = cf;
  switch (fn) {
    case '(garbage collector)':
      return 'gc';
    case '(idle)':
      return 'idle';
    case '(program)':
      return 'program';
    default:
      break;
  }
  if (!url) return null;
  if (
    /node_modules\/(winston|logform|triple-beam|winston-transport|@colors|colors|fecha|safe-stable-stringify|one-time|kuler|text-hex|fn\.name|enabled|stack-trace|@dabh)/.test(
      url,
    ) ||
    /\/src\/log\.(js|ts)$/.test(url)
  )
    return 'logging';
  if (/node_modules\/(ioredis|redis-parser|denque|standard-as-callback|cluster-key-slot|redis-errors)\//.test(url))
    return 'redis';
  if (
    /node_modules\/(amqplib|buffer-more-ints|url-parse|querystringify|requires-port)\//.test(url) ||
    /\/src\/brokers\/amqp\//.test(url)
  )
    return 'amqp';
  if (/node_modules\/(knex|better-sqlite3|pg|pg-protocol|tarn)\//.test(url) || /\/src\/store\//.test(url))
    return 'store';
  if (/node_modules\/isolated-vm\//.test(url) || /\/src\/plugins\/sandbox\.js$/.test(url)) return 'sandboxCall';
  if (/\/src\/plugins\//.test(url)) return 'sandboxJson';
  if (DECODE_FUNCS.has(fn)) return 'decode';
  if (ENCODE_FUNCS.has(fn)) return 'encode';
  if (/\/protocol\/(decode|compression)\.js$/.test(url)) return 'decode';
  if (/\/protocol\/(encode|repr|ids|time)\.js$/.test(url)) return 'encode';
  if (/\/protocol\/(json|posthog|redis-envelope|amqp-properties)\.js$/.test(url))
    return fn === 'toPluginEvent' ? 'pipeline' : null;
  if (/\/src\/brokers\/redis\//.test(url)) return 'redis';
  if (/\/src\/(pipeline|cli)\//.test(url)) return 'pipeline';
  return null;
}

export interface ProfileSummary {
  /** Sampled ms inside the window, by area. */
  msByArea: Record<Area, number>;
  windowMs: number;
  sampledMs: number;
  samples: number;
  /** Heaviest self-time functions (outside idle), for the report. */
  topFunctions: Array<{ name: string; area: Area; ms: number }>;
  allFunctions: Array<{ name: string; area: Area; ms: number }>;
}

/**
 * Self time per area within [fromUs, toUs] (profile clock: CLOCK_MONOTONIC µs, the same as process.hrtime in
 * the harness). When the window misses the profile, the whole profile is used.
 */
export function summariseProfiles(files: string[], fromUs: number, toUs: number): ProfileSummary {
  const parts = files.map((f) => summariseProfile(f, fromUs, toUs));
  const msByArea = Object.fromEntries(Object.keys(AREAS).map((k) => [k, 0])) as Record<Area, number>;
  const fns = new Map<string, { area: Area; ms: number }>();
  for (const p of parts) {
    for (const a of Object.keys(AREAS) as Area[]) msByArea[a] += p.msByArea[a];
    for (const f of p.allFunctions) {
      const cur = fns.get(f.name) ?? { area: f.area, ms: 0 };
      cur.ms += f.ms;
      fns.set(f.name, cur);
    }
  }
  const allFunctions = [...fns].map(([name, v]) => ({ name, area: v.area, ms: v.ms })).sort((a, b) => b.ms - a.ms);
  return {
    msByArea,
    windowMs: Math.max(0, ...parts.map((p) => p.windowMs)),
    sampledMs: parts.reduce((t, p) => t + p.sampledMs, 0),
    samples: parts.reduce((t, p) => t + p.samples, 0),
    topFunctions: allFunctions.slice(0, 15),
    allFunctions,
  };
}

export function summariseProfile(file: string, fromUs: number, toUs: number): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) byId.set(n.id, n);
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const areaCache = new Map<number, Area>();
  const areaOf = (id: number): Area => {
    const cached = areaCache.get(id);
    if (cached) return cached;
    let area: Area = 'runtime';
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const a = frameArea(byId.get(cur)!.callFrame);
      if (a) {
        area = a;
        break;
      }
    }
    areaCache.set(id, area);
    return area;
  };

  if (!(fromUs < profile.endTime && toUs > profile.startTime)) {
    fromUs = profile.startTime;
    toUs = profile.endTime;
  }
  const msByArea = Object.fromEntries(Object.keys(AREAS).map((k) => [k, 0])) as Record<Area, number>;
  const byFunction = new Map<string, { area: Area; ms: number }>();
  let t = profile.startTime;
  let sampled = 0;
  let count = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i];
    // A sample stands for the interval up to the next one.
    const dt = (i + 1 < profile.timeDeltas.length ? profile.timeDeltas[i + 1] : 0) / 1000;
    if (t < fromUs || t > toUs) continue;
    const id = profile.samples[i];
    const area = areaOf(id);
    msByArea[area] += dt;
    sampled += dt;
    count++;
    if (area !== 'idle') {
      const cf = byId.get(id)!.callFrame;
      const key = `${cf.functionName || '(anonymous)'} ${cf.url ? `${cf.url.replace(/^.*\/(node_modules|dist)\//, '$1/')}:${cf.lineNumber + 1}` : '(builtin)'}`;
      const f = byFunction.get(key) ?? { area, ms: 0 };
      f.ms += dt;
      byFunction.set(key, f);
    }
  }
  const allFunctions = [...byFunction]
    .map(([name, v]) => ({ name, area: v.area, ms: v.ms }))
    .sort((a, b) => b.ms - a.ms);
  return {
    msByArea,
    windowMs: (toUs - fromUs) / 1000,
    sampledMs: sampled,
    samples: count,
    topFunctions: allFunctions.slice(0, 15),
    allFunctions,
  };
}
