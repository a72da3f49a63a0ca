/**
 * `make bench`: posthog-plugins against the Python Celery 5.2 baseline and the broker-only ceilings, in one run.
 * (Over 500 lines: the runners and the report share one run's settings and results; what stands alone is beside
 * it: brokers.ts, procs.ts, envelopes.ts, profile.ts.)
 *
 *   node --no-node-snapshot dist/test/bench/run.js          (after `make build services`)
 *
 * Peers: the Python Celery 5.2 pass-through (test/bench/python_baseline.py, prefork, concurrency = cores) on
 * Redis and RabbitMQ; the broker-only ceilings (Redis: Lua moves input → output without decoding; RabbitMQ: a
 * relay that publishes each input unchanged with confirms and then acks it, i.e. RabbitMQ's own work under our
 * guarantee);
 * `posthog-plugins start` with one trivial plugin (fixtures/plugins/bench/add-one) on Redis and RabbitMQ, and with
 * five in the chain on Redis.
 *
 * Method per peer: N ~1 KB `$pageview` tasks (shaped byte for byte like Python's send_task, generated in Node)
 * are queued first, then the peer starts; events/s = (N − 1) / (time of the N-th output − time of the first
 * output), outputs read by the harness from `celery` as they land (BLMPOP / basic.consume). Median of
 * BENCH_RUNS runs; the peers take turns run by run. In the last run the peer keeps running for a latency phase
 * at half its median peak rate (`properties.sent_ms` = enqueue time; p50/p99 of output arrival − sent_ms).
 * Peak RSS is the sum of VmHWM over the peer's process tree. Then a CPU profile of one Redis run and a scaling
 * table for 1…1,000 plugin configs.
 *
 * Settings (environment): BENCH_EVENTS (20000), BENCH_RUNS (3), BENCH_PY_EVENTS (Python peers, default
 * min(BENCH_EVENTS, 4000), to keep the run to minutes), BENCH_SCALE_EVENTS (default min(BENCH_EVENTS, 10000)),
 * BENCH_SCALE ("1,10,100,1000"), BENCH_LATENCY_S (4), BENCH_PROFILE (1; 0 skips the profile run),
 * BENCH_ONLY (comma list of: shape, ceiling, python-redis, python-amqp, redis, task-events, amqp, five, profile,
 * scaling),
 * BENCH_WORKER_ARGS (extra `posthog-plugins start` arguments), BENCH_JSON (write all results to this file),
 * BENCH_SCALE_PROF_DIR (CPU profiles of the scaling runs' processes, written there).
 *
 * Resources: Redis db 12 and RabbitMQ vhost `posthog-plugins-bench` (test/helpers/services.ts), both wiped.
 * Not a test: nothing here has a time limit that fails a build, and `make test` does not run it.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import knex from 'knex';
import { PYTHON } from '../helpers/python';
import { amqpUrl, BENCH_REDIS_DB, BENCH_VHOST, redisUrl, resetVhost } from '../helpers/services';
import {
  AmqpBench,
  amqpCeiling,
  type Collected,
  outputProperties,
  pacedTemplates,
  RedisBench,
  redisCeiling,
} from './brokers';
import {
  benchProducer,
  benchTask,
  captureMessage,
  INPUT_QUEUE,
  kombuDatetime,
  OUTPUT_QUEUE,
  type PacedTemplate,
  REPO_ROOT,
  redisEnvelope,
  verifyAgainstFixture,
} from './envelopes';
import { AREAS, type Area, type ProfileSummary, summariseProfiles } from './profile';
import {
  BIN,
  findProcess,
  processCpu,
  type ProcessCpu,
  RssSampler,
  type Running,
  startOurWorker,
  startPythonBaseline,
  treeCpu,
  treeMemory,
  treeThreadCpu,
} from './procs';

// ------------------------------------------------------------------------------------------------------ settings

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got ${raw}`);
  return n;
}

const N = intEnv('BENCH_EVENTS', 20_000);
const RUNS = intEnv('BENCH_RUNS', 3);
const PY_N = intEnv('BENCH_PY_EVENTS', Math.min(N, 4_000));
const SCALE_N = intEnv('BENCH_SCALE_EVENTS', Math.min(N, 10_000));
const LATENCY_S = Number(process.env.BENCH_LATENCY_S ?? 4);
const SCALE = (process.env.BENCH_SCALE ?? '1,10,100,1000')
  .split(',')
  .map((s) => Number(s.trim()))
  .filter((n) => Number.isInteger(n) && n > 0);
const PROFILE = (process.env.BENCH_PROFILE ?? '1') !== '0';
const ONLY = process.env.BENCH_ONLY ? new Set(process.env.BENCH_ONLY.split(',').map((s) => s.trim())) : null;
const WORKER_ARGS = (process.env.BENCH_WORKER_ARGS ?? '').split(/\s+/).filter(Boolean);
const CORES = os.cpus().length;
const TEAM = 2;
const PROPERTY = 'bench_plugin';
/** Latency samples from the first half second of the paced phase are dropped (warm-up). */
const LATENCY_WARMUP_S = 0.5;

const wanted = (section: string): boolean => ONLY === null || ONLY.has(section);
const say = (msg: string): void => {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
};

// ------------------------------------------------------------------------------------------------------- results

interface PeerResult {
  peer: string;
  broker: 'redis' | 'rabbitmq';
  events: number;
  runs: number[];
  rate: number | null;
  p50: number | null;
  p99: number | null;
  latencyRate: number | null;
  latencySamples: number;
  rssBytes: number | null;
  startupMs: number[];
  /** Consumer processes (ours: worker processes under the supervisor). */
  workers: number | null;
  /** What the peak RSS is made of (VmHWM per kind of process). */
  rssDetail: string;
  /** CPU µs per event of the peer's process tree and of the broker server, first → N-th output, per run. */
  cpuUs: number[];
  brokerCpuUs: number[];
  note?: string;
}

interface ScaleResult {
  configs: number;
  teams: number;
  startupMs: number;
  idleRssBytes: number;
  peakRssBytes: number;
  rate: number;
  events: number;
  /** CPU µs per event of the worker's process tree, first → N-th output (steadier than events/s on a busy machine). */
  cpuUs: number;
}

interface ProfileResult {
  summary: ProfileSummary;
  events: number;
  rate: number;
  /** Worker processes profiled (their main threads are summed). */
  workers: number;
  /** Non-idle main-thread ms of the supervisor in the window, when there is one. */
  supervisorBusyMs: number | null;
  /** CPU seconds in the measured window, by group (/proc). */
  cpu: Array<{ what: string; s: number }>;
  redisServerS: number | null;
  windowS: number;
}

const results: {
  machine: Record<string, string>;
  peers: PeerResult[];
  scaling: ScaleResult[];
  profile: ProfileResult | null;
  notes: string[];
} = {
  machine: {},
  peers: [],
  scaling: [],
  profile: null,
  notes: [],
};

// ------------------------------------------------------------------------------------------------------- helpers

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function percentile(xs: number[], p: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

const rateOf = (c: Collected, n: number): number => ((n - 1) / (c.lastAt - c.firstAt)) * 1000;
const mb = (bytes: number | null): string => (bytes === null ? '—' : `${(bytes / 1024 / 1024).toFixed(0)} MB`);
const fmtRate = (r: number | null): string => (r === null ? '—' : Math.round(r).toLocaleString('en-US'));
const fmtMs = (ms: number | null): string => (ms === null ? '—' : ms < 10 ? ms.toFixed(1) : ms.toFixed(0));
let runCounter = 0;
const nextRunTag = (): number => 0x10000 + ++runCounter;

function machineInfo(redisVersion: string, rabbitVersion: string): Record<string, string> {
  const cpu = os.cpus()[0]?.model ?? '?';
  let python = '?';
  try {
    python = execFileSync(
      PYTHON,
      [
        '-c',
        'import sys, celery, kombu; print("%d.%d.%d" % sys.version_info[:3], celery.__version__, kombu.__version__)',
      ],
      {
        encoding: 'utf8',
      },
    ).trim();
  } catch {
    /* reported as ? */
  }
  const [py, celery, kombu] = python.split(' ');
  return {
    cpu: `${cpu.trim()}`,
    cores: String(CORES),
    ram: `${(os.totalmem() / 1024 ** 3).toFixed(1)} GB`,
    node: process.version,
    python: py ?? '?',
    celery: celery ?? '?',
    kombu: kombu ?? '?',
    redis: redisVersion,
    rabbitmq: rabbitVersion,
    loadavg_start: os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' '),
  };
}

async function cli(args: string[], databaseUrl: string): Promise<string> {
  return execFileSync(BIN, args, {
    cwd: REPO_ROOT,
    env: { ...process.env, DATABASE_URL: databaseUrl },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** A SQLite plugin database: `configs` configs of the bench plugin over `teams` teams (ids firstTeam…). */
async function pluginDb(
  dir: string,
  name: string,
  configs: number,
  teams: number,
  firstTeam: number,
  propertyOf: (k: number) => string,
): Promise<string> {
  const file = path.join(dir, `${name}.sqlite3`);
  const url = `sqlite:${file}`;
  // The first config through the real CLI (migrate + install), the rest cloned in one transaction.
  await cli(
    [
      'install',
      'fixtures/plugins/bench/add-one',
      '--team',
      String(firstTeam),
      '--config',
      JSON.stringify({ propertyName: propertyOf(0), propertyValue: '1' }),
    ],
    url,
  );
  if (configs > 1) {
    const db = knex({ client: 'better-sqlite3', connection: { filename: file }, useNullAsDefault: true });
    try {
      const [first] = (await db('posthog_pluginconfig').where({ id: 1 })) as Array<Record<string, unknown>>;
      await db.transaction(async (trx) => {
        for (let k = 1; k < configs; k++) {
          const { id: _id, ...row } = first;
          void _id;
          await trx('posthog_pluginconfig').insert({
            ...row,
            team_id: firstTeam + (k % teams),
            order: Math.floor(k / teams),
            config: JSON.stringify({ propertyName: propertyOf(k), propertyValue: '1' }),
          });
        }
      });
    } finally {
      await db.destroy();
    }
  }
  return url;
}

/**
 * Five plugins in one chain: five plugin rows, each installed through the CLI from its own copy of the bench
 * plugin (install refuses the same source twice for a team).
 */
async function fivePluginDb(dir: string): Promise<string> {
  const url = `sqlite:${path.join(dir, 'five.sqlite3')}`;
  for (let k = 1; k <= 5; k++) {
    const copy = path.join(dir, `add-one-${k}`);
    cpSync(path.join(REPO_ROOT, 'fixtures/plugins/bench/add-one'), copy, { recursive: true });
    await cli(
      [
        'install',
        copy,
        '--team',
        String(TEAM),
        '--name',
        `Bench: add one property #${k}`,
        '--config',
        JSON.stringify({ propertyName: `${PROPERTY}_${k}`, propertyValue: '1' }),
      ],
      url,
    );
  }
  return url;
}

/** Checks one output of a peer: process_event, args [], kwargs with the added properties. */
function checkSample(c: Collected, properties: string[], what: string): void {
  const s = c.sample;
  if (!s) throw new Error(`${what}: no output to check`);
  if (s.headers.task !== 'posthog.tasks.process_event.process_event')
    throw new Error(`${what}: output task is ${String(s.headers.task)}`);
  const body = s.body as [unknown[], Record<string, unknown>, unknown];
  if (!Array.isArray(body) || !Array.isArray(body[0]) || body[0].length !== 0)
    throw new Error(`${what}: output args are not []`);
  const props = outputProperties(body);
  for (const p of properties)
    if (props?.[p] !== '1')
      throw new Error(`${what}: output lacks property ${p}: ${JSON.stringify(props).slice(0, 300)}`);
  if (typeof props?.sent_ms !== 'number') throw new Error(`${what}: output lost properties.sent_ms`);
}

// ---------------------------------------------------------------------------------------------------- peer runs

interface Broker {
  kind: 'redis' | 'rabbitmq';
  url: string;
  bench: RedisBench | AmqpBench;
  reset(): Promise<void>;
  queue(count: number, runTag: number, teamOf: (i: number) => number): Promise<number>;
  paced(rate: number, templates: PacedTemplate[]): Promise<number>;
  leftover(): Promise<{ input: number; rejected: number }>;
  /** The broker server's pid on this machine (redis-server, RabbitMQ's beam.smp), for its CPU time. */
  serverPid: number | null;
}

const producer = benchProducer();

function redisBroker(bench: RedisBench, serverPid: number | null): Broker {
  return {
    serverPid,
    kind: 'redis',
    url: bench.url,
    bench,
    reset: () => bench.flush(),
    queue: (count, runTag, teamOf) => bench.queue(count, { teamOf, runTag, producer }),
    paced: (rate, templates) => bench.paced(rate, templates),
    leftover: async () => ({
      input: await bench.llen(INPUT_QUEUE),
      rejected: await bench.llen(`${INPUT_QUEUE}.rejected`),
    }),
  };
}

function amqpBroker(bench: AmqpBench, serverPid: number | null): Broker {
  return {
    serverPid,
    kind: 'rabbitmq',
    url: bench.url,
    bench,
    reset: () => bench.purge(),
    queue: (count, runTag, teamOf) => bench.queue(count, { teamOf, runTag, producer }),
    paced: (rate, templates) => bench.paced(rate, templates),
    leftover: async () => ({
      input: await bench.messageCount(INPUT_QUEUE),
      rejected: await bench.messageCount(`${INPUT_QUEUE}.rejected`).catch(() => 0),
    }),
  };
}

interface PeerSpec {
  peer: string;
  broker: Broker;
  events: number;
  start: () => Promise<Running>;
  properties: string[];
  note?: string;
}

function emptyResult(peer: string, broker: 'redis' | 'rabbitmq', events: number, note?: string): PeerResult {
  return {
    peer,
    broker,
    events,
    runs: [],
    rate: null,
    p50: null,
    p99: null,
    latencyRate: null,
    latencySamples: 0,
    rssBytes: null,
    startupMs: [],
    workers: null,
    rssDetail: '',
    cpuUs: [],
    brokerCpuUs: [],
    note,
  };
}

/**
 * One throughput run of a peer (queue N, start it, time first → N-th output, stop it); in the last run the peer
 * keeps running for the latency phase at half its median rate. Peak RSS is the highest over the runs.
 */
async function runPeerOnce(spec: PeerSpec, r: PeerResult, run: number): Promise<void> {
  const { broker } = spec;
  const teamOf = (): number => TEAM;
  await broker.reset();
  const bytes = await broker.queue(spec.events, nextRunTag(), teamOf);
  broker.bench.reset(spec.events);
  if (broker.bench instanceof RedisBench) broker.bench.startReading();
  else await broker.bench.startReading();
  const worker = await spec.start();
  r.startupMs.push(worker.startupMs);
  r.workers = worker.workers;
  const sampler = new RssSampler(worker.pid);
  // CPU time of the peer and of the broker from the first output on (a load-independent cost per event).
  const brokerCpu = (): number => (broker.serverPid ? processCpu(broker.serverPid) : 0);
  const cpuStart: { tree: number; broker: number } = { tree: -1, broker: 0 };
  const poll = setInterval(() => {
    if (cpuStart.tree < 0 && broker.bench.received > 0) {
      cpuStart.tree = treeCpu(worker.pid);
      cpuStart.broker = brokerCpu();
    }
  }, 2);
  try {
    let c: Collected;
    try {
      c = await broker.bench.done(60_000, `${spec.peer} on ${broker.kind}`);
    } finally {
      clearInterval(poll);
    }
    if (cpuStart.tree >= 0) {
      r.cpuUs.push(((treeCpu(worker.pid) - cpuStart.tree) * 1e6) / spec.events);
      if (broker.serverPid) r.brokerCpuUs.push(((brokerCpu() - cpuStart.broker) * 1e6) / spec.events);
    }
    const rate = rateOf(c, spec.events);
    r.runs.push(rate);
    r.rate = median(r.runs);
    checkSample(c, spec.properties, `${spec.peer} on ${broker.kind}`);
    say(
      `${spec.peer} / ${broker.kind} run ${run}/${RUNS}: ${spec.events} events (${(bytes / spec.events / 1024).toFixed(1)} KB/msg on the wire) ` +
        `in ${((c.lastAt - c.firstAt) / 1000).toFixed(2)} s → ${fmtRate(rate)}/s; ${worker.workers} consumer process(es) ready after ${(worker.startupMs / 1000).toFixed(2)} s`,
    );
    if (run === RUNS && LATENCY_S > 0) {
      const latencyRate = median(r.runs) / 2;
      const total = Math.max(1, Math.round(latencyRate * LATENCY_S));
      const templates = pacedTemplates(total, { teamOf, runTag: nextRunTag(), producer });
      // Samples sent in the first LATENCY_WARMUP_S are not counted.
      broker.bench.reset(total, {
        latency: true,
        latencyFrom: performance.timeOrigin + performance.now() + LATENCY_WARMUP_S * 1000,
      });
      const sent = await broker.paced(latencyRate, templates);
      const lc = await broker.bench.done(30_000, `${spec.peer} latency phase`);
      r.latencyRate = latencyRate;
      r.latencySamples = lc.latencies.length;
      r.p50 = percentile(lc.latencies, 50);
      r.p99 = percentile(lc.latencies, 99);
      say(
        `${spec.peer} / ${broker.kind} latency at ${fmtRate(latencyRate)}/s: ${sent} sent, p50 ${fmtMs(r.p50)} ms, p99 ${fmtMs(r.p99)} ms`,
      );
    }
  } finally {
    sampler.stop();
    if (sampler.peakHwm > (r.rssBytes ?? 0)) {
      r.rssBytes = sampler.peakHwm;
      const isOurs = spec.peer.startsWith('posthog-plugins');
      r.rssDetail = sampler.detail
        .map((g) => {
          const name =
            g.kind === 'main'
              ? isOurs && r.workers && r.workers > 1
                ? 'supervisor'
                : 'main process'
              : g.kind === 'node'
                ? 'worker process'
                : g.kind;
          return `${g.count > 1 ? `${g.count} × ` : ''}${name} ${mb(g.hwm / g.count)}`;
        })
        .join(' + ');
    }
    await worker.stop();
    await broker.bench.stopReading();
  }
  const left = await broker.leftover();
  if (left.input !== 0 || left.rejected !== 0)
    throw new Error(`${spec.peer} on ${broker.kind}: ${left.input} input message(s) left, ${left.rejected} set aside`);
}

/** A broker-only ceiling: how to empty the broker, queue N inputs, move them, and count the outputs. */
interface Ceiling {
  broker: 'redis' | 'rabbitmq';
  serverPid: number | null;
  reset(): Promise<void>;
  fill(): Promise<unknown>;
  move(): Promise<{ rate: number; ms: number; moved: number }>;
  outputs(): Promise<number>;
}

async function runCeilingOnce(c: Ceiling, r: PeerResult, run: number): Promise<void> {
  await c.reset();
  await c.fill();
  const before = c.serverPid ? processCpu(c.serverPid) : 0;
  const m = await c.move();
  if (c.serverPid) r.brokerCpuUs.push(((processCpu(c.serverPid) - before) * 1e6) / N);
  if (m.moved !== N || (await c.outputs()) !== N) throw new Error(`${c.broker} ceiling moved ${m.moved} of ${N}`);
  r.runs.push(m.rate);
  r.rate = median(r.runs);
  say(
    `broker-only ceiling / ${c.broker} run ${run}/${RUNS}: ${N} moved in ${m.ms.toFixed(0)} ms → ${fmtRate(m.rate)}/s`,
  );
  await c.reset();
}

// ------------------------------------------------------------------------------------------------------- profile

async function runProfile(redis: RedisBench, databaseUrl: string, redisPid: number | null): Promise<ProfileResult> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pp-bench-prof-'));
  try {
    await redis.flush();
    await redis.queue(N, { teamOf: () => TEAM, runTag: nextRunTag(), producer });
    redis.reset(N);
    redis.startReading();
    // NODE_OPTIONS reaches every Node process of the tree: the supervisor (if any) and each worker process.
    const worker = await startOurWorker({
      brokerUrl: redis.url,
      databaseUrl,
      extraArgs: WORKER_ARGS,
      nodeOptions: `--require ${path.join(__dirname, 'cpu-prof-preload.js')}`,
      env: { BENCH_CPU_PROF_DIR: dir, BENCH_CPU_PROF_INTERVAL_US: '200' },
    });
    // CPU counters from the first output on (the profile window is the same).
    const snap: { before: { tree: ProcessCpu[]; redis: number } | null } = { before: null };
    const poll = setInterval(() => {
      if (snap.before === null && redis.received > 0)
        snap.before = { tree: treeThreadCpu(worker.pid), redis: redisPid ? processCpu(redisPid) : 0 };
    }, 2);
    let c: Collected;
    try {
      c = await redis.done(60_000, 'profile run');
    } finally {
      clearInterval(poll);
    }
    const after = treeThreadCpu(worker.pid);
    const redisAfter = redisPid ? processCpu(redisPid) : 0;
    await worker.stop();
    await redis.stopReading();
    // prof-<pid>.cpuprofile; the spawned process itself is the supervisor when there is one.
    const files = readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'));
    const pidOf = (f: string): number => Number(/prof-(\d+)\./.exec(f)?.[1]);
    const workerFiles = worker.workers > 1 || files.length > 1 ? files.filter((f) => pidOf(f) !== worker.pid) : files;
    if (workerFiles.length === 0)
      throw new Error(`no worker .cpuprofile written to ${dir}:\n${worker.log().slice(-2000)}`);
    const summary = summariseProfiles(
      workerFiles.map((f) => path.join(dir, f)),
      c.firstHr,
      c.lastHr,
    );
    const supervisorFile = files.find((f) => pidOf(f) === worker.pid && !workerFiles.includes(f));
    const supervisorBusyMs = supervisorFile
      ? sumBusy(summariseProfiles([path.join(dir, supervisorFile)], c.firstHr, c.lastHr))
      : null;
    const before = snap.before;
    const cpu = cpuDelta(before?.tree ?? [], after, worker.pid);
    const rate = rateOf(c, N);
    say(
      `profile run: ${fmtRate(rate)}/s with --cpu-prof (sampling overhead included), ${workerFiles.length} worker profile(s)`,
    );
    return {
      summary,
      events: N,
      rate,
      workers: workerFiles.length,
      supervisorBusyMs,
      cpu,
      redisServerS: redisPid && before ? redisAfter - before.redis : null,
      windowS: (c.lastAt - c.firstAt) / 1000,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function sumBusy(s: ProfileSummary): number {
  return (Object.keys(AREAS) as Area[]).filter((a) => a !== 'idle').reduce((t, a) => t + s.msByArea[a], 0);
}

/** CPU seconds between two snapshots of the tree, grouped: worker main threads, their other threads by name, the rest. */
function cpuDelta(before: ProcessCpu[], after: ProcessCpu[], root: number): Array<{ what: string; s: number }> {
  const prev = new Map(before.map((p) => [p.pid, p]));
  const groups = new Map<string, number>();
  const add = (what: string, s: number): void => {
    if (s > 0) groups.set(what, (groups.get(what) ?? 0) + s);
  };
  const single = after.length === 1 || !after.some((p) => p.kind === 'node');
  for (const p of after) {
    const b = prev.get(p.pid);
    const isWorker = p.kind === 'node' || (single && p.pid === root);
    const who = isWorker ? 'worker' : p.pid === root ? 'supervisor' : p.kind;
    if (isWorker || who === 'supervisor') {
      add(`${who} main thread${isWorker ? 's' : ''}`, p.main - (b?.main ?? 0));
      for (const [name, s] of p.others) {
        const label =
          name === 'node'
            ? 'other threads (isolated-vm isolates, V8 GC helpers, libuv)'
            : name === 'v8:ProfEvntProc'
              ? 'profiler thread'
              : `threads "${name}"`;
        add(`${who} ${label}`, s - (b?.others.get(name) ?? 0));
      }
    } else {
      add(`${who}`, p.main - (b?.main ?? 0) + sumMap(p.others) - sumMap(b?.others));
    }
  }
  return [...groups].map(([what, s]) => ({ what, s })).sort((x, y) => y.s - x.s);
}

function sumMap(m: Map<string, number> | undefined): number {
  let t = 0;
  for (const v of m?.values() ?? []) t += v;
  return t;
}

// ------------------------------------------------------------------------------------------------------- scaling

async function runScaling(redis: RedisBench, dir: string): Promise<ScaleResult[]> {
  const out: ScaleResult[] = [];
  for (const configs of SCALE) {
    const teams = Math.min(configs, 200);
    const firstTeam = 1001;
    const databaseUrl = await pluginDb(dir, `scale-${configs}`, configs, teams, firstTeam, (k) => `${PROPERTY}_${k}`);
    const teamOf = (i: number): number => firstTeam + (i % teams);
    await redis.flush();
    await redis.queue(SCALE_N, { teamOf, runTag: nextRunTag(), producer });
    redis.reset(SCALE_N);
    redis.startReading();
    // Idle RSS: the worker started against an empty queue would be cleaner, but costs a second start-up per size;
    // the RSS at the "consuming" line (before the first batch is processed) is what the plugins cost.
    // BENCH_SCALE_PROF_DIR: CPU profiles of the scaling runs' processes there (prof-<pid>.cpuprofile), to look into.
    const profDir = process.env.BENCH_SCALE_PROF_DIR;
    const worker = await startOurWorker({
      brokerUrl: redis.url,
      databaseUrl,
      extraArgs: WORKER_ARGS,
      timeoutMs: 600_000,
      ...(profDir
        ? {
            nodeOptions: `--require ${path.join(__dirname, 'cpu-prof-preload.js')}`,
            env: { BENCH_CPU_PROF_DIR: profDir, BENCH_CPU_PROF_INTERVAL_US: '500' },
          }
        : {}),
    });
    const idle = treeMemory(worker.pid).rss;
    const sampler = new RssSampler(worker.pid);
    const cpu = { start: -1 };
    const poll = setInterval(() => {
      if (cpu.start < 0 && redis.received > 0) cpu.start = treeCpu(worker.pid);
    }, 2);
    let c: Collected;
    let cpuUs = 0;
    try {
      c = await redis.done(120_000, `scaling ${configs} configs`);
      cpuUs = cpu.start < 0 ? 0 : ((treeCpu(worker.pid) - cpu.start) * 1e6) / SCALE_N;
    } finally {
      clearInterval(poll);
      sampler.stop();
      await worker.stop();
      await redis.stopReading();
    }
    const rate = rateOf(c, SCALE_N);
    out.push({
      configs,
      teams,
      startupMs: worker.startupMs,
      idleRssBytes: idle,
      peakRssBytes: sampler.peakHwm,
      rate,
      events: SCALE_N,
      cpuUs,
    });
    say(
      `scaling: ${configs} config(s) over ${teams} team(s): consuming after ${(worker.startupMs / 1000).toFixed(2)} s, RSS ${mb(idle)} at start, peak ${mb(sampler.peakHwm)}, ${fmtRate(rate)}/s, ${Math.round(cpuUs)} CPU µs/event`,
    );
  }
  return out;
}

// ------------------------------------------------------------------------------------------------------ shape check

/** One bench message sent by the real Python producer vs ours for the same inputs: must be byte-identical. */
async function liveShapeCheck(redis: RedisBench, dir: string): Promise<void> {
  const queue = 'bench-shape-check';
  const t = benchTask(7, TEAM, 1, performance.timeOrigin + performance.now());
  const eventsFile = path.join(dir, 'shape-event.jsonl');
  writeFileSync(eventsFile, `${JSON.stringify(t.data)}\n`);
  await redis.cmd.del(queue);
  execFileSync(
    PYTHON,
    [
      path.join(REPO_ROOT, 'test/python/producer.py'),
      '--broker',
      redis.url,
      '--queue',
      queue,
      '--events-file',
      eventsFile,
      '--team-id',
      String(TEAM),
      '--site-url',
      t.siteUrl,
      '--now',
      t.now,
      '--sent-at',
      kombuDatetime(t.sentAt!.ms, t.sentAt!.micro),
      '--id-prefix',
      t.id.slice(0, -12),
      '--start-index',
      '0',
    ],
    {
      cwd: path.join(REPO_ROOT, 'test/python'),
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  const [python] = await redis.cmd.lrange(queue, 0, -1);
  await redis.cmd.del(queue);
  const env = JSON.parse(python) as {
    headers: { id: string; origin: string };
    properties: { reply_to: string; delivery_tag: string };
  };
  const ours = redisEnvelope(
    captureMessage({ ...t, id: env.headers.id }, { origin: env.headers.origin, replyTo: env.properties.reply_to }),
    env.properties.delivery_tag,
    queue,
  );
  if (ours !== python) {
    let at = 0;
    while (at < ours.length && ours[at] === python[at]) at++;
    throw new Error(
      `bench message differs from Python's at character ${at}:\n  python: …${python.slice(Math.max(0, at - 80), at + 80)}\n  ours:   …${ours.slice(Math.max(0, at - 80), at + 80)}`,
    );
  }
}

// ------------------------------------------------------------------------------------------------------- report

function pad(cells: string[][]): string {
  const widths = cells[0].map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r: string[]): string =>
    `| ${r.map((c, i) => (i === 0 || i === 1 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`;
  return [
    line(cells[0]),
    `|${widths.map((w, i) => (i <= 1 ? `${'-'.repeat(w + 1)}-` : `${'-'.repeat(w + 1)}:`)).join('|')}|`,
    ...cells.slice(1).map(line),
  ].join('\n');
}

function report(): string {
  const m = results.machine;
  const lines: string[] = [];
  lines.push('');
  lines.push('## posthog-plugins benchmark');
  lines.push('');
  lines.push(
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.ram} RAM · Node ${m.node} · Python ${m.python} (Celery ${m.celery}, kombu ${m.kombu}) · Redis ${m.redis} · RabbitMQ ${m.rabbitmq}`,
  );
  lines.push(
    `Load average at start ${m.loadavg_start}, at end ${m.loadavg_end ?? '?'} (other jobs share this machine: numbers are noisy).`,
  );
  lines.push(
    `N = ${N.toLocaleString('en-US')} \`$pageview\` events of ~1.1 KB (\`data\`; ~3.7 KB Redis envelope) per run, median of ${RUNS} runs; ` +
      `Python peers N = ${PY_N.toLocaleString('en-US')}. Events/s = (N−1)/(first→N-th output). Latency: ${LATENCY_S} s at half the median peak, enqueue → output read from \`celery\`.`,
  );
  lines.push('');
  const pyRate = (broker: string): number | null =>
    results.peers.find((p) => p.broker === broker && p.peer.startsWith('python'))?.rate ?? null;
  const rows = [
    [
      'peer',
      'broker',
      'events/s',
      '× Python',
      'p50 ms',
      'p99 ms',
      'peak RSS',
      'CPU µs/event',
      'broker CPU µs/event',
      'runs (events/s)',
    ],
  ];
  const us = (xs: number[]): string => (xs.length ? Math.round(median(xs)).toLocaleString('en-US') : '—');
  for (const p of results.peers) {
    const py = pyRate(p.broker);
    rows.push([
      p.peer.startsWith('posthog-plugins') && p.workers
        ? p.peer.replace('posthog-plugins', `posthog-plugins (${p.workers} proc)`)
        : p.peer,
      p.broker,
      fmtRate(p.rate),
      py && p.rate ? `${(p.rate / py).toFixed(1)}×` : '—',
      fmtMs(p.p50),
      fmtMs(p.p99),
      mb(p.rssBytes),
      us(p.cpuUs),
      us(p.brokerCpuUs),
      p.runs.map((r) => fmtRate(r)).join(' / '),
    ]);
  }
  lines.push(pad(rows));
  lines.push('');
  lines.push(
    'Peak RSS is the sum of VmHWM over the process tree: ' +
      results.peers
        .filter((p) => p.rssDetail)
        .map(
          (p) =>
            `${p.peer.split(',')[0].split(' (')[0]}${p.peer.includes(',') ? `,${p.peer.split(',')[1]}` : ''} on ${p.broker}: ${p.rssDetail}`,
        )
        .join('; ') +
      '.',
  );
  lines.push('');

  // Targets
  const find = (pred: (p: PeerResult) => boolean): PeerResult | undefined => results.peers.find(pred);
  const ourRedis = find((p) => p.peer.startsWith('posthog-plugins, 1 plugin') && p.broker === 'redis');
  const ourAmqp = find((p) => p.peer.startsWith('posthog-plugins, 1 plugin') && p.broker === 'rabbitmq');
  const five = find((p) => p.peer.startsWith('posthog-plugins, 5 plugins'));
  const ceiling = find((p) => p.peer.startsWith('broker-only') && p.broker === 'redis');
  const amqpCeilingRow = find((p) => p.peer.startsWith('broker-only') && p.broker === 'rabbitmq');
  const pyR = pyRate('redis');
  const pyA = pyRate('rabbitmq');
  const targets: string[][] = [['target', 'measured', 'met']];
  const add = (
    name: string,
    value: number | null | undefined,
    ok: (v: number) => boolean,
    fmt: (v: number) => string,
  ): void => {
    targets.push([
      name,
      value === null || value === undefined || !Number.isFinite(value) ? 'not measured' : fmt(value),
      value === null || value === undefined || !Number.isFinite(value) ? '—' : ok(value) ? 'yes' : 'NO',
    ]);
  };
  // Besides events/s (wall clock, at the mercy of whatever else runs here), the same ratio by CPU time per event
  // of peer + broker server: what the throughput ratio would be if both had the cores to themselves.
  const cpuOf = (p: PeerResult | undefined): number | null =>
    p && p.cpuUs.length ? median(p.cpuUs) + (p.brokerCpuUs.length ? median(p.brokerCpuUs) : 0) : null;
  const pyPeer = (broker: string): PeerResult | undefined =>
    results.peers.find((p) => p.broker === broker && p.peer.startsWith('python'));
  const byCpu = (ours: PeerResult | undefined, py: PeerResult | undefined): string => {
    const a = cpuOf(ours);
    const b = cpuOf(py);
    return a && b ? `; ${(b / a).toFixed(1)}× by CPU per event (peer + broker)` : '';
  };
  // Issue 16's targets. CPU ratios compare the worker trees alone (not the broker servers).
  const treeCpu = (p: PeerResult | undefined): number | null => (p && p.cpuUs.length ? median(p.cpuUs) : null);
  const cpuShare = (ours: PeerResult | undefined, py: PeerResult | undefined): number | null => {
    const a = treeCpu(ours);
    const b = treeCpu(py);
    return a && b ? a / b : null;
  };
  add(
    'Redis ≥ 20× Python pass-through',
    ourRedis?.rate && pyR ? ourRedis.rate / pyR : null,
    (v) => v >= 20,
    (v) => `${v.toFixed(1)}× by events/s${byCpu(ourRedis, pyPeer('redis'))}`,
  );
  add(
    "Redis: worker CPU per event ≤ 1/20 of Python's",
    cpuShare(ourRedis, pyPeer('redis')),
    (v) => v <= 1 / 20,
    (v) => `1/${(1 / v).toFixed(1)}`,
  );
  add(
    'Redis ≥ ¼ of the broker-only ceiling',
    ourRedis?.rate && ceiling?.rate ? ourRedis.rate / ceiling.rate : null,
    (v) => v >= 0.25,
    (v) => `${(v * 100).toFixed(1)} % of it`,
  );
  add(
    'RabbitMQ ≥ 90 % of the relay ceiling',
    ourAmqp?.rate && amqpCeilingRow?.rate ? ourAmqp.rate / amqpCeilingRow.rate : null,
    (v) => v >= 0.9,
    (v) =>
      `${(v * 100).toFixed(1)} %; ${pyA && ourAmqp?.rate ? `${(ourAmqp.rate / pyA).toFixed(1)}× Python by events/s, the relay ${amqpCeilingRow?.rate ? (amqpCeilingRow.rate / pyA).toFixed(1) : '?'}×` : ''}`,
  );
  add(
    "RabbitMQ: worker CPU per event ≤ 1/10 of Python's",
    cpuShare(ourAmqp, pyPeer('rabbitmq')),
    (v) => v <= 1 / 10,
    (v) => `1/${(1 / v).toFixed(1)}`,
  );
  const fiveCpu = cpuOf(five);
  const oneCpu = cpuOf(ourRedis);
  add(
    'five plugins < 2× the cost of one',
    five?.rate && ourRedis?.rate ? ourRedis.rate / five.rate : null,
    (v) => v < 2,
    (v) =>
      `${v.toFixed(2)}× the time per event${fiveCpu && oneCpu ? `; ${(fiveCpu / oneCpu).toFixed(2)}× the CPU per event` : ''}`,
  );
  const worstP99 = [ourRedis, ourAmqp, five]
    .filter((p): p is PeerResult => p?.p99 !== null && p?.p99 !== undefined)
    .map((p) => p.p99 as number);
  add(
    'p99 ≤ 50 ms at half peak (worst of our rows)',
    worstP99.length ? Math.max(...worstP99) : null,
    (v) => v <= 50,
    (v) => `${fmtMs(v)} ms`,
  );
  add(
    '1-plugin tree peaks ≤ 200 MB draining (Redis)',
    ourRedis?.rssBytes ?? null,
    (v) => v <= 200 * 1024 * 1024,
    (v) => mb(v),
  );
  const s1 = results.scaling.find((s) => s.configs === 1);
  const sMax = [...results.scaling].sort((a, b) => b.configs - a.configs)[0];
  const s1000 = results.scaling.find((s) => s.configs === 1000);
  add(
    '1-plugin tree ≤ 150 MB idle (RSS at start)',
    s1?.idleRssBytes ?? null,
    (v) => v <= 150 * 1024 * 1024,
    (v) => mb(v),
  );
  add(
    '1,000 configs: consuming ≤ 10 s after start',
    s1000 ? s1000.startupMs : null,
    (v) => v <= 10_000,
    (v) => `${(v / 1000).toFixed(2)} s`,
  );
  add(
    '1,000 configs: peak ≤ 1 GB',
    s1000 ? s1000.peakRssBytes : null,
    (v) => v <= 1024 ** 3,
    (v) => mb(v),
  );
  add(
    'CPU per event, 1,000 configs ≤ 2× 1 config',
    s1 && s1000 ? s1000.cpuUs / s1.cpuUs : null,
    (v) => v <= 2,
    (v) => `${v.toFixed(2)}× (chains of ${s1000 ? s1000.configs / s1000.teams : '?'} against 1)`,
  );
  add(
    '≤ 4 MB per live plugin config',
    s1 && sMax && sMax.configs > 1 ? (sMax.idleRssBytes - s1.idleRssBytes) / (sMax.configs - 1) / 1024 / 1024 : null,
    (v) => v <= 4,
    (v) => `${v.toFixed(2)} MB (RSS at start, ${sMax?.configs} vs 1 configs)`,
  );
  lines.push(pad(targets));
  lines.push('');

  if (results.scaling.length) {
    lines.push(
      `Scaling (Redis, ${SCALE_N.toLocaleString('en-US')} events spread over the teams, 1 run each; configs over min(configs, 200) teams):`,
    );
    lines.push('');
    // With more configs than teams each event runs through a longer chain (1,000 configs over 200 teams: 5 plugins
    // per event), so the cost per plugin call of an event is the figure to compare across rows.
    const srows = [
      [
        'plugin configs',
        'teams',
        'plugins per event',
        'start-up to consuming',
        'RSS at start',
        'peak RSS',
        'events/s',
        'CPU µs/event',
        'CPU µs per event and plugin',
      ],
    ];
    for (const s of results.scaling) {
      const chain = s.configs / s.teams;
      srows.push([
        String(s.configs),
        String(s.teams),
        String(chain),
        `${(s.startupMs / 1000).toFixed(2)} s`,
        mb(s.idleRssBytes),
        mb(s.peakRssBytes),
        fmtRate(s.rate),
        Math.round(s.cpuUs).toLocaleString('en-US'),
        Math.round(s.cpuUs / chain).toLocaleString('en-US'),
      ]);
    }
    lines.push(pad(srows));
    lines.push('');
  }

  const prof = results.profile;
  if (prof) {
    const perEvent = (ms: number): string => ((ms * 1000) / prof.events).toFixed(1);
    lines.push(
      `Profile (posthog-plugins, 1 plugin, Redis, ${prof.events.toLocaleString('en-US')} events, --cpu-prof every 200 µs in ${prof.workers} worker process(es): ` +
        `${fmtRate(prof.rate)}/s with profiling on). Main-thread self time by area, summed over the worker processes, µs per event, ` +
        `in the first→last output window (${prof.windowS.toFixed(2)} s):`,
    );
    lines.push('');
    // Sampled time is wall time on the main thread: on a busy 2-core machine a runnable thread that waits for a
    // core is still sampled in its function. So areas are shown as shares of the sampled busy time, applied to
    // the main threads' CPU time from /proc.
    const mainCpuS = prof.cpu.find((g) => g.what === 'worker main threads')?.s ?? 0;
    const busy = sumBusy(prof.summary);
    const prows = [['area', 'CPU µs/event', 'share of busy', 'sampled µs/event']];
    const entries = (Object.keys(AREAS) as Area[])
      .map((a) => [a, prof.summary.msByArea[a]] as const)
      .filter(([, ms]) => ms > 0)
      .sort((x, y) => y[1] - x[1]);
    for (const [a, ms] of entries) {
      if (a === 'idle') continue;
      prows.push([
        AREAS[a],
        (((ms / busy) * mainCpuS * 1e6) / prof.events).toFixed(1),
        `${((ms / busy) * 100).toFixed(1)} %`,
        perEvent(ms),
      ]);
    }
    prows.push(['main threads, total busy', ((mainCpuS * 1e6) / prof.events).toFixed(1), '100 %', perEvent(busy)]);
    prows.push([AREAS.idle, '', '', perEvent(prof.summary.msByArea.idle)]);
    lines.push(pad(prows));
    lines.push('');
    const us = (s: number): string => ((s * 1e6) / prof.events).toFixed(1);
    lines.push(
      'CPU in the same window from /proc (10 ms ticks), µs per event: ' +
        prof.cpu.map((g) => `${g.what} ${us(g.s)}`).join(', ') +
        (prof.redisServerS !== null ? `; redis-server ${us(prof.redisServerS)}` : '') +
        (prof.supervisorBusyMs !== null
          ? `; supervisor main thread busy ${perEvent(prof.supervisorBusyMs)} (profile)`
          : '') +
        '. A synchronous processEvent runs on the main thread (applySync, counted under isolated-vm calls); the other threads are V8 helpers (GC), libuv, and isolated-vm threads for async calls.',
    );
    lines.push('');
    lines.push('Heaviest functions (self time, outside idle, all worker processes):');
    lines.push('');
    const frows = [['function', 'area', 'µs/event']];
    for (const f of prof.summary.topFunctions.slice(0, 12)) frows.push([f.name, f.area, perEvent(f.ms)]);
    lines.push(pad(frows));
    lines.push('');
  }
  for (const n of results.notes) lines.push(`Note: ${n}`);
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------------------- main

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pp-bench-'));
  const redis = new RedisBench(redisUrl(BENCH_REDIS_DB));
  await redis.connect();
  await redis.flush();
  const info = await redis.cmd.info('server');
  const redisVersion = /redis_version:(\S+)/.exec(info)?.[1] ?? '?';
  const redisPid = Number(/process_id:(\d+)/.exec(info)?.[1] ?? 0) || null;

  const needsAmqp = wanted('python-amqp') || wanted('amqp') || wanted('ceiling');
  let amqpBench: AmqpBench | null = null;
  let rabbitVersion = '?';
  if (needsAmqp) {
    say(`resetting RabbitMQ vhost ${BENCH_VHOST}`);
    await resetVhost(BENCH_VHOST);
    amqpBench = new AmqpBench(amqpUrl(BENCH_VHOST));
    await amqpBench.connect();
    rabbitVersion = amqpBench.serverVersion;
  }
  results.machine = machineInfo(redisVersion, rabbitVersion);
  say(
    `N=${N} runs=${RUNS} python N=${PY_N} scaling N=${SCALE_N} (${SCALE.join(', ')} configs); ${results.machine.cpu}, ${CORES} cores, load ${results.machine.loadavg_start}`,
  );

  try {
    if (wanted('shape')) {
      verifyAgainstFixture();
      await liveShapeCheck(redis, dir);
      say(
        'input messages: byte-identical to fixtures/messages/v2.jsonl[0] and to a live Python send_task of a bench event',
      );
    }

    const oneDb = await pluginDb(dir, 'one', 1, 1, TEAM, () => PROPERTY);
    const rb = redisBroker(redis, redisPid);
    const ab = amqpBench ? amqpBroker(amqpBench, findProcess('beam.smp')) : null;
    results.notes.push(
      'the Python baseline runs with Celery defaults as PostHog did (ack on receipt, prefetch multiplier 4) at log level WARNING; ' +
        'posthog-plugins acks an input only once its output is in the broker (one Lua call on Redis, publisher confirms on RabbitMQ).',
    );
    if (PY_N !== N)
      results.notes.push(
        `the Python peers ran ${PY_N.toLocaleString('en-US')} events per run instead of ${N.toLocaleString('en-US')} (BENCH_PY_EVENTS) to keep the run to minutes; events/s is size-independent once past start-up.`,
      );

    // Peers take turns run by run (all first runs, then all second runs, …), so slow drifts in the load of this
    // shared machine spread over every peer instead of favouring whichever ran in a quiet minute.
    const jobs: Array<{ result: PeerResult; once: (run: number) => Promise<void> }> = [];
    const peer = (spec: PeerSpec): void => {
      const result = emptyResult(spec.peer, spec.broker.kind, spec.events, spec.note);
      jobs.push({ result, once: (run) => runPeerOnce(spec, result, run) });
    };
    const pyName = `python celery 5.2 (prefork ×${CORES})`;
    if (wanted('python-redis'))
      peer({
        peer: pyName,
        broker: rb,
        events: PY_N,
        start: () => startPythonBaseline(rb.url, CORES),
        properties: [PROPERTY],
      });
    if (wanted('ceiling')) {
      const result = emptyResult('broker-only ceiling (Lua RPOP 1000 → LPUSH, 4 in flight)', 'redis', N);
      const ceiling: Ceiling = {
        broker: 'redis',
        serverPid: redisPid,
        reset: () => redis.flush(),
        fill: () => redis.queue(N, { teamOf: () => TEAM, runTag: nextRunTag(), producer }),
        move: () => redisCeiling(redis.url, N),
        outputs: () => redis.llen(OUTPUT_QUEUE),
      };
      jobs.push({ result, once: (run) => runCeilingOnce(ceiling, result, run) });
    }
    if (wanted('redis')) {
      peer({
        peer: 'posthog-plugins, 1 plugin',
        broker: rb,
        events: N,
        start: () => startOurWorker({ brokerUrl: rb.url, databaseUrl: oneDb, extraArgs: WORKER_ARGS }),
        properties: [PROPERTY],
      });
    }
    if (wanted('task-events')) {
      // Celery's -E: the cost of sending task events (received/started/succeeded, batched), next to the row above.
      peer({
        peer: 'posthog-plugins, 1 plugin, --task-events',
        broker: rb,
        events: N,
        start: () =>
          startOurWorker({ brokerUrl: rb.url, databaseUrl: oneDb, extraArgs: [...WORKER_ARGS, '--task-events'] }),
        properties: [PROPERTY],
      });
    }
    if (wanted('five')) {
      const fiveDb = await fivePluginDb(dir);
      peer({
        peer: 'posthog-plugins, 5 plugins',
        broker: rb,
        events: N,
        start: () => startOurWorker({ brokerUrl: rb.url, databaseUrl: fiveDb, extraArgs: WORKER_ARGS }),
        properties: [1, 2, 3, 4, 5].map((k) => `${PROPERTY}_${k}`),
      });
    }
    if (wanted('ceiling') && ab && amqpBench) {
      const result = emptyResult('broker-only ceiling (consume → publish, confirms, then ack)', 'rabbitmq', N);
      const bench = amqpBench;
      const ceiling: Ceiling = {
        broker: 'rabbitmq',
        serverPid: ab.serverPid,
        reset: () => bench.purge(),
        fill: () => bench.queue(N, { teamOf: () => TEAM, runTag: nextRunTag(), producer }),
        move: () => amqpCeiling(bench.url, N),
        outputs: () => bench.messageCount(OUTPUT_QUEUE),
      };
      jobs.push({ result, once: (run) => runCeilingOnce(ceiling, result, run) });
    }
    if (wanted('python-amqp') && ab)
      peer({
        peer: pyName,
        broker: ab,
        events: PY_N,
        start: () => startPythonBaseline(ab.url, CORES),
        properties: [PROPERTY],
      });
    if (wanted('amqp') && ab) {
      peer({
        peer: 'posthog-plugins, 1 plugin',
        broker: ab,
        events: N,
        start: () => startOurWorker({ brokerUrl: ab.url, databaseUrl: oneDb, extraArgs: WORKER_ARGS }),
        properties: [PROPERTY],
      });
    }
    results.peers = jobs.map((j) => j.result);
    for (let run = 1; run <= RUNS; run++) for (const job of jobs) await job.once(run);
    if (wanted('profile') && PROFILE) results.profile = await runProfile(redis, oneDb, redisPid);
    if (wanted('scaling') && SCALE.length) results.scaling = await runScaling(redis, dir);
  } finally {
    results.machine.loadavg_end = os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ');
    await redis.flush().catch(() => undefined);
    await redis.close();
    await amqpBench?.purge().catch(() => undefined);
    await amqpBench?.close();
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${report()}\n`);
  if (process.env.BENCH_JSON)
    writeFileSync(
      process.env.BENCH_JSON,
      JSON.stringify({ settings: { N, RUNS, PY_N, SCALE_N, LATENCY_S, SCALE, WORKER_ARGS }, ...results }, null, 2),
    );
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
