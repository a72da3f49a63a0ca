import { hostname } from 'node:os';
import fs from 'node:fs';
import type { Logger } from '../log';
import { type BoundedRedis, createRedisClient } from '../redis/client';
import { processExists } from '../process-exists';
import {
  DEFAULT_MAX_AGE_MS,
  DEFAULT_STUCK_AFTER_MS,
  HEALTH_STATUS_VERSION,
  type HealthStatus,
  type WorkerHealth,
  judgeHealth,
  readHealthStatus,
  writeHealthStatus,
} from './health';

/** PostHog's liveness key: Django shows "plugin server alive" while it exists. */
export const PING_KEY = '@posthog-plugin-server/ping';
const PING_INTERVAL_MS = 5_000;
const PING_TTL_S = 60;

export interface HealthReporterOptions {
  /** Status file for `posthog-plugins health`. */
  file: string;
  /** How often the status file is written (the supervisor's heartbeat interval). */
  intervalMs: number;
  /** Redis for PostHog's ping key; null: no ping (RabbitMQ broker without REDIS_URL). */
  redisUrl: string | null;
  supervisor: { health(): WorkerHealth[]; isStopping(): boolean };
  queue: string;
  /** Broker URL without credentials. */
  broker: string;
  slots: number;
  logger: Logger;
}

/**
 * The supervisor's outward signs of life: the status file (every heartbeat tick) and PostHog's Redis ping key
 * (every 5 s, 60 s expiry, as PostHog's plugin server set it). The ping is set only while this instance passes
 * its own health rule, so Django's "alive" means consuming, not merely running.
 */
export class HealthReporter {
  private readonly startedAt = Date.now();
  private readonly redis: BoundedRedis | null;
  private statusTimer: NodeJS.Timeout | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private pingFailing = false;
  private writeFailing = false;
  private stopping = false;

  constructor(private readonly opts: HealthReporterOptions) {
    this.redis = opts.redisUrl ? createRedisClient(opts.redisUrl, { name: 'posthog-plugins:health' }) : null;
    this.redis?.on('error', () => undefined); // reported once per outage by ping()
  }

  start(): void {
    const { file, logger } = this.opts;
    const other = this.otherWriter();
    if (other !== null) {
      logger.warn(
        `another posthog-plugins start (pid ${other}) writes the same health status ${file}: give each instance its own --health-file, or \`health\` judges the wrong one`,
      );
    }
    this.write();
    this.statusTimer = setInterval(() => this.write(), this.opts.intervalMs);
    if (this.redis) {
      this.redis.connect().catch(() => undefined);
      this.pingTimer = setInterval(() => void this.ping(), PING_INTERVAL_MS);
      logger.info(`health: status in ${file}; liveness key ${PING_KEY} on Redis every ${PING_INTERVAL_MS / 1000} s`);
    } else {
      logger.info(
        `health: status in ${file}; no Redis (set REDIS_URL) so PostHog's liveness key ${PING_KEY} is not set`,
      );
    }
  }

  /** SIGTERM received: the status says so at once (health fails while the workers finish). */
  markStopping(): void {
    this.stopping = true;
    this.write();
  }

  /** Stop writing and pinging; remove the status file (ours only). The ping key expires by itself. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.statusTimer) clearInterval(this.statusTimer);
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.statusTimer = this.pingTimer = null;
    try {
      if (readHealthStatus(this.opts.file)?.pid === process.pid) fs.rmSync(this.opts.file, { force: true });
    } catch {
      // unreadable: not ours to remove
    }
    this.redis?.disconnect();
  }

  status(now = Date.now()): HealthStatus {
    const { supervisor, queue, broker, slots } = this.opts;
    return {
      version: HEALTH_STATUS_VERSION,
      pid: process.pid,
      hostname: hostname(),
      queue,
      broker,
      state: this.stopping || supervisor.isStopping() ? 'stopping' : 'running',
      startedAt: this.startedAt,
      writtenAt: now,
      workers: supervisor.health(),
      slots,
    };
  }

  private write(): void {
    try {
      writeHealthStatus(this.opts.file, this.status());
      if (this.writeFailing) this.opts.logger.info(`health status ${this.opts.file} written again`);
      this.writeFailing = false;
    } catch (err) {
      if (!this.writeFailing)
        this.opts.logger.error(`cannot write health status ${this.opts.file}: ${(err as Error).message}`);
      this.writeFailing = true;
    }
  }

  private async ping(): Promise<void> {
    const redis = this.redis;
    if (!redis || this.stopping) return;
    const now = Date.now();
    const verdict = judgeHealth(this.status(now), {
      now,
      maxAgeMs: DEFAULT_MAX_AGE_MS,
      stuckAfterMs: DEFAULT_STUCK_AFTER_MS,
      pidAlive: () => true,
    });
    if (!verdict.healthy) return;
    try {
      await redis.set(PING_KEY, new Date(now).toISOString(), 'EX', PING_TTL_S);
      if (this.pingFailing) this.opts.logger.info(`liveness key ${PING_KEY} set again`);
      this.pingFailing = false;
    } catch (err) {
      if (!this.pingFailing)
        this.opts.logger.warn(
          `cannot set liveness key ${PING_KEY}: ${(err as Error).message}; retrying every ${PING_INTERVAL_MS / 1000} s`,
        );
      this.pingFailing = true;
    }
  }

  /** Pid of another live supervisor whose fresh status is in our file, else null. */
  private otherWriter(): number | null {
    try {
      const s = readHealthStatus(this.opts.file);
      if (
        s &&
        s.pid !== process.pid &&
        s.state === 'running' &&
        Date.now() - s.writtenAt < DEFAULT_MAX_AGE_MS &&
        processExists(s.pid)
      )
        return s.pid;
    } catch {
      // a broken file is overwritten
    }
    return null;
  }
}
