import type { Logger } from '../../log';
import type { LoadedPluginConfig } from '../../store/types';
import type { HostOps } from '../vm/bridge';
import {
  type ConfigEntry,
  type EnterTask,
  isInterruption,
  logMetaOf,
  type PluginLogEntry,
  toPluginError,
} from './config-entry';
import type { ConfigHealth } from './config-health';
import type { PluginCode } from './config-loader';
import { EventSink } from '../background/event-sink';
import type { ExportRetry } from './export-retry';
import { SandboxError } from '../vm/errors';
import { PluginVm, type PluginVmSpec } from '../vm/plugin-vm';
import type { PluginEvent, SandboxLimits } from '../types';

export interface ConfigStarterOptions {
  logger: Logger;
  limits: SandboxLimits;
  hostOps: HostOps;
  /** See PluginManagerOptions. */
  unavailable?: Readonly<Record<string, string>>;
  eventSinks?: boolean;
  onEnter?: (configId: number, events: readonly PluginEvent[]) => (() => void) | false | void;
  health: ConfigHealth;
  exportRetry: ExportRetry;
  taskWallMs: number;
  /** Enter the config's isolate for a background task (under crash attribution). */
  enterTask: EnterTask;
  /** The entry is in the live generation and the manager open. */
  isLive(entry: ConfigEntry): boolean;
}

/** Makes a config's VM and starts it: the spec with its host APIs and callbacks, the load logged, the sink made. */
export class ConfigStarter {
  constructor(private readonly opts: ConfigStarterOptions) {}

  private makeSink(entry: ConfigEntry, vm: PluginVm): EventSink | null {
    if (!this.opts.eventSinks || !EventSink.wanted(vm)) return null;
    return new EventSink({
      vm,
      run: (kind, arg) => this.opts.enterTask(entry, vm, kind, '', arg, this.opts.taskWallMs),
      config: entry.config,
      logger: this.opts.logger,
      logMeta: logMetaOf(entry),
      onError: (what, outcome) => {
        if (outcome.error && !isInterruption(outcome)) this.opts.health.recordError(entry, what, outcome.error);
      },
      retryExport: this.opts.exportRetry.enabled
        ? (events, retriesSoFar) => this.opts.exportRetry.schedule(entry, events, retriesSoFar)
        : undefined,
    });
  }

  newVm(entry: ConfigEntry, row: LoadedPluginConfig, code: Pick<PluginCode, 'code' | 'filename'>): PluginVm {
    return new PluginVm(this.vmSpec(entry, row, code));
  }

  vmSpec(
    entry: ConfigEntry,
    row: Pick<LoadedPluginConfig, 'config' | 'attachments'>,
    code: Pick<PluginCode, 'code' | 'filename'>,
  ): PluginVmSpec {
    return {
      configId: entry.id,
      pluginId: entry.pluginId,
      teamId: entry.teamId,
      name: entry.name,
      code: code.code,
      filename: code.filename,
      config: row.config,
      attachments: row.attachments,
      limits: this.opts.limits,
      logger: this.opts.logger,
      ops: this.opts.hostOps,
      unavailable: this.opts.unavailable,
      onSetupFailed: (err) => {
        entry.loadError = toPluginError(err.info(), undefined);
        this.opts.health.errors.set(entry.id, entry.loadError);
        if (this.opts.isLive(entry)) this.opts.health.scheduleSetupRetry(entry);
      },
      onConsole: (level, line) =>
        this.opts.health.logEntry(
          entry,
          'CONSOLE',
          level === 'log' ? 'LOG' : (level.toUpperCase() as PluginLogEntry['type']),
          line,
        ),
    };
  }

  /**
   * Start a config's isolate (load + setupPlugin) under onEnter (crash attribution), then log the outcome and keep
   * it in `entry.loadError`; a config that came up gets its onEvent/exportEvents sink. Returns the failure, if any.
   */
  async start(entry: ConfigEntry, vm: PluginVm, how: string): Promise<SandboxError | null> {
    const { logger } = this.opts;
    const meta = logMetaOf(entry);
    const leave = this.opts.onEnter?.(entry.id, []);
    try {
      await vm.start();
    } catch (err) {
      const e = err instanceof SandboxError ? err : new SandboxError('load', String(err));
      const info = e.info();
      entry.loadError = toPluginError(info, undefined);
      logger.error(
        `plugin ${entry.name} (config ${entry.id}, team ${entry.teamId}) failed to load: ${info.message}`,
        meta,
      );
      this.opts.health.logEntry(
        entry,
        'SYSTEM',
        'ERROR',
        `Plugin failed to load (config ${entry.id}, process ${process.pid}): ${info.message}`,
      );
      return e;
    } finally {
      if (leave) leave();
    }
    entry.loadError = null;
    // The sink outlives isolate recycles (it holds the VM, not the isolate): a retry after one keeps its buffer.
    entry.sink ??= this.makeSink(entry, vm);
    logger.info(`plugin ${entry.name} loaded (config ${entry.id}, team ${entry.teamId})${how}`, meta);
    this.opts.health.logEntry(
      entry,
      'SYSTEM',
      'INFO',
      `Plugin loaded (config ${entry.id}, process ${process.pid})${how}.`,
    );
    return null;
  }
}
