import { ChainUnavailableError } from '../../pipeline/batch-processor';
import type { HostOps } from '../vm/bridge';
import { ChainRunner, feedSinks } from './chain-runner';
import { hostModulesFor } from '../loading/compile';
import { type ConfigEntry, emptyGeneration, type Generation, isInterruption } from './config-entry';
import { ConfigHealth } from './config-health';
import { ConfigLoader, startEntries } from './config-loader';
import { ConfigStarter } from './config-starter';
import { EventSink } from '../background/event-sink';
import { EXPORT_RETRY_JOB, ExportRetry } from './export-retry';
import { createFetchOp, resolveFetchOptions } from '../api/fetch';
import { IsolateEviction } from './isolate-eviction';
import { LazyStart } from './lazy-start';
import type { LiveConfig, PluginManagerOptions } from './manager-options';
import type { TaskKind } from '../vm/driver-client';
import { msSinceBusyDispose, type PluginVm, resolveLimits } from '../vm/plugin-vm';
import type { TaskOutcome } from '../vm/task-call';
import { releaseTranspiler } from '../loading/transpile';
import type { ConfigInfo, PluginEvent, SandboxLimits } from '../types';

export { DEFAULT_LIMITS } from '../types';
export type { SandboxLimits } from '../types';
export type { PluginLogEntry, PluginLogSink } from './config-entry';
export { EXPORT_RETRY_JOB, MAX_EXPORT_RETRIES } from './export-retry';
export type { LiveConfig, PluginManagerOptions } from './manager-options';

/** How often idle isolates are looked for, at most (and a quarter of the idle time when that is shorter). */
const EVICTION_SCAN_MAX_MS = 60_000;
/** How often the memory budget is checked besides after each isolate creation. */
const BUDGET_SCAN_MS = 5_000;

/** How long close() lets isolated-vm wind down after disposing an isolate that was running (see close). */
const BUSY_DISPOSE_GRACE_MS = 500;

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
  private readonly health: ConfigHealth;
  private readonly loader: ConfigLoader;
  private readonly chains: ChainRunner;
  private readonly exportRetry: ExportRetry;
  private readonly eviction: IsolateEviction;
  private evictionTimer: NodeJS.Timeout | null = null;
  private budgetTimer: NodeJS.Timeout | null = null;
  private readonly lazy: LazyStart;
  private readonly starter: ConfigStarter;
  /** An isolate was created since the last memory budget check. */
  private budgetDirty = false;

  private constructor(private readonly opts: PluginManagerOptions) {
    this.limits = resolveLimits(opts.limits);
    const fetch = resolveFetchOptions(opts.fetch); // throws on an unreadable allow-list entry
    this.hostOps = new Map([
      ...(fetch.enabled ? ([['fetch', createFetchOp(fetch)]] as const) : []),
      ...(opts.ops ?? []),
    ]);
    const isLive = (entry: ConfigEntry): boolean => !this.closed && this.gen.entries.get(entry.id) === entry;
    this.health = new ConfigHealth({
      store: opts.store,
      logger: opts.logger,
      pluginLog: opts.pluginLog,
      setupRetries: opts.setupRetries ?? 10,
      setupRetryBaseMs: opts.setupRetryBaseMs ?? 3000,
      wallTimeoutMs: this.limits.wallTimeoutMs,
      isLive,
      restart: (entry, how) => this.starter.start(entry, entry.vm!, how),
    });
    this.loader = new ConfigLoader({
      baseDir: opts.baseDir,
      logger: opts.logger,
      hostModules: hostModulesFor(fetch.enabled),
      newVm: (entry, row, code) => this.starter.newVm(entry, row, code),
    });
    this.chains = new ChainRunner({
      logger: opts.logger,
      health: this.health,
      onEnter: opts.onEnter,
      onCall: opts.onCall,
      taskIdOf: opts.taskIdOf,
      wake: (entry) => this.wake(entry),
    });
    this.lazy = new LazyStart({
      health: this.health,
      concurrency: opts.loadConcurrency ?? 4,
      onEnter: opts.onEnter,
      vmSpec: (entry, source, code) => this.starter.vmSpec(entry, source, code),
      startEntry: (entry, vm, how) => this.starter.start(entry, vm, how),
      isLive,
    });
    this.eviction = new IsolateEviction({
      logger: opts.logger,
      entries: () => this.gen.entries.values(),
      isClosed: () => this.closed,
      budgetBytes: Math.max(0, opts.isolateMemoryBudgetMb ?? 0) * 1024 * 1024,
      budgetMinIdleMs: opts.isolateBudgetMinIdleMs ?? 60_000,
      onEnter: opts.onEnter,
      onEvicted: opts.onEvicted,
    });
    this.exportRetry = new ExportRetry({
      logger: opts.logger,
      health: this.health,
      jobs: opts.jobs,
      enterTask: (entry, vm, kind, name, arg, wall) => this.enterTask(entry, vm, kind, name, arg, wall),
    });
    this.starter = new ConfigStarter({
      logger: opts.logger,
      limits: this.limits,
      hostOps: this.hostOps,
      unavailable: opts.unavailable,
      eventSinks: opts.eventSinks,
      onEnter: opts.onEnter,
      health: this.health,
      exportRetry: this.exportRetry,
      taskWallMs: this.taskWallMs,
      enterTask: (entry, vm, kind, name, arg, wall) => this.enterTask(entry, vm, kind, name, arg, wall),
      isLive,
    });
  }

  /** Resolves once every plugin error recorded so far is in the database (tests, shutdown). */
  flushErrors(): Promise<void> {
    return this.health.errors.flush();
  }

  static async create(opts: PluginManagerOptions): Promise<PluginManager> {
    const m = new PluginManager(opts);
    await m.reload();
    const idleMs = opts.isolateIdleMs ?? 0;
    if (idleMs > 0) {
      m.evictionTimer = setInterval(
        () => void m.eviction.evictIdle(idleMs),
        Math.max(100, Math.min(EVICTION_SCAN_MAX_MS, Math.floor(idleMs / 4))),
      );
      m.evictionTimer.unref();
    }
    if ((opts.isolateMemoryBudgetMb ?? 0) > 0) {
      // Isolates busy at the last check may have gone quiet since: the budget takes them without a new isolate.
      m.budgetTimer = setInterval(() => m.eviction.checkBudget(), BUDGET_SCAN_MS);
      m.budgetTimer.unref();
    }
    return m;
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
      if (e.vm && e.vm.state === 'ready')
        out.push({ id: e.id, pluginId: e.pluginId, teamId: e.teamId, name: e.name, vm: e.vm });
    }
    return out;
  }

  /**
   * Run a scheduled function (runEveryMinute/Hour/Day) or a job of a config. `null`: the config is not loaded
   * here (disabled, deleted, or failed to load). Errors are recorded like processEvent's.
   */
  async runTask(
    configId: number,
    kind: 'schedule' | 'job',
    name: string,
    payloadJson = 'null',
  ): Promise<TaskOutcome | null> {
    const entry = this.gen.entries.get(configId);
    if (!entry) return null;
    const vm = entry.vm;
    const notReady: TaskOutcome = { failed: 0, error: null, retry: false, interrupted: 'not-ready' };
    if (this.closed) return notReady; // another worker (or this one after a restart) runs it
    if (vm?.hibernated) await this.wake(entry);
    if (!vm || vm.state !== 'ready') return entry.setupRetryPending ? notReady : null; // a retry may still bring it up
    const wall = this.taskWallMs;
    if (kind === 'job' && name === EXPORT_RETRY_JOB) return this.exportRetry.run(entry, vm, payloadJson, wall);
    const outcome = await this.enterTask(entry, vm, kind, name, kind === 'job' ? [payloadJson] : [], wall);
    const what = kind === 'job' ? `job ${JSON.stringify(name)}` : name;
    if (outcome.error && !isInterruption(outcome)) this.health.recordError(entry, what, outcome.error);
    this.checkBudget();
    return outcome;
  }

  /** Every background entry into an isolate goes through onEnter too (the flight record names the config). */
  private async enterTask(
    entry: ConfigEntry,
    vm: PluginVm,
    kind: TaskKind,
    name: string,
    arg: string[],
    wall: number,
  ): Promise<TaskOutcome> {
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
      const ran = await this.chains.run(chain, teamId, events);
      if (this.opts.eventSinks) feedSinks(chain, ran);
      return ran.result;
    } finally {
      gen.active--;
      if (gen.retired && gen.active === 0) gen.onIdle?.();
      this.checkBudget();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.reloading;
    this.closed = true;
    if (this.evictionTimer) clearInterval(this.evictionTimer);
    if (this.budgetTimer) clearInterval(this.budgetTimer);
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
    this.health.stop();
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
    await Promise.race([this.health.errors.flush(), grace(bound)]);
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

  private async reloadUnlocked(): Promise<void> {
    if (this.closed) throw new Error('PluginManager is closed');
    const { store, logger } = this.opts;
    const rows = await store.loadEnabledConfigs();
    const old = this.gen;
    const { next, toStart, reused } = await this.loader.plan(rows, old);
    releaseTranspiler(); // compiling is done until the next reload

    // Start new isolates (load + setupPlugin), a few at a time; or only learn their exports (lazyIsolates).
    const concurrency = this.opts.loadConcurrency ?? 4;
    const eager = this.opts.lazyIsolates ? await this.lazy.defer(toStart) : toStart;
    await startEntries(
      eager,
      concurrency,
      (entry) => this.starter.start(entry, entry.vm!, ''),
      (id) => this.health.errors.set(id, null),
    );
    const loadErrors = [...next.entries.values()].filter((e) => e.loadError !== null);
    for (const e of loadErrors) this.health.errors.set(e.id, e.loadError);
    await this.health.errors.flush();

    if (this.closed) {
      for (const e of next.entries.values()) if (e.vm && !reused.has(e.vm)) e.vm.dispose();
      throw new Error('PluginManager was closed during reload');
    }
    // Swap in one step, then retire what the new generation does not use.
    this.gen = next;
    for (const e of next.entries.values()) if (e.retrySetup) this.health.scheduleSetupRetry(e);
    const retired = [...old.entries.values()]
      .map((e) => e.vm)
      .filter((v): v is PluginVm => v !== null && !reused.has(v));
    if (retired.length > 0) this.retire(old, retired);
    logger.info(
      `plugins loaded: ${next.entries.size} config(s) for ${next.chains.size} team(s), ${loadErrors.length} failed`,
    );
  }

  /** A call for a config without an isolate: a deferred one is created now; an evicted one by the call itself. */
  private async wake(entry: ConfigEntry): Promise<void> {
    if (!entry.vm?.hibernated) return;
    this.budgetDirty = true;
    await this.lazy.wake(entry);
  }

  private checkBudget(): void {
    if (!this.budgetDirty) return;
    this.budgetDirty = false;
    this.eviction.checkBudget();
  }

  private retire(gen: Generation, vms: PluginVm[]): void {
    const sinks = [...gen.entries.values()]
      .filter((e) => e.vm !== null && vms.includes(e.vm) && e.sink !== null)
      .map((e) => e.sink!);
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
