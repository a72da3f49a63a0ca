import type { Logger } from '../../log';

/** Longest console line the guest passes out (longer ones are cut inside the isolate). */
export const MAX_LOG_LINE = 4096;

export type ConsoleLevel = 'debug' | 'log' | 'info' | 'warn' | 'error';

/**
 * A plugin's console lines on the host. They are rate-limited twice: inside the isolate (so that a flood never
 * crosses into the host; the guest reports its count as level 'dropped') and here. Drops are reported at
 * most once a second per config.
 */
export class ConsoleLimiter {
  /** Lines per second before lines are dropped. */
  readonly maxPerSecond: number;
  private windowStart = 0;
  private count = 0;
  private dropped = 0;
  private dropReport: NodeJS.Timeout | null = null;

  constructor(
    private readonly logger: Logger,
    private readonly logMeta: Record<string, unknown>,
    maxPerSecond: number | undefined,
    private readonly onLine?: (level: ConsoleLevel, line: string) => void,
  ) {
    this.maxPerSecond = Math.max(1, Math.floor(maxPerSecond ?? 1000));
  }

  /** A line from the isolate's log callback (level and line as the isolate passed them: unchecked). */
  line(level: unknown, line: unknown): void {
    if (level === 'dropped') {
      const n = Number(line);
      if (Number.isSafeInteger(n) && n > 0) this.noteDropped(n);
      return;
    }
    const now = Date.now();
    if (now - this.windowStart >= 1000) {
      this.windowStart = now;
      this.count = 0;
    }
    if (++this.count > this.maxPerSecond) {
      this.noteDropped(1);
      return;
    }
    const text = typeof line === 'string' ? line.slice(0, MAX_LOG_LINE + 64) : String(line).slice(0, MAX_LOG_LINE);
    const lvl = level === 'error' ? 'error' : level === 'warn' ? 'warn' : level === 'debug' ? 'debug' : 'info';
    this.logger.log(lvl, text, { ...this.logMeta, source: 'console' });
    this.onLine?.(level === 'log' ? 'log' : lvl, text);
  }

  private noteDropped(n: number): void {
    this.dropped += n;
    if (this.dropReport) return;
    this.dropReport = setTimeout(() => {
      this.dropReport = null;
      const dropped = this.dropped;
      this.dropped = 0;
      this.logger.warn(
        `dropped ${dropped} console line(s) over the rate limit of ${this.maxPerSecond}/s`,
        this.logMeta,
      );
    }, 1000);
    this.dropReport.unref();
  }
}
