import {
  taskReceivedFields,
  taskStartedFields,
  taskSucceededFields,
  taskFailedFields,
} from '../../protocol/celery-events';
import type { ActiveRequest } from '../../protocol/pidbox';
import { isJsonObject } from '../../protocol/json';
import { pythonStrRepr } from '../../protocol/repr';
import type { JsonValue } from '../../protocol/types';
import type { Delivery } from '../brokers/broker';
import type { Outcome } from '../pipeline/batch-processor';
import type { LoopObserver } from '../pipeline/consumer-loop';
import type { EventDispatcher } from './event-dispatcher';

function text(v: JsonValue | undefined, fallback: string): string {
  return typeof v === 'string' ? v : fallback;
}

/**
 * What this process is working on, for `inspect active`, the heartbeat's counts and the task events: each batch
 * is "active" from the moment the consumer loop hands it to the plugins until its outcomes are decided. Reads
 * only the protocol-v2 headers (id, task, argsrepr…), never the body again.
 */
export class Activity implements LoopObserver {
  /** Built into Request.info shapes only when asked (`inspect active`): the hot path stores two values. */
  private readonly running = new Map<string, { delivery: Delivery; startedS: number; startedNs: bigint }>();
  /** Held for their eta: task-received was sent when they first came in. */
  private readonly held = new Set<string>();
  processed = 0;

  constructor(private readonly events: EventDispatcher | null) {}

  get activeCount(): number {
    return this.running.size;
  }

  active(): ActiveRequest[] {
    return [...this.running.values()].map(({ delivery: d, startedS }) => {
      const h = d.message.headers;
      const info = d.message.properties.delivery_info;
      return {
        id: text(h.id, d.tag),
        name: text(h.task, '?'),
        argsrepr: text(h.argsrepr, '?'),
        kwargsrepr: text(h.kwargsrepr, '?'),
        timeStart: startedS,
        exchange: isJsonObject(info) ? text(info.exchange, '') : '',
        routingKey: d.queue,
        priority: typeof d.message.properties.priority === 'number' ? d.message.properties.priority : 0,
        redelivered: d.redelivered,
      };
    });
  }

  batchStarted(deliveries: readonly Delivery[]): void {
    const startedNs = process.hrtime.bigint();
    const startedS = Date.now() / 1000;
    const events = this.events?.taskEvents ? this.events : null;
    for (const d of deliveries) {
      const h = d.message.headers;
      const id = text(h.id, d.tag);
      this.running.set(id, { delivery: d, startedS, startedNs });
      if (!events || this.held.delete(id)) continue;
      events.task(
        'task-received',
        taskReceivedFields({
          id,
          name: text(h.task, '?'),
          argsrepr: text(h.argsrepr, '?'),
          kwargsrepr: text(h.kwargsrepr, '?'),
          rootId: typeof h.root_id === 'string' ? h.root_id : null,
          parentId: typeof h.parent_id === 'string' ? h.parent_id : null,
          retries: typeof h.retries === 'number' ? h.retries : 0,
          eta: typeof h.eta === 'string' ? h.eta : null,
          expires: typeof h.expires === 'string' ? h.expires : null,
        }),
      );
    }
  }

  batchFinished(deliveries: readonly Delivery[], outcomes: readonly Outcome[] | null): void {
    if (outcomes === null) {
      for (const d of deliveries) this.running.delete(text(d.message.headers.id, d.tag));
      return;
    }
    const end = process.hrtime.bigint();
    const events = this.events?.taskEvents ? this.events : null;
    for (const o of outcomes) {
      const id = text(o.delivery.message.headers.id, o.delivery.tag);
      const entry = this.running.get(id);
      this.running.delete(id);
      if (o.kind === 'wait') {
        if (events) this.held.add(id);
        continue;
      }
      this.processed++;
      if (!events) continue;
      const runtime = entry ? Number(end - entry.startedNs) / 1e9 : 0;
      if (o.kind === 'reject') {
        events.task('task-started', taskStartedFields(id));
        events.task(
          'task-failed',
          taskFailedFields(
            id,
            `SetAside(${pythonStrRepr(o.reason)})`,
            `set aside to ${o.delivery.queue}.rejected: ${o.reason}`,
          ),
        );
      } else if (o.result === 'expired') {
        events.task('task-revoked', { uuid: id, terminated: false, signum: null, expired: true });
      } else {
        events.task('task-started', taskStartedFields(id));
        events.task('task-succeeded', taskSucceededFields(id, 'None', runtime));
      }
    }
  }
}
