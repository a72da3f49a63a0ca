import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import {
  bindingMember,
  buildEnvelope,
  buildEnvelopeBytes,
  consumeKeys,
  parseEnvelope,
  priorityKey,
  type EnvelopeOptions,
} from '../../../protocol/redis-envelope';
import type { RawMessage } from '../../../protocol/types';
import type { Logger } from '../../log';
import { type BoundedRedis, createRedisClient } from '../../redis/client';
import type { Broker, Delivery, Outgoing, SetAsideListener, Settlement } from '../broker';
import { maskPassword } from '../mask-password';
import {
  KOMBU_UNACKED,
  KOMBU_UNACKED_INDEX,
  WORKERS_KEY,
  inflightKey,
  kombuBindingKey,
  landingKey,
  leaseKey,
  setAsideKey,
} from './keys';
import { POP_SCRIPT, RESTORE_SCRIPT, SETTLE_SCRIPT, type ScriptedRedis } from './scripts';
import { type LeaseInfo, UnackedRestorer, processSpace } from './unacked-restorer';

export interface RedisBrokerOptions {
  url: string;
  inputQueue: string;
  /** Queues we publish to; their kombu bindings are declared like a Python producer would. */
  outputQueues: string[];
  logger: Logger;
  onSetAside?: SetAsideListener;
  /** Called each time a lost connection is made again (metrics). */
  onReconnect?: () => void;
  workerId?: string;
  /** How long a silent worker keeps its messages before others restore them. */
  leaseTtlMs?: number;
  /** kombu's visibility_timeout, for restoring Python workers' (and stuck) messages. */
  visibilityTimeoutS?: number;
  /** How often to look for dead workers / for messages past the visibility timeout. */
  deadWorkerScanMs?: number;
  visibilityScanMs?: number;
  /** Longest single blocking wait while idle; bounds the latency of priority >= 3 messages when idle. */
  idleBlockMs?: number;
}

const DEFAULTS = {
  leaseTtlMs: 45_000,
  visibilityTimeoutS: 3600,
  deadWorkerScanMs: 2_000,
  visibilityScanMs: 60_000,
  idleBlockMs: 100,
};

/**
 * Celery's kombu Redis transport, consumer and producer side, without kombu's loss window: pop + unacked
 * record in one Lua call, publish + ack in one Lua call, leases so a dead worker's messages come back in
 * seconds, and kombu-compatible unacked records so Python workers can restore ours and we theirs.
 */
export class RedisBroker implements Broker {
  readonly displayUrl: string;
  readonly workerId: string;
  readonly overlapSettle = true;
  private readonly opts: Required<Omit<RedisBrokerOptions, 'onSetAside' | 'workerId' | 'onReconnect'>> &
    Pick<RedisBrokerOptions, 'onSetAside' | 'onReconnect'>;
  private cmd!: ScriptedRedis;
  private blocking!: BoundedRedis;
  private restorer!: UnackedRestorer;
  private readonly held = new Map<string, Delivery>();
  private readonly timers: NodeJS.Timeout[] = [];
  private closed = false;
  private orphansPossible = false;
  private opened = false;
  private connectError: Error | null = null;
  private readonly startedAt = new Date().toISOString();
  private readonly space = processSpace();

  constructor(options: RedisBrokerOptions) {
    this.opts = { ...DEFAULTS, ...options };
    this.workerId = options.workerId ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
    this.displayUrl = maskPassword(options.url, '***');
  }

  async connect(): Promise<void> {
    try {
      await this.open();
    } catch (err) {
      // A failed attempt must not leave clients reconnecting in the background (the caller retries connect()).
      this.cmd?.disconnect();
      this.blocking?.disconnect();
      // ioredis rejects with "Connection is closed."; the reason (ECONNREFUSED, WRONGPASS…) came as an 'error'.
      const cause = this.connectError;
      this.connectError = null;
      if (cause && /Connection is closed/.test((err as Error).message))
        throw new Error(`Redis at ${this.displayUrl}: ${cause.message}`);
      throw err;
    }
  }

  private async open(): Promise<void> {
    // Bounded clients (see createRedisClient): a command in flight when the connection drops fails instead of
    // hanging, and is never replayed (a replayed pop would take a second batch while the first sits unacked and
    // unknown to us; lost pops are recovered by restoreOrphans() instead).
    const common = {
      // A failed-over master answers READONLY: reconnect so the client finds the new one.
      reconnectOnError: (err: Error) => err.message.startsWith('READONLY'),
    };
    this.cmd = createRedisClient(this.opts.url, {
      ...common,
      name: `posthog-plugins:${this.workerId}`,
    }) as ScriptedRedis;
    this.blocking = createRedisClient(this.opts.url, { ...common, name: `posthog-plugins:${this.workerId}:wait` });
    for (const client of [this.cmd, this.blocking]) {
      // While connecting, the failed attempt is the caller's one line (worker-process.ts connectWithRetry), with the cause.
      client.on('error', (err: Error) => {
        if (this.opened) this.opts.logger.warn(`redis connection error: ${err.message}`, { broker: this.displayUrl });
        else this.connectError = err;
      });
    }
    // ioredis reconnects by itself; every 'ready' after the first is a connection made again.
    let readies = 0;
    this.cmd.on('ready', () => {
      if (readies++ > 0) this.opts.onReconnect?.();
    });
    this.cmd.defineCommand('phPop', { lua: POP_SCRIPT });
    this.cmd.defineCommand('phSettle', { lua: SETTLE_SCRIPT });
    this.cmd.defineCommand('phRestore', { lua: RESTORE_SCRIPT });
    await Promise.all([this.cmd.connect(), this.blocking.connect()]);
    await this.checkServerVersion();
    this.restorer = new UnackedRestorer(this.cmd, this.opts.logger);

    // Declare queues the way kombu does (binding member in _kombu.binding.<queue>), so Python's restore
    // and Python producers that route through the named exchange can find them.
    const pipe = this.cmd.pipeline();
    for (const queue of new Set([this.opts.inputQueue, ...this.opts.outputQueues])) {
      pipe.sadd(kombuBindingKey(queue), bindingMember(queue, queue));
    }
    await pipe.exec();

    await this.renewLease();
    await this.restorer.restoreDeadWorkers(this.workerId, this.opts.inputQueue);
    await this.restorer.restoreVisible(this.opts.visibilityTimeoutS, new Set());
    this.every(Math.max(250, Math.floor(this.opts.leaseTtlMs / 5)), () => this.renewLease());
    this.every(this.opts.deadWorkerScanMs, () => this.restorer.restoreDeadWorkers(this.workerId, this.opts.inputQueue));
    this.every(this.opts.visibilityScanMs, () =>
      this.restorer.restoreVisible(this.opts.visibilityTimeoutS, new Set(this.held.keys())),
    );
    this.opened = true;
  }

  /** BLMOVE and RPOP with a count need Redis 6.2; say so once instead of failing on every pop. */
  private async checkServerVersion(): Promise<void> {
    const info = await this.cmd.info('server');
    const version = /redis_version:(\d+)\.(\d+)/.exec(info);
    if (version && (Number(version[1]) < 6 || (Number(version[1]) === 6 && Number(version[2]) < 2))) {
      throw new Error(
        `Redis ${version[1]}.${version[2]} at ${this.displayUrl} is too old: posthog-plugins needs Redis 6.2 or newer (BLMOVE, RPOP with a count)`,
      );
    }
  }

  private every(ms: number, task: () => Promise<unknown>): void {
    let running = false;
    const timer = setInterval(() => {
      if (running || this.closed) return;
      running = true;
      task()
        .catch((err: Error) => this.opts.logger.warn(`redis housekeeping failed: ${err.message}`))
        .finally(() => (running = false));
    }, ms);
    timer.unref();
    this.timers.push(timer);
  }

  private async renewLease(): Promise<void> {
    const info: LeaseInfo = { host: hostname(), pid: process.pid, started: this.startedAt, processSpace: this.space };
    await this.cmd
      .multi()
      .sadd(WORKERS_KEY, this.workerId)
      .set(leaseKey(this.workerId), JSON.stringify(info), 'PX', this.opts.leaseTtlMs)
      .exec();
  }

  async receive(max: number, waitMs: number): Promise<Delivery[]> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const batch = await this.pop(max);
      if (batch.length > 0 || this.closed) return batch;
      const remaining = deadline - Date.now();
      if (remaining <= 0) return [];
      // Block on the priority-0 list (where PostHog's events go) into our landing list; the next pop takes it.
      // Priority >= 3 lists are looked at by the pop between waits.
      const seconds = Math.min(remaining, this.opts.idleBlockMs) / 1000;
      await this.blocking.blmove(this.opts.inputQueue, landingKey(this.workerId), 'RIGHT', 'LEFT', seconds);
    }
  }

  /** Restore in-flight tags that no delivery in hand accounts for (a pop whose reply was lost). */
  private async restoreOrphans(): Promise<void> {
    const inflight = inflightKey(this.workerId);
    const orphans = (await this.cmd.smembers(inflight)).filter((tag) => !this.held.has(tag));
    const restored = await this.restorer.restoreTags(orphans, inflight);
    if (restored) this.opts.logger.warn(`returned ${restored} message(s) whose pop reply was lost to the queue`);
    this.orphansPossible = false;
  }

  private async pop(max: number): Promise<Delivery[]> {
    if (this.orphansPossible) await this.restoreOrphans();
    const now = Date.now();
    const keys = [
      KOMBU_UNACKED,
      KOMBU_UNACKED_INDEX,
      inflightKey(this.workerId),
      landingKey(this.workerId),
      setAsideKey(this.opts.inputQueue),
      ...consumeKeys(this.opts.inputQueue),
    ];
    let taken: string[];
    let bad: string[];
    try {
      [taken, bad] = await this.cmd.phPop(
        keys.length,
        ...keys,
        String(max),
        (now / 1000).toFixed(6),
        new Date(now).toISOString(),
        this.opts.inputQueue,
      );
    } catch (err) {
      // The script may have run although its reply was lost: whatever it took is recorded in our in-flight
      // set but not held by anyone here. Give such orphans back before the next pop.
      this.orphansPossible = true;
      throw err;
    }
    for (let i = 0; i < bad.length; i += 2) this.opts.onSetAside?.(bad[i] as string, bad[i + 1] as string);

    const deliveries: Delivery[] = [];
    const unreadable: Settlement[] = [];
    for (let i = 0; i < taken.length; i += 2) {
      const rawText = taken[i] as string;
      const tag = taken[i + 1] as string;
      const parsed = parseEnvelope(rawText);
      if (!parsed.ok || parsed.deliveryTag !== tag) {
        // It has a delivery tag (the pop script checked) but no readable message: set it aside properly. The pop
        // script reads the tag with a pattern; a text where that disagrees with JSON.parse (duplicate keys) is
        // not one a Python worker would read the same way either.
        const reason = parsed.ok
          ? `envelope has two different delivery tags (${JSON.stringify(tag)} and ${JSON.stringify(parsed.deliveryTag)})`
          : parsed.reason;
        const delivery: Delivery = {
          tag,
          queue: this.opts.inputQueue,
          message: emptyMessage(),
          redelivered: false,
          rawText,
        };
        unreadable.push({ kind: 'reject', delivery, reason });
        continue;
      }
      const delivery: Delivery = {
        tag: parsed.deliveryTag,
        queue: this.opts.inputQueue,
        message: parsed.message,
        redelivered: parsed.redelivered,
        rawText,
      };
      this.held.set(delivery.tag, delivery);
      deliveries.push(delivery);
    }
    if (unreadable.length) {
      await this.settle(unreadable);
      for (const s of unreadable) if (s.kind === 'reject') this.opts.onSetAside?.(s.reason, s.delivery.rawText);
    }
    return deliveries;
  }

  async settle(settlements: Settlement[]): Promise<void> {
    if (settlements.length === 0) return;
    const requeue = settlements.filter((s) => s.kind === 'requeue').map((s) => s.delivery.tag);
    const outputKeys = new Map<string, number>();
    const keyIndex = (key: string): string => {
      let index = outputKeys.get(key);
      if (index === undefined) {
        index = 4 + outputKeys.size;
        outputKeys.set(key, index);
      }
      return String(index);
    };
    // Envelopes go as UTF-8 Buffers: with only strings, ioredis joins a batch's arguments into one long string
    // that the socket then flattens and converts again; with Buffers it copies each once into the command buffer
    // (about half the client CPU per output, measured with 1,000 envelopes of ~3.7 KB per call).
    const args: Array<string | Buffer> = [];
    const now = new Date().toISOString();
    for (const s of settlements) {
      if (s.kind === 'ack') {
        args.push(s.delivery.tag, String(s.outputs.length));
        for (const out of s.outputs)
          args.push(keyIndex(priorityKey(out.queue, out.priority)), this.envelopeBytesFor(out));
      } else if (s.kind === 'reject') {
        const record = JSON.stringify({
          reason: s.reason,
          time: now,
          queue: s.delivery.queue,
          message: s.delivery.rawText,
        });
        args.push(s.delivery.tag, '1', keyIndex(setAsideKey(s.delivery.queue)), record);
      }
    }
    if (args.length > 0) {
      const keys = [KOMBU_UNACKED, KOMBU_UNACKED_INDEX, inflightKey(this.workerId), ...outputKeys.keys()];
      const skipped = await this.cmd.phSettle(keys.length, ...keys, ...args);
      if (skipped.length) {
        this.opts.logger.warn(
          `${skipped.length} message(s) were no longer ours to ack: restored by another worker (their restored copies will be published), or acked by an earlier attempt of this settle whose reply was lost (their outputs went out then); nothing was published for them now`,
          { tags: skipped },
        );
      }
    }
    if (requeue.length) await this.restorer.restoreTags(requeue, inflightKey(this.workerId));
    for (const s of settlements) this.held.delete(s.delivery.tag);
  }

  private envelopeFor(out: Outgoing): string {
    return buildEnvelope(...this.envelopeArgs(out));
  }

  private envelopeBytesFor(out: Outgoing): Buffer {
    return buildEnvelopeBytes(...this.envelopeArgs(out));
  }

  private envelopeArgs(out: Outgoing): [RawMessage, EnvelopeOptions] {
    return [
      { ...out.message, properties: { ...out.message.properties, priority: out.priority } },
      { deliveryTag: randomUUID(), exchange: '', routingKey: out.queue },
    ];
  }

  async publish(outgoing: Outgoing[]): Promise<void> {
    if (outgoing.length === 0) return;
    const pipe = this.cmd.multi();
    for (const out of outgoing) pipe.lpush(priorityKey(out.queue, out.priority), this.envelopeFor(out));
    await pipe.exec();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.blocking.disconnect();
    try {
      const restored = await this.restorer.restoreWorker(this.workerId, this.opts.inputQueue);
      if (restored) this.opts.logger.info(`returned ${restored} unfinished message(s) to ${this.opts.inputQueue}`);
      this.held.clear();
      await this.cmd.multi().del(leaseKey(this.workerId)).srem(WORKERS_KEY, this.workerId).exec();
    } catch (err) {
      // Redis is unreachable: stopping must not wait for it. What we hold stays recorded under our lease, which
      // expires; then any worker (or the supervisor, at once) returns it to the queue.
      this.opts.logger.warn(
        `could not return unfinished messages to ${this.opts.inputQueue} while stopping (they are restored when this worker's lease expires): ${(err as Error).message}`,
      );
    } finally {
      await this.cmd.quit().catch(() => this.cmd.disconnect());
    }
  }
}

function emptyMessage(): Delivery['message'] {
  return { headers: {}, properties: {}, contentType: '', contentEncoding: '', body: Buffer.alloc(0) };
}
