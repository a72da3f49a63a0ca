import ivm from 'isolated-vm';
import type { JsonObject } from '../../../protocol/types';
import type { Logger } from '../../log';
import type { PluginAttachment } from '../../store/types';
import { DEFAULT_LIMITS, SandboxLimits } from '../types';
import { type BatchOutcome, emptyOutcome, runBatchCall } from './batch-call';
import { Bridge, HostOps } from './bridge';
import { CallGuard } from './call-guard';
import { ConsoleLimiter } from './console-limiter';
import { DriverClient, type EntryResult, type ExportsInfo, NO_EXPORTS, type TaskKind } from './driver-client';
import { classifyFailure, SandboxError } from './errors';
import { runTaskCall, type TaskOutcome } from './task-call';

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

let lastBusyDisposeAt = 0;
/** ms since an isolate was disposed while running (segfault-at-exit note: wait ≥100 ms before exiting). */
export function msSinceBusyDispose(): number {
  return Date.now() - lastBusyDisposeAt;
}

export function resolveLimits(limits: Partial<SandboxLimits> | undefined): SandboxLimits {
  const l = { ...DEFAULT_LIMITS, ...(limits ?? {}) };
  const int = (v: number, min: number, max: number): number =>
    Math.min(max, Math.max(min, Math.floor(Number.isFinite(v) ? v : min)));
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
  private driver: DriverClient | null = null;
  private bridge: Bridge | null = null;
  private readonly guard: CallGuard;
  /** A settle between calls hit a limit: the isolate is gone; the next call recreates it and reports this. */
  private backgroundFailure: SandboxError | null = null;
  /** processEvent failed on the synchronous path (see runEntry): only the async path from now on. */
  private syncHitLimit = false;
  /** Background tasks (runTask) inside the isolate now. */
  private tasks = 0;
  private pending = 0;
  private closing = false;
  private tail: Promise<unknown> = Promise.resolve();
  private readonly logMeta: Record<string, unknown>;
  private readonly console: ConsoleLimiter;

  constructor(private readonly spec: PluginVmSpec) {
    this.limits = resolveLimits(spec.limits);
    this.guard = new CallGuard(this.limits.wallTimeoutMs, () => this.disposeIsolate());
    this.logMeta = { pluginConfigId: spec.configId, pluginId: spec.pluginId, teamId: spec.teamId, plugin: spec.name };
    this.console = new ConsoleLimiter(spec.logger, this.logMeta, spec.maxLogLinesPerSecond, spec.onConsole);
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

  /** Whether processEvent calls still start on the synchronous path (false after a failure there, see runEntry). */
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
    if (this.state !== 'ready' || !this.exports.teardownPlugin || !this.driver) return;
    try {
      await this.driver.teardown();
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
      const busy =
        this.pending > 1 ||
        this.tasks > 0 ||
        (this.bridge !== null && (this.bridge.settling > 0 || this.bridge.inflight > 0));
      if (this.state !== 'ready' || this.hibernated || this.closing || busy || !this.driver) return false;
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
    this.lastUsedMs = Date.now();
    if ((this.hibernated || this.hibernating) && !this.closing) await this.exclusive(() => this.wakeUnlocked());
    if (this.backgroundFailure && this.state === 'ready' && !this.closing) {
      const cause = this.backgroundFailure;
      await this.exclusive(async () => {
        if (this.backgroundFailure !== cause) return;
        this.backgroundFailure = null;
        await this.recycle(emptyOutcome(0), cause);
      });
    }
    if (!this.driver && this.state === 'ready') await this.tail; // a restart in progress
    const driver = this.driver;
    if (!driver || this.state !== 'ready') return { failed: 0, error: null, retry: false, interrupted: 'not-ready' };
    const generation = this.generation;
    this.tasks++;
    try {
      return await runTaskCall(driver, kind, name, arg, wallMs, {
        stale: () => this.closing || this.generation !== generation || !this.isolate || this.isolate.isDisposed,
        classify: (err, what) => this.classify(err, what),
        onLimit: (e) => {
          // The next call (task or processEvent) recreates the isolate; calls running in it now fail with it.
          this.spec.logger.warn(`${e.message}; the isolate is recreated`, this.logMeta);
          this.backgroundFailure = e;
          this.disposeIsolate();
        },
      });
    } finally {
      this.tasks--;
      this.lastUsedMs = Date.now();
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
    const wasBusy = this.guard.busy;
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
      const hostLog = (level: unknown, line: unknown): void => this.console.line(level, line);
      let bridge: Bridge | null = null; // this isolate's; requests from an older isolate never reach a newer bridge
      const hostRequest = (id: unknown, op: unknown, json: unknown): void => bridge?.onRequest(id, op, json);
      const log = new ivm.Callback(hostLog, { ignored: true });
      const request = new ivm.Callback(hostRequest, { ignored: true });
      const ops = spec.ops ?? new Map();
      const guestSetup = {
        config: spec.config,
        attachments: spec.attachments,
        ops,
        unavailable: spec.unavailable ?? {},
        maxLogLinesPerSecond: this.console.maxPerSecond,
        log,
        request,
      };
      const driver = await DriverClient.boot(context, guestSetup, limits, this.guard);
      bridge = new Bridge(driver.settle, ops, {
        timeout,
        plugin: { pluginConfigId: spec.configId, pluginId: spec.pluginId, teamId: spec.teamId },
        logger: spec.logger,
        logMeta: this.logMeta,
        onFatal: (err) => this.onBridgeFatal(bridge!, err),
      });
      this.bridge = bridge;

      try {
        const script = await isolate.compileScript(spec.code, { filename: spec.filename });
        await this.guard.run(script.run(context, { timeout, release: true }), 'plugin load');
        this.exports = await driver.exports();
      } catch (err) {
        throw this.stageError(err, 'load', 'plugin load');
      }
      try {
        if (spec.setup !== false) await driver.setup();
      } catch (err) {
        throw this.stageError(err, 'setup', 'setupPlugin');
      }
      this.driver = driver;
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
    const outcome = emptyOutcome(n);
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
    await runBatchCall(inputs, this.exports, outcome, {
      ready: () => this.state === 'ready',
      runEntry: (slice) => this.runEntry(slice),
      classify: (err, what) => this.classify(err, what),
      recycle: (o, cause) => this.recycle(o, cause),
      warn: (message) => this.spec.logger.warn(message, this.logMeta),
    });
    return outcome;
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

  private runEntry(inputs: string[]): Promise<EntryResult> {
    const driver = this.driver;
    if (!driver || !this.isolate || this.isolate.isDisposed)
      return Promise.reject(new SandboxError('disposed', 'isolate is not running'));
    // applySync skips the thread hand-off of an async call (~80 µs), but runs on (and blocks) the host thread, for
    // at most the CPU timeout. It is only safe while nothing else is inside the isolate: a bridge settle (of a
    // fire-and-forget host call) or a background task could hold it on a pool thread, and the host would wait.
    const isolateFree = (): boolean => !((this.bridge !== null && this.bridge.settling > 0) || this.tasks > 0);
    return driver.runEntry(inputs, {
      sync: this.exports.processEvent && !this.syncHitLimit && isolateFree(),
      isolateFree,
      // The driver catches the plugin's own errors, so this is a limit (CPU: the host thread, with heartbeats and
      // other teams' calls, was held for the whole limit) or a broken isolate: async path only from now on, so
      // the host is held like that at most once per config.
      onSyncFailure: () => {
        this.syncHitLimit = true;
      },
    });
  }

  /** A settle failed with a limit (CPU timeout, memory) or the isolate went away under it. */
  private onBridgeFatal(bridge: Bridge, err: unknown): void {
    if (bridge !== this.bridge || this.closing) return;
    const waiting = this.guard.waiting;
    const e = this.classify(err, `${waiting ?? 'plugin code'} (resumed after a host call)`);
    if (waiting !== null) {
      this.guard.trip(e);
      return;
    }
    // Nothing is waiting: the plugin's fire-and-forget continuation hit the limit between calls.
    this.spec.logger.warn(
      `plugin code that ran between calls failed: ${e.message}; the isolate is recreated on the next call`,
      this.logMeta,
    );
    this.backgroundFailure = e;
    this.disposeIsolate();
  }

  private classify(err: unknown, what: string): SandboxError {
    const e = classifyFailure(err, what, this.limits, !this.isolate || this.isolate.isDisposed);
    // isolated-vm disposed the isolate at its memory limit: drop it.
    if (e !== err && e.kind === 'memory') this.disposeIsolate();
    return e;
  }

  private disposeIsolate(): void {
    const iso = this.isolate;
    const bridge = this.bridge;
    this.isolate = null;
    this.driver = null;
    this.bridge = null;
    bridge?.close();
    if (iso && !iso.isDisposed) {
      if (this.guard.busy || this.tasks > 0 || (bridge !== null && bridge.settling > 0)) lastBusyDisposeAt = Date.now();
      try {
        iso.dispose();
      } catch {
        // already disposed
      }
    }
  }
}
