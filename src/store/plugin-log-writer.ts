import { randomUUID } from 'node:crypto';
import { Knex } from 'knex';
import type { Logger } from '../log';
import { databaseKind } from './database';

const T_LOG = 'posthog_pluginlogentry';

export type LogSource = 'SYSTEM' | 'PLUGIN' | 'CONSOLE';
export type LogType = 'DEBUG' | 'LOG' | 'INFO' | 'WARN' | 'ERROR';
export type ConsoleLevel = 'debug' | 'log' | 'info' | 'warn' | 'error';

export interface PluginLogEntryInput {
  teamId: number;
  pluginId: number;
  pluginConfigId: number;
  source: LogSource;
  type: LogType;
  message: string;
  /** Defaults to the time of `add()`. */
  timestamp?: Date;
}

export interface PluginLogWriterOptions {
  /** This process's instance id (a uuid), written to every row as PostHog does. */
  instanceId: string;
  /** Flush period (PostHog: 1 s). */
  flushIntervalMs?: number;
  /** Rows per INSERT; reaching it flushes at once (PostHog: 500). */
  batchSize?: number;
  /** Queue bound while the database is down or slow; overflow drops the oldest entries. */
  maxQueued?: number;
  maxMessageChars?: number;
  /**
   * UTF-8 bytes per message (default 2000): PostHog's table has btree indexes on `message` (0147's db_index), and a
   * btree row holds at most ~2704 bytes, so a longer message would be refused by Postgres.
   */
  maxMessageBytes?: number;
  /** How long `close()` keeps trying to write what is left. */
  closeTimeoutMs?: number;
  logger: Logger;
}

const TYPES: Record<ConsoleLevel, LogType> = { debug: 'DEBUG', log: 'LOG', info: 'INFO', warn: 'WARN', error: 'ERROR' };

/** The log entry type of a plugin `console.<level>` call. */
export function logTypeFor(level: ConsoleLevel): LogType {
  return TYPES[level] ?? 'LOG';
}

const DROP_REPORT_INTERVAL_MS = 60_000;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface QueuedRow {
  id: string;
  team_id: number;
  plugin_id: number;
  plugin_config_id: number;
  timestamp: Date;
  source: LogSource;
  type: LogType;
  message: string;
}

/** Cut to at most `max` UTF-16 units without splitting a surrogate pair, marking the cut with "…". */
function truncate(message: string, max: number): string {
  if (message.length <= max) return message;
  let end = Math.max(0, max - 1);
  const c = message.charCodeAt(end - 1);
  if (c >= 0xd800 && c <= 0xdbff) end -= 1; // the last kept unit would be half a pair
  return message.slice(0, end) + '…';
}

/** Cut to at most `max` UTF-8 bytes at a code point boundary, marking the cut with "…" (3 bytes). */
function truncateBytes(message: string, max: number): string {
  if (Buffer.byteLength(message, 'utf8') <= max) return message;
  let bytes = 3;
  let end = 0;
  for (const ch of message) {
    const n = Buffer.byteLength(ch, 'utf8');
    if (bytes + n > max) break;
    bytes += n;
    end += ch.length;
  }
  return message.slice(0, end) + '…';
}

/**
 * Errors that retrying the same rows can never fix (constraint violations such as a foreign key to a deleted
 * plugin config, bad data): the batch is then written row by row and only the offending rows are dropped.
 * Everything else (connection refused, missing table, timeouts) keeps the rows queued for the next tick.
 */
function isPermanentRowError(err: unknown): boolean {
  const code = String((err as { code?: unknown }).code ?? '');
  // Postgres SQLSTATE classes 22 (data), 23 (integrity) and 54 (limits: an index row too large)
  if (/^(2[23]|54)[0-9A-Z]{3}$/.test(code)) return true;
  return code.startsWith('SQLITE_CONSTRAINT') || code === 'SQLITE_MISMATCH' || code === 'SQLITE_TOOBIG';
}

/**
 * Writes plugin log entries to `posthog_pluginlogentry` like PostHog does: queued in memory, written with
 * multi-row INSERTs every `flushIntervalMs` and at once when `batchSize` entries are waiting. `add()` never
 * throws and never waits; a database that is down or slow costs memory only up to `maxQueued` entries.
 */
export class PluginLogWriter {
  private readonly pg: boolean;
  private readonly instanceId: string;
  private readonly batchSize: number;
  private readonly maxQueued: number;
  private readonly maxMessageChars: number;
  private readonly maxMessageBytes: number;
  private readonly closeTimeoutMs: number;
  private readonly logger: Logger;
  private queue: QueuedRow[] = [];
  private inFlight: Promise<void> | null = null;
  private readonly timer: NodeJS.Timeout;
  /** Rows taken off the queue by the write in progress. */
  private writing = 0;
  private droppedUnreported = 0;
  private lastDropReport = 0;
  private failing = false;
  private closed = false;

  constructor(
    readonly db: Knex,
    opts: PluginLogWriterOptions,
  ) {
    if (!UUID_RE.test(opts.instanceId))
      throw new Error(`PluginLogWriter: instanceId must be a uuid, got "${opts.instanceId}"`);
    const positive = (name: string, v: number | undefined, dflt: number): number => {
      const n = v ?? dflt;
      if (!Number.isSafeInteger(n) || n < 1)
        throw new Error(`PluginLogWriter: ${name} must be a positive integer, got ${String(v)}`);
      return n;
    };
    this.pg = databaseKind(db) === 'postgres';
    this.instanceId = opts.instanceId;
    this.batchSize = positive('batchSize', opts.batchSize, 500);
    this.maxQueued = positive('maxQueued', opts.maxQueued, 10_000);
    this.maxMessageChars = positive('maxMessageChars', opts.maxMessageChars, 10_000);
    this.maxMessageBytes = positive('maxMessageBytes', opts.maxMessageBytes, 2_000);
    this.closeTimeoutMs = positive('closeTimeoutMs', opts.closeTimeoutMs, 5_000);
    this.logger = opts.logger;
    this.timer = setInterval(() => this.tick(), positive('flushIntervalMs', opts.flushIntervalMs, 1_000));
    this.timer.unref(); // logs must never keep the process alive
  }

  /** Entries waiting to be written (not counting a batch being written right now). */
  get pending(): number {
    return this.queue.length;
  }

  add(entry: PluginLogEntryInput): void {
    if (this.closed) return;
    try {
      const ts =
        entry.timestamp instanceof Date && !Number.isNaN(entry.timestamp.getTime()) ? entry.timestamp : new Date();
      // Postgres text cannot hold NUL characters; keep them visible instead of failing the whole batch.
      const message = truncateBytes(
        truncate(String(entry.message), this.maxMessageChars).replace(/\u0000/g, '\\u0000'),
        this.maxMessageBytes,
      );
      this.queue.push({
        id: randomUUID(),
        team_id: entry.teamId,
        plugin_id: entry.pluginId,
        plugin_config_id: entry.pluginConfigId,
        timestamp: ts,
        source: entry.source,
        type: entry.type,
        message,
      });
      this.enforceBound();
      // While the database is failing, retries wait for the timer instead of one attempt per add().
      if (this.queue.length >= this.batchSize && !this.inFlight && !this.failing) this.tick();
    } catch (err) {
      this.logger.debug(`plugin log entry not queued: ${(err as Error).message}`);
    }
  }

  /**
   * Write everything queued so far, and wait for writes already in progress (timer or batch-size writes can
   * run between our batches). Rejects if one of its own writes fails; the entries then stay queued.
   */
  async flush(): Promise<void> {
    let remaining = this.queue.length;
    for (;;) {
      if (this.inFlight) {
        await this.inFlight; // never rejects
        continue;
      }
      if (remaining <= 0 || this.queue.length === 0) return;
      const n = Math.min(remaining, this.batchSize);
      remaining -= n;
      await this.run(() => this.writeBatch(n));
    }
  }

  /** Stop the timer and write what is left, giving up (with a warning) after `closeTimeoutMs`. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    const deadline = Date.now() + this.closeTimeoutMs;
    let lastError: unknown;
    let deadlineTimer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      deadlineTimer = setTimeout(() => resolve('timeout'), this.closeTimeoutMs);
    });
    try {
      while ((this.queue.length > 0 || this.inFlight) && Date.now() < deadline) {
        try {
          if ((await Promise.race([this.flush(), timeout])) === 'timeout') break;
        } catch (err) {
          lastError = err;
          await Promise.race([new Promise((resolve) => setTimeout(resolve, 100)), timeout]);
        }
      }
    } finally {
      clearTimeout(deadlineTimer);
    }
    this.reportDropped(true);
    const unwritten = this.queue.length + this.writing;
    if (unwritten > 0) {
      const why = lastError ? `: ${(lastError as Error).message}` : ' (database too slow)';
      this.logger.warn(`plugin logs: ${unwritten} entries not written at shutdown${why}`);
      this.queue = [];
    }
  }

  /** Timer and size trigger: one write at a time, failures logged and retried on the next tick. */
  private tick(): void {
    this.reportDropped();
    if (this.inFlight || this.queue.length === 0) return;
    void this.run(async () => {
      while (this.queue.length > 0) {
        await this.writeBatch(Math.min(this.queue.length, this.batchSize));
        if (this.queue.length < this.batchSize) break; // the rest waits for the next tick, like PostHog
      }
    }).catch(() => undefined); // already logged in run()
  }

  private run(write: () => Promise<void>): Promise<void> {
    let succeeded = false;
    const p = write().then(
      () => {
        if (this.failing) this.logger.info('plugin logs: writing to the database again');
        this.failing = false;
        succeeded = true;
        this.reportDropped(true);
      },
      (err: unknown) => {
        // One warning per outage, not one per tick.
        if (!this.failing)
          this.logger.warn(`plugin logs: cannot write to ${T_LOG}, will retry: ${(err as Error).message}`);
        this.failing = true;
        throw err;
      },
    );
    const settled: Promise<void> = p.then(
      () => this.afterWrite(settled, succeeded),
      () => this.afterWrite(settled, succeeded),
    );
    this.inFlight = settled;
    return p;
  }

  /** A full batch that arrived during a successful write goes out at once (after a failure it waits a tick). */
  private afterWrite(settled: Promise<void>, succeeded: boolean): void {
    if (this.inFlight === settled) this.inFlight = null;
    if (succeeded && !this.closed && !this.inFlight && this.queue.length >= this.batchSize) this.tick();
  }

  /** Take the `n` oldest rows and insert them; on a transient failure they go back to the front of the queue. */
  private async writeBatch(n: number): Promise<void> {
    const rows = this.queue.splice(0, n);
    if (rows.length === 0) return;
    this.writing = rows.length;
    try {
      await this.insert(rows);
    } catch (err) {
      if (!isPermanentRowError(err)) {
        this.requeue(rows);
        throw err;
      }
      await this.insertOneByOne(rows, err);
    } finally {
      this.writing = 0;
    }
  }

  private async insertOneByOne(rows: QueuedRow[], batchError: unknown): Promise<void> {
    let rejected = 0;
    for (let i = 0; i < rows.length; i++) {
      try {
        await this.insert([rows[i]]);
      } catch (err) {
        if (!isPermanentRowError(err)) {
          this.requeue(rows.slice(i));
          throw err;
        }
        rejected++;
      }
    }
    if (rejected > 0) {
      this.logger.warn(
        `plugin logs: ${rejected} entries rejected by the database and dropped: ${(batchError as Error).message}`,
      );
    }
  }

  private insert(rows: QueuedRow[]): Promise<unknown> {
    return this.db(T_LOG).insert(
      rows.map((r) => ({
        ...r,
        // SQLite keeps timestamps as ISO text (migrate.ts); Postgres takes the Date for timestamptz.
        timestamp: this.pg ? r.timestamp : r.timestamp.toISOString(),
        instance_id: this.instanceId,
      })),
    );
  }

  private requeue(rows: QueuedRow[]): void {
    this.queue = rows.concat(this.queue);
    this.enforceBound();
  }

  private enforceBound(): void {
    const excess = this.queue.length - this.maxQueued;
    if (excess <= 0) return;
    this.queue.splice(0, excess);
    this.droppedUnreported += excess;
  }

  /**
   * One warning for many dropped entries: when the database is back (or at close), and during a long outage at
   * most once a minute.
   */
  private reportDropped(force = false): void {
    if (this.droppedUnreported === 0) return;
    const now = Date.now();
    if (!force && now - this.lastDropReport < DROP_REPORT_INTERVAL_MS) return;
    this.lastDropReport = now;
    this.logger.warn(
      `plugin logs: dropped the ${this.droppedUnreported} oldest entries (queue limit ${this.maxQueued} reached while the database was unavailable or slow)`,
    );
    this.droppedUnreported = 0;
  }
}
