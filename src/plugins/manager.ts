import crypto from 'node:crypto';
import { isJsonObject } from '../../protocol/json';
import { restoreLosslessNumbers } from '../../protocol/lossless-numbers';
import type { JsonObject } from '../../protocol/types';
import type { Logger } from '../log';
import { ChainUnavailableError } from '../pipeline/batch-processor';
import { PluginStore, pluginErrorFrom } from '../store/plugin-store';
import type { JobStore } from '../store/job-store';
import type { LoadedPluginConfig, PluginError } from '../store/types';
import type { HostOp, HostOps } from './vm/bridge';
import { compilePlugin, hostModulesFor } from './loading/compile';
import { ConfigErrorWriter } from './error-writer';
import { EventSink, type SinkEvent } from './background/event-sink';
import { createFetchOp, resolveFetchOptions } from './api/fetch';
import type { TaskKind } from './vm/driver-client';
import { SandboxError } from './vm/errors';
import { msSinceBusyDispose, PluginVm, resolveLimits } from './vm/plugin-vm';
import type { TaskOutcome } from './vm/task-call';
import { readPluginRowSource } from './loading/source';
import type { ConfigInfo, FetchOptions, PluginEvent, SandboxErrorInfo, SandboxLimits } from './types';

export { DEFAULT_LIMITS } from './types';
export type { SandboxLimits } from './types';

export interface PluginManagerOptions {
  store: PluginStore;
  /** Base directory for relative `file:` plugin urls. */
  baseDir: string;
  limits?: Partial<SandboxLimits>;
  logger: Logger;
  /** Isolates started in parallel during a (re)load (default 4). */
  loadConcurrency?: number;
  /** `fetch` for plugins: limits and the address allow-list (see FetchOptions). */
  fetch?: FetchOptions;
  /**
   * Called synchronously right before each entry into a config's isolate: a chain step (`events`: the caller's
   * event objects going in) or a load with setupPlugin (`events` empty). It may return a function, called when
   * that entry is over, or `false` to skip this chain step (the events keep their current value).
   */
  onEnter?: (configId: number, events: readonly PluginEvent[]) => (() => void) | false | void;
  /** More host APIs for plugins (cache, storage, jobs, capture), by op name. */
  ops?: ReadonlyMap<string, HostOp>;
  /** Host APIs this worker cannot offer, with the reason plugins are told (e.g. cache: "no Redis"). */
  unavailable?: Readonly<Record<string, string>>;
  /** Run onEvent/exportEvents on the chain's results (the worker does; replay does not). */
  eventSinks?: boolean;
  /** Wall-clock limit of one background call (onEvent, exportEvents, runEvery*, a job), ms (default 5 min). */
  taskWallTimeoutMs?: number;
  /** setupPlugin failures retried before the config is disabled (default 10; 0 = never retry, never disable). */
  setupRetries?: number;
  /** First setupPlugin retry after this long, doubling each time (default 3 s, as PostHog). */
  setupRetryBaseMs?: number;
  /** Where plugin log entries go (posthog_pluginlogentry). */
  pluginLog?: PluginLogSink;
  /** Persisted jobs, for exportEvents retries after RetryError. */
  jobs?: Pick<JobStore, 'enqueue'>;
  /**
   * A config's isolate that has had no call (processEvent or background) for this long is evicted: teardownPlugin,
   * then disposed; the next call recreates it (load + setupPlugin). 0 = never (replay, tests). Configs with
   * runEveryMinute, onEvent or exportEvents are kept (see evictIdle).
   */
  isolateIdleMs?: number;
  /** After each processEvent(Batch) call of a chain step: for metrics. */
  onCall?: (config: { id: number; name: string }, seconds: number, outcome: { errors: number; recreated: number }) => void;
  /** An idle isolate was evicted. */
  onEvicted?: (configId: number) => void;
  /** The Celery task id an event came in with, for log lines (logs, metrics and Celery events join on it). */
  taskIdOf?: (event: PluginEvent) => string | undefined;
}

/** How often idle isolates are looked for, at most (and a quarter of the idle time when that is shorter). */
const EVICTION_SCAN_MAX_MS = 60_000;

/** One posthog_pluginlogentry row to write (batched by the sink). */
export interface PluginLogEntry {
  teamId: number;
  pluginId: number;
  pluginConfigId: number;
  source: 'SYSTEM' | 'PLUGIN' | 'CONSOLE';
  type: 'DEBUG' | 'LOG' | 'INFO' | 'WARN' | 'ERROR';
  message: string;
}

export interface PluginLogSink {
  add(entry: PluginLogEntry): void;
}

/** A loaded config, for the scheduler and the job runner. */
export interface LiveConfig {
  id: number;
  pluginId: number;
  teamId: number;
  name: string;
  vm: PluginVm;
}

/** The job that retries exportEvents after RetryError (PostHog's exportEventsWithRetry). */
export const EXPORT_RETRY_JOB = '$exportEventsWithRetry';
/** PostHog gives up on an export after 15 retries, 2^(n+1)·3 s apart (~54 h in all). */
export const MAX_EXPORT_RETRIES = 15;

interface ConfigEntry {
  id: number;
  pluginId: number;
  teamId: number;
  name: string;
  order: number;
  fingerprint: string;
  vm: PluginVm | null;
  loadError: PluginError | null;
  /** onEvent/exportEvents of this config (shared with the next generation when the VM is reused). */
  sink: EventSink | null;
  /** setupPlugin attempts that failed in a row. */
  setupFailures: number;
  /** setupPlugin failed at load: retry it once this entry is live. */
  retrySetup?: boolean;
  /** A setupPlugin retry is scheduled (the config may come up: its jobs wait). */
  setupRetryPending?: boolean;
  /** processEvent calls in a row that hit the wall-clock deadline. */
  hangs: number;
  /** Pauses so far (each twice as long as the one before). */
  pauses: number;
  /** Skipped in chains until then (ms since epoch): its processEvent keeps hanging. */
  pausedUntil: number;
  config: JsonObject;
}

interface Generation {
  chains: Map<number, ConfigEntry[]>;
  entries: Map<number, ConfigEntry>;
  active: number;
  retired: boolean;
  onIdle: (() => void) | null;
}

/** processEvent calls in a row that hit the wall-clock deadline before the config is paused (see noteHangs). */
const HANG_LIMIT = 2;
const PAUSE_BASE_MS = 60_000;
const PAUSE_MAX_MS = 30 * 60_000;

/** How long close() lets isolated-vm wind down after disposing an isolate that was running (see close). */
const BUSY_DISPOSE_GRACE_MS = 500;

/** At most this many per-event error lines per config per call; the rest are counted. */
const MAX_ERROR_LOG_LINES = 5;

/** The task never got the plugin's answer because of us (isolate recreated or closed, not ready): not its error. */
function isInterruption(o: TaskOutcome): boolean {
  return o.interrupted === 'disposed' || o.interrupted === 'not-ready';
}

/** The tags of every log line about a config. */
function logMetaOf(entry: { id: number; pluginId: number; teamId: number; name: string }): Record<string, unknown> {
  return { pluginConfigId: entry.id, pluginId: entry.pluginId, teamId: entry.teamId, plugin: entry.name };
}

function emptyGeneration(): Generation {
  return { chains: new Map(), entries: new Map(), active: 0, retired: false, onIdle: null };
}

function sha256(...parts: Array<string | Buffer>): string {
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex');
}

function safeParse(json: string): JsonObject | null {
  try {
    const v = JSON.parse(json) as unknown;
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as JsonObject) : null;
  } catch {
    return null;
  }
}

/** PostHog's error JSON from what the sandbox reported. */
function toPluginError(info: SandboxErrorInfo, event: JsonObject | null | undefined): PluginError {
  if (info.thrownString) return { message: info.message, time: new Date().toISOString() };
  const e: PluginError = { message: info.message, time: new Date().toISOString(), name: info.name };
  if (info.stack !== undefined) e.stack = info.stack;
  if (event !== undefined) e.event = event;
  return e;
}

/**
 * Loads every enabled plugin config, one isolate each, and runs per-team chains over batches of events.
 * Reloads swap a fully-built generation of chains in one assignment; isolates of configs that did not change
 * (same code, config and attachments) are kept, the others are torn down once no chain call uses them.
 */
export class PluginManager {
  private gen: Generation = emptyGeneration();
  private readonly limits: SandboxLimits;
  private reloading: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly retiring = new Set<Promise<void>>();
  /** Isolates of retired generations not disposed yet. */
  private readonly retiringVms = new Set<PluginVm>();
  /** Async host APIs (request/settle bridge) every plugin config gets. */
  private readonly hostOps: HostOps;
  /** Modules plugins may import (the sandbox's guest script provides them). */
  private readonly hostModules: ReadonlySet<string>;
  private readonly setupTimers = new Set<NodeJS.Timeout>();
  private readonly errors: ConfigErrorWriter;
  private evictionTimer: NodeJS.Timeout | null = null;
  private evicting = false;

  private constructor(private readonly opts: PluginManagerOptions) {
    this.limits = resolveLimits(opts.limits);
    const fetch = resolveFetchOptions(opts.fetch); // throws on an unreadable allow-list entry
    this.hostOps = new Map([...(fetch.enabled ? ([['fetch', createFetchOp(fetch)]] as const) : []), ...(opts.ops ?? [])]);
    this.hostModules = hostModulesFor(fetch.enabled);
    this.errors = new ConfigErrorWriter(opts.store, opts.logger);
  }

  /** Resolves once every plugin error recorded so far is in the database (tests, shutdown). */
  flushErrors(): Promise<void> {
    return this.errors.flush();
  }

  static async create(opts: PluginManagerOptions): Promise<PluginManager> {
    const m = new PluginManager(opts);
    await m.reload();
    const idleMs = opts.isolateIdleMs ?? 0;
    if (idleMs > 0) {
      m.evictionTimer = setInterval(() => void m.evictIdle(idleMs), Math.max(100, Math.min(EVICTION_SCAN_MAX_MS, Math.floor(idleMs / 4))));
      m.evictionTimer.unref();
    }
    return m;
  }

  /**
   * Evict the isolates idle for `idleMs` (see PluginManagerOptions.isolateIdleMs). One config at a time, each
   * under the VM's own lock, so a call arriving meanwhile either runs first (and keeps the isolate) or wakes it.
   */
  private async evictIdle(idleMs: number): Promise<void> {
    if (this.evicting || this.closed) return;
    this.evicting = true;
    try {
      const cutoff = Date.now() - idleMs;
      for (const entry of [...this.gen.entries.values()]) {
        const vm = entry.vm;
        if (this.closed) break;
        if (!vm || vm.state !== 'ready' || vm.hibernated || !vm.idle || vm.lastUsedMs > cutoff) continue;
        // runEveryMinute: the scheduler would wake it within the minute. onEvent/exportEvents: their events arrive
        // without a processEvent call to wake the isolate first, and a shutdown must still export what is buffered.
        if (vm.exports.runEveryMinute || entry.sink !== null) continue;
        const leave = this.opts.onEnter?.(entry.id, []); // teardownPlugin runs in the isolate: crash attribution
        let evicted = false;
        try {
          evicted = await vm.hibernate();
        } finally {
          if (leave) leave();
        }
        if (evicted) {
          this.opts.onEvicted?.(entry.id);
          const idleS = Math.round((Date.now() - vm.lastUsedMs) / 1000);
          this.opts.logger.info(`plugin ${entry.name} (config ${entry.id}, team ${entry.teamId}): isolate evicted after ${idleS} s without calls; the next call recreates it`, logMetaOf(entry));
        }
      }
    } catch (err) {
      this.opts.logger.warn(`evicting idle isolates failed: ${(err as Error).message}`);
    } finally {
      this.evicting = false;
    }
  }

  get sandboxLimits(): SandboxLimits {
    return { ...this.limits };
  }

  configsFor(teamId: number): readonly ConfigInfo[] {
    return (this.gen.chains.get(teamId) ?? []).map((e) => ({
      id: e.id,
      pluginId: e.pluginId,
      name: e.name,
      order: e.order,
      state: e.vm && e.vm.state === 'ready' ? 'ready' : 'failed',
    }));
  }

  /** Team ids that have at least one enabled config. */
  teams(): number[] {
    return [...this.gen.chains.keys()];
  }

  /** The live VM of a config (tests, diagnostics). */
  vmFor(configId: number): PluginVm | null {
    return this.gen.entries.get(configId)?.vm ?? null;
  }

  /** Events waiting in onEvent queues and exportEvents buffers of every config. */
  exportWaiting(): number {
    let n = 0;
    for (const e of this.gen.entries.values()) n += e.sink?.waiting ?? 0;
    return n;
  }

  /** Configs whose isolate is running now. */
  liveConfigs(): LiveConfig[] {
    const out: LiveConfig[] = [];
    for (const e of this.gen.entries.values()) {
      if (e.vm && e.vm.state === 'ready') out.push({ id: e.id, pluginId: e.pluginId, teamId: e.teamId, name: e.name, vm: e.vm });
    }
    return out;
  }

  /**
   * Run a scheduled function (runEveryMinute/Hour/Day) or a job of a config. `null`: the config is not loaded
   * here (disabled, deleted, or failed to load). Errors are recorded like processEvent's.
   */
  async runTask(configId: number, kind: 'schedule' | 'job', name: string, payloadJson = 'null'): Promise<TaskOutcome | null> {
    const entry = this.gen.entries.get(configId);
    if (!entry) return null;
    const vm = entry.vm;
    const notReady: TaskOutcome = { failed: 0, error: null, retry: false, interrupted: 'not-ready' };
    if (this.closed) return notReady; // another worker (or this one after a restart) runs it
    if (!vm || vm.state !== 'ready') return entry.setupRetryPending ? notReady : null; // a retry may still bring it up
    const wall = this.taskWallMs;
    if (kind === 'job' && name === EXPORT_RETRY_JOB) return this.retryExport(entry, payloadJson, wall);
    const outcome = await this.enterTask(entry, vm, kind, name, kind === 'job' ? [payloadJson] : [], wall);
    const what = kind === 'job' ? `job ${JSON.stringify(name)}` : name;
    if (outcome.error && !isInterruption(outcome)) this.recordError(entry, what, outcome.error);
    return outcome;
  }

  /** Every background entry into an isolate goes through onEnter too (the flight record names the config). */
  private async enterTask(entry: ConfigEntry, vm: PluginVm, kind: TaskKind, name: string, arg: string[], wall: number): Promise<TaskOutcome> {
    const leave = this.opts.onEnter?.(entry.id, []);
    try {
      return await vm.runTask(kind, name, arg, wall);
    } finally {
      if (leave) leave();
    }
  }

  /** Re-read configs from the store and swap in the new chains. Concurrent calls are serialised. */
  reload(): Promise<void> {
    const next = this.reloading.then(() => this.reloadUnlocked());
    this.reloading = next.catch(() => undefined);
    return next;
  }

  /**
   * Run the team's chain over `events`, in config order; the event order is kept. result[i] is the final event
   * or null when a plugin dropped it. The input objects are never touched (plugins only see JSON copies).
   * Never rejects because of a plugin: a failing plugin leaves the event as it was before that plugin.
   */
  async runChain(teamId: number, events: PluginEvent[]): Promise<Array<PluginEvent | null>> {
    if (this.closed) throw new ChainUnavailableError('PluginManager is closed');
    const gen = this.gen;
    const chain = gen.chains.get(teamId);
    if (!chain || chain.length === 0 || events.length === 0) return events.slice();
    gen.active++;
    try {
      const { result, finals } = await this.runChainIn(chain, teamId, events);
      if (this.opts.eventSinks) this.feedSinks(chain, result, finals);
      return result;
    } finally {
      gen.active--;
      if (gen.retired && gen.active === 0) gen.onIdle?.();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.reloading;
    this.closed = true;
    if (this.evictionTimer) clearInterval(this.evictionTimer);
    const gen = this.gen;
    this.gen = emptyGeneration();
    const vms = [...gen.entries.values()].map((e) => e.vm).filter((v): v is PluginVm => v !== null);
    for (const vm of vms) vm.beginClose();
    const grace = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());
    const bound = Math.min(this.limits.wallTimeoutMs, 5000);
    // Give running chain calls a moment to finish, then teardownPlugin (bounded), then dispose regardless.
    if (gen.active > 0) {
      await Promise.race([
        new Promise<void>((resolve) => {
          gen.retired = true;
          gen.onIdle = resolve;
        }),
        grace(Math.min(this.limits.wallTimeoutMs, 1000)),
      ]);
    }
    for (const t of this.setupTimers) clearTimeout(t);
    this.setupTimers.clear();
    const sinks = [...gen.entries.values()].flatMap((e) => (e.sink ? [e.sink] : []));
    await Promise.all(sinks.map((s) => this.flushSink(s, bound)));
    const idle = vms.filter((vm) => vm.idle); // a VM still busy is cut short below, without teardown
    await Promise.race([Promise.all(idle.map((vm) => vm.teardown())), grace(bound)]);
    for (const vm of vms) vm.dispose();
    // Generations retired by a reload just before: the same bounds, then their isolates go too.
    await Promise.race([Promise.all(this.retiring), grace(bound)]);
    for (const vm of this.retiringVms) vm.dispose();
    // Calls cut short by the disposal end now (an export interrupted this way becomes a retry job).
    await Promise.all(sinks.map((s) => s.settled()));
    await Promise.race([this.errors.flush(), grace(bound)]);
    // Exiting right after disposing running isolates can abort in isolated-vm (its threads still winding down the
    // disposed isolate): ≥100 ms was enough on an idle machine, not always on a loaded one (seen once in the full
    // test suite on 2 busy cores), hence 500.
    const since = msSinceBusyDispose();
    if (since < BUSY_DISPOSE_GRACE_MS) await new Promise((r) => setTimeout(r, BUSY_DISPOSE_GRACE_MS - since));
  }

  // ------------------------------------------------------------------------------------------------ internals

  /** Export what a sink buffers, for at most `ms`; what is left becomes retry jobs (see EventSink.close). */
  private async flushSink(sink: EventSink, ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([sink.flush(), new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
    sink.pause();
    await sink.close();
  }

  private get taskWallMs(): number {
    return Math.max(1, this.opts.taskWallTimeoutMs ?? 300_000);
  }

  /** onEvent/exportEvents of every config in the chain get the events that made it through. */
  private feedSinks(chain: ConfigEntry[], result: Array<PluginEvent | null>, finals: Array<string | null>): void {
    let items: SinkEvent[] | null = null;
    for (const entry of chain) {
      if (!entry.sink) continue;
      items ??= result.flatMap((ev, i) => (ev === null ? [] : [{ json: finals[i] ?? JSON.stringify(ev), name: typeof ev.event === 'string' ? ev.event : undefined }]));
      entry.sink.push(items);
    }
  }

  /**
   * A processEvent that never settles costs the wall-clock deadline on every call (and again for each event of
   * the event-by-event rerun), stalling every team in the batch behind it. After HANG_LIMIT such calls in a row
   * the config is skipped for a minute, then two, four… up to 30 minutes; one call that finishes resets it.
   */
  private noteHangs(entry: ConfigEntry, deadlines: number): void {
    if (deadlines === 0) {
      entry.hangs = 0;
      entry.pauses = 0;
      return;
    }
    if (++entry.hangs < HANG_LIMIT) return;
    const ms = Math.min(PAUSE_MAX_MS, PAUSE_BASE_MS * 2 ** entry.pauses);
    entry.pauses++;
    entry.pausedUntil = Date.now() + ms;
    const message = `processEvent hit the wall-clock deadline (${this.limits.wallTimeoutMs} ms) in ${entry.hangs} calls in a row: skipping this plugin for ${ms / 1000} s; events pass it unchanged meanwhile`;
    this.opts.logger.error(`plugin ${entry.name} (config ${entry.id}, team ${entry.teamId}): ${message}`, logMetaOf(entry));
    this.logEntry(entry, 'SYSTEM', 'ERROR', message);
    this.errors.set(entry.id, { message, time: new Date().toISOString(), name: 'PluginPausedError' });
  }

  /** A failure outside processEvent: logged, stored in posthog_pluginconfig.error, and a plugin log entry. */
  private recordError(entry: ConfigEntry, what: string, info: SandboxErrorInfo): void {
    const { logger } = this.opts;
    const meta = logMetaOf(entry);
    logger.warn(`plugin ${entry.name} (config ${entry.id}, team ${entry.teamId}): ${what} failed: ${info.name}: ${info.message}`, meta);
    this.logEntry(entry, 'PLUGIN', 'ERROR', `${what} failed: ${info.name}: ${info.message}`);
    this.errors.set(entry.id, toPluginError(info, undefined));
  }

  private logEntry(entry: { id: number; pluginId: number; teamId: number }, source: PluginLogEntry['source'], type: PluginLogEntry['type'], message: string): void {
    this.opts.pluginLog?.add({ teamId: entry.teamId, pluginId: entry.pluginId, pluginConfigId: entry.id, source, type, message });
  }

  /**
   * An export retry job. Interrupted by us (isolate recreated, closing): the job itself goes back to the table (the
   * job runner releases it), no new one is made. RetryError or the task deadline: the next retry is a new job.
   */
  private async retryExport(entry: ConfigEntry, payloadJson: string, wall: number): Promise<TaskOutcome> {
    let payload: { events?: unknown; retriesPerformedSoFar?: unknown };
    try {
      payload = JSON.parse(payloadJson) as typeof payload;
      if (payload === null || typeof payload !== 'object') throw new Error('not an object');
    } catch (err) {
      const error = { name: 'Error', message: `unreadable ${EXPORT_RETRY_JOB} payload (${(err as Error).message}): dropped` };
      this.recordError(entry, 'exportEvents (retry)', error);
      return { failed: 1, retry: false, interrupted: null, error };
    }
    const events = Array.isArray(payload.events) ? payload.events.filter((e): e is string => typeof e === 'string') : [];
    const retries = typeof payload.retriesPerformedSoFar === 'number' ? payload.retriesPerformedSoFar : 0;
    const vm = entry.vm!;
    const outcome: TaskOutcome = vm.exports.exportEvents
      ? await this.enterTask(entry, vm, 'exportEvents', '', events, wall)
      : { failed: 1, retry: false, interrupted: null, error: { name: 'Error', message: 'the plugin no longer exports exportEvents' } };
    if (isInterruption(outcome)) return outcome;
    if (outcome.error && !outcome.retry) this.recordError(entry, 'exportEvents (retry)', outcome.error);
    if (outcome.retry || outcome.interrupted === 'deadline') await this.scheduleExportRetry(entry, events, retries + 1);
    return outcome;
  }

  /** exportEvents asked to be retried: a persisted job, 2^(n+1)·3 s later, at most MAX_EXPORT_RETRIES times. */
  private async scheduleExportRetry(entry: { id: number; pluginId: number; teamId: number; name: string }, events: string[], retriesSoFar: number): Promise<void> {
    const jobs = this.opts.jobs;
    const meta = logMetaOf(entry);
    if (!jobs) throw new Error('no job store');
    if (retriesSoFar >= MAX_EXPORT_RETRIES) {
      this.opts.logger.error(`exportEvents of ${events.length} event(s) still failing after ${retriesSoFar} retries: giving up on them`, meta);
      this.logEntry(entry, 'SYSTEM', 'ERROR', `exportEvents gave up on ${events.length} event(s) after ${retriesSoFar} retries`);
      return;
    }
    const delayMs = 2 ** (retriesSoFar + 1) * 3000;
    await jobs.enqueue({
      pluginConfigId: entry.id,
      teamId: entry.teamId,
      name: EXPORT_RETRY_JOB,
      payloadJson: JSON.stringify({ events, retriesPerformedSoFar: retriesSoFar }),
      runAt: new Date(Date.now() + delayMs),
    });
    this.opts.logger.info(`exportEvents of ${events.length} event(s) will be retried in ${delayMs / 1000} s (retry ${retriesSoFar + 1} of ${MAX_EXPORT_RETRIES})`, meta);
  }

  private makeSink(entry: ConfigEntry, vm: PluginVm): EventSink | null {
    if (!this.opts.eventSinks || !EventSink.wanted(vm)) return null;
    const meta = logMetaOf(entry);
    return new EventSink({
      vm,
      run: (kind, arg) => this.enterTask(entry, vm, kind, '', arg, this.taskWallMs),
      config: entry.config,
      logger: this.opts.logger,
      logMeta: meta,
      onError: (what, outcome) => {
        if (outcome.error && !isInterruption(outcome)) this.recordError(entry, what, outcome.error);
      },
      retryExport: this.opts.jobs ? (events, retriesSoFar) => this.scheduleExportRetry(entry, events, retriesSoFar) : undefined,
    });
  }

  private async runChainIn(chain: ConfigEntry[], teamId: number, events: PluginEvent[]): Promise<{ result: Array<PluginEvent | null>; finals: Array<string | null> }> {
    const { logger } = this.opts;
    const n = events.length;
    const current: Array<string | null> = events.map((e) => JSON.stringify(e));
    const changed = new Array<boolean>(n).fill(false);

    for (const entry of chain) {
      const vm = entry.vm;
      if (!vm || vm.state !== 'ready') continue;
      if (!vm.exports.processEvent && !vm.exports.processEventBatch) continue; // exporters: nothing to change
      if (entry.pausedUntil > Date.now()) continue; // keeps hanging: events pass it unchanged for a while
      const idx: number[] = [];
      for (let i = 0; i < n; i++) if (current[i] !== null) idx.push(i);
      if (idx.length === 0) break;
      const inputs = idx.map((i) => current[i] as string);

      const leave = this.opts.onEnter?.(entry.id, idx.map((i) => events[i]));
      if (leave === false) continue;
      let outcome;
      const started = process.hrtime.bigint();
      try {
        outcome = await vm.process(inputs);
        this.opts.onCall?.(entry, Number(process.hrtime.bigint() - started) / 1e9, { errors: outcome.errors.length + (outcome.failure ? 1 : 0), recreated: outcome.recreated });
      } catch (err) {
        logger.error(`plugin chain step failed unexpectedly: ${(err as Error).message}`, { pluginConfigId: entry.id, teamId });
        continue;
      } finally {
        if (leave) leave();
      }
      for (let k = 0; k < idx.length; k++) {
        const out = outcome.outputs[k];
        if (out === undefined) continue;
        current[idx[k]] = out;
        changed[idx[k]] = true;
      }

      let lastError: PluginError | null = null;
      outcome.errors.forEach(({ index, error }, nth) => {
        const event = safeParse(inputs[index]);
        lastError = toPluginError(error, event);
        if (nth < MAX_ERROR_LOG_LINES) {
          this.logEntry(entry, 'PLUGIN', 'ERROR', `processEvent failed on event ${describeEvent(event)}: ${error.name}: ${error.message}`);
          logger.warn(`plugin ${entry.name} (config ${entry.id}, team ${teamId}) failed on event ${describeEvent(event)}: ${error.name}: ${error.message}`, {
            pluginConfigId: entry.id,
            pluginId: entry.pluginId,
            teamId,
            plugin: entry.name,
            taskId: this.opts.taskIdOf?.(events[idx[index] as number] as PluginEvent) ?? null,
          });
        }
      });
      if (outcome.errors.length > MAX_ERROR_LOG_LINES) {
        logger.warn(`plugin ${entry.name} (config ${entry.id}, team ${teamId}) failed on ${outcome.errors.length - MAX_ERROR_LOG_LINES} more event(s) in this batch`, logMetaOf(entry));
      }
      if (outcome.failure) lastError = toPluginError(outcome.failure, undefined);
      if (lastError !== null) this.errors.set(entry.id, lastError);
      this.noteHangs(entry, outcome.deadlines); // after the call's own error: a pause is the more useful record
    }

    const result = new Array<PluginEvent | null>(n);
    for (let i = 0; i < n; i++) {
      const s = current[i];
      if (s === null) {
        result[i] = null;
        continue;
      }
      if (!changed[i]) {
        result[i] = events[i];
        continue;
      }
      const ev = safeParse(s);
      if (ev === null) {
        result[i] = events[i];
        continue;
      }
      // Plugins may not move events to another team (PostHog resets team_id too).
      if (ev.team_id !== events[i].team_id) ev.team_id = events[i].team_id;
      // Numbers the plugins saw as JS numbers and gave back unchanged are written as Python sent them.
      result[i] = restoreLosslessNumbers(events[i], ev) as PluginEvent;
    }
    return { result, finals: current };
  }

  private async reloadUnlocked(): Promise<void> {
    if (this.closed) throw new Error('PluginManager is closed');
    const { store, logger, baseDir } = this.opts;
    const rows = await store.loadEnabledConfigs();
    const old = this.gen;
    const next = emptyGeneration();
    const toStart: Array<{ entry: ConfigEntry; row: LoadedPluginConfig }> = [];
    const reused = new Set<PluginVm>();

    for (const row of rows) {
      const entry: ConfigEntry = {
        id: row.id,
        pluginId: row.pluginId,
        teamId: row.teamId,
        name: row.plugin.name,
        order: row.order,
        fingerprint: '',
        vm: null,
        loadError: null,
        sink: null,
        setupFailures: 0,
        config: row.config,
        hangs: 0,
        pauses: 0,
        pausedUntil: 0,
      };
      let code: { code: string; filename: string } | null = null;
      try {
        const compiled = compilePlugin(readPluginRowSource(row.plugin, { baseDir }), this.hostModules);
        code = { code: compiled.code, filename: compiled.filename };
        entry.fingerprint = sha256(
          compiled.hash,
          compiled.filename,
          String(row.teamId),
          String(row.pluginId),
          JSON.stringify(row.config),
          ...row.attachments.flatMap((a) => [a.key, a.contentType, a.fileName, a.contents]),
        );
      } catch (err) {
        entry.loadError = pluginErrorFrom(err);
        logger.error(`plugin ${row.plugin.name} (config ${row.id}, team ${row.teamId}) failed to load: ${(err as Error).message}`, logMetaOf(entry));
      }
      if (code) {
        const prev = old.entries.get(row.id);
        // Failing setups keep counting across reloads of an unchanged config, so busy installs still disable it.
        if (prev && prev.fingerprint === entry.fingerprint) entry.setupFailures = prev.setupFailures;
        if (prev?.vm && prev.vm.state === 'ready' && prev.fingerprint === entry.fingerprint) {
          entry.vm = prev.vm;
          entry.sink = prev.sink;
          reused.add(prev.vm);
        } else {
          entry.vm = new PluginVm({
            configId: row.id,
            pluginId: row.pluginId,
            teamId: row.teamId,
            name: row.plugin.name,
            code: code.code,
            filename: code.filename,
            config: row.config,
            attachments: row.attachments,
            limits: this.limits,
            logger,
            ops: this.hostOps,
            unavailable: this.opts.unavailable,
            onSetupFailed: (err) => {
              entry.loadError = toPluginError(err.info(), undefined);
              this.errors.set(entry.id, entry.loadError);
              if (this.gen.entries.get(entry.id) === entry) this.scheduleSetupRetry(entry);
            },
            onConsole: (level, line) => this.logEntry(entry, 'CONSOLE', level === 'log' ? 'LOG' : (level.toUpperCase() as PluginLogEntry['type']), line),
          });
          toStart.push({ entry, row });
        }
      }
      next.entries.set(entry.id, entry);
      const chain = next.chains.get(entry.teamId) ?? [];
      chain.push(entry);
      next.chains.set(entry.teamId, chain);
    }
    for (const chain of next.chains.values()) chain.sort((a, b) => a.order - b.order || a.id - b.id);

    // Start new isolates (load + setupPlugin), a few at a time.
    const concurrency = Math.max(1, this.opts.loadConcurrency ?? 4);
    let cursor = 0;
    const startOne = async (): Promise<void> => {
      while (cursor < toStart.length) {
        const { entry, row } = toStart[cursor++];
        const err = await this.startEntry(entry, entry.vm!, '');
        if (err === null && row.error !== null) this.errors.set(row.id, null); // PostHog clears the error after a good load
        if (err?.kind === 'setup') entry.retrySetup = true;
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, toStart.length) }, startOne));
    const loadErrors = [...next.entries.values()].filter((e) => e.loadError !== null);
    for (const e of loadErrors) this.errors.set(e.id, e.loadError);
    await this.errors.flush();

    if (this.closed) {
      for (const e of next.entries.values()) if (e.vm && !reused.has(e.vm)) e.vm.dispose();
      throw new Error('PluginManager was closed during reload');
    }
    // Swap in one step, then retire what the new generation does not use.
    this.gen = next;
    for (const e of next.entries.values()) if (e.retrySetup) this.scheduleSetupRetry(e);
    const retired = [...old.entries.values()].map((e) => e.vm).filter((v): v is PluginVm => v !== null && !reused.has(v));
    if (retired.length > 0) this.retire(old, retired);
    logger.info(`plugins loaded: ${next.entries.size} config(s) for ${next.chains.size} team(s), ${loadErrors.length} failed`);
  }

  /**
   * Start a config's isolate (load + setupPlugin) under onEnter (crash attribution), then log the outcome and keep
   * it in `entry.loadError`; a config that came up gets its onEvent/exportEvents sink. Returns the failure, if any.
   */
  private async startEntry(entry: ConfigEntry, vm: PluginVm, how: string): Promise<SandboxError | null> {
    const { logger } = this.opts;
    const meta = logMetaOf(entry);
    const leave = this.opts.onEnter?.(entry.id, []);
    try {
      await vm.start();
    } catch (err) {
      const e = err instanceof SandboxError ? err : new SandboxError('load', String(err));
      const info = e.info();
      entry.loadError = toPluginError(info, undefined);
      logger.error(`plugin ${entry.name} (config ${entry.id}, team ${entry.teamId}) failed to load: ${info.message}`, meta);
      this.logEntry(entry, 'SYSTEM', 'ERROR', `Plugin failed to load (config ${entry.id}, process ${process.pid}): ${info.message}`);
      return e;
    } finally {
      if (leave) leave();
    }
    entry.loadError = null;
    // The sink outlives isolate recycles (it holds the VM, not the isolate): a retry after one keeps its buffer.
    entry.sink ??= this.makeSink(entry, vm);
    logger.info(`plugin ${entry.name} loaded (config ${entry.id}, team ${entry.teamId})${how}`, meta);
    this.logEntry(entry, 'SYSTEM', 'INFO', `Plugin loaded (config ${entry.id}, process ${process.pid})${how}.`);
    return null;
  }

  /**
   * setupPlugin failed: try again after 3 s, 6 s, 12 s… (PostHog's backoff); after `setupRetries` failures in a row
   * the config is disabled with its error. Events meanwhile go on without this plugin (its error says why).
   */
  private scheduleSetupRetry(entry: ConfigEntry): void {
    const { logger, store } = this.opts;
    const max = this.opts.setupRetries ?? 10;
    const meta = logMetaOf(entry);
    entry.setupFailures++;
    entry.setupRetryPending = false;
    if (max <= 0 || this.closed || !entry.vm) return;
    if (entry.setupFailures > max) {
      const error = entry.loadError ?? { message: 'setupPlugin failed', time: new Date().toISOString() };
      logger.error(`plugin ${entry.name} (config ${entry.id}) failed setupPlugin ${entry.setupFailures} times in a row: disabling it`, meta);
      this.logEntry(entry, 'SYSTEM', 'ERROR', `Plugin disabled after ${entry.setupFailures} failed setupPlugin attempts: ${error.message}`);
      store.disable(entry.id, error).catch((e: unknown) => logger.error(`could not disable plugin config ${entry.id}: ${(e as Error).message}`, logMetaOf(entry)));
      return;
    }
    const delayMs = (this.opts.setupRetryBaseMs ?? 3000) * 2 ** (entry.setupFailures - 1);
    logger.warn(`plugin ${entry.name} (config ${entry.id}): setupPlugin failed (${entry.setupFailures} of ${max + 1} attempts); retrying in ${delayMs} ms`, meta);
    entry.setupRetryPending = true;
    const timer = setTimeout(() => {
      this.setupTimers.delete(timer);
      if (this.closed || this.gen.entries.get(entry.id) !== entry || !entry.vm) return; // reloaded or closed since
      void this.startEntry(entry, entry.vm, ' after retrying setupPlugin').then((err) => {
        entry.setupRetryPending = false;
        this.errors.set(entry.id, entry.loadError);
        if (err === null) entry.setupFailures = 0;
        else if (err.kind === 'setup') this.scheduleSetupRetry(entry);
      });
    }, delayMs);
    timer.unref();
    this.setupTimers.add(timer);
  }

  private retire(gen: Generation, vms: PluginVm[]): void {
    const sinks = [...gen.entries.values()].filter((e) => e.vm !== null && vms.includes(e.vm) && e.sink !== null).map((e) => e.sink!);
    for (const vm of vms) this.retiringVms.add(vm);
    const done = (async () => {
      if (gen.active > 0) {
        await new Promise<void>((resolve) => {
          gen.retired = true;
          gen.onIdle = resolve;
        });
      }
      await Promise.all(sinks.map((s) => this.flushSink(s, this.taskWallMs)));
      await Promise.all(vms.map((vm) => vm.teardown()));
      for (const vm of vms) {
        vm.dispose();
        this.retiringVms.delete(vm);
      }
      await Promise.all(sinks.map((s) => s.settled()));
    })();
    this.retiring.add(done);
    void done.finally(() => this.retiring.delete(done));
  }
}

function describeEvent(event: JsonObject | null): string {
  if (!event) return '(unparseable)';
  const parts: string[] = [];
  const props = event.properties;
  const uuid = event.uuid ?? (isJsonObject(props) ? props.$uuid : undefined);
  if (typeof uuid === 'string') parts.push(`uuid=${uuid}`);
  if (typeof event.event === 'string') parts.push(`event=${JSON.stringify(event.event)}`);
  if (typeof event.distinct_id === 'string') parts.push(`distinct_id=${JSON.stringify(event.distinct_id)}`);
  return parts.length ? parts.join(' ') : '(no id)';
}
