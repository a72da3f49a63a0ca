/**
 * Every Redis key the worker touches. kombu's own names (`unacked`, `unacked_index`, `unacked_mutex`,
 * `_kombu.binding.*`) are shared with Python workers on the same db on purpose: that is how either side can
 * restore the other's in-flight messages. Our own bookkeeping lives under `posthog-plugins:`.
 */
export const KOMBU_UNACKED = 'unacked';
export const KOMBU_UNACKED_INDEX = 'unacked_index';
export const KOMBU_UNACKED_MUTEX = 'unacked_mutex';

export function kombuBindingKey(exchange: string): string {
  return `_kombu.binding.${exchange}`;
}

/** Set of worker ids that may hold messages. */
export const WORKERS_KEY = 'posthog-plugins:workers';

/** A worker's lease: exists (with a TTL) while the worker is alive; value is JSON {host, pid, started}. */
export function leaseKey(workerId: string): string {
  return `posthog-plugins:worker:${workerId}`;
}

/** delivery_tags a worker holds; restored when its lease is gone. */
export function inflightKey(workerId: string): string {
  return `posthog-plugins:inflight:${workerId}`;
}

/** List an idle worker BLMOVEs into, so a blocking wait never takes a message out of Redis's sight. */
export function landingKey(workerId: string): string {
  return `posthog-plugins:landing:${workerId}`;
}

/** Where messages we could not or would not process are kept, with their reason (same name on AMQP). */
export function setAsideKey(queue: string): string {
  return `${queue}.rejected`;
}
