import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Knex } from 'knex';
import type { Outgoing } from '../brokers/broker';
import type { Logger } from '../log';
import { type BoundedRedis, createRedisClient } from '../redis/client';
import { createCacheOp } from '../plugins/api/cache-op';
import { createCaptureOp } from '../plugins/api/capture-op';
import { createJobsOp } from '../plugins/api/jobs-op';
import { createStorageOp } from '../plugins/api/storage-op';
import type { HostOp } from '../plugins/vm/bridge';
import { JobRunner } from '../plugins/background/job-runner';
import type { PluginManager, PluginManagerOptions } from '../plugins/manager/plugin-manager';
import { ScheduleLock } from '../plugins/background/schedule-lock';
import { Scheduler } from '../plugins/background/scheduler';
import { JobStore } from '../store/job-store';
import { PluginLogWriter } from '../store/plugin-log-writer';
import { PluginStorage } from '../store/plugin-storage';
import { storageUnavailableReason, type PosthogSchema } from '../store/schema';
import type { StartArgs } from '../start-args';

/** The Redis a worker uses besides the broker: PostHog's REDIS_URL, or the broker itself when it is Redis. */
export function pluginRedisUrl(args: Pick<StartArgs, 'redisUrl' | 'broker'>): string {
  return args.redisUrl || (/^rediss?:/i.test(args.broker) ? args.broker : '');
}

/**
 * What a worker process gives plugins beyond processEvent: meta.cache (Redis), meta.storage and the cursor
 * (database), meta.jobs and the job runner (database), posthog.capture (the broker), scheduled functions
 * (a Redis lock), plugin log entries (database, batched). Built before the plugins load; the background parts
 * start once the worker consumes and stop before the plugins close.
 */
export class PluginServices {
  readonly instanceId = randomUUID();
  private readonly redis: BoundedRedis | null;
  private readonly jobStore: JobStore;
  private readonly logWriter: PluginLogWriter;
  private publish: ((outgoing: Outgoing[]) => Promise<void>) | null = null;
  private manager: PluginManager | null = null;
  private scheduler: Scheduler | null = null;
  private jobRunner: JobRunner | null = null;
  private lastRedisWarning = 0;

  constructor(
    private readonly args: StartArgs,
    private readonly db: Knex,
    private readonly logger: Logger,
    /** The worker process's index under the supervisor: without Redis only worker 0 runs schedules. */
    private readonly workerIndex: number,
    /** PostHog's plugin tables as last read (at start and on each reload): which of storage and logs exist. */
    private readonly schema: () => PosthogSchema,
  ) {
    const url = pluginRedisUrl(args);
    this.redis = url
      ? // A plugin waits at most a few seconds for Redis; commands are not queued while it is down.
        createRedisClient(url, {
          name: `posthog-plugins:cache:${process.pid}`,
          lazyConnect: false,
          commandTimeoutMs: 5000,
        })
      : null;
    this.redis?.on('error', (err: Error) => {
      if (Date.now() - this.lastRedisWarning < 60_000) return;
      this.lastRedisWarning = Date.now();
      logger.warn(`plugin Redis (meta.cache, schedule locks): ${err.message}`);
    });
    this.jobStore = new JobStore(db);
    this.logWriter = new PluginLogWriter(db, { instanceId: this.instanceId, logger });
  }

  /**
   * Wait (at most `ms`) for the plugin Redis to be connected: commands are not queued while it is not, so a
   * setupPlugin using meta.cache right at start would otherwise fail. A Redis that is down delays the start by
   * `ms` once; plugins then see CacheErrors until it is back.
   */
  async ready(ms: number): Promise<void> {
    const redis = this.redis;
    if (!redis || redis.status === 'ready') return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      new Promise<void>((r) => redis.once('ready', () => r())),
      new Promise<void>((r) => (timer = setTimeout(r, ms))),
    ]);
    clearTimeout(timer);
    if ((redis.status as string) !== 'ready')
      this.logger.warn(`plugin Redis not connected after ${ms} ms; meta.cache fails until it is`);
  }

  /** Options for the PluginManager of this worker. */
  managerOptions(): Pick<
    PluginManagerOptions,
    | 'ops'
    | 'unavailable'
    | 'eventSinks'
    | 'taskWallTimeoutMs'
    | 'isolateIdleMs'
    | 'lazyIsolates'
    | 'isolateMemoryBudgetMb'
    | 'setupRetries'
    | 'setupRetryBaseMs'
    | 'pluginLog'
    | 'jobs'
  > {
    const ops = new Map<string, HostOp>([
      ['storage', createStorageOp(new PluginStorage(this.db), () => storageUnavailableReason(this.schema()))],
      ['jobs', createJobsOp(this.jobStore)],
      [
        'capture',
        createCaptureOp(
          (outgoing) =>
            this.publish ? this.publish(outgoing) : Promise.reject(new Error('the broker is not connected yet')),
          {
            queue: this.args.queue,
            siteUrl: this.args.siteUrl,
            nameOf: (pluginId) => this.manager?.liveConfigs().find((c) => c.pluginId === pluginId)?.name,
          },
        ),
      ],
    ]);
    if (this.redis) ops.set('cache', createCacheOp(this.redis));
    return {
      ops,
      unavailable: this.redis ? {} : { cache: 'no Redis configured (set REDIS_URL or --redis-url)' },
      eventSinks: true,
      taskWallTimeoutMs: this.args.taskTimeoutMs,
      isolateIdleMs: this.args.isolateIdleMs,
      lazyIsolates: true,
      isolateMemoryBudgetMb: this.args.isolateMemoryBudgetMb,
      setupRetries: this.args.setupRetries,
      setupRetryBaseMs: this.args.setupRetryMs,
      // Only PostHog 0147–0238 has posthog_pluginlogentry; elsewhere the lines are in the worker log only.
      pluginLog: { add: (entry) => (this.schema().logEntry ? this.logWriter.add(entry) : undefined) },
      jobs: this.jobStore,
    };
  }

  /** Start scheduled functions and jobs; posthog.capture publishes through `publish` from now on. */
  startBackground(manager: PluginManager, publish: (outgoing: Outgoing[]) => Promise<void>): void {
    this.manager = manager;
    this.publish = publish;
    const { logger } = this;
    const maxRunMs = this.args.taskTimeoutMs + 30_000;
    if (this.redis || this.workerIndex === 0) {
      if (!this.redis)
        logger.warn(
          'no Redis for schedule locks: runEvery* run in worker 0 of this process only; with more than one `start` they would run once per `start`',
        );
      this.scheduler = new Scheduler({
        manager,
        lock: this.redis ? new ScheduleLock(this.redis, { owner: this.instanceId }) : null,
        logger,
        maxRunMs,
      });
      this.scheduler.start();
    }
    this.jobRunner = new JobRunner({
      manager,
      jobs: this.jobStore,
      workerId: `${hostname()}:${process.pid}:${this.instanceId}`,
      logger,
      leaseMs: maxRunMs + 30_000,
    });
    this.jobRunner.start();
  }

  /**
   * Stop starting scheduled runs and jobs and wait up to `graceMs` for those in hand. `settled` resolves when they
   * all ended: closing the plugins cuts the rest short (a job cut short goes back to the table).
   */
  async stopBackground(graceMs: number): Promise<{ settled: Promise<void> }> {
    const settled = Promise.all([this.scheduler?.stop(), this.jobRunner?.stop()]).then(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([settled, new Promise<void>((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    // Wrapped: returning the promise itself from this async function would make callers wait for it in full.
    return { settled };
  }

  /** After the plugins closed: write the last log entries, disconnect from Redis. */
  async close(): Promise<void> {
    await this.logWriter.close();
    this.redis?.disconnect();
  }
}
