/**
 * The processes a benchmark run measures: `posthog-plugins start` (the real CLI) and the Python Celery baseline
 * worker, plus what /proc says about them (RSS of the whole process tree, CPU time per thread).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { PYTHON } from '../helpers/python';
import { REPO_ROOT } from './envelopes';

export const BIN = path.join(REPO_ROOT, 'bin/posthog-plugins');
/** test/bench in the source tree, where python_baseline.py lives. */
export const BENCH_SRC_DIR = path.join(REPO_ROOT, 'test/bench');

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
});

/** Monotonic clock in ms (same base as performance.now()). */
export const nowMs = (): number => performance.now();

// ------------------------------------------------------------------------------------------------------- /proc

function readStatus(pid: number): Record<string, string> | null {
  try {
    const out: Record<string, string> = {};
    for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
      const at = line.indexOf(':');
      if (at > 0) out[line.slice(0, at)] = line.slice(at + 1).trim();
    }
    return out;
  } catch {
    return null;
  }
}

function kb(value: string | undefined): number {
  return value ? Number.parseInt(value, 10) || 0 : 0;
}

/** The pid and all its descendants (by scanning /proc/<pid>/stat parent links). */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ppid = Number(fields[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(name));
      children.set(ppid, list);
    } catch {
      /* exited meanwhile */
    }
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length) {
    const pid = queue.shift() as number;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** Sum over the process tree of VmRSS and VmHWM (peak RSS of each process), in bytes. */
export function treeMemory(root: number): { rss: number; hwm: number; processes: number } {
  let rss = 0;
  let hwm = 0;
  let processes = 0;
  for (const pid of processTree(root)) {
    const s = readStatus(pid);
    if (!s) continue;
    processes++;
    rss += kb(s.VmRSS) * 1024;
    hwm += kb(s.VmHWM) * 1024;
  }
  return { rss, hwm, processes };
}

/** VmHWM of each process of the tree, grouped by what it is: "main" (the spawned process) or the child's command. */
export function treeHwmByKind(root: number): Array<{ kind: string; count: number; hwm: number }> {
  const groups = new Map<string, { count: number; hwm: number }>();
  for (const pid of processTree(root)) {
    const st = readStatus(pid);
    if (!st) continue;
    let kind = 'main';
    if (pid !== root) {
      try {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        kind = path.basename(cmd[0] ?? '?');
      } catch {
        continue;
      }
    }
    const g = groups.get(kind) ?? { count: 0, hwm: 0 };
    g.count++;
    g.hwm += kb(st.VmHWM) * 1024;
    groups.set(kind, g);
  }
  return [...groups].map(([kind, g]) => ({ kind, ...g }));
}

/** Samples the tree's summed RSS every `everyMs`; `peak` is the highest sum seen (and the summed VmHWM). */
export class RssSampler {
  private timer: NodeJS.Timeout;
  peakRss = 0;
  peakHwm = 0;
  /** Per-process peaks, grouped (taken when the summed VmHWM was highest). */
  detail: Array<{ kind: string; count: number; hwm: number }> = [];

  constructor(
    private readonly root: number,
    everyMs = 200,
  ) {
    this.sample();
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
  }

  sample(): void {
    const m = treeMemory(this.root);
    if (m.processes === 0) return;
    this.peakRss = Math.max(this.peakRss, m.rss);
    if (m.hwm > this.peakHwm) {
      this.peakHwm = m.hwm;
      this.detail = treeHwmByKind(this.root);
    }
  }

  stop(): void {
    this.sample();
    clearInterval(this.timer);
  }
}

const CLK_TCK = 100; // Linux USER_HZ

/** CPU seconds (user + system) of one process or thread, from /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat. */
function cpuSecondsOf(statPath: string): number {
  try {
    const stat = readFileSync(statPath, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime (fields 14, 15)
  } catch {
    return 0;
  }
}

/** CPU seconds per thread of a process: main thread (tid = pid) and every other thread, by thread name. */
export function threadCpu(pid: number): { main: number; others: Map<string, number>; total: number } {
  const others = new Map<string, number>();
  let main = 0;
  let total = 0;
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return { main, others, total };
  }
  for (const tid of tids) {
    const secs = cpuSecondsOf(`/proc/${pid}/task/${tid}/stat`);
    total += secs;
    if (Number(tid) === pid) {
      main = secs;
      continue;
    }
    let name = '?';
    try {
      name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
    } catch {
      /* gone */
    }
    others.set(name, (others.get(name) ?? 0) + secs);
  }
  return { main, others, total };
}

/** One process of a tree: what it is and its CPU seconds (main thread, other threads by name). */
export interface ProcessCpu {
  pid: number;
  /** 'root' (the spawned process), 'node' (a Node child, e.g. a worker process), or the child's command name. */
  kind: string;
  main: number;
  others: Map<string, number>;
}

export function treeThreadCpu(root: number): ProcessCpu[] {
  return processTree(root).map((pid) => {
    let kind = 'root';
    if (pid !== root) {
      try {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        kind = path.basename(cmd[0] ?? '?');
      } catch {
        kind = '?';
      }
    }
    const t = threadCpu(pid);
    return { pid, kind, main: t.main, others: t.others };
  });
}

/** CPU seconds of a whole process tree. */
export function treeCpu(root: number): number {
  return processTree(root).reduce((sum, pid) => sum + cpuSecondsOf(`/proc/${pid}/stat`), 0);
}

/** The pid of a running process by its command name (`comm`), e.g. RabbitMQ's `beam.smp`; null if none. */
export function findProcess(comm: string): number | null {
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/comm`, 'utf8').trim() === comm) return Number(name);
    } catch {
      /* gone */
    }
  }
  return null;
}

/** CPU seconds of any process (e.g. redis-server). */
export function processCpu(pid: number): number {
  return cpuSecondsOf(`/proc/${pid}/stat`);
}

// -------------------------------------------------------------------------------------------------- processes

export interface Running {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** ms from spawn to "consuming" (ours: every worker process) / worker_ready (Python). */
  readonly startupMs: number;
  /** Worker processes consuming (ours: `--workers` of the supervisor, 1 without one; Python: 1 main process). */
  readonly workers: number;
  /** performance.now() when it said it was consuming. */
  readonly readyAt: number;
  log(): string;
  /** SIGTERM, SIGKILL after graceMs; resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

interface SpawnSpec {
  name: string;
  command: string;
  args: string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** Number of consumers ready so far, or null while not ready. */
  ready: (text: string) => number | null;
  /** Only output chunks that match this can make it ready (saves rescanning long start-up logs). */
  trigger: RegExp;
  timeoutMs: number;
}

async function spawnUntilReady(spec: SpawnSpec): Promise<Running> {
  const started = nowMs();
  const child = spawn(spec.command, spec.args, { cwd: spec.cwd, env: spec.env, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let text = '';
  let onText: (() => void) | undefined;
  let carry = '';
  const append = (chunk: Buffer): void => {
    const piece = chunk.toString('utf8');
    text += piece;
    if (text.length > 8 * 1024 * 1024) text = text.slice(-4 * 1024 * 1024);
    // The trigger may straddle two chunks: test it on the end of the previous chunk plus this one.
    const probe = carry + piece;
    carry = piece.slice(-200);
    if (spec.trigger.test(probe)) onText?.();
  };
  child.stdout!.on('data', append);
  child.stderr!.on('data', append);
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code, signal) => {
      live.delete(child);
      resolve(code ?? (signal ? 128 : null));
    }),
  );
  let readyAt = 0;
  let workers = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${spec.name} not consuming after ${spec.timeoutMs} ms\n${text.slice(-4000)}`)),
        spec.timeoutMs,
      );
      const check = (): void => {
        const n = spec.ready(text);
        if (n !== null) {
          workers = n;
          readyAt = nowMs();
          clearTimeout(timer);
          onText = undefined;
          resolve();
        }
      };
      onText = check;
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      void exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`${spec.name} exited (${code}) before consuming\n${text.slice(-4000)}`));
      });
      check();
    });
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    throw err;
  }
  let stopping: Promise<number | null> | undefined;
  return {
    name: spec.name,
    child,
    pid: child.pid!,
    startupMs: readyAt - started,
    workers,
    readyAt,
    log: () => text,
    stop(graceMs = 30_000) {
      stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        const code = await exited;
        clearTimeout(timer);
        return code;
      })();
      return stopping;
    },
  };
}

export interface OurWorkerOptions {
  brokerUrl: string;
  databaseUrl: string;
  /** Extra CLI arguments (BENCH_WORKER_ARGS). */
  extraArgs?: string[];
  /** Extra NODE_OPTIONS (e.g. --require of the profiler preload). */
  nodeOptions?: string;
  /** Extra environment. */
  env?: Record<string, string>;
  timeoutMs?: number;
}

/**
 * Ready when every consumer said "consuming …": the supervisor (if this version has one) first logs
 * "supervising N worker process(es) …", then each worker process logs its own "consuming …" line; a
 * single-process worker logs one "consuming …" line and nothing about supervising.
 */
export function ourWorkersReady(text: string): number | null {
  const consuming = (text.match(/"message":"consuming /g) ?? []).length;
  const supervising = /"message":"supervising (\d+) worker process/.exec(text);
  if (supervising) return consuming >= Number(supervising[1]) ? Number(supervising[1]) : null;
  return consuming >= 1 ? 1 : null;
}

/** `posthog-plugins start` through the real bin script, JSON logs at info; ready when all its workers consume. */
export function startOurWorker(o: OurWorkerOptions): Promise<Running> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...(o.env ?? {}), DATABASE_URL: o.databaseUrl };
  if (o.nodeOptions) env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} ${o.nodeOptions}`.trim();
  return spawnUntilReady({
    name: 'posthog-plugins start',
    command: BIN,
    args: [
      'start',
      '--broker',
      o.brokerUrl,
      '--database-url',
      o.databaseUrl,
      '--log-format',
      'json',
      '--log-level',
      'info',
      ...(o.extraArgs ?? []),
    ],
    cwd: REPO_ROOT,
    env,
    ready: ourWorkersReady,
    trigger: /consuming /,
    timeoutMs: o.timeoutMs ?? 180_000,
  });
}

/** The Python Celery 5.2 baseline: prefork, concurrency = cores, consuming posthog-plugins. */
export function startPythonBaseline(brokerUrl: string, concurrency: number): Promise<Running> {
  return spawnUntilReady({
    name: 'python celery baseline',
    command: PYTHON,
    args: [
      '-m',
      'celery',
      '-A',
      'python_baseline',
      'worker',
      '-P',
      'prefork',
      '-c',
      String(concurrency),
      '-Q',
      'posthog-plugins',
      '-n',
      `bench-${process.pid}-${Math.random().toString(36).slice(2, 8)}@%h`,
      '--without-heartbeat',
      '--without-mingle',
      '--without-gossip',
      '--loglevel',
      'WARNING',
    ],
    cwd: BENCH_SRC_DIR,
    env: {
      ...process.env,
      BENCH_BROKER_URL: brokerUrl,
      BENCH_PARENT_PID: String(process.pid),
      PYTHONDONTWRITEBYTECODE: '1',
      PYTHONUNBUFFERED: '1',
    },
    ready: (text) => (/BENCH READY \d+/.test(text) ? 1 : null),
    trigger: /BENCH READY/,
    timeoutMs: 60_000,
  });
}
