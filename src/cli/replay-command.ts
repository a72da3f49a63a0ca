import type { Logger } from '../log';
import { PluginManager } from '../plugins/manager';
import type { FetchOptions, SandboxLimits } from '../plugins/types';
import { openStore } from './open-store';
import { runReplay, type ReplayArgs, type ReplaySummary } from './replay';

export interface ReplayCommandArgs extends ReplayArgs {
  databaseUrl: string;
  baseDir: string;
  limits: SandboxLimits;
  fetch: FetchOptions;
}

/**
 * Wire `replay` to the plugins configured in the database, then tear everything down. A config that failed
 * to load would silently leave its changes out of the output, so it is reported, and with --strict it makes
 * the run fail (e.g. relative `file:` plugins replayed from another directory without --base-dir).
 */
export async function runReplayCommand(args: ReplayCommandArgs, logger: Logger): Promise<ReplaySummary> {
  const { db, store } = await openStore(args.databaseUrl, logger);
  const plugins = await PluginManager.create({ store, baseDir: args.baseDir, limits: args.limits, fetch: args.fetch, logger });
  try {
    const failed = plugins.teams().flatMap((team) => plugins.configsFor(team).filter((c) => c.state === 'failed').map((c) => ({ team, ...c })));
    for (const c of failed) logger.error(`plugin config #${c.id} (${c.name}, team ${c.team}) failed to load: replay runs without it`);
    if (failed.length > 0 && args.strict) process.exitCode = 1;
    return await runReplay(args, plugins, logger);
  } finally {
    await plugins.close();
    await db.destroy();
  }
}
