import type { SandboxErrorInfo } from '../types';
import { type DriverClient, readTaskSummary, type TaskKind } from './driver-client';
import { errorInfo, type SandboxError } from './errors';

export interface TaskOutcome {
  /** Calls that threw (onEvent: per event; the others: 0 or 1). */
  failed: number;
  /** The last error thrown by the plugin, or the limit that stopped it. */
  error: SandboxErrorInfo | null;
  /** The plugin threw RetryError (exportEvents is retried later). */
  retry: boolean;
  /**
   * Not the plugin's answer: the isolate was not running, was recreated or closed under the task, or the task
   * passed its wall-clock deadline and was abandoned. Work that can be retried (a job) should be.
   */
  interrupted: 'not-ready' | 'disposed' | 'deadline' | 'limit' | null;
}

/** What a background task needs from its PluginVm. */
export interface TaskCallHost {
  /** The task's isolate is gone (closed, recreated or disposed since the task started). */
  stale(): boolean;
  classify(err: unknown, what: string): SandboxError;
  /** The task hit a limit: the isolate has to be recreated. */
  onLimit(cause: SandboxError): void;
}

export function describeTask(kind: TaskKind, name: string): string {
  return kind === 'schedule' ? name : kind === 'job' ? `job ${JSON.stringify(name)}` : kind;
}

/**
 * One background task in `driver`'s isolate. The task has `wallMs` as a whole, after which it is abandoned (not
 * disposed: a never-settling promise only costs memory, which the memory limit caps). Never throws.
 */
export async function runTaskCall(
  driver: DriverClient,
  kind: TaskKind,
  name: string,
  arg: string[],
  wallMs: number,
  host: TaskCallHost,
): Promise<TaskOutcome> {
  const outcome: TaskOutcome = { failed: 0, error: null, retry: false, interrupted: null };
  let timer: NodeJS.Timeout | undefined;
  try {
    const p = driver.task(kind, name, arg);
    p.catch(() => undefined);
    const deadline = new Promise<'deadline'>((resolve) => {
      timer = setTimeout(() => resolve('deadline'), wallMs);
    });
    const summary = await Promise.race([p, deadline]);
    if (summary === 'deadline') {
      outcome.interrupted = 'deadline';
      outcome.failed = 1;
      outcome.error = {
        name: 'TimeoutError',
        message: `${describeTask(kind, name)} did not finish within ${wallMs} ms (abandoned)`,
      };
      return outcome;
    }
    const r = readTaskSummary(summary);
    outcome.failed = r.failed;
    outcome.retry = r.retry;
    outcome.error = r.error;
    return outcome;
  } catch (err) {
    outcome.failed = 1;
    if (host.stale()) {
      // Its isolate is gone (recreated, closed): nothing of this failure may touch the current one.
      outcome.interrupted = 'disposed';
      outcome.error = errorInfo(err);
      return outcome;
    }
    const e = host.classify(err, describeTask(kind, name));
    outcome.error = e.info();
    if (e.kind === 'disposed') {
      outcome.interrupted = 'disposed';
    } else if (e.needsRecycle) {
      outcome.interrupted = 'limit';
      host.onLimit(e);
    }
    return outcome;
  } finally {
    clearTimeout(timer);
  }
}
