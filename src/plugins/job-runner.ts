import type { Logger } from '../log';
import type { ClaimedJob, JobStore } from '../store/job-store';
import type { PluginManager } from './manager';

export interface JobRunnerOptions {
  manager: PluginManager;
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
  /** Jobs claimed at a time (default 10). */
  batch?: number;
  /** Claims of one job (each ended by a dead or stopping worker) before it is given up (default 5). */
  maxAttempts?: number;
}

/**
 * Runs plugin jobs (`meta.jobs.NAME(payload).runIn(…)`) from the job table: claims due jobs under a lease, runs
 * each in its config's isolate, deletes it when it ran (successfully or not: like PostHog, a failing job is
 * recorded, not retried; exportEvents retries are jobs of their own). A job whose run was cut short by this
 * worker (isolate recreated or closed, shutdown) is given back to run again; a worker that dies leaves it to its
 * lease. So a job runs once, or again after a crash in the middle of it.
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
    while (!this.stopped) {
      let claimed: ClaimedJob[] = [];
      try {
        claimed = await jobs.claimDue(workerId, this.opts.batch ?? 10, leaseMs);
      } catch (err) {
        if (Date.now() - this.lastDbWarning > 60_000) {
          this.lastDbWarning = Date.now();
          logger.warn(`cannot read plugin jobs: ${(err as Error).message}; retrying`);
        }
      }
      if (claimed.length === 0) {
        await this.sleep(pollMs);
        continue;
      }
      const batch = claimed.map((job) => {
        const p = this.runOne(job).finally(() => this.running.delete(p));
        this.running.add(p);
        return p;
      });
      await Promise.all(batch);
    }
  }

  private async runOne(job: ClaimedJob): Promise<void> {
    const { manager, jobs, workerId, logger } = this.opts;
    const meta = { pluginConfigId: job.pluginConfigId, teamId: job.teamId, job: job.name, jobId: job.id };
    const maxAttempts = this.opts.maxAttempts ?? 5;
    try {
      if (job.attempts > maxAttempts) {
        logger.error(`plugin job ${JSON.stringify(job.name)} (#${job.id}) given up: ${job.attempts - 1} earlier runs never finished (the worker died or stopped during each)`, meta);
        await jobs.complete(job.id, workerId);
        return;
      }
      const outcome = await manager.runTask(job.pluginConfigId, 'job', job.name, job.payloadJson);
      if (outcome === null) {
        logger.warn(`plugin job ${JSON.stringify(job.name)} (#${job.id}) dropped: plugin config ${job.pluginConfigId} is not enabled or did not load`, meta);
        await jobs.complete(job.id, workerId);
      } else if (outcome.interrupted === 'disposed' || outcome.interrupted === 'not-ready') {
        await jobs.release(job.id, workerId, new Date(Date.now() + 1000));
      } else {
        await jobs.complete(job.id, workerId);
      }
    } catch (err) {
      // The database went away mid-job: the lease brings the job back.
      logger.warn(`plugin job #${job.id}: ${(err as Error).message}`, meta);
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
