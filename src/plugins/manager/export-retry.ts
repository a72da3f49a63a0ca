import type { Logger } from '../../log';
import type { JobStore } from '../../store/job-store';
import { type ConfigEntry, type ConfigIdentity, type EnterTask, isInterruption, logMetaOf } from './config-entry';
import type { ConfigHealth } from './config-health';
import type { PluginVm } from '../vm/plugin-vm';
import type { TaskOutcome } from '../vm/task-call';

/** The job that retries exportEvents after RetryError (PostHog's exportEventsWithRetry). */
export const EXPORT_RETRY_JOB = '$exportEventsWithRetry';
/** PostHog gives up on an export after 15 retries, 2^(n+1)·3 s apart (~54 h in all). */
export const MAX_EXPORT_RETRIES = 15;

export interface ExportRetryOptions {
  logger: Logger;
  health: ConfigHealth;
  /** Persisted jobs; without them nothing can be retried. */
  jobs?: Pick<JobStore, 'enqueue'>;
  /** Enter the config's isolate for a background task (under crash attribution). */
  enterTask: EnterTask;
}

/** exportEvents that asked to be retried (RetryError, deadline) become persisted jobs, run again with backoff. */
export class ExportRetry {
  constructor(private readonly opts: ExportRetryOptions) {}

  get enabled(): boolean {
    return this.opts.jobs !== undefined;
  }

  /**
   * An export retry job. Interrupted by us (isolate recreated, closing): the job itself goes back to the table (the
   * job runner releases it), no new one is made. RetryError or the task deadline: the next retry is a new job.
   */
  async run(entry: ConfigEntry, vm: PluginVm, payloadJson: string, wall: number): Promise<TaskOutcome> {
    const { health } = this.opts;
    let payload: { events?: unknown; retriesPerformedSoFar?: unknown };
    try {
      payload = JSON.parse(payloadJson) as typeof payload;
      if (payload === null || typeof payload !== 'object') throw new Error('not an object');
    } catch (err) {
      const error = {
        name: 'Error',
        message: `unreadable ${EXPORT_RETRY_JOB} payload (${(err as Error).message}): dropped`,
      };
      health.recordError(entry, 'exportEvents (retry)', error);
      return { failed: 1, retry: false, interrupted: null, error };
    }
    const events = Array.isArray(payload.events)
      ? payload.events.filter((e): e is string => typeof e === 'string')
      : [];
    const retries = typeof payload.retriesPerformedSoFar === 'number' ? payload.retriesPerformedSoFar : 0;
    const outcome: TaskOutcome = vm.exports.exportEvents
      ? await this.opts.enterTask(entry, vm, 'exportEvents', '', events, wall)
      : {
          failed: 1,
          retry: false,
          interrupted: null,
          error: { name: 'Error', message: 'the plugin no longer exports exportEvents' },
        };
    if (isInterruption(outcome)) return outcome;
    if (outcome.error && !outcome.retry) health.recordError(entry, 'exportEvents (retry)', outcome.error);
    if (outcome.retry || outcome.interrupted === 'deadline') await this.schedule(entry, events, retries + 1);
    return outcome;
  }

  /** exportEvents asked to be retried: a persisted job, 2^(n+1)·3 s later, at most MAX_EXPORT_RETRIES times. */
  async schedule(entry: ConfigIdentity, events: string[], retriesSoFar: number): Promise<void> {
    const jobs = this.opts.jobs;
    const meta = logMetaOf(entry);
    if (!jobs) throw new Error('no job store');
    if (retriesSoFar >= MAX_EXPORT_RETRIES) {
      this.opts.logger.error(
        `exportEvents of ${events.length} event(s) still failing after ${retriesSoFar} retries: giving up on them`,
        meta,
      );
      this.opts.health.logEntry(
        entry,
        'SYSTEM',
        'ERROR',
        `exportEvents gave up on ${events.length} event(s) after ${retriesSoFar} retries`,
      );
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
    this.opts.logger.info(
      `exportEvents of ${events.length} event(s) will be retried in ${delayMs / 1000} s (retry ${retriesSoFar + 1} of ${MAX_EXPORT_RETRIES})`,
      meta,
    );
  }
}
