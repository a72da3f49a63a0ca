import { setTimeout as sleep } from 'node:timers/promises';
import type { Broker, Delivery, Settlement } from '../brokers/broker';
import type { Logger } from '../log';
import type { BatchProcessor, Outcome } from './batch-processor';
import { EtaScheduler } from './eta-scheduler';

/** Watches batches go through the plugins (remote control's `active`, Celery task events, metrics). */
export interface LoopObserver {
  /** The batch goes to the plugins now. */
  batchStarted(deliveries: readonly Delivery[]): void;
  /** Its outcomes are decided (before they are settled); null: processing failed, the batch goes back. */
  batchFinished(deliveries: readonly Delivery[], outcomes: readonly Outcome[] | null): void;
}

export interface ConsumerLoopOptions {
  broker: Broker;
  processor: BatchProcessor;
  logger: Logger;
  /** Messages taken from the broker per batch. */
  batchSize: number;
  /** Longest wait for a message before looking at timers again. */
  pollMs?: number;
  observer?: LoopObserver;
}

export interface ConsumerStats {
  received: number;
  published: number;
  dropped: number;
  expired: number;
  rejected: number;
  waiting: number;
}

/**
 * The worker's main loop: receive a batch, process it, settle it (publish + ack together), repeat. The next batch
 * is received while the current one is processed and, where the broker says so (`overlapSettle`, Redis), the
 * previous one's settle is still under way meanwhile; a batch is settled only after the one before it. Broker
 * errors never end the loop: it backs off and tries again. stop() finishes the batch in hand and its settle, gives
 * the batch received ahead and held (eta) messages back, and resolves when the loop has ended.
 */
export class ConsumerLoop {
  private readonly eta = new EtaScheduler();
  private running = false;
  private finished: Promise<void> | null = null;
  readonly stats: ConsumerStats = { received: 0, published: 0, dropped: 0, expired: 0, rejected: 0, waiting: 0 };
  /** Deliveries this loop is working on now (not the batch ahead, not eta holds): the health check's "holds work". */
  inHand = 0;
  /** The settle of the batch processed last, while the loop goes on with the next one (never rejects). */
  private settling: Promise<void> = Promise.resolve();

  constructor(private readonly opts: ConsumerLoopOptions) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.finished = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.finished;
  }

  private async run(): Promise<void> {
    const { broker, logger, batchSize } = this.opts;
    let backoffMs = 100;
    // The next batch, asked for while the current one runs through the plugins (at most one batch ahead), so
    // the broker round trip and the decoding overlap with plugin work instead of adding to it. Its deliveries
    // are unacked like any in hand: acked only once their own outputs are stored, given back if we stop.
    let ahead: Promise<Received> | null = null;
    // A broker that caps unacked deliveries (AMQP prefetch) must allow the batch ahead too, or it never fills. (A
    // broker that overlaps settles would need one batch more; Redis caps nothing.)
    broker.adjustHeld?.(batchSize);
    while (this.running) {
      // Deliveries taken out of the eta scheduler or the broker in this round and not settled yet.
      let inHand: Delivery[] = [];
      // How many of them this.inHand counts (they are counted from processing until their settle ends).
      let counted = 0;
      try {
        const now = Date.now();
        let received: Delivery[];
        if (ahead) {
          const got = await ahead;
          ahead = null;
          if (got.error) throw got.error;
          received = got.deliveries;
          const due = this.eta.takeDue(now, batchSize - received.length);
          if (due.length) broker.adjustHeld?.(-due.length);
          inHand = [...due, ...received];
        } else {
          inHand = this.eta.takeDue(now, batchSize);
          if (inHand.length) broker.adjustHeld?.(-inHand.length);
          const wait = inHand.length > 0 ? 0 : Math.min(this.opts.pollMs ?? 1000, this.eta.msUntilNext(now));
          received = await broker.receive(batchSize - inHand.length, wait);
          inHand = [...inHand, ...received];
        }
        this.stats.received += received.length;
        if (inHand.length > 0) {
          // Only when there was work: an idle loop keeps blocking in receive() instead of polling.
          if (this.running) ahead = receiveAhead(broker, batchSize);
          counted = inHand.length;
          this.inHand += counted;
          const settlements = await this.decide(inHand);
          // Settled in order, one batch at a time, while the loop takes the next batch. From here on the settle
          // owns these deliveries (settleWithRetry), so the catch below must not give them back.
          const size = counted;
          inHand = [];
          counted = 0;
          // Overlapping: wait for the previous batch's settle (at most one runs while the next batch is processed,
          // so a settle that keeps failing stops the intake instead of piling batches up); else for this one.
          const previous = this.settling;
          this.settling = previous.then(() => this.settleBatch(settlements, size));
          await (broker.overlapSettle ? previous : this.settling);
        }
        backoffMs = 100;
      } catch (err) {
        // Whatever this round had in hand must not stay unacked under our live lease: give it back.
        if (inHand.length) await this.giveBack(inHand);
        this.inHand -= counted;
        if (!this.running) break;
        logger.error(`consumer loop error, retrying in ${backoffMs} ms: ${(err as Error).message}`, {
          broker: broker.displayUrl,
        });
        await sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
      }
    }
    if (ahead) {
      // Stopping: the batch taken ahead was never processed; it goes back to the queue, not lost.
      const got = await ahead;
      if (got.deliveries.length) {
        this.stats.received += got.deliveries.length;
        if (await this.giveBack(got.deliveries))
          logger.info(`gave ${got.deliveries.length} prefetched message(s) back to the queue`);
      }
    }
    await this.settling;
    broker.adjustHeld?.(-batchSize);
    const held = this.eta.drain();
    if (held.length) broker.adjustHeld?.(-held.length);
    if (held.length) {
      if (await this.giveBack(held)) logger.info(`gave ${held.length} eta message(s) back to the queue`);
    }
    this.stats.waiting = 0;
  }

  /** Whether they went back; if not they stay unacked, recorded under this worker, and are restored later. */
  private async giveBack(deliveries: Delivery[]): Promise<boolean> {
    try {
      await this.opts.broker.settle(deliveries.map((delivery): Settlement => ({ kind: 'requeue', delivery })));
      return true;
    } catch (err) {
      this.opts.logger.error(
        `could not give ${deliveries.length} message(s) back (they are restored when this worker stops): ${(err as Error).message}`,
      );
      return false;
    }
  }

  /** The batch's settlements; eta holds go to the scheduler. */
  private async decide(batch: Delivery[]): Promise<Settlement[]> {
    this.opts.observer?.batchStarted(batch);
    let outcomes: Outcome[];
    try {
      outcomes = await this.opts.processor.process(batch);
    } catch (err) {
      this.opts.observer?.batchFinished(batch, null);
      throw err;
    }
    this.opts.observer?.batchFinished(batch, outcomes);
    const settlements: Settlement[] = [];
    for (const outcome of outcomes) {
      this.record(outcome);
      if (outcome.kind === 'wait') {
        this.eta.hold(outcome.delivery, outcome.dueMs);
        this.opts.broker.adjustHeld?.(1);
      } else if (outcome.kind === 'ack')
        settlements.push({ kind: 'ack', delivery: outcome.delivery, outputs: outcome.outputs });
      else settlements.push(outcome);
    }
    this.stats.waiting = this.eta.size;
    return settlements;
  }

  /** Settles a batch (retrying) and only then stops counting it as in hand; never rejects. */
  private async settleBatch(settlements: Settlement[], size: number): Promise<void> {
    try {
      await this.settleWithRetry(settlements);
    } catch (err) {
      // Only when stopping: the messages stay unacked and go back to the queue when the broker closes.
      this.opts.logger.error(
        `could not settle ${settlements.length} message(s) before stopping (they go back to the queue): ${(err as Error).message}`,
      );
    } finally {
      this.inHand -= size;
    }
  }

  /**
   * The outcomes are decided and the output ids are derived from the inputs, so settling again after a
   * broker error is safe; giving up instead would leave the batch unacked until a restore. Keeps trying
   * until it works or, once stopping, returns after one last failure (the messages stay unacked and are
   * restored for another worker).
   */
  private async settleWithRetry(settlements: Settlement[]): Promise<void> {
    let backoffMs = 100;
    for (;;) {
      try {
        await this.opts.broker.settle(settlements);
        return;
      } catch (err) {
        if (!this.running) throw err;
        this.opts.logger.error(
          `could not settle ${settlements.length} message(s), retrying in ${backoffMs} ms: ${(err as Error).message}`,
        );
        await sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
      }
    }
  }

  private record(outcome: Outcome): void {
    const { logger } = this.opts;
    const taskId = outcome.delivery.message.headers['id'] ?? null;
    if (outcome.kind === 'reject') {
      this.stats.rejected++;
      logger.warn(`set aside message: ${outcome.reason}`, {
        queue: outcome.delivery.queue,
        taskId,
        tag: outcome.delivery.tag,
      });
    } else if (outcome.kind === 'ack') {
      this.stats[outcome.result]++;
      if (outcome.result === 'expired')
        logger.info('task expired before it could run: acked without running it', { taskId });
    }
  }
}

interface Received {
  deliveries: Delivery[];
  error?: Error;
}

/** A receive that never rejects (it may finish while nobody awaits it yet): the error travels in the result. */
function receiveAhead(broker: Broker, max: number): Promise<Received> {
  return broker.receive(max, 0).then(
    (deliveries) => ({ deliveries }),
    (error: Error) => ({ deliveries: [], error }),
  );
}

/**
 * Longest pause between retries of a failing broker call. A broker call fails fast while the broker is away (no
 * offline queue), and the Redis clients reconnect at most 2 s apart: waiting longer only delays the recovery.
 */
const MAX_BACKOFF_MS = 2_000;
