import type { JsonObject } from '../../../protocol/types';
import type { Logger } from '../../log';
import type { PluginVm } from '../vm/plugin-vm';
import type { TaskOutcome } from '../vm/task-call';

/**
 * What happens to one plugin config's events after the chain: `onEvent(event, meta)` for each, and
 * `exportEvents(events, meta)` over a buffer flushed by size and age (PostHog's exportEvents "upgrade":
 * exportEventsBufferBytes, exportEventsBufferSeconds, exportEventsToIgnore). Neither blocks the output of the
 * events: they run in the background, one call at a time per config, next to processEvent.
 *
 * Both are in memory: events waiting here when the process is killed are not exported (the events themselves
 * reached Python). A clean stop flushes them (bounded by the shutdown grace).
 */

export interface SinkEvent {
  /** The final event JSON. */
  json: string;
  /** Its `event` name (for exportEventsToIgnore). */
  name: string | undefined;
}

export interface EventSinkOptions {
  /** Whose onEvent/exportEvents (its exports decide what runs). */
  vm: PluginVm;
  /** Enters the isolate for one background call (the manager records it for crash attribution). */
  run(kind: 'onEvent' | 'exportEvents', arg: string[]): Promise<TaskOutcome>;
  config: JsonObject;
  logger: Logger;
  logMeta: Readonly<Record<string, unknown>>;
  /** A call failed (plugin error, limit, or interrupted by the worker): record what is the plugin's. */
  onError(what: 'onEvent' | 'exportEvents', outcome: TaskOutcome): void;
  /**
   * exportEvents threw RetryError (or could not run): retry this batch later (persisted job). Absent: the batch is
   * dropped with a warning.
   */
  retryExport?: (events: string[], retriesSoFar: number) => Promise<void>;
  /** Events waiting for onEvent before the oldest are dropped (default 10,000). */
  maxQueuedEvents?: number;
  /** Export batches waiting for their call before the oldest is dropped (default 20). */
  maxQueuedBatches?: number;
}

const MIB = 1024 * 1024;
/** onEvent calls per isolate entry. */
const ON_EVENT_PER_ENTRY = 10;

/** PostHog's parsing of the export buffer settings (strings from the UI), clamped to its ranges. */
export function exportSettings(config: JsonObject): { bufferBytes: number; bufferMs: number; ignore: Set<string> } {
  const num = (v: unknown, dflt: number, min: number, max: number): number => {
    const n = typeof v === 'number' ? v : typeof v === 'string' ? parseInt(v, 10) : NaN;
    return Number.isFinite(n) && n > 0 ? Math.min(max, Math.max(min, n)) : dflt;
  };
  const ignore =
    typeof config.exportEventsToIgnore === 'string'
      ? config.exportEventsToIgnore
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== '')
      : [];
  return {
    bufferBytes: num(config.exportEventsBufferBytes, MIB, 1, 100 * MIB),
    bufferMs: num(config.exportEventsBufferSeconds, 10, 1, 600) * 1000,
    ignore: new Set(ignore),
  };
}

export class EventSink {
  private readonly onEvent: boolean;
  private readonly exportEvents: boolean;
  private readonly settings: ReturnType<typeof exportSettings>;
  private readonly onEventQueue: string[] = [];
  private onEventRunning: Promise<void> | null = null;
  private buffer: string[] = [];
  private bufferBytes = 0;
  private timer: NodeJS.Timeout | null = null;
  private readonly batches: string[][] = [];
  private exportRunning: Promise<void> | null = null;
  private dropped = 0;
  private closed = false;
  private paused = false;

  constructor(private readonly opts: EventSinkOptions) {
    this.onEvent = opts.vm.exports.onEvent;
    this.exportEvents = opts.vm.exports.exportEvents;
    this.settings = exportSettings(opts.config);
  }

  /** Whether this config has anything to do with processed events. */
  static wanted(vm: PluginVm): boolean {
    return vm.exports.onEvent || vm.exports.exportEvents;
  }

  push(events: readonly SinkEvent[]): void {
    if (this.closed || events.length === 0) return;
    if (this.onEvent) {
      for (const e of events) this.onEventQueue.push(e.json);
      const max = this.opts.maxQueuedEvents ?? 10_000;
      if (this.onEventQueue.length > max)
        this.drop(this.onEventQueue.splice(0, this.onEventQueue.length - max).length, 'onEvent');
      if (!this.paused) this.onEventRunning ??= this.drainOnEvent();
    }
    if (this.exportEvents) {
      for (const e of events) {
        if (e.name !== undefined && this.settings.ignore.has(e.name)) continue;
        this.buffer.push(e.json);
        this.bufferBytes += Buffer.byteLength(e.json);
        if (this.bufferBytes >= this.settings.bufferBytes) this.cutBatch();
      }
      if (this.buffer.length > 0 && this.timer === null) {
        this.timer = setTimeout(() => this.cutBatch(), this.settings.bufferMs);
        this.timer.unref();
      }
    }
  }

  /** Export what is buffered now and wait until every queued call has run. */
  async flush(): Promise<void> {
    this.cutBatch();
    while (this.onEventRunning || this.exportRunning) await Promise.all([this.onEventRunning, this.exportRunning]);
  }

  /** Resolves when no call is running (after close(), the last ones may still end, e.g. interrupted). */
  async settled(): Promise<void> {
    await Promise.all([this.onEventRunning, this.exportRunning]);
  }

  /** Stop feeding calls: those running finish, nothing new starts (close() then keeps what is left). */
  pause(): void {
    this.paused = true;
  }

  /** Events still waiting (tests, shutdown messages). */
  get waiting(): number {
    return this.onEventQueue.length + this.buffer.length + this.batches.reduce((n, b) => n + b.length, 0);
  }

  /**
   * Stop taking events. Export batches still waiting become retry jobs (so a clean stop or a reload does not lose
   * them); onEvent calls still waiting are dropped, with a warning.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.cutBatch();
    this.closed = true;
    const batches = this.batches.splice(0);
    const onEventLeft = this.onEventQueue.splice(0).length;
    if (onEventLeft > 0)
      this.opts.logger.warn(
        `${onEventLeft} event(s) were still waiting for onEvent when the plugin was unloaded; onEvent does not see them`,
        this.opts.logMeta,
      );
    const retry = this.opts.retryExport;
    if (batches.length === 0) return;
    if (!retry) {
      const n = batches.reduce((sum, b) => sum + b.length, 0);
      this.opts.logger.warn(
        `${n} event(s) were still waiting for exportEvents when the plugin was unloaded; there is no job store to keep them`,
        this.opts.logMeta,
      );
      return;
    }
    for (const b of batches) {
      try {
        await retry(b, 0);
      } catch (err) {
        this.opts.logger.error(
          `could not keep ${b.length} event(s) waiting for exportEvents: ${(err as Error).message}`,
          this.opts.logMeta,
        );
      }
    }
  }

  private drop(n: number, what: string): void {
    this.dropped += n;
    this.opts.logger.warn(
      `${what} cannot keep up: dropped ${n} event(s) (${this.dropped} so far); they reached Python but not this plugin`,
      this.opts.logMeta,
    );
  }

  private cutBatch(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.buffer.length === 0) return;
    this.batches.push(this.buffer);
    this.buffer = [];
    this.bufferBytes = 0;
    const max = this.opts.maxQueuedBatches ?? 20;
    while (this.batches.length > max) this.drop(this.batches.shift()!.length, 'exportEvents');
    if (!this.paused) this.exportRunning ??= this.drainExports();
  }

  private async drainOnEvent(): Promise<void> {
    try {
      while (this.onEventQueue.length > 0 && !this.closed && !this.paused) {
        // A few events per entry: a synchronous onEvent shares the isolate's CPU limit per entry.
        const batch = this.onEventQueue.splice(0, ON_EVENT_PER_ENTRY);
        const outcome = await this.opts.run('onEvent', batch);
        if (outcome.error) this.opts.onError('onEvent', outcome);
      }
    } finally {
      this.onEventRunning = null;
    }
  }

  private async drainExports(): Promise<void> {
    try {
      while (this.batches.length > 0 && !this.closed && !this.paused) {
        const batch = this.batches.shift()!;
        const outcome = await this.opts.run('exportEvents', batch);
        await this.afterExport(batch, outcome);
      }
    } finally {
      this.exportRunning = null;
    }
  }

  /** RetryError, or a call that never got its answer (isolate recreated, deadline): retry later. */
  private async afterExport(batch: string[], outcome: TaskOutcome): Promise<void> {
    const retryable = outcome.retry || (outcome.interrupted !== null && outcome.interrupted !== 'limit');
    if (outcome.error && !outcome.retry) this.opts.onError('exportEvents', outcome);
    if (!retryable) return;
    if (!this.opts.retryExport) {
      this.opts.logger.warn(
        `exportEvents asked for a retry of ${batch.length} event(s), but this worker has no job store: they are not exported`,
        this.opts.logMeta,
      );
      return;
    }
    try {
      await this.opts.retryExport(batch, 0);
    } catch (err) {
      this.opts.logger.error(
        `could not schedule the retry of exportEvents for ${batch.length} event(s): ${(err as Error).message}`,
        this.opts.logMeta,
      );
    }
  }
}
