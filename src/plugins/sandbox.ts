import ivm from 'isolated-vm';
import type { JsonObject } from '../../protocol/types';
import type { Logger } from '../log';
import type { PluginAttachment } from '../store/types';
import { BOOT_SOURCE } from './boot';
import { Bridge, HostOps } from './bridge';
import { importNotAvailable } from './transpile';
import { DEFAULT_LIMITS, SandboxErrorInfo, SandboxLimits } from './types';

export type FailureKind =
  | 'timeout' // isolated-vm `timeout` (CPU) fired
  | 'deadline' // our wall-clock deadline passed
  | 'memory' // isolate disposed by isolated-vm at its memory limit
  | 'disposed' // isolate gone for another reason (closed while running)
  | 'too-large' // results over maxResultBytes
  | 'invalid-result' // the driver answered something malformed
  | 'call' // the call rejected for another reason (e.g. an unhandled rejection inside the plugin)
  | 'load' // plugin code failed to compile or run at load
  | 'setup'; // setupPlugin threw or failed

export class SandboxError extends Error {
  constructor(
    readonly kind: FailureKind,
    message: string,
    /** The error as thrown inside the isolate (for 'call', 'load', 'setup'). */
    readonly original?: SandboxErrorInfo,
  ) {
    super(message);
    this.name = original?.name ?? (kind === 'timeout' || kind === 'deadline' ? 'TimeoutError' : kind === 'memory' ? 'MemoryLimitError' : kind === 'too-large' ? 'ResultTooLargeError' : 'Error');
  }

  /** After these the isolate's state is unknown (or it is gone): dispose and recreate it. */
  get needsRecycle(): boolean {
    return this.kind === 'timeout' || this.kind === 'deadline' || this.kind === 'memory' || this.kind === 'disposed';
  }

  info(): SandboxErrorInfo {
    if (this.original && (this.kind === 'call' || this.kind === 'load' || this.kind === 'setup')) {
      return { ...this.original, message: this.kind === 'call' ? this.original.message : this.message };
    }
    return { name: this.name, message: this.message, stack: this.stack };
  }
}

function describeTask(kind: TaskKind, name: string): string {
  return kind === 'schedule' ? name : kind === 'job' ? `job ${JSON.stringify(name)}` : kind;
}

function errorInfo(err: unknown): SandboxErrorInfo {
  if (typeof err === 'string') return { name: 'Error', message: err, thrownString: true };
  const e = (err ?? {}) as { name?: unknown; message?: unknown; stack?: unknown };
  const info: SandboxErrorInfo = {
    name: typeof e.name === 'string' ? e.name : 'Error',
    message: typeof e.message === 'string' ? e.message : String(err),
  };
  if (typeof e.stack === 'string') info.stack = e.stack;
  return info;
}

export interface PluginVmSpec {
  configId: number;
  pluginId: number;
  teamId: number;
  name: string;
  /** Transpiled CommonJS code. */
  code: string;
  /** For stack traces, e.g. "my-plugin/index.ts". */
  filename: string;
  config: JsonObject;
  attachments: PluginAttachment[];
  limits?: Partial<SandboxLimits>;
  logger: Logger;
  /** Console lines per config per second before lines are dropped (default 1000). */
  maxLogLinesPerSecond?: number;
  /** Async host APIs offered to the plugin through the request/settle bridge (e.g. `fetch`). */
  ops?: HostOps;
  /** Host APIs this worker cannot offer, with the reason the plugin is shown when it calls them. */
  unavailable?: Readonly<Record<string, string>>;
  /** setupPlugin failed when the isolate was recreated after a limit (the owner retries it with backoff). */
  onSetupFailed?: (err: SandboxError) => void;
  /** Every console line the plugin printed (after rate limiting), e.g. for posthog_pluginlogentry. */
  onConsole?: (level: 'debug' | 'log' | 'info' | 'warn' | 'error', line: string) => void;
  /** false: start() loads the code without running setupPlugin (install's check). Default true. */
  setup?: boolean;
}

/** Background work in a plugin's isolate (see BOOT_SOURCE task()). */
export type TaskKind = 'onEvent' | 'exportEvents' | 'schedule' | 'job';

export interface TaskOutcome {
  /** Calls that threw (onEvent: per event; the others: 0 or 1). */
  failed: number;
  /** The last error thrown by the plugin, or the limit that stopped it. */
  error: SandboxErrorInfo | null;
  /** The plugin threw RetryError (exportEvents is retried later). */
  retry: boolean;
  /**
   * Not the plugin's answer: the isolate was not running, was recreated or closed under the task, or the task
   * passed its wall-clock deadline and was abandoned. Work that can be retried (a job) should be.
   */
  interrupted: 'not-ready' | 'disposed' | 'deadline' | 'limit' | null;
}

export interface BatchOutcome {
  /** Per input: new event JSON, null = dropped, undefined = unchanged (error, not run, or no processEvent). */
  outputs: Array<string | null | undefined>;
  /** Per-event failures (thrown errors, and timeouts/memory found by the event-by-event rerun). */
  errors: Array<{ index: number; error: SandboxErrorInfo }>;
  /** Isolates disposed and recreated during this call. */
  recreated: number;
  /** Entries of this call that hit the wall-clock deadline (a promise that never settled). */
  deadlines: number;
  /** Events this plugin did not get to run on (config failed or gave up after repeated fatal failures). */
  notRun: number;
  /**
   * An error not tied to one event: the config became unusable during this call (recreate + setupPlugin failed),
   * or code that ran between calls (a host call settled after its processEvent had returned) hit a limit.
   */
  failure: SandboxErrorInfo | null;
}

interface DriverRefs {
  task: ivm.Reference<(kind: TaskKind, name: string, arg: string[]) => Promise<string>>;
  run: ivm.Reference<(inputs: string[], maxBytes: number) => Promise<string | [string, unknown]>>;
  runSync: ivm.Reference<(inputs: string[], maxBytes: number) => string | [string, unknown]>;
  resume: ivm.Reference<(maxBytes: number) => Promise<string | [string, unknown]>>;
  take: ivm.Reference<(keep: boolean) => Array<string | null | undefined> | null>;
  setup: ivm.Reference<() => Promise<void>>;
  teardown: ivm.Reference<() => Promise<void>>;
  resolve: ivm.Reference<() => string>;
  settle: ivm.Reference<(id: number, ok: boolean, json: string) => void>;
}

export interface ExportsInfo {
  processEvent: boolean;
  processEventBatch: boolean;
  setupPlugin: boolean;
  teardownPlugin: boolean;
  onEvent: boolean;
  exportEvents: boolean;
  runEveryMinute: boolean;
  runEveryHour: boolean;
  runEveryDay: boolean;
  /** Names of the functions in the plugin's `jobs` export. */
  jobs: string[];
}

const NO_EXPORTS: ExportsInfo = Object.freeze({
  processEvent: false,
  processEventBatch: false,
  setupPlugin: false,
  teardownPlugin: false,
  onEvent: false,
  exportEvents: false,
  runEveryMinute: false,
  runEveryHour: false,
  runEveryDay: false,
  jobs: [],
});

/** The driver's export list, checked field by field (it comes out of the isolate). */
function readExports(json: string): ExportsInfo {
  const v = JSON.parse(json) as Record<string, unknown>;
  const out = { ...NO_EXPORTS, jobs: [] as string[] };
  for (const k of Object.keys(NO_EXPORTS) as Array<keyof ExportsInfo>) {
    if (k === 'jobs') continue;
    out[k] = v[k] === true;
  }
  if (Array.isArray(v.jobs)) out.jobs = v.jobs.filter((j): j is string => typeof j === 'string' && j.length <= 200).slice(0, 1000);
  return out;
}

const MAX_LOG_LINE = 4096;
/** Host-side caps on what the driver reports about a thrown error (the boot script cuts them too). */
const MAX_ERROR_NAME = 256;
const MAX_ERROR_MESSAGE = 4096 + 64;
const MAX_ERROR_STACK = 16384 + 64;
/** In the event-by-event rerun, give up on the rest of the call after this many fatal (isolate-killing) failures. */
const MAX_FATAL_PER_CALL = 2;
/**
 * A processEvent entry into the isolate takes at most this many events (one at least, whatever its size).
 * isolated-vm sizes an isolate's young generation from its memory limit (~1.4 MB at 64 MB): a whole batch (hundreds
 * of events in, parsed and out at once) outgrew it, so scavenges promoted it into the old generation. Per event
 * with ~1.3 KB events: ~10 µs up to 128 per entry, 31 µs at 256, 44 µs at 1,000 (test/bench/isolate-slices.ts);
 * crossing into the isolate costs ~1 µs, so small slices cost nothing that shows.
 */
const ENTRY_MAX_EVENTS = 64;
/** …and at most this many characters of event JSON (UTF-16 code units, as String length counts them). */
const ENTRY_MAX_CHARS = 96 * 1024;

/** What one processEvent call has been through so far, over its slices. */
interface CallState {
  /** Isolate-killing failures in the event-by-event runs. */
  fatal: number;
  /** An entry of this call failed: the rest runs one event per entry. */
  byEvent: boolean;
}

let lastBusyDisposeAt = 0;
/** ms since an isolate was disposed while running (segfault-at-exit note: wait ≥100 ms before exiting). */
export function msSinceBusyDispose(): number {
  return Date.now() - lastBusyDisposeAt;
}

export function resolveLimits(limits: Partial<SandboxLimits> | undefined): SandboxLimits {
  const l = { ...DEFAULT_LIMITS, ...(limits ?? {}) };
  const int = (v: number, min: number, max: number): number => Math.min(max, Math.max(min, Math.floor(Number.isFinite(v) ? v : min)));
  return {
    memoryLimitMb: int(l.memoryLimitMb, 8, 1 << 20),
    cpuTimeoutMs: int(l.cpuTimeoutMs, 1, 2 ** 31 - 1),
    wallTimeoutMs: int(l.wallTimeoutMs, 1, 2 ** 31 - 1),
    maxResultBytes: int(l.maxResultBytes, 1, Number.MAX_SAFE_INTEGER),
  };
}

/**
 * One plugin config in its own isolate. Every entry has isolated-vm's `timeout` and a wall-clock deadline;
 * calls are serialised. After a timeout, deadline or memory-limit failure the isolate is disposed and a new one
 * is created (code loaded and setupPlugin run again). processEvent first runs synchronously on the host thread
 * (applySync, bounded by the `timeout` alone: nothing else can run meanwhile) until it returns a promise.
 */
export class PluginVm {
  readonly limits: SandboxLimits;
  state: 'new' | 'ready' | 'failed' | 'closed' = 'new';
  /** Why the config is unusable (state 'failed'). */
  failure: SandboxError | null = null;
  exports: ExportsInfo = NO_EXPORTS;
  /** Isolates created so far (1 after a successful start). */
  generation = 0;
  /** When a call (processEvent or a background task) last came in, ms since epoch: what eviction looks at. */
  lastUsedMs = Date.now();
  /**
   * Evicted while idle (see hibernate): teardownPlugin ran and the isolate is gone, but the config counts as
   * ready, and the next call creates a new isolate (load + setupPlugin) before it runs.
   */
  hibernated = false;
  /** hibernate() is running teardownPlugin: background tasks wait for it (and then wake a new isolate). */
  private hibernating = false;

  private isolate: ivm.Isolate | null = null;
  private refs: DriverRefs | null = null;
  private bridge: Bridge | null = null;
  /** Fails the call in progress (a settle hit a limit while the call waited on its promise). */
  private tripCall: ((e: SandboxError) => void) | null = null;
  private callWhat = '';
  /** A settle between calls hit a limit: the isolate is gone; the next call recreates it and reports this. */
  private backgroundFailure: SandboxError | null = null;
  private busy = false;
  /** processEvent failed on the synchronous path (see runBatch): only the async path from now on. */
  private syncHitLimit = false;
  /** Background tasks (runTask) inside the isolate now. */
  private tasks = 0;
  private pending = 0;
  private closing = false;
  private tail: Promise<unknown> = Promise.resolve();
  private readonly logMeta: Record<string, unknown>;
  private logWindowStart = 0;
  private logCount = 0;
  private logDropped = 0;
  private dropReport: NodeJS.Timeout | null = null;

  constructor(private readonly spec: PluginVmSpec) {
    this.limits = resolveLimits(spec.limits);
    this.logMeta = { pluginConfigId: spec.configId, pluginId: spec.pluginId, teamId: spec.teamId, plugin: spec.name };
  }

  get configId(): number {
    return this.spec.configId;
  }

  /** Create the isolate, load the code, run setupPlugin. Throws SandboxError ('load' | 'setup' | limits). */
  start(): Promise<void> {
    return this.exclusive(() => this.startUnlocked());
  }

  /**
   * Ready without an isolate: the exports are known (from another load of the same code) and the first call creates
   * the isolate (load + setupPlugin), as after an eviction. For configs loaded on first use.
   */
  defer(exports: ExportsInfo): void {
    if (this.state !== 'new') throw new Error(`cannot defer a plugin VM in state ${this.state}`);
    this.exports = exports;
    this.state = 'ready';
    this.hibernated = true;
  }

  /** Whether processEvent calls still start on the synchronous path (false after a failure there, see runBatch). */
  get syncPath(): boolean {
    return !this.syncHitLimit;
  }

  /** Run processEvent over a batch of event JSON strings. Never throws. */
  process(inputs: string[]): Promise<BatchOutcome> {
    this.lastUsedMs = Date.now();
    return this.exclusive(async () => {
      const outcome = await this.processUnlocked(inputs);
      this.lastUsedMs = Date.now();
      if (this.closing) {
        // Closed under our feet (shutdown/reload): not the plugin's fault, report nothing.
        outcome.errors = [];
        outcome.failure = null;
      }
      return outcome;
    });
  }

  /** teardownPlugin (if exported), bounded by the limits; errors are logged. */
  teardown(): Promise<void> {
    return this.exclusive(() => this.teardownUnlocked());
  }

  private async teardownUnlocked(): Promise<void> {
    if (this.state !== 'ready' || !this.exports.teardownPlugin || !this.refs) return;
    try {
      await this.call(this.refs.teardown.apply(undefined, [], { result: { promise: true }, timeout: this.limits.cpuTimeoutMs }), 'teardownPlugin');
    } catch (err) {
      const e = this.classify(err, 'teardownPlugin');
      this.spec.logger.warn(`teardownPlugin failed: ${e.message}`, this.logMeta);
    }
  }

  /**
   * Evict an idle isolate: teardownPlugin, then dispose it; the next call recreates it (wake). Refused (false)
   * while anything is inside or pending: a call queued, a background task, a host call not yet settled.
   */
  hibernate(): Promise<boolean> {
    return this.exclusive(async () => {
      const busy = this.pending > 1 || this.tasks > 0 || (this.bridge !== null && (this.bridge.settling > 0 || this.bridge.inflight > 0));
      if (this.state !== 'ready' || this.hibernated || this.closing || busy || !this.refs) return false;
      this.hibernating = true;
      try {
        await this.teardownUnlocked();
      } finally {
        this.hibernating = false;
      }
      // Torn down: this isolate is never used again (a task that came meanwhile waits and wakes a new one, and a
      // close meanwhile finds nothing left to tear down).
      this.disposeIsolate();
      this.hibernated = true;
      return !this.closing;
    });
  }

  /** A hibernated VM gets a new isolate (load + setupPlugin); a failure is handled like a failed restart. */
  private async wakeUnlocked(): Promise<void> {
    if (!this.hibernated || this.closing) return;
    this.hibernated = false;
    try {
      await this.startUnlocked();
      this.spec.logger.info('isolate recreated after eviction', this.logMeta);
    } catch (err) {
      const e = err instanceof SandboxError ? err : this.classify(err, 'restart');
      // The code loaded and set up before, so any failure now (setup, or a limit hit while loading on a busy host)
      // goes the way of a failed setupPlugin: retried with backoff, the config disabled after too many.
      this.spec.logger.error(`plugin could not be woken after eviction: ${e.message}`, this.logMeta);
      this.spec.onSetupFailed?.(e);
    }
  }

  /**
   * Run background work (onEvent, exportEvents, a scheduled function, a job) next to event processing: it does not
   * wait for, or block, processEvent calls. Every entry has the CPU `timeout`; the whole task has `wallMs`, after
   * which it is abandoned (not disposed: a never-settling promise only costs memory, which the memory limit caps).
   * A task that hits a limit has the isolate recreated, as processEvent would. Never throws.
   */
  async runTask(kind: TaskKind, name: string, arg: string[], wallMs: number): Promise<TaskOutcome> {
    const outcome: TaskOutcome = { failed: 0, error: null, retry: false, interrupted: null };
    this.lastUsedMs = Date.now();
    if ((this.hibernated || this.hibernating) && !this.closing) await this.exclusive(() => this.wakeUnlocked());
    if (this.backgroundFailure && this.state === 'ready' && !this.closing) {
      const cause = this.backgroundFailure;
      await this.exclusive(async () => {
        if (this.backgroundFailure !== cause) return;
        this.backgroundFailure = null;
        await this.recycle({ outputs: [], errors: [], recreated: 0, deadlines: 0, notRun: 0, failure: null }, cause);
      });
    }
    if (!this.refs && this.state === 'ready') await this.tail; // a restart in progress
    const refs = this.refs;
    if (!refs || this.state !== 'ready') {
      outcome.interrupted = 'not-ready';
      return outcome;
    }
    const generation = this.generation;
    let timer: NodeJS.Timeout | undefined;
    this.tasks++;
    try {
      const p = refs.task.apply(undefined, [kind, name, arg], { arguments: { copy: true }, result: { promise: true, copy: true }, timeout: this.limits.cpuTimeoutMs });
      p.catch(() => undefined);
      const deadline = new Promise<'deadline'>((resolve) => {
        timer = setTimeout(() => resolve('deadline'), wallMs);
      });
      const summary = await Promise.race([p, deadline]);
      if (summary === 'deadline') {
        outcome.interrupted = 'deadline';
        outcome.failed = 1;
        outcome.error = { name: 'TimeoutError', message: `${describeTask(kind, name)} did not finish within ${wallMs} ms (abandoned)` };
        return outcome;
      }
      const r = (typeof summary === 'string' && summary.length <= 64 * 1024 ? JSON.parse(summary) : null) as { failed?: unknown; retry?: unknown; error?: Record<string, unknown> } | null;
      if (!r) throw new SandboxError('invalid-result', 'sandbox driver returned an invalid task summary');
      outcome.failed = typeof r.failed === 'number' ? r.failed : 0;
      outcome.retry = r.retry === true;
      if (r.error && typeof r.error === 'object') {
        const e = r.error;
        outcome.error = {
          name: typeof e.name === 'string' ? e.name.slice(0, MAX_ERROR_NAME) : 'Error',
          message: typeof e.message === 'string' ? e.message.slice(0, MAX_ERROR_MESSAGE) : 'unknown error',
        };
        if (typeof e.stack === 'string') outcome.error.stack = e.stack.slice(0, MAX_ERROR_STACK);
        if (e.thrownString === true) outcome.error.thrownString = true;
      }
      return outcome;
    } catch (err) {
      outcome.failed = 1;
      if (this.closing || this.generation !== generation || !this.isolate || this.isolate.isDisposed) {
        // Its isolate is gone (recreated, closed): nothing of this failure may touch the current one.
        outcome.interrupted = 'disposed';
        outcome.error = errorInfo(err);
        return outcome;
      }
      const e = this.classify(err, describeTask(kind, name));
      outcome.error = e.info();
      if (e.kind === 'disposed') {
        outcome.interrupted = 'disposed';
      } else if (e.needsRecycle) {
        outcome.interrupted = 'limit';
        // The next call (task or processEvent) recreates the isolate; calls running in it now fail with it.
        this.spec.logger.warn(`${e.message}; the isolate is recreated`, this.logMeta);
        this.backgroundFailure = e;
        this.disposeIsolate();
      }
      return outcome;
    } finally {
      this.tasks--;
      this.lastUsedMs = Date.now();
      clearTimeout(timer);
    }
  }

  /**
   * From now on failures are not the plugin's: no recreation, no errors reported. In-flight calls finish (or are
   * cut short by dispose()) and leave their events unchanged.
   */
  beginClose(): void {
    this.closing = true;
  }

  /** Dispose the isolate now (even mid-call). Returns true when it was running. */
  dispose(): boolean {
    this.closing = true;
    const wasBusy = this.busy;
    this.disposeIsolate();
    this.state = 'closed';
    return wasBusy;
  }

  /** Heap statistics of the live isolate (tests, metrics). */
  async heapUsedBytes(): Promise<number | null> {
    if (!this.isolate || this.isolate.isDisposed) return null;
    return (await this.isolate.getHeapStatistics()).used_heap_size;
  }

  // ------------------------------------------------------------------------------------------------ internals

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.pending++;
    const run = this.tail.then(fn, fn).finally(() => {
      this.pending--;
    });
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** No call running or queued. */
  get idle(): boolean {
    return this.pending === 0;
  }

  private async startUnlocked(): Promise<void> {
    if (this.closing || this.state === 'closed') throw new SandboxError('disposed', 'plugin VM is closed');
    this.disposeIsolate();
    this.hibernated = false; // a deferred or evicted VM started directly (start()) is awake from now on
    this.backgroundFailure = null; // whatever failed in the old isolate is gone with it
    this.generation++;
    const { limits, spec } = this;
    const timeout = limits.cpuTimeoutMs;
    const isolate = new ivm.Isolate({ memoryLimit: limits.memoryLimitMb });
    this.isolate = isolate;
    try {
      const context = await isolate.createContext();
      // Named, so that a leak would be recognisable by name (the escape tests look for these names).
      const hostLog = (level: unknown, line: unknown): void => this.onConsole(level, line);
      let bridge: Bridge | null = null; // this isolate's; requests from an older isolate never reach a newer bridge
      const hostRequest = (id: unknown, op: unknown, json: unknown): void => bridge?.onRequest(id, op, json);
      const log = new ivm.Callback(hostLog, { ignored: true });
      const request = new ivm.Callback(hostRequest, { ignored: true });
      const ops = spec.ops ?? new Map();
      const opLimits: Record<string, { maxArgBytes: number; maxPending: number }> = {};
      for (const [name, op] of ops) opLimits[name] = { maxArgBytes: op.maxArgBytes, maxPending: op.concurrency + op.maxQueued };
      const init = JSON.stringify({
        config: spec.config,
        maxLogLine: MAX_LOG_LINE,
        maxLogLinesPerSecond: this.maxLogLinesPerSecond,
        importMessage: importNotAvailable('%s'),
        ops: opLimits,
        unavailable: spec.unavailable ?? {},
      });
      const attachments = spec.attachments.map((a) => ({
        key: a.key,
        content_type: a.contentType,
        file_name: a.fileName,
        bytes: new Uint8Array(a.contents),
        utf8: a.contents.toString('utf8'),
        base64: a.contents.toString('base64'),
      }));
      const driver = await this.call(
        context.evalClosure(BOOT_SOURCE, [log, request, init, attachments], { arguments: { copy: true }, result: { reference: true }, timeout }),
        'boot',
      );
      const get = (k: string): ivm.Reference => driver.getSync(k, { reference: true }) as ivm.Reference;
      const refs = {
        task: get('task'),
        run: get('run'),
        runSync: get('runSync'),
        resume: get('resume'),
        take: get('take'),
        setup: get('setup'),
        teardown: get('teardown'),
        resolve: get('resolve'),
        settle: get('settle'),
      } as DriverRefs;
      driver.release();
      bridge = new Bridge(refs.settle, ops, {
        timeout,
        plugin: { pluginConfigId: spec.configId, pluginId: spec.pluginId, teamId: spec.teamId },
        logger: spec.logger,
        logMeta: this.logMeta,
        onFatal: (err) => this.onBridgeFatal(bridge!, err),
      });
      this.bridge = bridge;

      try {
        const script = await isolate.compileScript(spec.code, { filename: spec.filename });
        await this.call(script.run(context, { timeout, release: true }), 'plugin load');
        const info = await this.call(refs.resolve.apply(undefined, [], { result: { copy: true }, timeout }), 'plugin load');
        if (typeof info !== 'string' || info.length > 256 * 1024) throw new SandboxError('invalid-result', 'sandbox driver returned an invalid export list');
        this.exports = readExports(info);
      } catch (err) {
        throw this.stageError(err, 'load', 'plugin load');
      }
      try {
        if (spec.setup !== false) await this.call(refs.setup.apply(undefined, [], { result: { promise: true }, timeout }), 'setupPlugin');
      } catch (err) {
        throw this.stageError(err, 'setup', 'setupPlugin');
      }
      this.refs = refs;
      this.state = 'ready';
      this.failure = null;
      this.lastUsedMs = Date.now();
    } catch (err) {
      this.disposeIsolate();
      const e = err instanceof SandboxError ? err : this.stageError(err, 'load', 'plugin load');
      this.state = 'failed';
      this.failure = e;
      throw e;
    }
  }

  /** A load/setup failure: keep the plugin's own error (name, message, stack), or the limit that stopped it. */
  private stageError(err: unknown, kind: 'load' | 'setup', what: string): SandboxError {
    const e = this.classify(err, what);
    if (e.kind === 'call') return new SandboxError(kind, `${what} failed: ${e.message}`, e.original);
    return new SandboxError(kind, `${what} failed: ${e.message}`, e.info());
  }

  private async processUnlocked(inputs: string[]): Promise<BatchOutcome> {
    const n = inputs.length;
    const outcome: BatchOutcome = { outputs: new Array<string | null | undefined>(n).fill(undefined), errors: [], recreated: 0, deadlines: 0, notRun: 0, failure: null };
    if (n === 0) return outcome;
    const background = this.backgroundFailure;
    if (background && this.state === 'ready') {
      this.backgroundFailure = null;
      await this.recycle(outcome, background);
      outcome.failure ??= background.info();
    }
    if (this.hibernated && this.state === 'ready') {
      await this.wakeUnlocked();
      if (this.state !== 'ready') outcome.failure = this.failure?.info() ?? null;
    }
    if (this.state !== 'ready' || this.hibernated) {
      outcome.notRun = n;
      return outcome;
    }
    if (!this.exports.processEvent && !this.exports.processEventBatch) return outcome; // passes events through
    // processEventBatch gets the whole call (the plugin may dedupe or aggregate across it, and it runs on the
    // async driver, which gains nothing from slices); processEvent goes in slices (ENTRY_MAX_EVENTS).
    const maxEvents = this.exports.processEvent ? ENTRY_MAX_EVENTS : n;
    const maxChars = this.exports.processEvent ? ENTRY_MAX_CHARS : Infinity;
    const call: CallState = { fatal: 0, byEvent: false };
    for (let start = 0; start < n; ) {
      let end = start + 1;
      let chars = inputs[start].length;
      while (end < n && end - start < maxEvents && chars + inputs[end].length <= maxChars) chars += inputs[end++].length;
      await this.processSlice(inputs.slice(start, end), start, outcome, call);
      start = end;
    }
    if (outcome.notRun > 0 && this.state === 'ready') {
      this.spec.logger.warn(`gave up on ${outcome.notRun} event(s) after ${call.fatal} fatal failures in one call; they pass through unchanged`, this.logMeta);
    }
    return outcome;
  }

  /**
   * One isolate entry for `inputs` (the call's events from `start` on), or event by event: after that entry
   * fails, and for every later slice of the call once one has failed (a plugin whose slice keeps hitting a limit
   * would otherwise cost a limit and a recreated isolate per slice).
   */
  private async processSlice(inputs: string[], start: number, outcome: BatchOutcome, call: CallState): Promise<void> {
    const n = inputs.length;
    if (this.state !== 'ready' || call.fatal >= MAX_FATAL_PER_CALL) {
      outcome.notRun += n;
      return;
    }
    if (!call.byEvent) {
      try {
        const r = await this.runBatch(inputs);
        for (let i = 0; i < n; i++) outcome.outputs[start + i] = r.outputs[i];
        for (const er of r.errors) outcome.errors.push({ index: start + er.index, error: er.error });
        return;
      } catch (err) {
        const e = this.classify(err, 'processEvent');
        if (e.kind === 'deadline') outcome.deadlines++;
        if (e.needsRecycle) await this.recycle(outcome, e);
        call.byEvent = true;
        if (n === 1) {
          outcome.errors.push({ index: start, error: e.info() });
          return;
        }
        this.spec.logger.warn(`processEvent entry of ${n} events failed (${e.message}); running the rest of the call event by event`, this.logMeta);
      }
    }
    // Event by event, so only the offending event keeps its previous value.
    for (let i = 0; i < n; i++) {
      if (this.state !== 'ready' || call.fatal >= MAX_FATAL_PER_CALL) {
        outcome.notRun++;
        continue;
      }
      try {
        const r = await this.runBatch([inputs[i]]);
        outcome.outputs[start + i] = r.outputs[0];
        for (const er of r.errors) outcome.errors.push({ index: start + i, error: er.error });
      } catch (err) {
        const e = this.classify(err, 'processEvent');
        outcome.errors.push({ index: start + i, error: e.info() });
        if (e.kind === 'deadline') outcome.deadlines++;
        if (e.needsRecycle) {
          call.fatal++;
          await this.recycle(outcome, e);
        }
      }
    }
  }

  private async recycle(outcome: BatchOutcome, cause: SandboxError): Promise<void> {
    if (this.closing) {
      this.disposeIsolate();
      this.state = 'closed';
      return;
    }
    outcome.recreated++;
    this.spec.logger.warn(`recreating isolate after: ${cause.message}`, this.logMeta);
    try {
      await this.startUnlocked();
    } catch (err) {
      const e = err instanceof SandboxError ? err : this.classify(err, 'restart');
      outcome.failure = e.info();
      if (e.kind === 'setup' && this.spec.onSetupFailed) {
        this.spec.logger.error(`plugin could not be restarted: ${e.message}`, this.logMeta);
        this.spec.onSetupFailed(e);
      } else {
        this.spec.logger.error(`plugin could not be restarted, skipping it until reload: ${e.message}`, this.logMeta);
      }
    }
  }

  private async runBatch(inputs: string[]): Promise<{ outputs: Array<string | null | undefined>; errors: Array<{ index: number; error: SandboxErrorInfo }> }> {
    const refs = this.refs;
    if (!refs || !this.isolate || this.isolate.isDisposed) throw new SandboxError('disposed', 'isolate is not running');
    const { cpuTimeoutMs: timeout, maxResultBytes } = this.limits;
    const n = inputs.length;
    // applySync skips the thread hand-off of an async call (~80 µs), but runs on (and blocks) the host thread, for
    // at most the CPU timeout. It is only safe while nothing else is inside the isolate: a bridge settle (of a
    // fire-and-forget host call) or a background task could hold it on a pool thread, and the host would wait.
    const isolateFree = (): boolean => !((this.bridge !== null && this.bridge.settling > 0) || this.tasks > 0);
    let answer: unknown;
    if (this.exports.processEvent && !this.syncHitLimit && isolateFree()) {
      try {
        answer = refs.runSync.applySync(undefined, [inputs, maxResultBytes], { arguments: { copy: true }, result: { copy: true }, timeout });
      } catch (err) {
        // The driver catches the plugin's own errors, so this is a limit (CPU: the host thread, with heartbeats and
        // other teams' calls, was held for the whole limit) or a broken isolate: async path only from now on, so
        // the host is held like that at most once per config.
        this.syncHitLimit = true;
        throw err;
      }
      // processEvent returned a promise for some event: the async driver finishes the call from that event on.
      if (answer === '') answer = await this.call(refs.resume.apply(undefined, [maxResultBytes], { arguments: { copy: true }, result: { promise: true, copy: true }, timeout }), 'processEvent');
    } else {
      answer = await this.call(
        refs.run.apply(undefined, [inputs, maxResultBytes], { arguments: { copy: true }, result: { promise: true, copy: true }, timeout }),
        'processEvent',
      );
    }
    // Results that fit come back with the summary ([summary, results]); larger ones are fetched by take() below.
    let summaryJson = answer;
    let taken: unknown = null;
    if (Array.isArray(answer) && answer.length === 2) [summaryJson, taken] = answer as [unknown, unknown];
    if (typeof summaryJson !== 'string' || summaryJson.length > maxResultBytes) {
      throw new SandboxError('invalid-result', 'sandbox driver returned an invalid summary');
    }
    let summary: { bytes?: unknown; errors?: unknown };
    try {
      summary = JSON.parse(summaryJson) as typeof summary;
    } catch {
      throw new SandboxError('invalid-result', 'sandbox driver returned an invalid summary');
    }
    const reported = typeof summary.bytes === 'number' ? summary.bytes : Infinity;
    // take is cheap: applySync whenever the isolate is free (see above).
    const take = async (keep: boolean): Promise<unknown> =>
      isolateFree()
        ? refs.take.applySync(undefined, [keep], { result: { copy: true }, timeout })
        : this.call(refs.take.apply(undefined, [keep], { result: { copy: true }, timeout }), 'processEvent');
    if (reported > maxResultBytes) {
      await take(false);
      throw new SandboxError('too-large', `processEvent results too large: ${reported} bytes for ${n} event(s), limit ${maxResultBytes}`);
    }
    const out = taken ?? (await take(true));
    if (!Array.isArray(out) || out.length !== n) throw new SandboxError('invalid-result', 'sandbox driver returned an invalid result list');

    const errors: Array<{ index: number; error: SandboxErrorInfo }> = [];
    const outputs = new Array<string | null | undefined>(n);
    let total = 0;
    for (let i = 0; i < n; i++) {
      const v = out[i] as unknown;
      if (typeof v === 'string') {
        total += v.length;
        if (v.charCodeAt(0) === 123 /* { */) outputs[i] = v;
        else errors.push({ index: i, error: { name: 'TypeError', message: 'processEvent result is not a JSON object' } });
      } else if (v === null || v === undefined) {
        outputs[i] = v;
      } else {
        errors.push({ index: i, error: { name: 'TypeError', message: 'processEvent result is not a JSON object' } });
      }
    }
    if (total > maxResultBytes) {
      throw new SandboxError('too-large', `processEvent results too large: ${total} bytes for ${n} event(s), limit ${maxResultBytes}`);
    }
    if (Array.isArray(summary.errors)) {
      for (const raw of summary.errors as unknown[]) {
        const r = (raw ?? {}) as Record<string, unknown>;
        const index = typeof r.i === 'number' && Number.isInteger(r.i) && r.i >= 0 && r.i < n ? r.i : -1;
        if (index < 0) continue;
        const error: SandboxErrorInfo = {
          name: typeof r.name === 'string' ? r.name.slice(0, MAX_ERROR_NAME) : 'Error',
          message: typeof r.message === 'string' ? r.message.slice(0, MAX_ERROR_MESSAGE) : 'unknown error',
        };
        if (typeof r.stack === 'string') error.stack = r.stack.slice(0, MAX_ERROR_STACK);
        if (r.thrownString === true) error.thrownString = true;
        outputs[index] = undefined;
        errors.push({ index, error });
      }
    }
    return { outputs, errors };
  }

  /**
   * Await an isolate call under the wall-clock deadline; on the deadline the isolate is disposed. A bridge settle
   * that hits a limit while this call waits (code after `await fetch()` looping, allocating) fails it at once.
   */
  private async call<T>(p: Promise<T>, what: string): Promise<T> {
    const ms = this.limits.wallTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    p.catch(() => undefined); // may reject after the deadline ("Promise was abandoned")
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.disposeIsolate();
        reject(new SandboxError('deadline', `${what} did not finish within ${ms} ms (wall-clock deadline)`));
      }, ms);
    });
    const tripped = new Promise<never>((_, reject) => {
      this.tripCall = reject;
    });
    this.callWhat = what;
    this.busy = true;
    try {
      return await Promise.race([p, deadline, tripped]);
    } finally {
      this.busy = false;
      this.tripCall = null;
      clearTimeout(timer);
    }
  }

  /** A settle failed with a limit (CPU timeout, memory) or the isolate went away under it. */
  private onBridgeFatal(bridge: Bridge, err: unknown): void {
    if (bridge !== this.bridge || this.closing) return;
    const trip = this.tripCall;
    const e = this.classify(err, `${trip ? this.callWhat : 'plugin code'} (resumed after a host call)`);
    if (trip) {
      trip(e);
      return;
    }
    // Nothing is waiting: the plugin's fire-and-forget continuation hit the limit between calls.
    this.spec.logger.warn(`plugin code that ran between calls failed: ${e.message}; the isolate is recreated on the next call`, this.logMeta);
    this.backgroundFailure = e;
    this.disposeIsolate();
  }

  private classify(err: unknown, what: string): SandboxError {
    if (err instanceof SandboxError) return err;
    const info = errorInfo(err);
    const msg = info.message;
    if (/memory limit/i.test(msg)) {
      this.disposeIsolate();
      return new SandboxError('memory', `${what} exceeded the memory limit of ${this.limits.memoryLimitMb} MB (${msg})`);
    }
    if (msg === 'Script execution timed out.' || /execution timed out/i.test(msg)) {
      return new SandboxError('timeout', `${what} exceeded the CPU time limit of ${this.limits.cpuTimeoutMs} ms`);
    }
    if (!this.isolate || this.isolate.isDisposed) {
      return new SandboxError('disposed', `${what} failed: isolate was disposed (${msg})`);
    }
    return new SandboxError('call', msg, info);
  }

  private disposeIsolate(): void {
    const iso = this.isolate;
    const bridge = this.bridge;
    this.isolate = null;
    this.refs = null;
    this.bridge = null;
    bridge?.close();
    if (iso && !iso.isDisposed) {
      if (this.busy || this.tasks > 0 || (bridge !== null && bridge.settling > 0)) lastBusyDisposeAt = Date.now();
      try {
        iso.dispose();
      } catch {
        // already disposed
      }
    }
  }

  private noteDropped(n: number): void {
    this.logDropped += n;
    if (this.dropReport) return;
    this.dropReport = setTimeout(() => {
      this.dropReport = null;
      const dropped = this.logDropped;
      this.logDropped = 0;
      this.spec.logger.warn(`dropped ${dropped} console line(s) over the rate limit of ${this.maxLogLinesPerSecond}/s`, this.logMeta);
    }, 1000);
    this.dropReport.unref();
  }

  private get maxLogLinesPerSecond(): number {
    return Math.max(1, Math.floor(this.spec.maxLogLinesPerSecond ?? 1000));
  }

  /**
   * Console lines are rate-limited twice: inside the isolate (so that a flood never crosses into the host; the boot
   * script reports its count as level 'dropped') and here. Drops are reported at most once a second per config.
   */
  private onConsole(level: unknown, line: unknown): void {
    if (level === 'dropped') {
      const n = Number(line);
      if (Number.isSafeInteger(n) && n > 0) this.noteDropped(n);
      return;
    }
    const now = Date.now();
    if (now - this.logWindowStart >= 1000) {
      this.logWindowStart = now;
      this.logCount = 0;
    }
    if (++this.logCount > this.maxLogLinesPerSecond) {
      this.noteDropped(1);
      return;
    }
    const text = typeof line === 'string' ? line.slice(0, MAX_LOG_LINE + 64) : String(line).slice(0, MAX_LOG_LINE);
    const lvl = level === 'error' ? 'error' : level === 'warn' ? 'warn' : level === 'debug' ? 'debug' : 'info';
    this.spec.logger.log(lvl, text, { ...this.logMeta, source: 'console' });
    this.spec.onConsole?.(level === 'log' ? 'log' : lvl, text);
  }
}
