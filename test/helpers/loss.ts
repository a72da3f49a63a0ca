import assert from 'node:assert/strict';
import type { SinkWorker } from './python';

/**
 * The accounting of a chaos run: inputs 0…sent-1 (their index in `properties.index`) against what the Python sink
 * executed. Asserts that none was lost, that the sink had no problem, and that every duplicate carried its first
 * output's id; returns the line for the test's diagnostics.
 */
export function assertNothingLost(sink: SinkWorker, sent: number): string {
  const records = sink.records();
  const seen = new Set(records.map((r) => (r.data as { properties?: { index?: number } }).properties?.index));
  const lost = Array.from({ length: sent }, (_, i) => i).filter((i) => !seen.has(i));
  const ids = new Set(records.map((r) => r.task_id));
  const line = `inputs ${sent}, executed ${records.length}, distinct ${seen.size}, lost ${lost.length}, duplicates ${records.length - ids.size}`;
  assert.deepEqual(lost, [], `no input lost (${line})`);
  assert.deepEqual(sink.problems(), []);
  assert.equal(ids.size, seen.size, 'one output id per input (duplicates carry the first id)');
  return line;
}
