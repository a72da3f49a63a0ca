import type { Logger } from '../../log';
import { type ConfigEntry, logMetaOf } from './config-entry';
import type { PluginVm } from '../vm/plugin-vm';

/** What an isolate holds beyond its used heap (V8's per-isolate structures): ~0.75 MB measured with a tiny plugin. */
const ISOLATE_BASE_BYTES = 768 * 1024;
/** A live isolate's heap size is measured again when its last measurement is older than this. */
const HEAP_SAMPLE_MAX_AGE_MS = 10_000;

export interface IsolateEvictionOptions {
  logger: Logger;
  /** The configs of the live generation. */
  entries(): Iterable<ConfigEntry>;
  isClosed(): boolean;
  /** Isolates of this process may hold about this many bytes; the least recently used go first. 0 = no budget. */
  budgetBytes: number;
  /**
   * The budget only takes isolates without a call for this long: when more configs are busy at once than fit, the
   * process goes over the budget rather than recreating an isolate (load + setupPlugin, ~5 ms) per call. Seconds are
   * not enough: creating a thousand isolates at start takes that long, and once recreations slow the batches down,
   * every config waits longer for its next call, is evicted, and so on.
   */
  budgetMinIdleMs: number;
  /** See PluginManagerOptions.onEnter: teardownPlugin runs in the isolate (crash attribution). */
  onEnter?: (configId: number, events: readonly never[]) => (() => void) | false | void;
  onEvicted?: (configId: number) => void;
}

/**
 * Takes isolates away from configs that can get them back on their next call (teardownPlugin, dispose; the next
 * call creates a new one with load + setupPlugin): those idle for a while, and the least recently used ones while
 * the process's isolates hold more than the memory budget. One config at a time, each under the VM's own lock, so a
 * call arriving meanwhile either runs first (and keeps the isolate) or wakes it.
 */
export class IsolateEviction {
  private running = false;
  private budgetAgain = false;
  private readonly heaps = new WeakMap<PluginVm, { bytes: number; atMs: number }>();

  constructor(private readonly opts: IsolateEvictionOptions) {}

  /** Evict the isolates idle for `idleMs`. */
  async evictIdle(idleMs: number): Promise<void> {
    await this.exclusive(async () => {
      const cutoff = Date.now() - idleMs;
      for (const entry of [...this.opts.entries()]) {
        if (this.opts.isClosed()) break;
        const vm = entry.vm;
        if (!vm || !evictable(entry, vm) || vm.lastUsedMs > cutoff) continue;
        const idleS = Math.round((Date.now() - vm.lastUsedMs) / 1000);
        await this.evict(entry, vm, `after ${idleS} s without calls`);
      }
    });
  }

  /** Isolates were created: evict the least recently used while over the budget (in the background). */
  checkBudget(): void {
    if (this.opts.budgetBytes <= 0 || this.opts.isClosed()) return;
    if (this.running) {
      this.budgetAgain = true;
      return;
    }
    void this.exclusive(() => this.enforceBudget()).then(() => {
      if (!this.budgetAgain) return;
      this.budgetAgain = false;
      this.checkBudget();
    });
  }

  private async enforceBudget(): Promise<void> {
    const live: Array<{ entry: ConfigEntry; vm: PluginVm; bytes: number }> = [];
    for (const entry of this.opts.entries()) {
      const vm = entry.vm;
      if (vm && vm.state === 'ready' && !vm.hibernated) live.push({ entry, vm, bytes: await this.bytesOf(vm) });
    }
    let total = live.reduce((t, l) => t + l.bytes, 0);
    if (total <= this.opts.budgetBytes) return;
    const mb = Math.round(this.opts.budgetBytes / 1048576);
    live.sort((a, b) => a.vm.lastUsedMs - b.vm.lastUsedMs);
    const cutoff = Date.now() - this.opts.budgetMinIdleMs;
    for (const { entry, vm, bytes } of live) {
      if (total <= this.opts.budgetBytes || this.opts.isClosed() || vm.lastUsedMs > cutoff) break; // the rest are busy
      if (!evictable(entry, vm)) continue;
      if (await this.evict(entry, vm, `(least recently used while the isolates held more than the ${mb} MB budget)`))
        total -= bytes;
    }
  }

  /** An isolate's estimated size: its used heap (sampled now and then) plus V8's fixed part. */
  private async bytesOf(vm: PluginVm): Promise<number> {
    const now = Date.now();
    const seen = this.heaps.get(vm);
    if (seen && now - seen.atMs < HEAP_SAMPLE_MAX_AGE_MS) return seen.bytes;
    const bytes = ((await vm.heapUsedBytes().catch(() => null)) ?? 0) + ISOLATE_BASE_BYTES;
    this.heaps.set(vm, { bytes, atMs: now });
    return bytes;
  }

  private async evict(entry: ConfigEntry, vm: PluginVm, why: string): Promise<boolean> {
    const leave = this.opts.onEnter?.(entry.id, []);
    let evicted = false;
    try {
      evicted = await vm.hibernate();
    } finally {
      if (leave) leave();
    }
    if (!evicted) return false;
    this.heaps.delete(vm);
    this.opts.onEvicted?.(entry.id);
    this.opts.logger.info(
      `plugin ${entry.name} (config ${entry.id}, team ${entry.teamId}): isolate evicted ${why}; the next call recreates it`,
      logMetaOf(entry),
    );
    return true;
  }

  private async exclusive(fn: () => Promise<void>): Promise<void> {
    if (this.running || this.opts.isClosed()) return;
    this.running = true;
    try {
      await fn();
    } catch (err) {
      this.opts.logger.warn(`evicting isolates failed: ${(err as Error).message}`);
    } finally {
      this.running = false;
    }
  }
}

/**
 * Whether the config can lose its isolate now. Not with runEveryMinute (the scheduler would wake it within the
 * minute), nor onEvent/exportEvents (their events arrive without a processEvent call to wake the isolate first, and
 * a shutdown must still export what is buffered).
 */
function evictable(entry: ConfigEntry, vm: PluginVm): boolean {
  if (vm.state !== 'ready' || vm.hibernated || !vm.idle) return false;
  return !vm.exports.runEveryMinute && entry.sink === null;
}
