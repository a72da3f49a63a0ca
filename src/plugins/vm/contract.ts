/**
 * What crosses the isolate boundary between the host (`sandbox.ts`, `bridge.ts`) and the guest script
 * (`vm/guest/`, bundled into one script at build time). Both sides import these types; every value that comes out
 * of the isolate is still checked field by field by the host, since plugin code runs in the same realm as the guest.
 *
 * The guest is evaluated through `context.evalClosure` in every fresh context, before the plugin, with
 *   $0 = {@link HostLog}, an ignored `ivm.Callback`
 *   $1 = {@link HostRequest}, an ignored `ivm.Callback`
 *   $2 = {@link GuestInit} as JSON text
 *   $3 = {@link GuestAttachment}[] (copied)
 * and returns the {@link Driver}, which only the host holds (as References).
 */

/** Console levels a plugin can print at. */
export type LogLevel = 'debug' | 'log' | 'info' | 'warn' | 'error';

/**
 * $0: one console line (already cut to `maxLogLine`), or `('dropped', count)` for lines dropped by the guest's
 * own rate limit since the last report (count as decimal text).
 */
export type HostLog = (level: LogLevel | 'dropped', line: string) => void;

/**
 * $1: a bridge request: host op `op` with its argument JSON; answered later through {@link Driver.settle}. Each op's
 * own argument and result shapes are defined with the op (`FetchRequest` in plugins/fetch.ts, the others at the top
 * of plugins/api/*-op.ts).
 */
export type HostRequest = (id: number, op: string, argsJson: string) => void;

/** Guest-side limits of one host op (the host checks them again). */
export interface OpLimits {
  /** Largest argument JSON, in UTF-16 units. */
  maxArgBytes: number;
  /** Requests of this op waiting for an answer at once (the host's concurrency + queue). */
  maxPending: number;
}

/** $2, as JSON text. */
export interface GuestInit {
  /** The plugin config: `meta.config`. */
  config: unknown;
  /** Longest console line, in UTF-16 units. */
  maxLogLine: number;
  /** Console lines per second before the guest drops them. */
  maxLogLinesPerSecond: number;
  /** Message of the error `require` throws for a module plugins may not import; `%s` = the module name. */
  importMessage: string;
  /** The host ops this worker offers (fetch, cache, storage, jobs, capture…), by name. */
  ops: Record<string, OpLimits>;
  /** For the meta APIs whose op is not offered: why (shown to the plugin when it calls them). */
  unavailable: Record<string, string>;
}

/** $3: one plugin attachment (`meta.attachments[key]`), its contents also decoded by the host. */
export interface GuestAttachment {
  key: string;
  content_type: string;
  file_name: string;
  bytes: Uint8Array;
  utf8: string;
  base64: string;
}

/** What {@link Driver.resolve} answers (as JSON text): which plugin functions exist. */
export interface ExportsAnswer {
  processEvent: boolean;
  processEventBatch: boolean;
  setupPlugin: boolean;
  teardownPlugin: boolean;
  onEvent: boolean;
  exportEvents: boolean;
  runEveryMinute: boolean;
  runEveryHour: boolean;
  runEveryDay: boolean;
  /** Names of the functions in the plugin's `jobs` export. */
  jobs: string[];
}

/** A thrown value as the guest reports it, every field cut (name 200, message 4096, stack 16384 UTF-16 units). */
export interface ErrorReport {
  /** Index of the event it belongs to (0 for a task). */
  i: number;
  name: string;
  message: string;
  /** Present when the thrown value had a string `stack`. */
  stack?: string;
  /** Present (true) only when a string was thrown. */
  thrownString?: true;
}

/** The summary of a processEvent call (JSON text): result size in UTF-16 units (results + error reports). */
export interface RunSummary {
  bytes: number;
  errors: ErrorReport[];
}

/** Per input event: the new event JSON, null = dropped, undefined = unchanged because of an error. */
export type RunResults = Array<string | null | undefined>;

/**
 * What run(), runSync() and resume() answer: `[summary JSON, results]` when the results come to at most maxBytes
 * (one entry instead of two), else the summary JSON alone, the results kept in the guest for {@link Driver.take}.
 */
export type RunAnswer = string | [string, RunResults];

/** Background work: onEvent (arg: event JSONs, one call each), exportEvents (arg: event JSONs, one call),
 * schedule (name: runEveryMinute/Hour/Day), job (name: a jobs entry; arg: [payload JSON]). */
export type TaskKind = 'onEvent' | 'exportEvents' | 'schedule' | 'job';

/** What {@link Driver.task} answers (as JSON text). */
export interface TaskSummary {
  /** Calls that threw (onEvent: per event; the others: 0 or 1). */
  failed: number;
  /** The last error was a RetryError (exportEvents is then retried later). */
  retry: boolean;
  /** The last error, when there was one (`i` is 0). */
  error?: ErrorReport;
}

/** A failed host op, as the host settles it (JSON text, `ok` false). */
export interface SettleError {
  /** 'TypeError' becomes a TypeError; anything else an error of the API's own class, named by the guest. */
  name: string;
  message: string;
  /** node-fetch style error type ('max-size', 'too-many-requests', 'system', …). */
  type?: string;
  /** An errno-style code (e.g. 'ECONNREFUSED'), set as both `code` and `errno`. */
  code?: string;
}

/** The object the guest returns; the host holds each method as a Reference. */
export interface Driver {
  /** After the plugin code ran: finds its functions; answers {@link ExportsAnswer} JSON. */
  resolve(): string;
  /** Awaits setupPlugin(meta) when exported. */
  setup(): Promise<void>;
  /** Awaits teardownPlugin(meta) when exported. */
  teardown(): Promise<void>;
  /** processEvent event by event, or processEventBatch over the whole call, on event JSONs. */
  run(inputs: string[], maxBytes: number): Promise<RunAnswer>;
  /**
   * Like run(), synchronous (the host's applySync), for plugins with processEvent; '' when processEvent returned a
   * thenable: the state is kept and resume() finishes the call asynchronously, from that event on.
   */
  runSync(inputs: string[], maxBytes: number): RunAnswer | '';
  /** Finishes what runSync() left (throws a TypeError when nothing was left). */
  resume(maxBytes: number): Promise<RunAnswer>;
  /** The results kept by the last run when they were over maxBytes; null when `keep` is false (dropped). */
  take(keep: boolean): RunResults | null;
  /** Runs background work; answers {@link TaskSummary} JSON. */
  task(kind: TaskKind, name: string, arg: string[]): Promise<string>;
  /** Completes bridge request `id`: `json` is the result when ok, else a {@link SettleError}. Never throws. */
  settle(id: number, ok: boolean, json: string): void;
}
