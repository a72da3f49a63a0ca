import type { Logger } from '../../log';
import type { JobStore } from '../../store/job-store';
import type { PluginStore } from '../../store/plugin-store';
import type { HostOp } from '../vm/bridge';
import type { PluginLogSink } from './config-entry';
import type { PluginVm } from '../vm/plugin-vm';
import type { FetchOptions, PluginEvent, SandboxLimits } from '../types';

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
  /**
   * Create a config's isolate on its first call (processEvent, a scheduled task, a job) instead of at (re)load.
   * Configs with onEvent, exportEvents or runEveryMinute are still started at load (they are never evicted either).
   */
  lazyIsolates?: boolean;
  /** Isolates of this process may hold about this much; the least recently used are evicted past it. 0 = no budget. */
  isolateMemoryBudgetMb?: number;
  /** Isolates with a call in this long are kept whatever the budget (default 1 min; see IsolateEvictionOptions). */
  isolateBudgetMinIdleMs?: number;
  /** After each processEvent(Batch) call of a chain step: for metrics. */
  onCall?: (
    config: { id: number; name: string },
    seconds: number,
    outcome: { errors: number; recreated: number },
  ) => void;
  /** An idle isolate was evicted. */
  onEvicted?: (configId: number) => void;
  /** The Celery task id an event came in with, for log lines (logs, metrics and Celery events join on it). */
  taskIdOf?: (event: PluginEvent) => string | undefined;
}

/** A loaded config, for the scheduler and the job runner. */
export interface LiveConfig {
  id: number;
  pluginId: number;
  teamId: number;
  name: string;
  vm: PluginVm;
}
