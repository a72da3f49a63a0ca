import type { Logger } from '../../log';
import type { ClaimedJob, JobStore } from '../../store/job-store';
import type { PluginManager } from '../manager/plugin-manager';

export interface JobRunnerOptions {
  manager: Pick<PluginManager, 'runTask'>;
  jobs: Pick<JobStore, 'claimDue' | 'complete' | 'release'>;
  /** This process, as the lock holder of the jobs it runs. */
  workerId: string;
  logger: Logger;
  /**
   * How long a claimed job is ours. Longer than a task may run (the task wall-clock limit): a job is only ever
   * taken by another worker when its holder died.
   */
  leaseMs: number;
  /** Database poll interval when no job is due (default 500 ms). */
  pollMs?: number;
  /** Jobs running at once (default 10). */
  concurrency?: number;
  /** Claims of one job (each ended by a dead or stopping worker) before it is given up (default 5). */
  maxAttempts?: number;
  /** A job whose plugin is not running yet (setupPlugin being retried) is tried again after this long (default 30 s). */
  notReadyDelayMs?: number;
}

/**
 * Runs plugin jobs (`meta.jobs.NAME(payload).runIn(…)`) from the job table: claims due jobs under a lease, runs
 * each in its config's isolate, deletes it when it ran (successfully or not: like PostHog, a failing job is
 * recorded, not retried; exportEvents retries are jobs of their own). A job whose run was cut short by this
 * worker (isolate recreated or closed, shutdown) is given back to run again; a worker that dies leaves it to its
 * lease. So a job runs once, or again after a crash in the middle of it. Up to `concurrency` jobs run at once;
 * a free slot is refilled at once, so one slow job never holds up the others.
 */
export class JobRunner {
  private stopped = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private readonly running = new Set<Promise<void>>();
  private lastDbWarning = 0;

  constructor(private readonly opts: JobRunnerOptions) {}

  start(): void {
    this.loop ??= this.run();
  }

  /** Claim nothing more; resolves when the jobs in hand have ended (closing the plugins cuts them short). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    await Promise.all(this.running);
  }

  private async run(): Promise<void> {
    const { jobs, workerId, leaseMs, logger } = this.opts;
    const pollMs = this.opts.pollMs ?? 500;
    const concurrency = Math.max(1, this.opts.concurrency ?? 10);
    while (!this.stopped) {
      if (this.running.size >= concurrency) {
        await Promise.race(this.running);
        continue;
      }
      let claimed: ClaimedJob[] = [];
      try {
        claimed = await jobs.claimDue(workerId, concurrency - this.running.size, leaseMs);
      } catch (err) {
        if (Date.now() - this.lastDbWarning > 60_000) {
          this.lastDbWarning = Date.now();
          logger.warn(`cannot read plugin jobs: ${(err as Error).message}; retrying`);
        }
      }
      if (this.stopped) {
        // Claimed while stopping: not ours to run any more.
        for (const job of claimed) await this.giveBack(job, 0, true);
        break;
      }
      if (claimed.length === 0) {
        await this.sleep(pollMs);
        continue;
      }
      for (const job of claimed) {
        const p = this.runOne(job).finally(() => {
          this.running.delete(p);
          this.wake?.();
        });
        this.running.add(p);
      }
    }
  }

  private async runOne(job: ClaimedJob): Promise<void> {
    const { manager, jobs, workerId, logger } = this.opts;
    const meta = { pluginConfigId: job.pluginConfigId, teamId: job.teamId, job: job.name, jobId: job.id };
    const maxAttempts = this.opts.maxAttempts ?? 5;
    try {
      if (job.attempts > maxAttempts) {
        logger.error(
          `plugin job ${JSON.stringify(job.name)} (#${job.id}) given up: ${job.attempts - 1} earlier runs never finished (the worker died or stopped during each)`,
          meta,
        );
        await jobs.complete(job.id, workerId);
        return;
      }
      const outcome = await manager.runTask(job.pluginConfigId, 'job', job.name, job.payloadJson);
      if (outcome === null) {
        logger.warn(
          `plugin job ${JSON.stringify(job.name)} (#${job.id}) dropped: plugin config ${job.pluginConfigId} is not enabled or did not load`,
          meta,
        );
        await jobs.complete(job.id, workerId);
      } else if (outcome.interrupted === 'not-ready') {
        await this.giveBack(job, this.opts.notReadyDelayMs ?? 30_000, true);
      } else if (outcome.interrupted === 'disposed') {
        await this.giveBack(job, 1000, false);
      } else {
        await jobs.complete(job.id, workerId);
      }
    } catch (err) {
      // The database went away mid-job: the lease brings the job back.
      logger.warn(`plugin job #${job.id}: ${(err as Error).message}`, meta);
    }
  }

  /** Back to the table; `uncount`: it did not run at all, so this claim is not one of its attempts. */
  private async giveBack(job: ClaimedJob, delayMs: number, uncount: boolean): Promise<void> {
    try {
      await this.opts.jobs.release(job.id, this.opts.workerId, new Date(Date.now() + delayMs), { uncount });
    } catch (err) {
      this.opts.logger.warn(
        `plugin job #${job.id}: could not give it back (${(err as Error).message}); its lease will`,
        { jobId: job.id },
      );
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }
}
