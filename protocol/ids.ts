/**
 * Task ids and delivery tags.
 *
 * Celery uses uuid4 task ids; any unique string works for Python. For the outputs of a task we prefer ids
 * derived from the input (name-based UUIDs, RFC 4122 version 5): replaying the same input then produces
 * byte-identical output messages, and an output can be traced back to its input, or de-duplicated, by
 * recomputing the id.
 */
import { createHash, randomUUID } from 'node:crypto';

/** Namespace of posthog-plugins' derived ids (a fixed random uuid4, so our ids never collide with others'). */
export const POSTHOG_PLUGINS_NAMESPACE = '3b0f5c8e-7f2d-4a61-9c5e-2d8a41f6b7c3';

/** RFC 4122 namespace for DNS names, handy to check against Python's uuid.uuid5(uuid.NAMESPACE_DNS, …). */
export const NAMESPACE_DNS = '6ba7b810-9dad-11d1-80b4-00c04fd430c8';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A fresh random task id (uuid4), like Celery's. */
export function randomTaskId(): string {
  return randomUUID();
}

/** True for the 8-4-4-4-12 hex form. */
export function isUuid(text: string): boolean {
  return UUID_RE.test(text);
}

/** RFC 4122 version-5 UUID of `name` (UTF-8) in `namespace`; equals Python's uuid.uuid5(namespace, name). */
export function uuidV5(name: string, namespace: string): string {
  if (!UUID_RE.test(namespace)) throw new Error(`uuidV5: namespace is not a UUID: ${JSON.stringify(namespace)}`);
  const hash = createHash('sha1')
    .update(Buffer.from(namespace.replace(/-/g, ''), 'hex'))
    .update(name, 'utf8')
    .digest();
  const b = hash.subarray(0, 16);
  b[6] = (b[6] & 0x0f) | 0x50; // version 5
  b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
  const hex = b.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Deterministic UUID for `seed` in posthog-plugins' namespace (e.g. seed = `${inputId}:process_event`). */
export function derivedUuid(seed: string): string {
  if (typeof seed !== 'string') throw new Error('derivedUuid: seed must be a string');
  return uuidV5(seed, POSTHOG_PLUGINS_NAMESPACE);
}
