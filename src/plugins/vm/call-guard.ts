import { SandboxError } from './errors';

/**
 * The wall-clock deadline of a PluginVm's isolate calls (calls are serialised: one at a time). On the deadline
 * `onDeadline` disposes the isolate. A bridge settle that hits a limit while a call waits (code after `await fetch()`
 * looping, allocating) fails that call at once (trip).
 */
export class CallGuard {
  /** A call is waiting on the isolate now. */
  busy = false;
  private tripCall: ((e: SandboxError) => void) | null = null;
  private callWhat = '';

  constructor(
    private readonly wallTimeoutMs: number,
    private readonly onDeadline: () => void,
  ) {}

  async run<T>(p: Promise<T>, what: string): Promise<T> {
    const ms = this.wallTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    p.catch(() => undefined); // may reject after the deadline ("Promise was abandoned")
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.onDeadline();
        reject(new SandboxError('deadline', `${what} did not finish within ${ms} ms (wall-clock deadline)`));
      }, ms);
    });
    const tripped = new Promise<never>((_, reject) => {
      this.tripCall = reject;
    });
    this.callWhat = what;
    this.busy = true;
    try {
      return await Promise.race([p, deadline, tripped]);
    } finally {
      this.busy = false;
      this.tripCall = null;
      clearTimeout(timer);
    }
  }

  /** What the call waiting now is doing (e.g. 'processEvent'), or null when none waits. */
  get waiting(): string | null {
    return this.tripCall ? this.callWhat : null;
  }

  /** Fail the waiting call with `e` (see waiting). */
  trip(e: SandboxError): void {
    this.tripCall?.(e);
  }
}
