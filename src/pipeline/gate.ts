/**
 * A shared/exclusive lock for plugin work in one process: ordinary batches run side by side (shared); a
 * suspect event runs alone (exclusive), so that if the process dies then, the flight record names exactly one
 * event and one plugin config. Waiting exclusive callers go first: new shared callers queue behind them.
 */
export class Gate {
  private sharedActive = 0;
  private exclusiveActive = false;
  private readonly queue: Array<{ exclusive: boolean; start: () => void }> = [];

  shared<T>(fn: () => Promise<T>): Promise<T> {
    return this.run(false, fn);
  }

  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.run(true, fn);
  }

  private async run<T>(exclusive: boolean, fn: () => Promise<T>): Promise<T> {
    await new Promise<void>((resolve) => {
      this.queue.push({ exclusive, start: resolve });
      this.pump();
    });
    try {
      return await fn();
    } finally {
      if (exclusive) this.exclusiveActive = false;
      else this.sharedActive--;
      this.pump();
    }
  }

  private pump(): void {
    while (this.queue.length > 0 && !this.exclusiveActive) {
      const next = this.queue[0] as { exclusive: boolean; start: () => void };
      if (next.exclusive) {
        if (this.sharedActive > 0) return;
        this.exclusiveActive = true;
      } else {
        this.sharedActive++;
      }
      this.queue.shift();
      next.start();
    }
  }
}
