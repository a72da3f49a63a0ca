/**
 * The settings of `posthog-plugins start` that every worker process gets (in its WorkerInit), apart from the
 * supervisor's own (SupervisorArgs in src/cli/start.ts). Its own module so that the worker side and the IPC
 * messages need not import the start command.
 */
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
  fetchTimeoutMs: number;
  fetchMaxBytes: number;
  fetchAllow: string;
  visibilityTimeout: number;
  leaseTtlMs: number;
  prefetchMultiplier: number;
  amqpPassive: boolean;
  amqpQueueArguments: string;
  amqpOutputQueueArguments: string;
  redisUrl: string;
  reloadChannel: string;
  taskTimeoutMs: number;
  isolateIdleMs: number;
  isolateMemoryBudgetMb: number;
  setupRetries: number;
  setupRetryMs: number;
  siteUrl: string;
  /** Celery node name template (nodeNameTemplate), one name per worker process. */
  hostname: string;
  taskEvents: boolean;
}
