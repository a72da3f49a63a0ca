import type { Logger } from '../../log';
import type { LiveConfig, PluginManager } from '../manager/plugin-manager';
import { periodStart, type ScheduleLock, type ScheduledTask } from './schedule-lock';

const TASKS: readonly ScheduledTask[] = ['runEveryMinute', 'runEveryHour', 'runEveryDay'];

export interface SchedulerOptions {
  manager: PluginManager;
  /**
   * Decides across every worker process on every machine which one runs a config's task for a period (Redis).
   * null: no Redis, this process is the only one that runs schedules (the worker arranges that).
   */
  lock: Pick<ScheduleLock, 'tryStart'> | null;
  logger: Logger;
  /** How long one run may hold the "still running" mark (the task's wall-clock limit plus a margin). */
  maxRunMs: number;
  /** How often periods are checked (default 1 s). */
  tickMs?: number;
}

/**
 * runEveryMinute / runEveryHour / runEveryDay. Every second each worker looks at its live configs; a task whose
 * UTC period (minute, hour, day) has not been tried here yet asks the lock; only the winner runs it. A run that
 * is still going when the next period starts makes that period's run skipped (PostHog's debounce), here and on
 * every other worker. A task runs in its period's first second or, after a start, at once if nobody ran it in
 * the current period yet.
 */
export class Scheduler {
  private timer: NodeJS.Timeout | null = null;
  /** config/task → start of the period last tried by this process. */
  private readonly tried = new Map<string, number>();
  private readonly running = new Map<string, Promise<void>>();
  private lastLockWarning = 0;

  constructor(private readonly opts: SchedulerOptions) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), this.opts.tickMs ?? 1000);
    this.timer.unref();
    this.tick();
  }

  /** Start nothing more and wait for the runs in progress. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await Promise.all(this.running.values());
  }

  private tick(): void {
    const now = new Date();
    for (const config of this.opts.manager.liveConfigs()) {
      for (const task of TASKS) {
        if (!config.vm.exports[task]) continue;
        const key = `${config.id}/${task}`;
        const period = periodStart(task, now).getTime();
        if (this.tried.get(key) === period) continue;
        this.tried.set(key, period);
        if (this.running.has(key)) {
          this.opts.logger.info(
            `${task} of plugin ${config.name} (config ${config.id}) skipped this period: the previous run is still going`,
            meta(config),
          );
          continue;
        }
        const run = this.runOne(config, task, period, key).finally(() => this.running.delete(key));
        this.running.set(key, run);
      }
    }
  }

  private async runOne(config: LiveConfig, task: ScheduledTask, period: number, key: string): Promise<void> {
    const { lock, logger, manager } = this.opts;
    let release: (() => Promise<void>) | null = null;
    if (lock) {
      try {
        const r = await lock.tryStart(config.id, task, new Date(period), this.opts.maxRunMs);
        if (!r.ok) {
          if (r.reason === 'still-running')
            logger.info(
              `${task} of plugin ${config.name} (config ${config.id}) skipped this period: its previous run is still going elsewhere`,
              meta(config),
            );
          return;
        }
        release = r.release;
      } catch (err) {
        // Redis unreachable: try again on the next tick rather than run without the lock.
        this.tried.delete(key);
        if (Date.now() - this.lastLockWarning > 60_000) {
          this.lastLockWarning = Date.now();
          logger.warn(
            `cannot take the schedule lock (${(err as Error).message}); scheduled plugin tasks wait until Redis is back`,
          );
        }
        return;
      }
    }
    const started = Date.now();
    try {
      const outcome = await manager.runTask(config.id, 'schedule', task);
      if (outcome)
        logger.info(
          `${task} of plugin ${config.name} (config ${config.id}) ${outcome.error ? 'failed' : 'ran'} in ${Date.now() - started} ms`,
          meta(config),
        );
    } finally {
      if (release)
        await release().catch((err: Error) =>
          logger.warn(`could not release the schedule lock of config ${config.id}: ${err.message}`),
        );
    }
  }
}

function meta(config: LiveConfig): Record<string, unknown> {
  return { pluginConfigId: config.id, pluginId: config.pluginId, teamId: config.teamId, plugin: config.name };
}
