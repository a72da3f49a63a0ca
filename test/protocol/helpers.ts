import assert from 'node:assert/strict';
import { decodeTask, DecodeResult } from '../../protocol/decode';
import { parseEnvelope } from '../../protocol/redis-envelope';
import type { JsonObject, RawMessage, TaskMessage } from '../../protocol/types';

/** parseEnvelope that must succeed. */
export function envelopeOk(text: string): Extract<ReturnType<typeof parseEnvelope>, { ok: true }> {
  const r = parseEnvelope(text);
  if (!r.ok) assert.fail(`expected envelope to parse, got: ${r.reason}`);
  return r;
}

export function decodeOk(raw: RawMessage): TaskMessage {
  const r = decodeTask(raw);
  if (!r.ok) assert.fail(`expected message to decode, got: ${r.reason}`);
  return r.task;
}

export function decodeFails(raw: RawMessage): string {
  const r: DecodeResult = decodeTask(raw);
  if (r.ok) assert.fail(`expected decode failure, got task ${JSON.stringify(r.task.task)}`);
  return r.reason;
}

/** A JSON message with the given headers and body (text or value). */
export function jsonMessage(headers: JsonObject, body: unknown, extra: Partial<RawMessage> = {}): RawMessage {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return {
    headers,
    properties: {},
    contentType: 'application/json',
    contentEncoding: 'utf-8',
    body: Buffer.from(text, 'utf8'),
    ...extra,
  };
}

export const EMPTY_EMBED = { callbacks: null, errbacks: null, chain: null, chord: null };
