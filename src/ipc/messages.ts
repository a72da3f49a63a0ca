import type { SuspectSnapshot } from '../pipeline/suspects';
import type { StartArgs } from '../start-args';

/**
 * What the supervisor and its worker processes tell each other. Events never travel this way: each worker
 * pulls its own messages from the broker. Everything a worker needs at start is in a small JSON file (mode
 * 0600, in the supervisor's private temporary directory) whose path is in this environment variable: read
 * synchronously, so nothing can be missed before the IPC channel is listened to, and no size limit of the
 * environment applies to the suspect list.
 */
export const WORKER_INIT_ENV = 'POSTHOG_PLUGINS_WORKER_INIT';

export interface WorkerInit {
  /** Slot number, 0-based (stable across restarts). */
  index: number;
  args: StartArgs;
  logLevel: string;
  logFormat: string;
  /** Where to keep the flight record. */
  flightFile: string;
  suspects: SuspectSnapshot;
  /** Keep Prometheus metrics and answer the supervisor's scrapes (--metrics-port is set). */
  metrics: boolean;
  /** Load plugin configs one at a time (a load crashed with several in flight). */
  serialLoad: boolean;
}

/** What a worker has in hand and has settled, sent with every heartbeat answer (see src/supervisor/health.ts). */
export interface WorkerProgress {
  /** Messages taken from the broker and not settled yet (eta-held messages excluded). */
  inHand: number;
  /** Messages settled since the worker started (acked, published, dropped, expired, set aside). */
  settled: number;
}

/** Worker → supervisor. */
export type WorkerMessage =
  /** Sent (and flushed) before connecting: the Redis worker id whose messages to restore if this process dies. */
  | { type: 'broker'; workerId: string | null }
  | { type: 'ready' }
  /** `progress`: what the worker has in hand and has settled, for `posthog-plugins health` (see src/supervisor/health.ts). */
  | { type: 'pong'; seq: number; progress?: WorkerProgress }
  /**
   * Startup failed; the reason, so the supervisor's log can say why it restarts with a delay. `permanent`: it
   * will not fix itself (e.g. RabbitMQ refuses the queue declaration): the supervisor stops and exits non-zero.
   */
  | { type: 'fatal'; message: string; permanent: boolean }
  /** Celery remote control asked this node to shut down: the whole instance stops as on SIGTERM. */
  | { type: 'shutdown'; reason: string }
  /** Answer to `metrics`: prom-client's getMetricsAsJSON() of this process. */
  | { type: 'metrics'; seq: number; metrics: unknown[] };

/** Supervisor → worker. */
export type SupervisorMessage =
  | { type: 'ping'; seq: number }
  /** Events to run alone from now on (they were in flight when a worker died). */
  | { type: 'suspects'; suspects: SuspectSnapshot }
  /** Plugin configs changed (one was disabled): reload them. */
  | { type: 'reload' }
  /** A scrape: send your metrics. */
  | { type: 'metrics'; seq: number };

export function isWorkerMessage(m: unknown): m is WorkerMessage {
  return typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string';
}

export function isSupervisorMessage(m: unknown): m is SupervisorMessage {
  return typeof m === 'object' && m !== null && typeof (m as { type?: unknown }).type === 'string';
}
