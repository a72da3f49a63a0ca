import type { Logger } from '../log';
import { PluginManager } from '../plugins/manager/plugin-manager';
import type { FetchOptions, SandboxLimits } from '../plugins/types';
import { PluginStore } from '../store/plugin-store';
import { openStore } from '../store/open-store';
import { runReplay, type ReplayArgs, type ReplaySummary } from './replay';

export interface ReplayCommandArgs extends ReplayArgs {
  databaseUrl: string;
  baseDir: string;
  limits: SandboxLimits;
  fetch: FetchOptions;
  /** Go on (exit 0) when a plugin config fails to load; default: the run fails. */
  allowLoadErrors: boolean;
}

export interface ReplayCommandSummary extends ReplaySummary {
  /** Plugin configs that did not load (replay ran without them). */
  failedConfigs: number;
}

/**
 * Replay never writes to the database: it may be pointed at PostHog's live one. The store it opens is read-only
 * at the database (a write would be refused), and the errors a worker would record there only go to the log.
 */
class ReadOnlyPluginStore extends PluginStore {
  override async setError(): Promise<void> {}
  override async disable(): Promise<void> {}
}

/**
 * Wire `replay` to the plugins configured in the database, then tear everything down. A config that failed to
 * load would silently leave its changes out of the output: it is reported on stderr, and the run fails (exit 1)
 * unless --allow-load-errors (e.g. a `file:` plugin whose path is not on this machine).
 */
export async function runReplayCommand(args: ReplayCommandArgs, logger: Logger): Promise<ReplayCommandSummary> {
  const { db } = await openStore(args.databaseUrl, logger, { readOnly: true });
  const store = new ReadOnlyPluginStore(db);
  try {
    const plugins = await PluginManager.create({
      store,
      baseDir: args.baseDir,
      limits: args.limits,
      fetch: args.fetch,
      logger,
    });
    try {
      const failed = plugins.teams().flatMap((team) =>
        plugins
          .configsFor(team)
          .filter((c) => c.state === 'failed')
          .map((c) => ({ team, ...c })),
      );
      for (const c of failed)
        logger.error(
          `plugin config #${c.id} (${c.name}, team ${c.team}) failed to load (the reason is logged above): replay runs without it`,
        );
      const summary = await runReplay(args, plugins, logger);
      return { ...summary, failedConfigs: failed.length };
    } finally {
      await plugins.close();
    }
  } finally {
    await db.destroy();
  }
}
