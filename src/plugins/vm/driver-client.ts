import ivm from 'isolated-vm';
import type { JsonObject } from '../../../protocol/types';
import type { PluginAttachment } from '../../store/types';
import { importNotAvailable } from '../loading/transpile';
import type { SandboxErrorInfo, SandboxLimits } from '../types';
import type { HostOps } from './bridge';
import type { CallGuard } from './call-guard';
import { MAX_LOG_LINE } from './console-limiter';
import type { Driver, ExportsAnswer, GuestAttachment, GuestInit, TaskKind } from './contract';
import { readGuestError, SandboxError } from './errors';
import { GUEST_SOURCE } from './guest-source';

/** Background work in a plugin's isolate (see Driver.task in contract.ts). */
export type { TaskKind };

/** What a plugin exports, as the driver's resolve() answers it. */
export type ExportsInfo = ExportsAnswer;

export const NO_EXPORTS: ExportsInfo = Object.freeze({
  processEvent: false,
  processEventBatch: false,
  setupPlugin: false,
  teardownPlugin: false,
  onEvent: false,
  exportEvents: false,
  runEveryMinute: false,
  runEveryHour: false,
  runEveryDay: false,
  jobs: [],
});

/** The driver's export list, checked field by field (it comes out of the isolate). */
function readExports(json: string): ExportsInfo {
  const v = JSON.parse(json) as Record<string, unknown>;
  const out = { ...NO_EXPORTS, jobs: [] as string[] };
  for (const k of Object.keys(NO_EXPORTS) as Array<keyof ExportsInfo>) {
    if (k === 'jobs') continue;
    out[k] = v[k] === true;
  }
  if (Array.isArray(v.jobs))
    out.jobs = v.jobs.filter((j): j is string => typeof j === 'string' && j.length <= 200).slice(0, 1000);
  return out;
}

/** A task's summary as the driver answered it, checked. */
export interface TaskSummary {
  failed: number;
  retry: boolean;
  error: SandboxErrorInfo | null;
}

export function readTaskSummary(summary: unknown): TaskSummary {
  const r = (typeof summary === 'string' && summary.length <= 64 * 1024 ? JSON.parse(summary) : null) as {
    failed?: unknown;
    retry?: unknown;
    error?: Record<string, unknown>;
  } | null;
  if (!r) throw new SandboxError('invalid-result', 'sandbox driver returned an invalid task summary');
  return {
    failed: typeof r.failed === 'number' ? r.failed : 0,
    retry: r.retry === true,
    error: r.error && typeof r.error === 'object' ? readGuestError(r.error) : null,
  };
}

/** One processEvent entry's answer: per input the new event JSON, null (dropped) or undefined (unchanged). */
export interface EntryResult {
  outputs: Array<string | null | undefined>;
  errors: Array<{ index: number; error: SandboxErrorInfo }>;
}

/** How an entry may run (PluginVm decides; see runEntry). */
export interface EntryPath {
  /** Start on the synchronous driver. */
  sync: boolean;
  /** Nothing else is inside the isolate now: a synchronous call would not wait on a pool thread. */
  isolateFree: () => boolean;
  /** The synchronous call failed (a limit or a broken isolate). */
  onSyncFailure: () => void;
}

/** What the guest is given besides the plugin's code. */
export interface GuestSetup {
  config: JsonObject;
  attachments: PluginAttachment[];
  ops: HostOps;
  unavailable: Readonly<Record<string, string>>;
  maxLogLinesPerSecond: number;
  /** The host's console and request callbacks (ignored Callbacks, so the isolate never waits on the host). */
  log: ivm.Callback;
  request: ivm.Callback;
}

type DriverRefs = { [K in keyof Driver]: ivm.Reference<Driver[K]> };

const NOT_AN_OBJECT: SandboxErrorInfo = Object.freeze({
  name: 'TypeError',
  message: 'processEvent result is not a JSON object',
});

/**
 * The host's side of the guest driver in one isolate (the functions the guest returns): every call with the
 * CPU timeout, and every answer checked, since it comes out of the isolate. One per isolate.
 */
export class DriverClient {
  private constructor(
    private readonly refs: DriverRefs,
    private readonly limits: SandboxLimits,
    private readonly guard: CallGuard,
  ) {}

  /** Run the guest in `context` and keep the driver functions it returns. */
  static async boot(
    context: ivm.Context,
    setup: GuestSetup,
    limits: SandboxLimits,
    guard: CallGuard,
  ): Promise<DriverClient> {
    const opLimits: Record<string, { maxArgBytes: number; maxPending: number }> = {};
    for (const [name, op] of setup.ops)
      opLimits[name] = { maxArgBytes: op.maxArgBytes, maxPending: op.concurrency + op.maxQueued };
    const init = JSON.stringify({
      config: setup.config,
      maxLogLine: MAX_LOG_LINE,
      maxLogLinesPerSecond: setup.maxLogLinesPerSecond,
      importMessage: importNotAvailable('%s'),
      ops: opLimits,
      unavailable: setup.unavailable,
    } satisfies GuestInit);
    const attachments = setup.attachments.map((a): GuestAttachment => ({
      key: a.key,
      content_type: a.contentType,
      file_name: a.fileName,
      bytes: new Uint8Array(a.contents),
      utf8: a.contents.toString('utf8'),
      base64: a.contents.toString('base64'),
    }));
    const driver = await guard.run(
      context.evalClosure(GUEST_SOURCE, [setup.log, setup.request, init, attachments], {
        arguments: { copy: true },
        result: { reference: true },
        timeout: limits.cpuTimeoutMs,
      }),
      'boot',
    );
    const get = (k: string): ivm.Reference => driver.getSync(k, { reference: true }) as ivm.Reference;
    const refs = {
      task: get('task'),
      run: get('run'),
      runSync: get('runSync'),
      resume: get('resume'),
      take: get('take'),
      setup: get('setup'),
      teardown: get('teardown'),
      resolve: get('resolve'),
      settle: get('settle'),
    } as DriverRefs;
    driver.release();
    return new DriverClient(refs, limits, guard);
  }

  /** The driver's settle function, for the bridge. */
  get settle(): DriverRefs['settle'] {
    return this.refs.settle;
  }

  /** The plugin's exports, once its code has run. */
  async exports(): Promise<ExportsInfo> {
    const info = await this.guard.run(
      this.refs.resolve.apply(undefined, [], { result: { copy: true }, timeout: this.limits.cpuTimeoutMs }),
      'plugin load',
    );
    if (typeof info !== 'string' || info.length > 256 * 1024)
      throw new SandboxError('invalid-result', 'sandbox driver returned an invalid export list');
    return readExports(info);
  }

  setup(): Promise<unknown> {
    return this.guard.run(
      this.refs.setup.apply(undefined, [], { result: { promise: true }, timeout: this.limits.cpuTimeoutMs }),
      'setupPlugin',
    );
  }

  teardown(): Promise<unknown> {
    return this.guard.run(
      this.refs.teardown.apply(undefined, [], { result: { promise: true }, timeout: this.limits.cpuTimeoutMs }),
      'teardownPlugin',
    );
  }

  /** Start a background task; its summary (readTaskSummary) is not under the call guard (tasks have their own). */
  task(kind: TaskKind, name: string, arg: string[]): Promise<unknown> {
    return this.refs.task.apply(undefined, [kind, name, arg], {
      arguments: { copy: true },
      result: { promise: true, copy: true },
      timeout: this.limits.cpuTimeoutMs,
    });
  }

  /** One processEvent / processEventBatch entry over `inputs`. Throws SandboxError or the isolate's error. */
  async runEntry(inputs: string[], path: EntryPath): Promise<EntryResult> {
    const { refs, guard } = this;
    const { cpuTimeoutMs: timeout, maxResultBytes } = this.limits;
    const n = inputs.length;
    let answer: unknown;
    if (path.sync) {
      try {
        answer = refs.runSync.applySync(undefined, [inputs, maxResultBytes], {
          arguments: { copy: true },
          result: { copy: true },
          timeout,
        });
      } catch (err) {
        path.onSyncFailure();
        throw err;
      }
      // processEvent returned a promise for some event: the async driver finishes the call from that event on.
      if (answer === '')
        answer = await guard.run(
          refs.resume.apply(undefined, [maxResultBytes], {
            arguments: { copy: true },
            result: { promise: true, copy: true },
            timeout,
          }),
          'processEvent',
        );
    } else {
      answer = await guard.run(
        refs.run.apply(undefined, [inputs, maxResultBytes], {
          arguments: { copy: true },
          result: { promise: true, copy: true },
          timeout,
        }),
        'processEvent',
      );
    }
    // Results that fit come back with the summary ([summary, results]); larger ones are fetched by take() below.
    let summaryJson = answer;
    let taken: unknown = null;
    if (Array.isArray(answer) && answer.length === 2) [summaryJson, taken] = answer as [unknown, unknown];
    if (typeof summaryJson !== 'string' || summaryJson.length > maxResultBytes) {
      throw new SandboxError('invalid-result', 'sandbox driver returned an invalid summary');
    }
    let summary: { bytes?: unknown; errors?: unknown };
    try {
      summary = JSON.parse(summaryJson) as typeof summary;
    } catch {
      throw new SandboxError('invalid-result', 'sandbox driver returned an invalid summary');
    }
    const reported = typeof summary.bytes === 'number' ? summary.bytes : Infinity;
    // take is cheap: applySync whenever the isolate is free.
    const take = async (keep: boolean): Promise<unknown> =>
      path.isolateFree()
        ? refs.take.applySync(undefined, [keep], { result: { copy: true }, timeout })
        : guard.run(refs.take.apply(undefined, [keep], { result: { copy: true }, timeout }), 'processEvent');
    if (reported > maxResultBytes) {
      await take(false);
      throw new SandboxError(
        'too-large',
        `processEvent results too large: ${reported} bytes for ${n} event(s), limit ${maxResultBytes}`,
      );
    }
    const out = taken ?? (await take(true));
    if (!Array.isArray(out) || out.length !== n)
      throw new SandboxError('invalid-result', 'sandbox driver returned an invalid result list');
    return readEntryResults(out, summary.errors, maxResultBytes);
  }
}

/** The entry's results (one per input) and the errors its summary reports, checked. */
function readEntryResults(out: unknown[], summaryErrors: unknown, maxResultBytes: number): EntryResult {
  const n = out.length;
  const errors: Array<{ index: number; error: SandboxErrorInfo }> = [];
  const outputs = new Array<string | null | undefined>(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const v = out[i];
    if (typeof v === 'string') {
      total += v.length;
      if (v.charCodeAt(0) === 123 /* { */) outputs[i] = v;
      else errors.push({ index: i, error: { ...NOT_AN_OBJECT } });
    } else if (v === null || v === undefined) {
      outputs[i] = v;
    } else {
      errors.push({ index: i, error: { ...NOT_AN_OBJECT } });
    }
  }
  if (total > maxResultBytes) {
    throw new SandboxError(
      'too-large',
      `processEvent results too large: ${total} bytes for ${n} event(s), limit ${maxResultBytes}`,
    );
  }
  if (Array.isArray(summaryErrors)) {
    for (const raw of summaryErrors as unknown[]) {
      const r = (raw ?? {}) as Record<string, unknown>;
      const index = typeof r.i === 'number' && Number.isInteger(r.i) && r.i >= 0 && r.i < n ? r.i : -1;
      if (index < 0) continue;
      outputs[index] = undefined;
      errors.push({ index, error: readGuestError(r) });
    }
  }
  return { outputs, errors };
}
