import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { JsonObject } from '../../protocol/types';
import { downloadPlugin, type RemoteOptions } from '../install/resolve';
import { parsePluginSpec } from '../install/spec';
import type { Logger } from '../log';
import { configSchemaOf, readPluginPath } from '../plugins/source';
import type { InstallPluginInput } from '../store/types';
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
  /** Where GitHub/GitLab/npm are, tokens, and the download limits (for links and package names). */
  remote: RemoteOptions;
}

/**
 * `posthog-plugins install SOURCE`: read the plugin first (so a broken one is refused here, not at start),
 * then store it as PostHog would: folders and code files as `local` plugins with a `file:` url (relative to
 * the base dir when inside it, so edits are picked up on the next reload), archives as `custom` plugins with the
 * archive bytes. A SOURCE that is not a path is a link (GitHub, GitLab, npm page, archive URL) or an npm package
 * name: it is downloaded and stored as PostHog's "install from URL" did (`custom`, the archive, `url` = the
 * repository or package, `tag` = the commit or version). Then add a config for the team at the end of its chain
 * (or at --order).
 */
export async function runInstall(args: InstallArgs, logger: Logger): Promise<void> {
  const config = parseJsonObject(args.config, '--config') as JsonObject;
  const { plugin, origin, main } = existsSync(args.source) ? fromPath(args) : await fromRemote(args, logger);

  const { db, store } = await openStore(args.databaseUrl, logger);
  try {
    const pluginId = await store.installPlugin({ ...plugin, teamId: args.team });
    const existing = (await store.listConfigs()).filter((c) => c.teamId === args.team);
    const order = args.order ?? existing.reduce((max, c) => Math.max(max, c.order + 1), 0);
    const configId = await store.createConfig({ pluginId, teamId: args.team, order, config, enabled: !args.disabled });
    logger.info(`installed plugin ${JSON.stringify(plugin.name)} (#${pluginId}) for team ${args.team} at order ${order} as config #${configId}${args.disabled ? ' (disabled)' : ''}`, {
      source: origin,
      main,
      ...(plugin.tag ? { tag: plugin.tag } : {}),
    });
  } finally {
    await db.destroy();
  }
}

interface Prepared {
  plugin: InstallPluginInput;
  origin: string;
  main: string;
}

function fromPath(args: InstallArgs): Prepared {
  const abs = path.resolve(args.source);
  const code = readPluginPath(abs);
  const name = args.name ?? code.name;
  const isArchive = statSync(abs).isFile() && !/\.[cm]?[jt]s$/i.test(abs);
  const rel = path.relative(args.baseDir, abs);
  const url = rel.startsWith('..') || path.isAbsolute(rel) ? `file:${abs}` : `file:${rel}`;
  const configSchema = configSchemaOf(code.pluginJson);
  return {
    plugin: isArchive
      ? { name, pluginType: 'custom', url: null, archive: readFileSync(abs), configSchema }
      : { name, pluginType: 'local', url, configSchema },
    origin: code.origin,
    main: code.main,
  };
}

async function fromRemote(args: InstallArgs, logger: Logger): Promise<Prepared> {
  const gitlabHost = safeHost(args.remote.gitlabUrl);
  const spec = parsePluginSpec(args.source, { gitlabHosts: gitlabHost ? [gitlabHost] : [] });
  logger.info(`downloading ${args.source}`, { spec });
  const got = await downloadPlugin(spec, args.remote);
  const description = typeof got.code.pluginJson?.description === 'string' ? got.code.pluginJson.description : '';
  return {
    plugin: {
      name: args.name ?? got.code.name,
      pluginType: 'custom',
      url: got.url,
      tag: got.tag,
      archive: got.archive,
      description,
      configSchema: configSchemaOf(got.code.pluginJson),
    },
    origin: `${got.label} (${got.archive.length} bytes from ${got.archiveUrl})`,
    main: got.code.main,
  };
}

function safeHost(url: string): string | null {
  try {
    return new URL(url).hostname;
  } catch {
    return null;
  }
}
