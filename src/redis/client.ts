import Redis, { type Command, type RedisOptions } from 'ioredis';

/** A command with no reply on its connection for this long means the socket is dead (half-open): drop it. */
export const DEFAULT_SOCKET_TIMEOUT_MS = 10_000;

export interface RedisClientOptions {
  /** CLIENT SETNAME: what `CLIENT LIST` shows and what an operator can `CLIENT KILL` by. */
  name: string;
  /** Connect only on `connect()` (default true). */
  lazyConnect?: boolean;
  /** Longest wait for any reply while a command is out; then the socket is destroyed and rebuilt. */
  socketTimeoutMs?: number;
  /** Also fail each command on its own after this long (ioredis `commandTimeout`). */
  commandTimeoutMs?: number;
  reconnectOnError?: RedisOptions['reconnectOnError'];
  /** Delay before reconnect attempt n (default ioredis': 50 ms steps up to 2 s). */
  retryStrategy?: RedisOptions['retryStrategy'];
}

/**
 * Every Redis client of ours is one of these, so that no await on Redis lasts forever. ioredis as configured
 * before lost commands silently: with `autoResendUnfulfilledCommands: false` a command written to a connection
 * that then closes (a Redis restart, `CLIENT KILL`) is dropped from its queue without its promise ever
 * settling, and with the offline queue a command sent while Redis is down waits for a reconnect that may never
 * come. Here:
 * - a command is only ever written to a live connection; while there is none it fails at once (no offline
 *   queue), so the caller backs off and retries instead of waiting blind;
 * - a command written before its connection closed is rejected when the close is seen (it may or may not have
 *   run: the caller must be able to retry safely or clean up), and never resent behind the caller's back;
 * - a connection that stops answering (half-open socket) is destroyed after `socketTimeoutMs`, which closes it
 *   and so rejects what was written to it.
 * The client reconnects by itself (ioredis' default backoff, at most 2 s between attempts, unless `retryStrategy`).
 */
export class BoundedRedis extends Redis {
  private readonly unanswered = new Set<Command>();

  constructor(url: string, opts: RedisClientOptions) {
    super(url, {
      connectionName: opts.name,
      lazyConnect: opts.lazyConnect ?? true,
      enableOfflineQueue: false,
      autoResendUnfulfilledCommands: false,
      // No per-request retry count: nothing waits in a queue to be retried (see above).
      maxRetriesPerRequest: null,
      enableAutoPipelining: false,
      socketTimeout: opts.socketTimeoutMs ?? DEFAULT_SOCKET_TIMEOUT_MS,
      commandTimeout: opts.commandTimeoutMs,
      reconnectOnError: opts.reconnectOnError,
      ...(opts.retryStrategy ? { retryStrategy: opts.retryStrategy } : {}),
    });
    // ioredis emits 'close' after it has taken the unanswered commands off the connection.
    this.on('close', () => {
      this.dropSocketTimer();
      this.rejectUnanswered();
    });
  }

  /**
   * ioredis arms its socket timeout on the connection a command was written to but never disarms it when that
   * connection closes without a reply: 10 s later the stale timer destroys the next, healthy connection (and
   * until then arms no timer for it). Measured after every CLIENT KILL; cleared here with the connection.
   */
  private dropSocketTimer(): void {
    const internals = this as unknown as { socketTimeoutTimer?: NodeJS.Timeout };
    if (internals.socketTimeoutTimer === undefined) return;
    clearTimeout(internals.socketTimeoutTimer);
    internals.socketTimeoutTimer = undefined;
  }

  override sendCommand(command: Command, stream?: Parameters<Redis['sendCommand']>[1]): unknown {
    // Only commands written on a ready connection: handshake commands (ready check, SELECT) are ioredis' own.
    const tracked = this.status === 'ready';
    const reply = super.sendCommand(command, stream);
    if (tracked) {
      this.unanswered.add(command);
      const done = (): void => void this.unanswered.delete(command);
      command.promise.then(done, done);
    }
    return reply;
  }

  private rejectUnanswered(): void {
    if (this.unanswered.size === 0) return;
    const commands = [...this.unanswered];
    this.unanswered.clear();
    for (const command of commands) {
      command.reject(
        new Error(
          `connection to Redis closed before the reply to ${command.name.toUpperCase()} (${this.options.connectionName}): it may or may not have run`,
        ),
      );
    }
  }
}

/** The one way to make a Redis client here: see BoundedRedis. */
export function createRedisClient(url: string, opts: RedisClientOptions): BoundedRedis {
  return new BoundedRedis(url, opts);
}
