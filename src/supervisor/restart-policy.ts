/**
 * When to start a replacement worker process. A worker that had started consuming is replaced at once. One
 * that keeps dying before it gets there (database refusing it, a bad setting) is restarted with a growing
 * delay, 1 s doubling to 30 s, so it does not spin; so is one that dies over and over for any reason (more
 * than `burst` deaths within a minute), as a last guard against a crash loop nobody else stops.
 */
export interface RestartPolicyOptions {
  firstDelayMs?: number;
  maxDelayMs?: number;
  /** Deaths within a minute that trigger the delay whatever their cause. */
  burst?: number;
}

export class RestartPolicy {
  private readonly opts: Required<RestartPolicyOptions>;
  /** Consecutive early deaths. */
  private early = 0;
  private readonly deaths: number[] = [];

  constructor(options: RestartPolicyOptions = {}) {
    this.opts = { firstDelayMs: 1_000, maxDelayMs: 30_000, burst: 10, ...options };
  }

  /**
   * Record a death; returns the delay before the replacement starts.
   * `ready`: the worker had started consuming. `pluginCrash`: the death is explained by a plugin (the crash
   * ledger deals with those, e.g. a setupPlugin that aborts), so it does not count as an early death.
   */
  onDeath(ready: boolean, pluginCrash: boolean, now = Date.now()): { delayMs: number; early: number } {
    this.deaths.push(now);
    while (this.deaths.length > 0 && (this.deaths[0] as number) <= now - 60_000) this.deaths.shift();
    if (ready) this.early = 0;
    else if (!pluginCrash) this.early++;
    let delayMs = 0;
    if (this.early >= 2) delayMs = this.backoff(this.early - 1);
    if (this.deaths.length > this.opts.burst)
      delayMs = Math.max(delayMs, this.backoff(this.deaths.length - this.opts.burst));
    return { delayMs, early: this.early };
  }

  private backoff(n: number): number {
    return Math.min(this.opts.maxDelayMs, this.opts.firstDelayMs * 2 ** Math.max(0, Math.min(n - 1, 20)));
  }
}
