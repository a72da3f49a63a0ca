import { cpuUsage, memoryUsage } from 'node:process';
import { PROCESS_EVENT_WITH_PLUGINS } from '../../protocol/posthog';
import { activeQueueInfo, activeRequestInfo, type ActiveRequest } from '../../protocol/pidbox';
import type { JsonObject, JsonValue } from '../../protocol/types';

/** What the remote control commands read from the worker process. */
export interface WorkerView {
  hostname: string;
  pid: number;
  startedAtMs: number;
  /** Batches in flight at once (--concurrency): the pool's max-concurrency. */
  concurrency: number;
  prefetchCount: number;
  inputQueue: string;
  inputQueueArguments: JsonObject | null;
  /** Celery's Connection.info() of the broker (no password). */
  brokerInfo: JsonObject;
  /** Tasks finished since start (published, dropped, expired, set aside). */
  processed(): number;
  active(): ActiveRequest[];
  /** The settings, as `conf` shows them (no secrets). */
  conf(): JsonObject;
  clock(): number;
  /** Clean stop, as on SIGTERM. */
  shutdown(reason: string): void;
}

/** Thrown by `shutdown`: like Celery's WorkerShutdown (a SystemExit), it ends the node without a reply. */
export class ShutdownRequested extends Error {}

export type Handler = (view: WorkerView, args: JsonObject) => JsonValue;

/** The commands Celery's `inspect`/`control` send that this worker answers, in Celery's reply shapes. */
export const HANDLERS: Readonly<Record<string, Handler>> = {
  ping: () => ({ ok: 'pong' }),
  stats: (v) => {
    const usage = cpuUsage();
    const processed = v.processed();
    const total: JsonObject = processed > 0 ? { [PROCESS_EVENT_WITH_PLUGINS]: processed } : {};
    return {
      total,
      pid: v.pid,
      clock: String(v.clock()),
      uptime: Math.round((Date.now() - v.startedAtMs) / 1000),
      pool: {
        'max-concurrency': v.concurrency,
        processes: [v.pid],
        'max-tasks-per-child': 'N/A',
        'put-guarded-by-semaphore': false,
        timeouts: [0, 0],
        writes: {
          total: processed,
          avg: '1.00',
          all: '1.00',
          raw: String(processed),
          strategy: 'fair',
          inqueues: { total: 0, active: 0 },
        },
      },
      broker: v.brokerInfo,
      prefetch_count: v.prefetchCount,
      rusage: {
        utime: usage.user / 1e6,
        stime: usage.system / 1e6,
        maxrss: Math.round(memoryUsage().rss / 1024), // kilobytes, as getrusage reports it on Linux
      },
    };
  },
  active_queues: (v) => [activeQueueInfo(v.inputQueue, v.inputQueueArguments)],
  registered: () => [PROCESS_EVENT_WITH_PLUGINS],
  active: (v) => v.active().map((r) => activeRequestInfo(r, v.hostname, v.pid)),
  conf: (v) => v.conf(),
  shutdown: (v, args) => {
    const msg = typeof args.msg === 'string' ? args.msg : 'Got shutdown from remote';
    v.shutdown(msg);
    throw new ShutdownRequested(msg);
  },
};
