import type { LoadedPluginConfig } from '../../store/types';
import type { ConfigEntry } from './config-entry';
import type { ConfigHealth } from './config-health';
import { inPool, type LoadPlan, type PluginCode } from './config-loader';
import type { ExportsInfo } from '../vm/driver-client';
import type { SandboxError } from '../vm/errors';
import { PluginVm, type PluginVmSpec } from '../vm/plugin-vm';

export interface LazyStartOptions {
  health: ConfigHealth;
  /** Code loads at once when learning exports. */
  concurrency: number;
  /** See PluginManagerOptions.onEnter (loads run plugin code: crash attribution). */
  onEnter?: (configId: number, events: readonly never[]) => (() => void) | false | void;
  /** The spec a config's VM is made from. */
  vmSpec(
    entry: ConfigEntry,
    source: Pick<LoadedPluginConfig, 'config' | 'attachments'>,
    code: PluginCode,
  ): PluginVmSpec;
  /** Start the entry's isolate (load + setupPlugin), log and keep the outcome; resolves to the failure, if any. */
  startEntry(entry: ConfigEntry, vm: PluginVm, how: string): Promise<SandboxError | null>;
  /** The entry is in the live generation and the manager open. */
  isLive(entry: ConfigEntry): boolean;
}

/**
 * Configs whose isolate is created on their first call (PluginManagerOptions.lazyIsolates): what is known of them
 * without an isolate (their exports) and their first start.
 */
export class LazyStart {
  /** First starts in progress, shared by the calls that wait for them. */
  private readonly firstStarts = new WeakMap<PluginVm, Promise<void>>();

  constructor(private readonly opts: LazyStartOptions) {}

  /**
   * lazyIsolates: the new VMs of configs that can wait get their exports from one load of their code without
   * setupPlugin (one per distinct code, disposed right away) and no isolate until their first call (see wake).
   * Returns the entries to start now: those that cannot wait, and those whose code did not load (they fail again
   * on their own, and are reported as any failed load).
   */
  async defer(toStart: LoadPlan['toStart']): Promise<LoadPlan['toStart']> {
    const byCode = new Map<string, LoadPlan['toStart']>();
    for (const item of toStart) {
      const key = `${item.code.hash}\0${item.code.filename}`;
      const same = byCode.get(key);
      if (same) same.push(item);
      else byCode.set(key, [item]);
    }
    const eager: LoadPlan['toStart'] = [];
    await inPool([...byCode.values()], this.opts.concurrency, async (items) => {
      const exports = await this.exportsOf(items[0]);
      for (const item of items) {
        if (exports === null || exports.onEvent || exports.exportEvents || exports.runEveryMinute) {
          eager.push(item);
          continue;
        }
        item.entry.vm!.defer(exports);
        item.entry.clearErrorOnStart = item.hadError;
      }
    });
    return eager;
  }

  /** A plugin's exports from loading its code once without setupPlugin (attributed to the config); null if it fails. */
  private async exportsOf({ entry, code }: LoadPlan['toStart'][number]): Promise<ExportsInfo | null> {
    const probe = new PluginVm({
      ...this.opts.vmSpec(entry, { config: entry.config, attachments: [] }, code),
      setup: false,
    });
    const leave = this.opts.onEnter?.(entry.id, []);
    try {
      await probe.start();
      return probe.exports;
    } catch {
      return null;
    } finally {
      if (leave) leave();
      probe.dispose();
    }
  }

  /**
   * A deferred config's first call: its isolate is created now (load + setupPlugin), once, however many calls wait
   * for it; failures are recorded and retried as at load. An evicted isolate is recreated by the call itself.
   */
  async wake(entry: ConfigEntry): Promise<void> {
    const vm = entry.vm;
    if (!vm || !vm.hibernated || vm.generation > 0) return;
    let first = this.firstStarts.get(vm);
    if (!first) {
      first = this.opts.startEntry(entry, vm, ' on first use').then((err) => {
        this.firstStarts.delete(vm);
        if (err === null) {
          if (entry.clearErrorOnStart) this.opts.health.errors.set(entry.id, null);
          entry.clearErrorOnStart = false;
          return;
        }
        this.opts.health.errors.set(entry.id, entry.loadError);
        if (err.kind === 'setup' && this.opts.isLive(entry)) this.opts.health.scheduleSetupRetry(entry);
      });
      this.firstStarts.set(vm, first);
    }
    await first;
  }
}
