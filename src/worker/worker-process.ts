import fs from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import type { JsonObject } from '../../protocol/types';
import { connectBackoffMs, isPermanentConnectError } from '../brokers/connect-errors';
import { createBroker } from '../brokers/create-broker';
import { RedisBroker } from '../brokers/redis/redis-broker';
import { parseJsonObject } from '../config';
import { CeleryNode } from '../control/node';
import type { WorkerInit } from '../ipc/messages';
import type { Logger } from '../log';
import { WorkerMetrics } from '../metrics/worker-metrics';
import { BatchProcessor, taskIdOf } from '../pipeline/batch-processor';
import { ConsumerLoop, type ConsumerStats, type LoopObserver } from '../pipeline/consumer-loop';
import { SuspectList } from '../pipeline/suspects';
import { PluginManager } from '../plugins/manager/plugin-manager';
import { ReloadListener } from '../plugins/background/reload-listener';
import type { StartArgs } from '../start-args';
import { openStore } from '../store/open-store';
import { FlightRecorder } from './flight-recorder';
import { PluginServices, pluginRedisUrl } from './plugin-services';
import type { WorkerLink } from './worker-link';
import { WorkerPluginStore } from './worker-store';

export interface WorkerProcessContext {
  init: WorkerInit;
  logger: Logger;
  link: WorkerLink;
  /** Resolves with the reason to stop (SIGTERM, the supervisor gone). */
  stopRequested: Promise<string>;
  /** Called once messages can be in hand: from then on a stop must finish them. */
  onConsuming: () => void;
  onStop: (why: string) => void;
}

/**
 * The body of one worker process: open the store, load the plugins, connect to the broker, run the consumer
 * loops until a stop is requested, then finish the batches in hand and close everything in order. Writes a flight
 * record before every isolate entry (the supervisor reads it after a crash).
 */
export async function runWorkerProcess({
  init,
  logger,
  link,
  stopRequested,
  onConsuming,
  onStop,
}: WorkerProcessContext): Promise<void> {
  const args = init.args;
  const prefetch = Math.max(1, Math.ceil(args.batchSize * args.concurrency * args.prefetchMultiplier));
  const queueArguments = parseJsonObject(args.amqpQueueArguments, '--amqp-queue-arguments');
  // Celery's `shutdown` stops the whole instance, as SIGTERM to `start` would; the supervisor then stops us.
  const shutdown = (why: string): void => {
    void link.send({ type: 'shutdown', reason: why }).then((sent) => sent || onStop(why));
  };
  const node = new CeleryNode({
    args,
    index: init.index,
    logger,
    prefetchCount: prefetch,
    inputQueueArguments: queueArguments as JsonObject,
    shutdown,
  });
  // Logs, metrics and Celery's tools name this process the same way.
  logger.defaultMeta = { ...logger.defaultMeta, node: node.name };
  const suspects = SuspectList.from(init.suspects);
  link.handleSuspects((s) => suspects.merge(s));
  const recorder = new FlightRecorder(init.flightFile);
  const { db, description } = await openStore(args.databaseUrl, logger);
  const store = new WorkerPluginStore(db);
  const schema = await store.schema();
  const services = new PluginServices(args, db, logger, init.index, () => store.currentSchema ?? schema);
  await services.ready(5000);

  // Prometheus (only with --metrics-port): read by the supervisor at each scrape. The gauges read the loops and
  // plugins, which exist from further down on.
  let loopsRef: ConsumerLoop[] = [];
  let pluginsRef: PluginManager | null = null;
  const metrics = init.metrics
    ? new WorkerMetrics(args.queue, {
        inFlight: () => loopsRef.reduce((n, l) => n + l.inHand, 0),
        etaHeld: () => loopsRef.reduce((n, l) => n + l.stats.waiting, 0),
        isolates: () => pluginsRef?.liveConfigs().filter((c) => !c.vm.hibernated).length ?? 0,
        isolateHeapBytes: async () => {
          const heaps = await Promise.all(
            (pluginsRef?.liveConfigs() ?? []).map((c) => c.vm.heapUsedBytes().catch(() => null)),
          );
          return heaps.reduce<number>((sum, h) => sum + (h ?? 0), 0);
        },
        exportWaiting: () => pluginsRef?.exportWaiting() ?? 0,
      })
    : null;
  if (metrics) link.handleMetrics(() => metrics.registry.getMetricsAsJSON());
  const plugins = await PluginManager.create({
    ...services.managerOptions(),
    store,
    baseDir: args.baseDir,
    logger,
    limits: {
      memoryLimitMb: args.memoryLimitMb,
      cpuTimeoutMs: args.cpuTimeoutMs,
      wallTimeoutMs: args.wallTimeoutMs,
      maxResultBytes: args.maxResultBytes,
    },
    fetch: { timeoutMs: args.fetchTimeoutMs, maxBytes: args.fetchMaxBytes, allow: args.fetchAllow },
    loadConcurrency: init.serialLoad ? 1 : undefined,
    onCall: (config, seconds, outcome) => metrics?.pluginCall(config, seconds, outcome),
    onEvicted: (configId) => metrics?.evicted(configId),
    taskIdOf,
    onEnter: (configId, events) => {
      const ids = events.map((e) => taskIdOf(e) ?? '?');
      const only = ids.length === 1 ? (ids[0] as string) : null;
      if (only !== null && suspects.isPoisoned(only, configId)) {
        // This event killed the process in this config before: it goes on without this plugin's change.
        logger.warn(
          `skipping plugin config ${configId} for task ${only}: this event crashed a worker process in it before`,
          { pluginConfigId: configId, taskId: only },
        );
        store
          .setError(configId, {
            message:
              'processEvent crashed the worker process on this event (fatal error inside the isolate, e.g. V8 out of memory); the event went on without this plugin',
            time: new Date().toISOString(),
            name: 'PluginCrashError',
            event: events[0],
          })
          .catch((err: Error) => logger.error(`could not store plugin error for config ${configId}: ${err.message}`));
        return false;
      }
      return recorder.enter(configId, ids, only !== null && suspects.isSuspect(only));
    },
  });
  pluginsRef = plugins;
  link.handleReload(() => {
    plugins.reload().then(
      () => logger.info('plugins reloaded'),
      (err: Error) => logger.error(`plugin reload failed: ${err.message}`),
    );
  });
  const reloads = startReloadListener(args, () => plugins.reload(), logger);

  const broker = await createBroker({
    url: args.broker,
    inputQueue: args.queue,
    outputQueue: args.outputQueue,
    logger,
    onSetAside: (reason, rawText) =>
      logger.warn(`set aside unreadable message: ${reason}`, { queue: args.queue, message: rawText.slice(0, 500) }),
    visibilityTimeoutS: args.visibilityTimeout,
    leaseTtlMs: args.leaseTtlMs,
    prefetch,
    amqpPassive: args.amqpPassive,
    amqpQueueArguments: queueArguments,
    amqpOutputQueueArguments: parseJsonObject(args.amqpOutputQueueArguments, '--amqp-output-queue-arguments'),
    onReconnect: () => metrics?.brokerReconnects.inc(),
  });
  // The supervisor must know whose messages to restore before this process can hold any.
  await link.send({ type: 'broker', workerId: broker instanceof RedisBroker ? broker.workerId : null });
  await connectWithRetry(() => broker.connect(), broker.displayUrl, logger);

  const processor = new BatchProcessor({
    plugins,
    logger,
    origin: `posthog-plugins-${process.pid}@${hostname()}`,
    outputQueue: args.outputQueue,
    suspects,
  });
  const observer = metrics ? bothObservers(node.activity, metrics) : node.activity;
  const loops = Array.from(
    { length: Math.max(1, args.concurrency) },
    () => new ConsumerLoop({ broker, processor, logger, batchSize: args.batchSize, observer }),
  );
  loopsRef = loops;
  loops.forEach((l) => l.start());
  // For `posthog-plugins health`: a worker that holds messages and settles none is stuck.
  link.reportProgress(() => ({
    inHand: loops.reduce((n, l) => n + l.inHand, 0),
    settled: loops.reduce((n, l) => n + l.stats.published + l.stats.dropped + l.stats.expired + l.stats.rejected, 0),
  }));
  onConsuming();
  void node.start(logger); // beside the event path: consuming never waits for it
  logger.info(
    `consuming ${args.queue} on ${broker.displayUrl}, publishing to ${args.outputQueue}; plugins from ${description}`,
    {
      pid: process.pid,
      concurrency: loops.length,
      batchSize: args.batchSize,
    },
  );
  await link.send({ type: 'ready' });
  services.startBackground(plugins, (outgoing) => broker.publish(outgoing));
  const reporter = startReporter(loops, logger);

  const why = await stopRequested;
  logger.info(`${why}: finishing the batches in hand`);
  clearInterval(reporter);
  await Promise.all(loops.map((l) => l.stop()));
  await node.stop();
  await reloads?.stop();
  const background = await services.stopBackground(5000);
  // Exports still buffered are flushed (or kept as jobs) while the broker and database are still open.
  await plugins.close();
  await background.settled;
  await broker.close();
  await services.close();
  recorder.close();
  await db.destroy();
  if (why === 'supervisor gone') {
    try {
      fs.rmdirSync(path.dirname(init.flightFile)); // the supervisor's temporary directory, once its last worker is done
    } catch {
      // a sibling still uses it, or it is gone already
    }
  }
  logger.info('stopped cleanly', totals(loops));
}

/**
 * Live reload on PostHog's channel, on REDIS_URL (or the broker itself when it is Redis). Subscribing happens in
 * the background: a Redis that is down delays live reload, never event processing.
 */
function startReloadListener(args: StartArgs, reload: () => Promise<void>, logger: Logger): ReloadListener | null {
  const url = pluginRedisUrl(args);
  if (args.reloadChannel === '' || url === '') {
    logger.info('live plugin reload is off (no --reload-channel, or no Redis: set REDIS_URL)');
    return null;
  }
  const listener = new ReloadListener(url, args.reloadChannel, reload, logger);
  void listener.start();
  return listener;
}

/**
 * Connect, retrying transient failures with backoff: one warning per attempt, with its count. A permanent one
 * (credentials, vhost, a 406; see connect-errors.ts) will not fix itself: it is thrown, and `start` stops.
 */
async function connectWithRetry(connect: () => Promise<void>, what: string, logger: Logger): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await connect();
      if (attempt > 1) logger.info(`connected to broker ${what} after ${attempt} attempts`);
      return;
    } catch (err) {
      const message = (err as Error).message;
      if (isPermanentConnectError(err))
        throw Object.assign(new Error(message.includes(what) ? message : `broker ${what}: ${message}`), {
          permanent: true,
        });
      const delayMs = connectBackoffMs(attempt);
      logger.warn(
        `cannot connect to broker (attempt ${attempt}): ${message.includes(what) ? message : `${what}: ${message}`}; retrying in ${(delayMs / 1000).toFixed(1)} s`,
      );
      await new Promise((r) => setTimeout(r, delayMs));
    }
  }
}

function bothObservers(a: LoopObserver, b: LoopObserver): LoopObserver {
  return {
    batchStarted: (d) => {
      a.batchStarted(d);
      b.batchStarted(d);
    },
    batchFinished: (d, o) => {
      a.batchFinished(d, o);
      b.batchFinished(d, o);
    },
  };
}

function totals(loops: ConsumerLoop[]): ConsumerStats {
  const sum: ConsumerStats = { received: 0, published: 0, dropped: 0, expired: 0, rejected: 0, waiting: 0 };
  for (const l of loops) for (const k of Object.keys(sum) as Array<keyof ConsumerStats>) sum[k] += l.stats[k];
  return sum;
}

/** A progress line every 10 s while messages flow, silent when idle. */
function startReporter(loops: ConsumerLoop[], logger: Logger): NodeJS.Timeout {
  let last = totals(loops);
  const timer = setInterval(() => {
    const now = totals(loops);
    if (now.received !== last.received || now.waiting !== last.waiting) {
      logger.info(`processed ${now.received - last.received} message(s) in the last 10 s`, now);
    }
    last = now;
  }, 10_000);
  timer.unref();
  return timer;
}
