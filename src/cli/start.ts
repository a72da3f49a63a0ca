import { hostname } from 'node:os';
import { AmqpTopologyError } from '../brokers/amqp/errors';
import { createBroker } from '../brokers/create-broker';
import type { Logger } from '../log';
import { BatchProcessor } from '../pipeline/batch-processor';
import { ConsumerLoop, type ConsumerStats } from '../pipeline/consumer-loop';
import { PluginManager } from '../plugins/manager';
import { openStore } from './open-store';

export interface StartArgs {
  broker: string;
  databaseUrl: string;
  baseDir: string;
  queue: string;
  outputQueue: string;
  concurrency: number;
  batchSize: number;
  memoryLimitMb: number;
  cpuTimeoutMs: number;
  wallTimeoutMs: number;
  maxResultBytes: number;
  visibilityTimeout: number;
  leaseTtlMs: number;
  prefetchMultiplier: number;
  amqpPassive: boolean;
  amqpQueueArguments: string;
}

/**
 * `posthog-plugins start`: load the plugins, connect to the broker, run the consumer loops until SIGTERM or
 * SIGINT, then finish the batches in hand, give back what was not finished, and exit 0.
 */
export async function runStart(args: StartArgs, logger: Logger): Promise<void> {
  const { db, store, description } = await openStore(args.databaseUrl, logger);
  const plugins = await PluginManager.create({
    store,
    baseDir: args.baseDir,
    logger,
    limits: {
      memoryLimitMb: args.memoryLimitMb,
      cpuTimeoutMs: args.cpuTimeoutMs,
      wallTimeoutMs: args.wallTimeoutMs,
      maxResultBytes: args.maxResultBytes,
    },
  });
  const broker = createBroker({
    url: args.broker,
    inputQueue: args.queue,
    outputQueue: args.outputQueue,
    logger,
    onSetAside: (reason, rawText) => logger.warn(`set aside unreadable message: ${reason}`, { queue: args.queue, message: rawText.slice(0, 500) }),
    visibilityTimeoutS: args.visibilityTimeout,
    leaseTtlMs: args.leaseTtlMs,
    prefetch: Math.max(1, Math.ceil(args.batchSize * args.concurrency * args.prefetchMultiplier)),
    amqpPassive: args.amqpPassive,
    amqpQueueArguments: parseJsonObject(args.amqpQueueArguments, '--amqp-queue-arguments'),
  });
  await connectWithRetry(() => broker.connect(), broker.displayUrl, logger);

  const processor = new BatchProcessor({
    plugins,
    logger,
    origin: `posthog-plugins-${process.pid}@${hostname()}`,
    outputQueue: args.outputQueue,
  });
  const loops = Array.from({ length: Math.max(1, args.concurrency) }, () => new ConsumerLoop({ broker, processor, logger, batchSize: args.batchSize }));
  loops.forEach((l) => l.start());
  logger.info(`consuming ${args.queue} on ${broker.displayUrl}, publishing to ${args.outputQueue}; plugins from ${description}`, {
    concurrency: loops.length,
    batchSize: args.batchSize,
  });
  const reporter = startReporter(loops, logger);

  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      logger.info(`${signal} received: finishing the batches in hand (send it again to exit at once)`);
      process.removeListener('SIGTERM', onSignal);
      process.removeListener('SIGINT', onSignal);
      process.once('SIGTERM', () => process.exit(1));
      process.once('SIGINT', () => process.exit(1));
      resolve();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });

  clearInterval(reporter);
  await Promise.all(loops.map((l) => l.stop()));
  await broker.close();
  await plugins.close();
  await db.destroy();
  logger.info('stopped cleanly', totals(loops));
}

async function connectWithRetry(connect: () => Promise<void>, what: string, logger: Logger): Promise<void> {
  let delayMs = 500;
  for (;;) {
    try {
      await connect();
      return;
    } catch (err) {
      // A queue declared with other arguments will not fix itself: say so once and stop.
      if (err instanceof AmqpTopologyError) throw err;
      logger.error(`cannot connect to broker ${what}: ${(err as Error).message}; retrying in ${delayMs} ms`);
      await new Promise((r) => setTimeout(r, delayMs));
      delayMs = Math.min(delayMs * 2, 10_000);
    }
  }
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

export function parseJsonObject(text: string, what: string): Record<string, unknown> {
  if (text.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`${what} must be a JSON object: ${(err as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${what} must be a JSON object`);
  return value as Record<string, unknown>;
}
