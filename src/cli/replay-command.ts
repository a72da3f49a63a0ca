import type { Logger } from '../log';
import { PluginManager } from '../plugins/manager';
import type { SandboxLimits } from '../plugins/types';
import { openStore } from './open-store';
import { runReplay, type ReplayArgs, type ReplaySummary } from './replay';

export interface ReplayCommandArgs extends ReplayArgs {
  databaseUrl: string;
  baseDir: string;
  limits: SandboxLimits;
}

/** Wire `replay` to the plugins configured in the database, then tear everything down. */
export async function runReplayCommand(args: ReplayCommandArgs, logger: Logger): Promise<ReplaySummary> {
  const { db, store } = await openStore(args.databaseUrl, logger);
  const plugins = await PluginManager.create({ store, baseDir: args.baseDir, limits: args.limits, logger });
  try {
    return await runReplay(args, plugins, logger);
  } finally {
    await plugins.close();
    await db.destroy();
  }
}
