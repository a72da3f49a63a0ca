/**
 * Real Python Celery 5.2 on both sides of posthog-plugins, for tests:
 *  - sendEvents(): test/python/producer.py sends `process_event_with_plugins` tasks exactly like PostHog's
 *    capture endpoint (app.send_task(name, args=[distinct_id, ip, site_url, data, team_id, now, sent_at])).
 *  - startSinkWorker(): `celery -A sink_worker worker` executing `posthog.tasks.process_event.process_event`
 *    and recording every call (see test/python/sink_worker.py).
 *
 * Always stop sink workers in an `after()` hook; a process-exit hook SIGKILLs any left running, and the
 * Python side also exits by itself when the Node process that started it is gone.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseLosslessJson } from '../../protocol/lossless-numbers';
import { needsServices } from './needs-services';

needsServices('Python Celery and a broker (test/helpers/python)');

export const PYTHON = '/usr/bin/python3';

/** test/python in the source tree (this file runs from dist/test/helpers). */
export const PYTHON_DIR: string = (() => {
  const fromDist = path.resolve(__dirname, '../../../test/python');
  if (fs.existsSync(path.join(fromDist, 'sink_worker.py'))) return fromDist;
  return path.resolve(__dirname, '../python'); // running from source (ts-node and the like)
})();

export const PLUGINS_TASK = 'posthog.tasks.process_event.process_event_with_plugins';
export const PROCESS_EVENT_TASK = 'posthog.tasks.process_event.process_event';

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export interface SendEventsOptions {
  /** redis://host:port/db or amqp://user:pass@host:port/vhost */
  brokerUrl: string;
  /** Default `posthog-plugins`. */
  queue?: string;
  /** Default `posthog.tasks.process_event.process_event_with_plugins`. */
  taskName?: string;
  /** Number of tasks (default 1, or events.length). */
  count?: number;
  /** First index i: distinct_id `user-<i>`, data.properties.index = i. Default 0. */
  startIndex?: number;
  /** Default 2. */
  teamId?: number;
  /** Default `$pageview`. */
  eventName?: string;
  /** Explicit `data` objects, sent as they are (cycled if count > length). */
  events?: JsonObject[];
  /** A JSONL file of `data` objects (alternative to `events`). */
  eventsFile?: string;
  /** Celery task_protocol (default 2). */
  protocol?: 1 | 2;
  priority?: number;
  /** Sets task_compression and result_compression (Celery 5.2 compresses tasks by the latter). */
  compression?: 'zlib' | 'gzip' | 'bzip2';
  /** e.g. 'pickle' (negative tests). */
  serializer?: string;
  /** Seconds; Celery turns it into the `eta` header. */
  countdown?: number;
  /** Seconds from now; `expires` header (+ `expiration` property). */
  expires?: number;
  /** Default '127.0.0.1'; null sends null (anonymized IP). */
  ip?: string | null;
  /** Default 'http://localhost:8000'. */
  siteUrl?: string;
  /** Fixed ISO time for `now` (default: the current time). */
  now?: string;
  /** 'now' (default: same instant as now, sent as a datetime → `...Z`), an ISO time, or null. */
  sentAt?: string | null;
  /** Deterministic task ids: prefix + zero-padded index (must make a 36-char uuid). */
  idPrefix?: string;
  /** Send args [] and the seven values as kwargs (the posthog-plugins output style). */
  asKwargs?: boolean;
  /** Producer process timeout, default 60 s. */
  timeoutMs?: number;
}

/** One task sent; args/kwargs are the values a Python worker receives (after kombu JSON encoding). */
export interface SentTask {
  id: string;
  index: number;
  distinct_id: string;
  uuid: string | null;
  queue: string;
  args: Json[];
  kwargs: JsonObject;
}

function producerArgs(opts: SendEventsOptions, eventsFile: string | undefined): string[] {
  const a: string[] = [path.join(PYTHON_DIR, 'producer.py'), '--broker', opts.brokerUrl];
  const add = (flag: string, value: string | number | undefined | null) => {
    if (value !== undefined && value !== null) a.push(flag, String(value));
  };
  add('--queue', opts.queue);
  add('--task-name', opts.taskName);
  add('--count', opts.count);
  add('--start-index', opts.startIndex);
  add('--team-id', opts.teamId);
  add('--event-name', opts.eventName);
  add('--events-file', eventsFile);
  add('--protocol', opts.protocol);
  add('--priority', opts.priority);
  add('--compression', opts.compression);
  add('--serializer', opts.serializer);
  add('--countdown', opts.countdown);
  add('--expires', opts.expires);
  if (opts.ip !== undefined) a.push('--ip', opts.ip === null ? 'none' : opts.ip);
  add('--site-url', opts.siteUrl);
  add('--now', opts.now);
  if (opts.sentAt !== undefined) a.push('--sent-at', opts.sentAt === null ? 'none' : opts.sentAt);
  add('--id-prefix', opts.idPrefix);
  if (opts.asKwargs) a.push('--kwargs');
  return a;
}

/** Runs producer.py once; resolves with one SentTask per task, in sending order. */
export async function sendEvents(opts: SendEventsOptions): Promise<SentTask[]> {
  let tmpDir: string | undefined;
  let eventsFile = opts.eventsFile;
  if (opts.events) {
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pp-producer-'));
    eventsFile = path.join(tmpDir, 'events.jsonl');
    fs.writeFileSync(eventsFile, opts.events.map((e) => JSON.stringify(e)).join('\n') + '\n');
  }
  try {
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        PYTHON,
        producerArgs(opts, eventsFile),
        {
          cwd: PYTHON_DIR,
          timeout: opts.timeoutMs ?? 60_000,
          maxBuffer: 256 * 1024 * 1024,
          env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
        },
        (err, out, errOut) => {
          if (err) reject(new Error(`producer.py failed: ${err.message}\n${errOut}`));
          else resolve(out);
        },
      );
    });
    return stdout
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => JSON.parse(line) as SentTask);
  } finally {
    if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true });
  }
}

/** One execution of process_event by the sink worker. */
export interface SinkRecord {
  kind: 'executed';
  task_id: string;
  task: string;
  distinct_id: Json;
  ip: Json;
  site_url: Json;
  data: Json;
  team_id: Json;
  now: Json;
  sent_at: Json;
  /** How many positional args the message carried (PostHog capture: 7; posthog-plugins output: 0). */
  positional: number;
  /** Sorted kwarg names the message carried. */
  keywords: string[];
  routing_key: string | null;
  exchange: string | null;
  priority: number | null;
  redelivered: boolean | null;
  retries: number;
  eta: string | null;
  expires: string | null;
  origin: string | null;
  pid: number;
  /** Unix seconds when the task ran. */
  time: number;
}

/** Something that kept a message from executing (see sink_worker.py). */
export interface SinkProblem {
  kind: 'failure' | 'unknown' | 'rejected' | 'revoked';
  task_id?: string | null;
  task?: string | null;
  exception?: string;
  exc_type?: string;
  message?: string;
  expired?: boolean;
  args?: Json;
  kwargs?: Json;
  content_type?: string | null;
}

export interface StartSinkWorkerOptions {
  brokerUrl: string;
  /** Queue to consume and declare (default `celery`). */
  queue?: string;
  /** Default 'solo'. */
  pool?: 'solo' | 'prefork' | 'threads';
  /** Only for prefork/threads. */
  concurrency?: number;
  /** Default 60 s. */
  startTimeoutMs?: number;
  /** Celery log level (default INFO; the ready line is logged at INFO). */
  loglevel?: 'DEBUG' | 'INFO';
  /** Extra `celery worker` arguments. */
  extraArgs?: string[];
}

export interface SinkWorker {
  readonly brokerUrl: string;
  readonly queue: string;
  readonly outputFile: string;
  readonly pid: number;
  /** Milliseconds from spawn to the "ready." log line. */
  readonly startupMs: number;
  /** Executed process_event calls so far, in execution order. */
  records(): SinkRecord[];
  /** Failures, unknown tasks, rejected messages, expired tasks so far. */
  problems(): SinkProblem[];
  /** Resolves once at least `count` executions are recorded (all records so far); rejects on timeout
   * or if the worker exits, with its problems and stderr in the message. */
  waitFor(count: number, timeoutMs?: number): Promise<SinkRecord[]>;
  waitForProblems(count: number, timeoutMs?: number): Promise<SinkProblem[]>;
  /** Worker log so far (stderr + stdout, last 1 MB). */
  log(): string;
  /** Exit code/signal once the process ended, undefined while it runs. */
  exitStatus(): { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** SIGTERM (warm shutdown), SIGKILL after `graceMs` (default 20 s); resolves when it has exited. */
  stop(graceMs?: number): Promise<void>;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of running) {
      try {
        child.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  });
}

const LOG_LIMIT = 1024 * 1024;

/** A record line: JSON, except that Python writes float inf and nan as Infinity and NaN (read as the worker does). */
function parseRecord(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return parseLosslessJson(line);
  }
}

/** Spawns `python3 -m celery -A sink_worker worker` and waits for its "ready." line. */
export async function startSinkWorker(opts: StartSinkWorkerOptions): Promise<SinkWorker> {
  installExitHook();
  const queue = opts.queue ?? 'celery';
  const pool = opts.pool ?? 'solo';
  const tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pp-sink-'));
  const outputFile = path.join(tmpDir, 'records.jsonl');
  fs.writeFileSync(outputFile, '');
  const nodeName = `sink-${process.pid}-${Math.random().toString(36).slice(2, 8)}@%h`;
  const args = [
    '-m',
    'celery',
    '-A',
    'sink_worker',
    'worker',
    '-P',
    pool,
    '-Q',
    queue,
    '-n',
    nodeName,
    '--without-heartbeat',
    '--without-mingle',
    '--without-gossip',
    '--loglevel',
    opts.loglevel ?? 'INFO',
  ];
  if (pool !== 'solo' && opts.concurrency) args.push('--concurrency', String(opts.concurrency));
  if (opts.extraArgs) args.push(...opts.extraArgs);

  const started = Date.now();
  const child = spawn(PYTHON, args, {
    cwd: PYTHON_DIR,
    env: {
      ...process.env,
      SINK_BROKER_URL: opts.brokerUrl,
      SINK_OUTPUT: outputFile,
      SINK_QUEUE: queue,
      SINK_PARENT_PID: String(process.pid),
      PYTHONUNBUFFERED: '1',
      PYTHONDONTWRITEBYTECODE: '1',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);

  let logText = '';
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      running.delete(child);
      resolve();
    });
  });
  let onLog: (() => void) | undefined;
  const append = (chunk: Buffer) => {
    logText += chunk.toString('utf8');
    if (logText.length > LOG_LIMIT) logText = logText.slice(logText.length - LOG_LIMIT);
    onLog?.();
  };
  child.stdout!.on('data', append);
  child.stderr!.on('data', append);

  const startTimeoutMs = opts.startTimeoutMs ?? 60_000;
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`sink worker not ready after ${startTimeoutMs} ms\n${logText}`)),
        startTimeoutMs,
      );
      const check = () => {
        if (/ ready\.\s*$/m.test(logText)) {
          clearTimeout(timer);
          resolve();
        }
      };
      onLog = check;
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot spawn sink worker: ${err.message}`));
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`sink worker exited during startup (${JSON.stringify(exit)})\n${logText}`));
      });
      check();
    });
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    fs.rmSync(tmpDir, { recursive: true, force: true });
    throw err;
  }
  onLog = undefined;
  const startupMs = Date.now() - started;

  // Incremental reader of the records file: only complete lines (the worker writes one line per record).
  const executed: SinkRecord[] = [];
  const others: SinkProblem[] = [];
  let offset = 0;
  let partial = Buffer.alloc(0);
  let closed = false;
  const readNew = (): void => {
    if (closed) return;
    let fd: number;
    try {
      fd = fs.openSync(outputFile, 'r');
    } catch {
      return;
    }
    try {
      const chunk = Buffer.alloc(1024 * 1024);
      for (;;) {
        const n = fs.readSync(fd, chunk, 0, chunk.length, offset);
        if (n <= 0) break;
        offset += n;
        partial = Buffer.concat([partial, chunk.subarray(0, n)]);
      }
    } finally {
      fs.closeSync(fd);
    }
    let nl: number;
    while ((nl = partial.indexOf(0x0a)) >= 0) {
      const line = partial.subarray(0, nl).toString('utf8');
      partial = partial.subarray(nl + 1);
      if (line.trim() === '') continue;
      const rec = parseRecord(line) as SinkRecord | SinkProblem;
      if (rec.kind === 'executed') executed.push(rec);
      else others.push(rec);
    }
  };
  const records = (): SinkRecord[] => {
    readNew();
    return executed.slice();
  };
  const problems = (): SinkProblem[] => {
    readNew();
    return others.slice();
  };
  const tail = () => logText.slice(-8000);

  async function poll<T>(get: () => T[], count: number, timeoutMs: number, what: string): Promise<T[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = get();
      if (got.length >= count) return got;
      if (exit || Date.now() >= deadline) {
        const why = exit ? `sink worker exited (${JSON.stringify(exit)})` : `timed out after ${timeoutMs} ms`;
        throw new Error(
          `${why} waiting for ${count} ${what}, have ${got.length}\n` +
            `problems: ${JSON.stringify(problems())}\n--- sink worker log (tail) ---\n${tail()}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  let stopping: Promise<void> | undefined;
  return {
    brokerUrl: opts.brokerUrl,
    queue,
    outputFile,
    pid: child.pid!,
    startupMs,
    records,
    problems,
    waitFor: (count, timeoutMs = 30_000) => poll(records, count, timeoutMs, 'executions'),
    waitForProblems: (count, timeoutMs = 30_000) => poll(problems, count, timeoutMs, 'problems'),
    log: () => logText,
    exitStatus: () => exit,
    stop(graceMs = 20_000): Promise<void> {
      if (!stopping) {
        stopping = (async () => {
          if (!exit) {
            child.kill('SIGTERM');
            const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
            await exited;
            clearTimeout(timer);
          }
          readNew();
          closed = true;
          fs.rmSync(tmpDir, { recursive: true, force: true });
        })();
      }
      return stopping;
    },
  };
}
