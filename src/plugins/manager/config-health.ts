import type { Logger } from '../../log';
import type { PluginStore } from '../../store/plugin-store';
import {
  type ConfigEntry,
  type ConfigIdentity,
  logMetaOf,
  type PluginLogEntry,
  type PluginLogSink,
  toPluginError,
} from './config-entry';
import { ConfigErrorWriter } from './error-writer';
import type { SandboxError } from '../vm/errors';
import type { SandboxErrorInfo } from '../types';

/** processEvent calls in a row that hit the wall-clock deadline before the config is paused (see noteHangs). */
const HANG_LIMIT = 2;
const PAUSE_BASE_MS = 60_000;
const PAUSE_MAX_MS = 30 * 60_000;

export interface ConfigHealthOptions {
  store: PluginStore;
  logger: Logger;
  pluginLog?: PluginLogSink;
  /** setupPlugin failures retried before the config is disabled (0 = never retry, never disable). */
  setupRetries: number;
  /** First setupPlugin retry after this long, doubling each time. */
  setupRetryBaseMs: number;
  /** processEvent's wall-clock limit, for the pause message. */
  wallTimeoutMs: number;
  /** Whether a scheduled setup retry should still run: the entry is in the live generation, the manager open. */
  isLive(entry: ConfigEntry): boolean;
  /** Start the entry's isolate again (load + setupPlugin); resolves to the failure, if any. */
  restart(entry: ConfigEntry, how: string): Promise<SandboxError | null>;
}

/**
 * What goes wrong with a config and what it leads to: errors into posthog_pluginconfig.error and the plugin log,
 * setupPlugin retries with backoff (then disabling the config), and pausing a config whose processEvent hangs.
 */
export class ConfigHealth {
  readonly errors: ConfigErrorWriter;
  private readonly setupTimers = new Set<NodeJS.Timeout>();
  private stopped = false;

  constructor(private readonly opts: ConfigHealthOptions) {
    this.errors = new ConfigErrorWriter(opts.store, opts.logger);
  }

  /** No more setup retries (shutdown). */
  stop(): void {
    this.stopped = true;
    for (const t of this.setupTimers) clearTimeout(t);
    this.setupTimers.clear();
  }

  logEntry(
    entry: Omit<ConfigIdentity, 'name'>,
    source: PluginLogEntry['source'],
    type: PluginLogEntry['type'],
    message: string,
  ): void {
    this.opts.pluginLog?.add({
      teamId: entry.teamId,
      pluginId: entry.pluginId,
      pluginConfigId: entry.id,
      source,
      type,
      message,
    });
  }

  /** A failure outside processEvent: logged, stored in posthog_pluginconfig.error, and a plugin log entry. */
  recordError(entry: ConfigIdentity, what: string, info: SandboxErrorInfo): void {
    this.opts.logger.warn(
      `plugin ${entry.name} (config ${entry.id}, team ${entry.teamId}): ${what} failed: ${info.name}: ${info.message}`,
      logMetaOf(entry),
    );
    this.logEntry(entry, 'PLUGIN', 'ERROR', `${what} failed: ${info.name}: ${info.message}`);
    this.errors.set(entry.id, toPluginError(info, undefined));
  }

  /**
   * A processEvent that never settles costs the wall-clock deadline on every call (and again for each event of
   * the event-by-event rerun), stalling every team in the batch behind it. After HANG_LIMIT such calls in a row
   * the config is skipped for a minute, then two, four… up to 30 minutes; one call that finishes resets it.
   */
  noteHangs(entry: ConfigEntry, deadlines: number): void {
    if (deadlines === 0) {
      entry.hangs = 0;
      entry.pauses = 0;
      return;
    }
    if (++entry.hangs < HANG_LIMIT) return;
    const ms = Math.min(PAUSE_MAX_MS, PAUSE_BASE_MS * 2 ** entry.pauses);
    entry.pauses++;
    entry.pausedUntil = Date.now() + ms;
    const message = `processEvent hit the wall-clock deadline (${this.opts.wallTimeoutMs} ms) in ${entry.hangs} calls in a row: skipping this plugin for ${ms / 1000} s; events pass it unchanged meanwhile`;
    this.opts.logger.error(
      `plugin ${entry.name} (config ${entry.id}, team ${entry.teamId}): ${message}`,
      logMetaOf(entry),
    );
    this.logEntry(entry, 'SYSTEM', 'ERROR', message);
    this.errors.set(entry.id, { message, time: new Date().toISOString(), name: 'PluginPausedError' });
  }

  /**
   * setupPlugin failed: try again after 3 s, 6 s, 12 s… (PostHog's backoff); after `setupRetries` failures in a row
   * the config is disabled with its error. Events meanwhile go on without this plugin (its error says why).
   */
  scheduleSetupRetry(entry: ConfigEntry): void {
    const { logger, store } = this.opts;
    const max = this.opts.setupRetries;
    const meta = logMetaOf(entry);
    entry.setupFailures++;
    entry.setupRetryPending = false;
    if (max <= 0 || this.stopped || !entry.vm) return;
    if (entry.setupFailures > max) {
      const error = entry.loadError ?? { message: 'setupPlugin failed', time: new Date().toISOString() };
      logger.error(
        `plugin ${entry.name} (config ${entry.id}) failed setupPlugin ${entry.setupFailures} times in a row: disabling it`,
        meta,
      );
      this.logEntry(
        entry,
        'SYSTEM',
        'ERROR',
        `Plugin disabled after ${entry.setupFailures} failed setupPlugin attempts: ${error.message}`,
      );
      store
        .disable(entry.id, error)
        .catch((e: unknown) =>
          logger.error(`could not disable plugin config ${entry.id}: ${(e as Error).message}`, logMetaOf(entry)),
        );
      return;
    }
    const delayMs = this.opts.setupRetryBaseMs * 2 ** (entry.setupFailures - 1);
    logger.warn(
      `plugin ${entry.name} (config ${entry.id}): setupPlugin failed (${entry.setupFailures} of ${max + 1} attempts); retrying in ${delayMs} ms`,
      meta,
    );
    entry.setupRetryPending = true;
    const timer = setTimeout(() => {
      this.setupTimers.delete(timer);
      if (this.stopped || !this.opts.isLive(entry) || !entry.vm) return; // reloaded or closed since
      void this.opts.restart(entry, ' after retrying setupPlugin').then((err) => {
        entry.setupRetryPending = false;
        this.errors.set(entry.id, entry.loadError);
        if (err === null) entry.setupFailures = 0;
        else if (err.kind === 'setup') this.scheduleSetupRetry(entry);
      });
    }, delayMs);
    timer.unref();
    this.setupTimers.add(timer);
  }
}
