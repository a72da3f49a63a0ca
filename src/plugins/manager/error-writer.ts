import type { Logger } from '../../log';
import type { PluginError } from '../../store/types';

/**
 * Writes plugin errors to `posthog_pluginconfig.error` without making event processing wait for the database:
 * at most one write per config is in flight, and while it runs only the newest error is kept for the next one
 * (the column holds one error anyway). A slow or unreachable database then delays error records, never events.
 */
export class ConfigErrorWriter {
  private readonly inflight = new Map<number, Promise<void>>();
  private readonly next = new Map<number, PluginError | null>();

  constructor(
    private readonly store: { setError(configId: number, error: PluginError | null): Promise<void> },
    private readonly logger: Logger,
  ) {}

  set(configId: number, error: PluginError | null): void {
    if (this.inflight.has(configId)) {
      this.next.set(configId, error);
      return;
    }
    const write = this.store
      .setError(configId, error)
      .catch((e: unknown) => {
        this.logger.error(`could not store plugin error for config ${configId}: ${(e as Error).message}`);
      })
      .finally(() => {
        this.inflight.delete(configId);
        if (!this.next.has(configId)) return;
        const newer = this.next.get(configId) ?? null;
        this.next.delete(configId);
        this.set(configId, newer);
      });
    this.inflight.set(configId, write);
  }

  /** Resolves once every error recorded so far is written (or failed). */
  async flush(): Promise<void> {
    while (this.inflight.size > 0) await Promise.all(this.inflight.values());
  }
}
