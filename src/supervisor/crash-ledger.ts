/**
 * Worker-process crashes charged to each plugin config, in a sliding window. When a config reaches the limit
 * (default 3 within 10 min) it is due to be disabled; the ledger forgets it then, so a config enabled again by
 * hand starts from zero.
 */
export interface CrashLedgerOptions {
  limit: number;
  windowMs: number;
  now?: () => number;
}

export interface Charge {
  configId: number;
  /** Crashes of this config within the window, this one included. */
  count: number;
  /** The limit is reached: disable the config. */
  disable: boolean;
}

export class CrashLedger {
  private readonly crashes = new Map<number, number[]>();
  private readonly now: () => number;

  constructor(private readonly opts: CrashLedgerOptions) {
    this.now = opts.now ?? Date.now;
  }

  charge(configId: number): Charge {
    const now = this.now();
    const recent = (this.crashes.get(configId) ?? []).filter((t) => t > now - this.opts.windowMs);
    recent.push(now);
    const disable = recent.length >= Math.max(1, this.opts.limit);
    if (disable) this.crashes.delete(configId);
    else this.crashes.set(configId, recent);
    return { configId, count: recent.length, disable };
  }

  /** Crashes of a config within the window. */
  count(configId: number): number {
    const now = this.now();
    return (this.crashes.get(configId) ?? []).filter((t) => t > now - this.opts.windowMs).length;
  }
}
