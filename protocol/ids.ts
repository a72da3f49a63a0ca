/**
 * Task ids and delivery tags.
 *
 * Celery uses uuid4 task ids; any unique string works for Python. For the outputs of a task we prefer ids
 * derived from the input (name-based UUIDs, RFC 4122 version 5): replaying the same input then produces
 * byte-identical output messages, and an output can be traced back to its input, or de-duplicated, by
 * recomputing the id.
 */
import * as crypto from 'node:crypto';

/** Namespace of posthog-plugins' derived ids (a fixed random uuid4, so our ids never collide with others'). */
export const POSTHOG_PLUGINS_NAMESPACE = '3b0f5c8e-7f2d-4a61-9c5e-2d8a41f6b7c3';

/** RFC 4122 namespace for DNS names, handy to check against Python's uuid.uuid5(uuid.NAMESPACE_DNS, …). */
export const NAMESPACE_DNS = '6ba7b810-9dad-11d1-80b4-00c04fd430c8';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A fresh random task id (uuid4), like Celery's. */
export function randomTaskId(): string {
  return crypto.randomUUID();
}

/** True for the 8-4-4-4-12 hex form. */
export function isUuid(text: string): boolean {
  return UUID_RE.test(text);
}

/** One-shot `crypto.hash` (Node ≥ 20.12): a third of createHash().update().digest()'s cost for short input. */
const oneShotHash: ((algorithm: string, data: Buffer, outputEncoding: 'hex') => string) | undefined =
  typeof (crypto as { hash?: unknown }).hash === 'function' ? crypto.hash : undefined;

/** The variant digit: high nibble of byte 8 with its top two bits set to 10 (RFC 4122), i.e. (h & 3) | 8. */
const VARIANT_DIGIT: Record<string, string> = {};
for (let h = 0; h < 16; h++) VARIANT_DIGIT[h.toString(16)] = ((h & 0x3) | 0x8).toString(16);

/** SHA-1 (lowercase hex) of the 16 namespace bytes followed by `name` in UTF-8. */
function sha1Hex(namespaceBytes: Buffer, name: string): string {
  if (oneShotHash === undefined)
    return crypto.createHash('sha1').update(namespaceBytes).update(name, 'utf8').digest('hex');
  const data = Buffer.allocUnsafe(16 + Buffer.byteLength(name, 'utf8'));
  data.set(namespaceBytes, 0);
  data.write(name, 16, 'utf8');
  return oneShotHash('sha1', data, 'hex');
}

/** The UUID text of the first 16 bytes of a SHA-1, with version 5 and the RFC 4122 variant set. */
function formatV5(hex: string): string {
  // Byte 6 = (b6 & 0x0f) | 0x50: hex digit 12 becomes "5"; byte 8 = (b8 & 0x3f) | 0x80: digit 16 is remapped.
  return (
    `${hex.slice(0, 8)}-${hex.slice(8, 12)}-5${hex.slice(13, 16)}-` +
    `${VARIANT_DIGIT[hex[16]]}${hex.slice(17, 20)}-${hex.slice(20, 32)}`
  );
}

function namespaceBytes(namespace: string): Buffer {
  return Buffer.from(namespace.replace(/-/g, ''), 'hex');
}

/** Bytes of POSTHOG_PLUGINS_NAMESPACE: a constant, never handed out (sha1Hex only reads it). */
const OUR_NAMESPACE_BYTES = namespaceBytes(POSTHOG_PLUGINS_NAMESPACE);

/** RFC 4122 version-5 UUID of `name` (UTF-8) in `namespace`; equals Python's uuid.uuid5(namespace, name). */
export function uuidV5(name: string, namespace: string): string {
  if (!UUID_RE.test(namespace)) throw new Error(`uuidV5: namespace is not a UUID: ${JSON.stringify(namespace)}`);
  return formatV5(sha1Hex(namespaceBytes(namespace), name));
}

/** Deterministic UUID for `seed` in posthog-plugins' namespace (e.g. seed = `${inputId}:process_event`). */
export function derivedUuid(seed: string): string {
  if (typeof seed !== 'string') throw new Error('derivedUuid: seed must be a string');
  return formatV5(sha1Hex(OUR_NAMESPACE_BYTES, seed));
}
