import type { SandboxErrorInfo, SandboxLimits } from '../types';

export type FailureKind =
  | 'timeout' // isolated-vm `timeout` (CPU) fired
  | 'deadline' // our wall-clock deadline passed
  | 'memory' // isolate disposed by isolated-vm at its memory limit
  | 'disposed' // isolate gone for another reason (closed while running)
  | 'too-large' // results over maxResultBytes
  | 'invalid-result' // the driver answered something malformed
  | 'call' // the call rejected for another reason (e.g. an unhandled rejection inside the plugin)
  | 'load' // plugin code failed to compile or run at load
  | 'setup'; // setupPlugin threw or failed

export class SandboxError extends Error {
  constructor(
    readonly kind: FailureKind,
    message: string,
    /** The error as thrown inside the isolate (for 'call', 'load', 'setup'). */
    readonly original?: SandboxErrorInfo,
  ) {
    super(message);
    this.name =
      original?.name ??
      (kind === 'timeout' || kind === 'deadline'
        ? 'TimeoutError'
        : kind === 'memory'
          ? 'MemoryLimitError'
          : kind === 'too-large'
            ? 'ResultTooLargeError'
            : 'Error');
  }

  /** After these the isolate's state is unknown (or it is gone): dispose and recreate it. */
  get needsRecycle(): boolean {
    return this.kind === 'timeout' || this.kind === 'deadline' || this.kind === 'memory' || this.kind === 'disposed';
  }

  info(): SandboxErrorInfo {
    if (this.original && (this.kind === 'call' || this.kind === 'load' || this.kind === 'setup')) {
      return { ...this.original, message: this.kind === 'call' ? this.original.message : this.message };
    }
    return { name: this.name, message: this.message, stack: this.stack };
  }
}

/** Host-side caps on what the driver reports about a thrown error (the guest cuts them too). */
const MAX_ERROR_NAME = 256;
const MAX_ERROR_MESSAGE = 4096 + 64;
const MAX_ERROR_STACK = 16384 + 64;

/**
 * An error as the guest driver reports it (a processEvent's in the batch summary, a task's in its summary). It
 * comes out of the isolate: every field is checked and cut.
 */
export function readGuestError(raw: Record<string, unknown>): SandboxErrorInfo {
  const error: SandboxErrorInfo = {
    name: typeof raw.name === 'string' ? raw.name.slice(0, MAX_ERROR_NAME) : 'Error',
    message: typeof raw.message === 'string' ? raw.message.slice(0, MAX_ERROR_MESSAGE) : 'unknown error',
  };
  if (typeof raw.stack === 'string') error.stack = raw.stack.slice(0, MAX_ERROR_STACK);
  if (raw.thrownString === true) error.thrownString = true;
  return error;
}

/** An error an isolate call rejected with on the host (isolated-vm's, or what the plugin threw through it). */
export function errorInfo(err: unknown): SandboxErrorInfo {
  if (typeof err === 'string') return { name: 'Error', message: err, thrownString: true };
  const e = (err ?? {}) as { name?: unknown; message?: unknown; stack?: unknown };
  const info: SandboxErrorInfo = {
    name: typeof e.name === 'string' ? e.name : 'Error',
    message: typeof e.message === 'string' ? e.message : String(err),
  };
  if (typeof e.stack === 'string') info.stack = e.stack;
  return info;
}

/**
 * What a failed isolate call means: a limit (memory, CPU), an isolate that is gone, or the plugin's own error.
 * After 'memory' isolated-vm has disposed the isolate: the caller drops it.
 */
export function classifyFailure(err: unknown, what: string, limits: SandboxLimits, isolateGone: boolean): SandboxError {
  if (err instanceof SandboxError) return err;
  const info = errorInfo(err);
  const msg = info.message;
  if (/memory limit/i.test(msg)) {
    return new SandboxError('memory', `${what} exceeded the memory limit of ${limits.memoryLimitMb} MB (${msg})`);
  }
  if (msg === 'Script execution timed out.' || /execution timed out/i.test(msg)) {
    return new SandboxError('timeout', `${what} exceeded the CPU time limit of ${limits.cpuTimeoutMs} ms`);
  }
  if (isolateGone) return new SandboxError('disposed', `${what} failed: isolate was disposed (${msg})`);
  return new SandboxError('call', msg, info);
}
