import type { SandboxErrorInfo } from '../types';
import type { EntryResult, ExportsInfo } from './driver-client';
import type { SandboxError } from './errors';

export interface BatchOutcome {
  /** Per input: new event JSON, null = dropped, undefined = unchanged (error, not run, or no processEvent). */
  outputs: Array<string | null | undefined>;
  /** Per-event failures (thrown errors, and timeouts/memory found by the event-by-event rerun). */
  errors: Array<{ index: number; error: SandboxErrorInfo }>;
  /** Isolates disposed and recreated during this call. */
  recreated: number;
  /** Entries of this call that hit the wall-clock deadline (a promise that never settled). */
  deadlines: number;
  /** Events this plugin did not get to run on (config failed or gave up after repeated fatal failures). */
  notRun: number;
  /**
   * An error not tied to one event: the config became unusable during this call (recreate + setupPlugin failed),
   * or code that ran between calls (a host call settled after its processEvent had returned) hit a limit.
   */
  failure: SandboxErrorInfo | null;
}

export function emptyOutcome(n: number): BatchOutcome {
  return {
    outputs: new Array<string | null | undefined>(n).fill(undefined),
    errors: [],
    recreated: 0,
    deadlines: 0,
    notRun: 0,
    failure: null,
  };
}

/** What a processEvent call needs from its PluginVm. */
export interface BatchCallHost {
  /** The config is usable (false once recreating its isolate failed). */
  ready(): boolean;
  /** One isolate entry over these events. Throws on a failure not tied to one event. */
  runEntry(inputs: string[]): Promise<EntryResult>;
  classify(err: unknown, what: string): SandboxError;
  /** Dispose the isolate after `cause` and make a new one (counted and reported in `outcome`). */
  recycle(outcome: BatchOutcome, cause: SandboxError): Promise<void>;
  warn(message: string): void;
}

/** In the event-by-event rerun, give up on the rest of the call after this many fatal (isolate-killing) failures. */
const MAX_FATAL_PER_CALL = 2;
/**
 * A processEvent entry into the isolate takes at most this many events (one at least, whatever its size).
 * isolated-vm sizes an isolate's young generation from its memory limit (~1.4 MB at 64 MB): a whole batch (hundreds
 * of events in, parsed and out at once) outgrew it, so scavenges promoted it into the old generation. Per event
 * with ~1.3 KB events: ~10 µs up to 128 per entry, 31 µs at 256, 44 µs at 1,000 (test/bench/isolate-slices.ts);
 * crossing into the isolate costs ~1 µs, so small slices cost nothing that shows.
 */
const ENTRY_MAX_EVENTS = 64;
/** …and at most this many characters of event JSON (UTF-16 code units, as String length counts them). */
const ENTRY_MAX_CHARS = 96 * 1024;

/** What one processEvent call has been through so far, over its slices. */
interface CallState {
  /** Isolate-killing failures in the event-by-event runs. */
  fatal: number;
  /** An entry of this call failed: the rest runs one event per entry. */
  byEvent: boolean;
}

/**
 * Run a ready config's processEvent / processEventBatch over `inputs`, filling `outcome`. processEventBatch gets
 * the whole call (the plugin may dedupe or aggregate across it, and it runs on the async driver, which gains nothing
 * from slices); processEvent goes in slices (ENTRY_MAX_EVENTS, ENTRY_MAX_CHARS).
 */
export async function runBatchCall(
  inputs: string[],
  exports: ExportsInfo,
  outcome: BatchOutcome,
  host: BatchCallHost,
): Promise<void> {
  const n = inputs.length;
  const maxEvents = exports.processEvent ? ENTRY_MAX_EVENTS : n;
  const maxChars = exports.processEvent ? ENTRY_MAX_CHARS : Infinity;
  const call: CallState = { fatal: 0, byEvent: false };
  for (let start = 0; start < n;) {
    let end = start + 1;
    let chars = inputs[start].length;
    while (end < n && end - start < maxEvents && chars + inputs[end].length <= maxChars) chars += inputs[end++].length;
    await runSlice(inputs.slice(start, end), start, outcome, call, host);
    start = end;
  }
  if (outcome.notRun > 0 && host.ready()) {
    host.warn(
      `gave up on ${outcome.notRun} event(s) after ${call.fatal} fatal failures in one call; they pass through unchanged`,
    );
  }
}

/**
 * One isolate entry for `inputs` (the call's events from `start` on), or event by event: after that entry
 * fails, and for every later slice of the call once one has failed (a plugin whose slice keeps hitting a limit
 * would otherwise cost a limit and a recreated isolate per slice).
 */
async function runSlice(
  inputs: string[],
  start: number,
  outcome: BatchOutcome,
  call: CallState,
  host: BatchCallHost,
): Promise<void> {
  const n = inputs.length;
  if (!host.ready() || call.fatal >= MAX_FATAL_PER_CALL) {
    outcome.notRun += n;
    return;
  }
  if (!call.byEvent) {
    try {
      const r = await host.runEntry(inputs);
      for (let i = 0; i < n; i++) outcome.outputs[start + i] = r.outputs[i];
      for (const er of r.errors) outcome.errors.push({ index: start + er.index, error: er.error });
      return;
    } catch (err) {
      const e = host.classify(err, 'processEvent');
      if (e.kind === 'deadline') outcome.deadlines++;
      if (e.needsRecycle) await host.recycle(outcome, e);
      call.byEvent = true;
      if (n === 1) {
        outcome.errors.push({ index: start, error: e.info() });
        return;
      }
      host.warn(`processEvent entry of ${n} events failed (${e.message}); running the rest of the call event by event`);
    }
  }
  // Event by event, so only the offending event keeps its previous value.
  for (let i = 0; i < n; i++) {
    if (!host.ready() || call.fatal >= MAX_FATAL_PER_CALL) {
      outcome.notRun++;
      continue;
    }
    try {
      const r = await host.runEntry([inputs[i]]);
      outcome.outputs[start + i] = r.outputs[0];
      for (const er of r.errors) outcome.errors.push({ index: start + i, error: er.error });
    } catch (err) {
      const e = host.classify(err, 'processEvent');
      outcome.errors.push({ index: start + i, error: e.info() });
      if (e.kind === 'deadline') outcome.deadlines++;
      if (e.needsRecycle) {
        call.fatal++;
        await host.recycle(outcome, e);
      }
    }
  }
}
