import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { JsonObject } from '../../protocol/types';
import type { Logger } from '../log';
import { configSchemaOf, readPluginPath } from '../plugins/source';
import { openStore } from './open-store';
import { parseJsonObject } from './start';

export interface InstallArgs {
  source: string;
  databaseUrl: string;
  baseDir: string;
  team: number;
  order?: number;
  config: string;
  name?: string;
  disabled: boolean;
}

/**
 * `posthog-plugins install SOURCE`: read the plugin first (so a broken one is refused here, not at start),
 * then store it as PostHog would: folders and code files as `local` plugins with a `file:` url (relative to
 * the base dir when inside it, so edits are picked up on the next reload), archives as `custom` plugins with the
 * archive bytes. Then add a config for the team at the end of its chain (or at --order).
 */
export async function runInstall(args: InstallArgs, logger: Logger): Promise<void> {
  const config = parseJsonObject(args.config, '--config') as JsonObject;
  const abs = path.resolve(args.source);
  const code = readPluginPath(abs);
  const name = args.name ?? code.name;
  const isArchive = statSync(abs).isFile() && !/\.[cm]?[jt]s$/i.test(abs);
  const rel = path.relative(args.baseDir, abs);
  const url = rel.startsWith('..') || path.isAbsolute(rel) ? `file:${abs}` : `file:${rel}`;

  const { db, store } = await openStore(args.databaseUrl, logger);
  try {
    const pluginId = await store.installPlugin(
      isArchive
        ? { name, pluginType: 'custom', url: null, archive: readFileSync(abs), configSchema: configSchemaOf(code.pluginJson) }
        : { name, pluginType: 'local', url, configSchema: configSchemaOf(code.pluginJson) },
    );
    const existing = (await store.listConfigs()).filter((c) => c.teamId === args.team);
    const order = args.order ?? existing.reduce((max, c) => Math.max(max, c.order + 1), 0);
    const configId = await store.createConfig({ pluginId, teamId: args.team, order, config, enabled: !args.disabled });
    logger.info(`installed plugin ${JSON.stringify(name)} (#${pluginId}) for team ${args.team} at order ${order} as config #${configId}${args.disabled ? ' (disabled)' : ''}`, {
      source: code.origin,
      main: code.main,
    });
  } finally {
    await db.destroy();
  }
}
