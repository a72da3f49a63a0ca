import type { Channel, ChannelModel } from 'amqplib';
import { pyAmqpFieldTable } from '../../../protocol/amqp-properties';
import type { JsonValue } from '../../../protocol/types';
import type { Logger } from '../../log';
import { AmqpTopologyError, describeDeclareError } from './errors';
import type { Session } from './session';

export interface TopologyConfig {
  inputQueue: string;
  outputQueue: string;
  setAsideQueue: string;
  queueArguments: Record<string, JsonValue>;
  outputQueueArguments: Record<string, JsonValue>;
  /** Only check that the queues exist; declare nothing. */
  passive: boolean;
  /** For error texts. */
  vhost: string;
  logger: Logger;
  displayUrl: string;
}

/**
 * The queues as Celery declares them, on each new connection (input, output, set-aside) and once per connection
 * for every other publish destination (kombu's maybe_declare). Each declaration runs on a short-lived channel.
 */
export class Topology {
  private readonly warnedOnce = new Set<string>();

  constructor(private readonly config: TopologyConfig) {}

  /** The input, output and set-aside queues of a new connection; a 406 on input or output is fatal. */
  async declare(s: Session): Promise<void> {
    const queues = [...new Set([this.config.inputQueue, this.config.outputQueue])];
    for (const q of queues) {
      await this.declareCeleryQueue(s.conn, q, true);
      s.declared.add(q);
    }
    await this.declareSetAside(s.conn);
    s.declared.add(this.config.setAsideQueue);
  }

  /** Makes sure every publish destination exists on this connection; the queues that could not be, with why. */
  async ensure(s: Session, queues: Iterable<string>): Promise<Map<string, Error>> {
    const failed = new Map<string, Error>();
    const waits: Promise<void>[] = [];
    for (const q of new Set(queues)) {
      const p = this.ensureQueue(s, q);
      if (p)
        waits.push(p.catch((err: unknown) => void failed.set(q, err instanceof Error ? err : new Error(String(err)))));
    }
    if (waits.length) await Promise.all(waits);
    return failed;
  }

  /** Runs `fn` on a short-lived channel: a failed declare (406/404) closes only that channel. */
  private async onTempChannel<T>(conn: ChannelModel, fn: (ch: Channel) => Promise<T>): Promise<T> {
    const ch = await conn.createChannel();
    ch.on('error', () => undefined); // surfaces as the rejected RPC
    try {
      return await fn(ch);
    } finally {
      try {
        await ch.close();
      } catch {
        /* closed by the server already */
      }
    }
  }

  /** The input queue has its own arguments; every other Celery queue we declare shares the output's. */
  private argumentsFor(queue: string): { flag: string; args: Record<string, JsonValue> } {
    return queue === this.config.inputQueue
      ? { flag: '--amqp-queue-arguments', args: this.config.queueArguments }
      : { flag: '--amqp-output-queue-arguments', args: this.config.outputQueueArguments };
  }

  private describe(err: unknown, kind: 'queue' | 'exchange', name: string): Error {
    const { flag, args } = this.argumentsFor(name);
    return describeDeclareError(err, {
      kind,
      name,
      vhost: this.config.vhost,
      passive: this.config.passive,
      queueArguments: args,
      argumentsFlag: flag,
    });
  }

  /**
   * A Celery queue: exchange `queue` (direct, durable), queue `queue` (durable, arguments as configured), binding
   * `queue` → `queue` with key `queue` (kombu `Queue(q, Exchange(q), q)`). Passive: checkQueue (must exist) and
   * checkExchange (only warns: we publish through the default exchange). `strict` = a 406 is fatal (our input/output
   * at connect); otherwise an existing queue with other arguments is used as it is, with a warning.
   */
  private async declareCeleryQueue(conn: ChannelModel, queue: string, strict: boolean): Promise<void> {
    if (this.config.passive) {
      try {
        await this.onTempChannel(conn, (ch) => ch.checkQueue(queue));
      } catch (err) {
        throw this.describe(err, 'queue', queue);
      }
      try {
        await this.onTempChannel(conn, (ch) => ch.checkExchange(queue));
      } catch (err) {
        this.warnOnce(
          `exchange:${queue}`,
          `passive mode: ${this.describe(err, 'exchange', queue).message} (not needed by us; Python producers routing via exchange '${queue}' will fail)`,
        );
      }
      return;
    }
    let stage: 'exchange' | 'queue' = 'exchange';
    try {
      await this.onTempChannel(conn, async (ch) => {
        await ch.assertExchange(queue, 'direct', { durable: true, autoDelete: false, internal: false });
        stage = 'queue';
        // Integers typed like py-amqp writes them ('I' signedint), so RabbitMQ stores exactly what Celery declares.
        await ch.assertQueue(queue, {
          durable: true,
          exclusive: false,
          autoDelete: false,
          arguments: pyAmqpFieldTable(this.argumentsFor(queue).args),
        });
        await ch.bindQueue(queue, queue, queue);
      });
    } catch (err) {
      const described = this.describe(err, stage, queue);
      if (strict || !(described instanceof AmqpTopologyError) || described.code !== 406) throw described;
      try {
        await this.onTempChannel(conn, (ch) => ch.checkQueue(queue));
      } catch (err2) {
        throw this.describe(err2, 'queue', queue);
      }
      this.warnOnce(`mismatch:${queue}`, `${described.message} Publishing to the existing queue as it is.`);
    }
  }

  /** Ours: a durable queue without arguments. If it exists with other arguments, it is used as it is. */
  private async declareSetAside(conn: ChannelModel): Promise<void> {
    const q = this.config.setAsideQueue;
    try {
      await this.onTempChannel(conn, (ch) => ch.assertQueue(q, { durable: true, exclusive: false, autoDelete: false }));
    } catch (err) {
      const described = this.describe(err, 'queue', q);
      if (!(described instanceof AmqpTopologyError) || described.code !== 406) throw described;
      await this.onTempChannel(conn, (ch) => ch.checkQueue(q));
      this.warnOnce(`mismatch:${q}`, `${described.message} Using the set-aside queue as it is.`);
    }
  }

  /** Makes sure a publish destination exists on this connection (declared once per connection, like kombu's maybe_declare). */
  private ensureQueue(s: Session, queue: string): Promise<void> | undefined {
    if (s.declared.has(queue)) return undefined;
    let p = s.declaring.get(queue);
    if (!p) {
      p = (
        queue === this.config.setAsideQueue
          ? this.declareSetAside(s.conn)
          : this.declareCeleryQueue(s.conn, queue, false)
      )
        .then(() => {
          s.declared.add(queue);
        })
        .finally(() => s.declaring.delete(queue));
      s.declaring.set(queue, p);
    }
    return p;
  }

  private warnOnce(key: string, message: string): void {
    if (this.warnedOnce.has(key)) return;
    this.warnedOnce.add(key);
    this.config.logger.warn(message, { broker: this.config.displayUrl });
  }
}
