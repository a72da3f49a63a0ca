import { loadavg, type as osType } from 'node:os';
import {
  HEARTBEAT_INTERVAL_S,
  celeryEvent,
  eventHeaders,
  eventRoutingKey,
  multiRoutingKey,
  platformSystem,
  workerEventFields,
} from '../../protocol/celery-events';
import type { LamportClock } from '../../protocol/pidbox';
import type { JsonObject } from '../../protocol/types';
import type { Logger } from '../log';
import type { ControlTransport } from './transport';

export interface EventDispatcherOptions {
  transport: ControlTransport;
  hostname: string;
  clock: LamportClock;
  logger: Logger;
  version: string;
  /** Requests in flight and tasks finished, for the heartbeat. */
  load: () => { active: number; processed: number };
  /** Send task events too (Celery's -E / worker_send_task_events). */
  taskEvents: boolean;
}

/** Buffered task events go out at least this often, and at once when this many are waiting. */
const TASK_FLUSH_MS = 100;
const TASK_FLUSH_COUNT = 500;

/**
 * Celery's event dispatcher for one node: worker-online at start, worker-heartbeat every 2 s, worker-offline at
 * stop (always, as a Celery worker does); task events only with --task-events, buffered and published as one
 * `task.multi` list per flush, as Celery's worker does with its event loop. Sending is best effort: a lost
 * event is logged at debug level and never slows the pipeline.
 */
export class EventDispatcher {
  private heartbeat: NodeJS.Timeout | null = null;
  private flushTimer: NodeJS.Timeout | null = null;
  private buffer: JsonObject[] = [];
  private readonly system = platformSystem(osType());

  constructor(private readonly opts: EventDispatcherOptions) {}

  get taskEvents(): boolean {
    return this.opts.taskEvents;
  }

  async start(): Promise<void> {
    await this.sendWorker('worker-online');
    this.heartbeat = setInterval(() => void this.sendWorker('worker-heartbeat'), HEARTBEAT_INTERVAL_S * 1000);
    this.heartbeat.unref();
  }

  async stop(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    await this.flush();
    await this.sendWorker('worker-offline');
  }

  /** Queue one task event (no-op without --task-events). */
  task(type: string, fields: JsonObject): void {
    if (!this.opts.taskEvents) return;
    this.buffer.push(this.event(type, fields));
    if (this.buffer.length >= TASK_FLUSH_COUNT) void this.flush();
    else if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => void this.flush(), TASK_FLUSH_MS);
      this.flushTimer.unref();
    }
  }

  async flush(): Promise<void> {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    if (this.buffer.length === 0) return;
    const events = this.buffer;
    this.buffer = [];
    await this.send(multiRoutingKey('task'), events);
  }

  private event(type: string, fields: JsonObject): JsonObject {
    const now = new Date();
    return celeryEvent(
      type,
      { hostname: this.opts.hostname, pid: process.pid },
      this.opts.clock.forward(),
      now.getTime(),
      now.getTimezoneOffset(),
      fields,
    );
  }

  private async sendWorker(type: string): Promise<void> {
    const { active, processed } = this.opts.load();
    const fields = workerEventFields({
      active,
      processed,
      loadavg: loadavg(),
      system: this.system,
      version: this.opts.version,
    });
    await this.send(eventRoutingKey(type), this.event(type, fields));
  }

  private async send(routingKey: string, body: JsonObject | JsonObject[]): Promise<void> {
    try {
      await this.opts.transport.publishEvent(routingKey, body, eventHeaders(this.opts.hostname));
    } catch (err) {
      this.opts.logger.debug(`celery event ${routingKey} not sent: ${(err as Error).message}`, {
        node: this.opts.hostname,
      });
    }
  }
}
