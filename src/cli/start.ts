import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createBroker } from '../brokers/create-broker';
import type { Logger } from '../log';
import { processExists } from '../process-exists';
import { HealthReporter } from '../supervisor/health-reporter';
import { DeadWorkerRestorer } from '../supervisor/dead-worker-restorer';
import { Supervisor } from '../supervisor/supervisor';
import { nodeNameTemplate } from '../../protocol/pidbox';
import type { MetricsServer } from '../metrics/metrics-server';
import { healthFileFor } from './health';
import { describeSchema, pluginLogDestination } from '../store/schema';
import { openStore } from '../store/open-store';
import { parseJsonObject } from '../config';
import type { StartArgs } from '../start-args';

export interface SupervisorArgs {
  workers: number;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  stuckTimeoutMs: number;
  shutdownTimeoutMs: number;
  crashLimit: number;
  crashWindowMs: number;
  /** Status file for `posthog-plugins health`; '' = the default for this broker and queue. */
  healthFile: string;
  /** Prometheus /metrics on this port (0: off) and address. */
  metricsPort: number;
  metricsHost: string;
}

/**
 * `posthog-plugins start`: supervise `workers` worker processes (each consumes, runs plugins and publishes on
 * its own) until SIGTERM or SIGINT; then forward SIGTERM, wait for every worker to finish its batch in hand
 * and exit, SIGKILL those still running after the grace period, and exit 0. A second signal kills at once.
 * Plugins never run in this process: some allocations abort the whole process they run in.
 */
export async function runStart(
  args: StartArgs,
  sup: SupervisorArgs,
  log: { level: string; format: string },
  logger: Logger,
): Promise<void> {
  // Refuse bad settings here, once, rather than in a restart loop of workers.
  parseJsonObject(args.amqpQueueArguments, '--amqp-queue-arguments');
  parseJsonObject(args.amqpOutputQueueArguments, '--amqp-output-queue-arguments');
  const probe = await createBroker({
    url: args.broker,
    inputQueue: args.queue,
    outputQueue: args.outputQueue,
    logger,
    onSetAside: () => undefined,
    visibilityTimeoutS: args.visibilityTimeout,
    leaseTtlMs: args.leaseTtlMs,
    prefetch: 1,
    amqpPassive: args.amqpPassive,
    amqpQueueArguments: {},
    amqpOutputQueueArguments: {},
  });
  const workers = Math.floor(sup.workers);
  if (!(workers >= 1)) throw new Error(`--workers must be at least 1, got ${sup.workers}`);
  if (!(sup.heartbeatTimeoutMs > sup.heartbeatIntervalMs))
    throw new Error('--heartbeat-timeout-ms must be larger than --heartbeat-interval-ms');

  // The store: SQLite gets its tables here, before the workers open it; the supervisor disables crashing configs.
  const { db, store, description } = await openStore(args.databaseUrl, logger);
  const isRedis = /^rediss?:/i.test(args.broker);
  const restorer = isRedis ? new DeadWorkerRestorer(args.broker, args.queue, logger) : null;
  let permanentFailure: ((message: string) => void) | null = null;
  let remoteShutdown: ((why: string) => void) | null = null;
  const supervisor = new Supervisor({
    workers,
    worker: {
      args: { ...args, hostname: nodeNameTemplate(args.hostname, workers) },
      logLevel: log.level,
      logFormat: log.format,
      metrics: sup.metricsPort > 0,
    },
    heartbeatIntervalMs: sup.heartbeatIntervalMs,
    heartbeatTimeoutMs: sup.heartbeatTimeoutMs,
    stuckTimeoutMs: sup.stuckTimeoutMs,
    shutdownTimeoutMs: sup.shutdownTimeoutMs,
    crashLimit: sup.crashLimit,
    crashWindowMs: sup.crashWindowMs,
    store,
    restorer,
    logger,
    flightDir: freshFlightDir(),
    onPermanentFailure: (message) => permanentFailure?.(message),
    onShutdownRequest: (why) => remoteShutdown?.(why),
    onRestart: () => metrics?.restarts.inc(),
    onCrashAttributed: (configId) => metrics?.crashAttributions.inc({ plugin_config_id: String(configId) }),
  });
  // prom-client and the queue-depth clients are loaded only when metrics are served.
  const metrics: MetricsServer | null =
    sup.metricsPort > 0
      ? await import('../metrics/metrics-server').then(
          (m) =>
            new m.MetricsServer({
              host: sup.metricsHost,
              port: sup.metricsPort,
              brokerUrl: args.broker,
              queues: [args.queue, args.outputQueue, `${args.queue}.rejected`],
              collectWorkers: () => supervisor.collectMetrics(m.SCRAPE_TIMEOUT_MS),
              logger,
            }),
        )
      : null;
  // A port that is taken is a setting that will not fix itself: say so and exit 1.
  await metrics?.start().catch((err: Error) => {
    throw new Error(`cannot serve metrics on ${sup.metricsHost}:${sup.metricsPort}: ${err.message}`);
  });
  logger.info(
    `supervising ${workers} worker process(es) for queue ${args.queue} on ${probe.displayUrl}; plugins from ${description}`,
    {
      pid: process.pid,
      workers,
    },
  );
  const schema = await store.schema();
  logger.info(`plugin tables: ${describeSchema(schema)}; plugin logs go to ${pluginLogDestination(schema)}`);
  supervisor.start();
  // PostHog's Redis (REDIS_URL), else the broker when it is Redis: the same choice as the reload channel.
  const redisUrl = args.redisUrl || (isRedis ? args.broker : '');
  const health = new HealthReporter({
    file: healthFileFor(sup.healthFile, args.broker, args.queue),
    intervalMs: sup.heartbeatIntervalMs,
    redisUrl: redisUrl || null,
    supervisor,
    queue: args.queue,
    broker: probe.displayUrl,
    slots: workers,
    logger,
  });
  health.start();

  const reason = await new Promise<{ signal: NodeJS.Signals } | { failure: string } | { remote: string }>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.removeListener('SIGTERM', onSignal);
      process.removeListener('SIGINT', onSignal);
      resolve({ signal });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    permanentFailure = (failure) => {
      process.removeListener('SIGTERM', onSignal);
      process.removeListener('SIGINT', onSignal);
      resolve({ failure });
    };
    remoteShutdown = (remote) => {
      process.removeListener('SIGTERM', onSignal);
      process.removeListener('SIGINT', onSignal);
      resolve({ remote });
    };
  });
  health.markStopping();
  if ('remote' in reason) logger.info(`${reason.remote}: stopping the workers, they finish the batches in hand`);
  if ('signal' in reason)
    logger.info(
      `${reason.signal} received: stopping the workers, they finish the batches in hand (send it again to kill them at once)`,
    );
  const again = (s: NodeJS.Signals): void => {
    logger.warn(`${s} received again: killing the workers`);
    void supervisor.kill().finally(() => process.exit(1));
  };
  process.once('SIGTERM', again);
  process.once('SIGINT', again);

  const killed = await supervisor.stop();
  await metrics?.stop();
  await health.stop();
  await restorer?.close();
  await db.destroy();
  if ('failure' in reason) throw new Error(reason.failure);
  if (killed > 0)
    logger.warn(`stopped; ${killed} worker(s) had to be killed (their messages were returned to the queue)`);
  else logger.info('all workers stopped cleanly');
}

/**
 * The supervisor's private temporary directory (flight records, worker settings). Directories left by
 * supervisors that were killed outright (their pid is gone) are removed on the way.
 */
function freshFlightDir(): string {
  const base = tmpdir();
  try {
    for (const name of readdirSync(base)) {
      const m = /^posthog-plugins-(\d+)-[A-Za-z0-9]{6}$/.exec(name);
      if (!m || Number(m[1]) === process.pid || processExists(Number(m[1]))) continue;
      rmSync(path.join(base, name), { recursive: true, force: true });
    }
  } catch {
    // best effort
  }
  return mkdtempSync(path.join(base, `posthog-plugins-${process.pid}-`));
}
