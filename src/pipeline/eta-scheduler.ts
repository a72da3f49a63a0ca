import type { Delivery } from '../brokers/broker';

/**
 * Deliveries whose eta lies ahead. They stay unacked in the broker (so a crash loses nothing) while the
 * consumer keeps taking the messages behind them; when due they rejoin the next batch.
 */
export class EtaScheduler {
  private readonly waiting: Array<{ delivery: Delivery; dueMs: number }> = [];

  hold(delivery: Delivery, dueMs: number): void {
    this.waiting.push({ delivery, dueMs });
    this.waiting.sort((a, b) => a.dueMs - b.dueMs);
  }

  /** Remove and return every delivery due at `nowMs`, at most `max`. */
  takeDue(nowMs: number, max: number): Delivery[] {
    let n = 0;
    while (n < this.waiting.length && n < max && (this.waiting[n] as { dueMs: number }).dueMs <= nowMs) n++;
    return this.waiting.splice(0, n).map((w) => w.delivery);
  }

  /** Milliseconds until the next delivery is due (Infinity when none waits). */
  msUntilNext(nowMs: number): number {
    const first = this.waiting[0];
    return first ? Math.max(0, first.dueMs - nowMs) : Infinity;
  }

  /** Everything still waiting, emptied (shutdown gives these back to the queue). */
  drain(): Delivery[] {
    return this.waiting.splice(0).map((w) => w.delivery);
  }

  get size(): number {
    return this.waiting.length;
  }
}
